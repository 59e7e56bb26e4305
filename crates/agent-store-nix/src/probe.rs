//! What the Nix store says about itself (`nix --version` and its flake),
//! and the removal of the GC roots its pulls keep.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use agent_ref::{AgentHome, AgentKind, AgentRef, ErrorKind};
use agent_store::{PROBE_TIMEOUT, StoreError, StoreProbe};

use crate::{NixError, NixStore, run};

impl NixStore {
    /// Runs `nix --version` (within [`PROBE_TIMEOUT`]) and names the flake.
    pub(crate) async fn probe_nix(&self) -> StoreProbe {
        let started = Instant::now();
        let runner = run::Runner {
            program: &self.program,
            nix_config: self.nix_config.as_deref(),
            timeout: PROBE_TIMEOUT,
            kill_grace: self.kill_grace,
        };
        let out = runner.run(&[OsString::from("--version")]).await;
        match out {
            Ok(o) if o.status.success() => StoreProbe::ok(format!(
                "{}; flake {}",
                String::from_utf8_lossy(&o.stdout).trim(),
                self.flake
            ))
            .with_latency(started.elapsed()),
            Ok(o) => StoreProbe::fail(
                ErrorKind::StoreUnavailable,
                format!(
                    "nix --version failed ({}): {}",
                    o.status,
                    o.stderr_tail.trim()
                ),
                "repair the Nix installation",
            ),
            Err(NixError::Timeout { .. }) => StoreProbe::fail(
                ErrorKind::StoreUnavailable,
                "nix --version did not answer",
                "repair the Nix installation",
            ),
            Err(e) => StoreProbe::fail(
                ErrorKind::StoreUnavailable,
                format!("cannot run nix: {e}"),
                "install Nix (Debian: apt-get install nix-bin), or drop the nix store",
            ),
        }
    }

    /// Removes the GC roots that keep `agent`'s (concrete version) store
    /// path alive, under every kind that shares its cache directory (a
    /// `service:runtime` pull and a `service` one land in the same binary),
    /// so `nix-collect-garbage` can reclaim it once the binary is removed.
    /// Dangling roots go too. Returns the roots removed. Blocking.
    ///
    /// # Errors
    /// [`StoreError::Io`] when a root exists and cannot be removed.
    pub fn remove_gc_roots(home: &AgentHome, agent: &AgentRef) -> Result<Vec<PathBuf>, StoreError> {
        let mut removed = Vec::new();
        for kind in AgentKind::ALL
            .into_iter()
            .filter(|k| k.cache_dir() == agent.kind().cache_dir())
        {
            let Ok(root) = NixStore::gc_root(home, &agent.clone().with_kind(kind)) else {
                continue;
            };
            if std::fs::symlink_metadata(&root).is_ok() {
                std::fs::remove_file(&root).map_err(|e| {
                    StoreError::io(format!("removing the Nix GC root {}", root.display()), e)
                })?;
                removed.push(root);
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use agent_store::{AgentStore as _, ProbeStatus};

    use super::*;

    #[tokio::test]
    async fn the_probe_names_nix_and_the_flake() {
        let p = NixStore::new("path:/srv/agents").probe().await;
        assert_eq!(p.status, ProbeStatus::Ok, "{p:?}");
        assert!(p.detail.contains("nix"), "{p:?}");
        assert!(p.detail.ends_with("; flake path:/srv/agents"), "{p:?}");
        assert!(p.latency.is_some());
    }

    #[tokio::test]
    async fn a_missing_nix_fails_with_the_install_fix() {
        let p = NixStore::new("path:/srv/agents")
            .with_program("/nonexistent/bin/nix")
            .probe()
            .await;
        assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
        assert_eq!(p.kind, Some(ErrorKind::StoreUnavailable));
        assert!(p.detail.starts_with("cannot run nix"), "{p:?}");
        assert!(p.fix.as_deref().unwrap().contains("install Nix"), "{p:?}");
    }

    #[test]
    fn removing_gc_roots_takes_every_alias_and_only_that_version() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let roots = home.root().join(crate::GC_ROOTS_DIR);
        std::fs::create_dir_all(&roots).unwrap();
        // GC roots are symlinks into /nix/store; dangling ones must go too.
        for name in [
            "service-runtime-acme-echo-1.0.0",
            "service-acme-echo-1.0.0",
            "service-runtime-acme-echo-2.0.0",
            "module-acme-echo-1.0.0",
        ] {
            std::os::unix::fs::symlink("/nix/store/nothing-here", roots.join(name)).unwrap();
        }
        let agent: AgentRef = "acme/echo:1.0.0".parse().unwrap();
        let removed = NixStore::remove_gc_roots(&home, &agent).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let left = |n: &str| std::fs::symlink_metadata(roots.join(n)).is_ok();
        assert!(!left("service-runtime-acme-echo-1.0.0"));
        assert!(!left("service-acme-echo-1.0.0"));
        assert!(left("service-runtime-acme-echo-2.0.0"));
        assert!(left("module-acme-echo-1.0.0"), "another kind's root stays");
        assert!(NixStore::remove_gc_roots(&home, &agent).unwrap().is_empty());
    }
}
