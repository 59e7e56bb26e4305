//! Looking after a home: the installed agents (query, remove, prune, with
//! the Nix GC roots that go with them), the home's permissions, the temp
//! files interrupted installs left, and what each store says about itself.
//! `agentctl ls`, `rm`, `prune` and `doctor` are these, printed.
//!
//! The free functions take a [`Cache`] and read no configuration, so a
//! home can be listed and cleaned when its configuration does not validate;
//! the [`Manager`] methods are the same over the manager's home.

use agent_ref::{AgentKind, AgentRef};
use agent_store::{
    Cache, CacheEntry, CacheQuery, HomeCheck, PrunePolicy, PruneReport, StoreError, StoreProbe,
};

use crate::Manager;

/// One store's answer to [`Manager::probe_stores`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreStatus {
    /// The store's name (`oci`, `http`, `nix`, `github`, …).
    pub store: String,
    /// What it says about itself.
    pub probe: StoreProbe,
}

impl Manager {
    /// The cache of this manager's home, with its installer's lock timeouts.
    #[must_use]
    pub fn cache(&self) -> Cache {
        Cache::of(self.installer())
    }

    /// The installed binaries `query` selects. Blocking.
    ///
    /// # Errors
    /// As [`Cache::query`].
    pub fn installed(&self, query: &CacheQuery) -> Result<Vec<CacheEntry>, StoreError> {
        self.cache().query(query)
    }

    /// [`remove_installed`] in this manager's home.
    ///
    /// # Errors
    /// As [`remove_installed`].
    pub fn remove_installed(&self, agent: &AgentRef) -> Result<Vec<CacheEntry>, StoreError> {
        remove_installed(&self.cache(), agent)
    }

    /// [`prune_installed`] in this manager's home.
    ///
    /// # Errors
    /// As [`prune_installed`].
    pub fn prune_installed(
        &self,
        kind: Option<AgentKind>,
        policy: &PrunePolicy,
    ) -> Result<PruneReport, StoreError> {
        prune_installed(&self.cache(), kind, policy)
    }

    /// The home checked by the installer's permission rule
    /// ([`agent_store::check_home`]). Blocking.
    #[must_use]
    pub fn check_home(&self) -> HomeCheck {
        agent_store::check_home(self.home())
    }

    /// Every store's account of itself ([`agent_store::AgentStore::probe`]),
    /// in the order they are tried, asked one after the other.
    pub async fn probe_stores(&self) -> Vec<StoreStatus> {
        let mut out = Vec::new();
        for s in self.chain().stores() {
            out.push(StoreStatus {
                store: s.name().to_owned(),
                probe: s.probe().await,
            });
        }
        out
    }
}

/// Removes every installed version of `agent` its version spec matches
/// (every version for `latest`), each under its install lock, and the Nix GC
/// roots that kept their store paths alive; returns what was removed (empty
/// when nothing matched). Blocking.
///
/// # Errors
/// As [`Cache::remove_matching`]; [`StoreError::Io`] when a GC root cannot
/// be removed.
pub fn remove_installed(cache: &Cache, agent: &AgentRef) -> Result<Vec<CacheEntry>, StoreError> {
    let removed = cache.remove_matching(agent)?;
    for e in &removed {
        remove_gc_roots(cache, e)?;
    }
    Ok(removed)
}

/// Prunes as `policy` says, in `kind`'s cache directory only when given
/// ([`Cache::prune_kind`]), and removes the Nix GC roots of what was removed.
/// Blocking.
///
/// # Errors
/// As [`Cache::prune_kind`]; [`StoreError::Io`] when a GC root cannot be removed.
pub fn prune_installed(
    cache: &Cache,
    kind: Option<AgentKind>,
    policy: &PrunePolicy,
) -> Result<PruneReport, StoreError> {
    let report = cache.prune_kind(kind, policy)?;
    if !policy.dry_run {
        for e in &report.removed {
            remove_gc_roots(cache, e)?;
        }
    }
    Ok(report)
}

#[cfg(feature = "nix")]
fn remove_gc_roots(cache: &Cache, e: &CacheEntry) -> Result<(), StoreError> {
    agent_store_nix::NixStore::remove_gc_roots(cache.home(), &e.agent).map(drop)
}

/// Without the Nix store no pull made a GC root.
#[cfg(not(feature = "nix"))]
#[allow(clippy::unnecessary_wraps)]
fn remove_gc_roots(_cache: &Cache, _e: &CacheEntry) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agent_ref::AgentHome;
    use agent_store::ProbeStatus;

    use super::*;

    fn home_with(files: &[&str]) -> (tempfile::TempDir, AgentHome) {
        let t = tempfile::tempdir().unwrap();
        for f in files {
            let p = t.path().join("agents").join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f.as_bytes()).unwrap();
        }
        let h = AgentHome::new(t.path());
        (t, h)
    }

    #[cfg(feature = "nix")]
    #[test]
    fn removing_a_version_removes_its_nix_gc_root_only() {
        let (_t, home) = home_with(&["services/acme/echo__1.0.0", "services/acme/echo__2.0.0"]);
        let roots = home.root().join("nix-gcroots");
        std::fs::create_dir_all(&roots).unwrap();
        // GC roots are symlinks into /nix/store; dangling ones must go too.
        for v in ["1.0.0", "2.0.0"] {
            let link = roots.join(format!("service-runtime-acme-echo-{v}"));
            std::os::unix::fs::symlink("/nix/store/nothing-here", &link).unwrap();
        }
        let cache = Cache::new(home.clone());
        let removed = remove_installed(&cache, &"acme/echo:1.0.0".parse().unwrap()).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(std::fs::symlink_metadata(roots.join("service-runtime-acme-echo-1.0.0")).is_err());
        assert!(std::fs::symlink_metadata(roots.join("service-runtime-acme-echo-2.0.0")).is_ok());
        // Pruning keeps the highest version, and its root with it.
        let report = prune_installed(
            &cache,
            None,
            &PrunePolicy {
                keep: Some(1),
                ..PrunePolicy::default()
            },
        )
        .unwrap();
        assert!(report.removed.is_empty());
        assert!(std::fs::symlink_metadata(roots.join("service-runtime-acme-echo-2.0.0")).is_ok());
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn each_store_answers_for_itself() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = tempfile::tempdir().unwrap();
        let store = agent_store_http::HttpStore::new(format!("http://{dead}")).unwrap();
        let m = Manager::builder()
            .home(AgentHome::new(t.path()))
            .stores(vec![Arc::new(store)])
            .build()
            .unwrap();
        let answers = m.probe_stores().await;
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].store, "http");
        let p = &answers[0].probe;
        assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
        assert_eq!(p.kind, Some(agent_ref::ErrorKind::StoreUnavailable));
        assert!(p.detail.contains("unreachable"), "{p:?}");
        assert!(p.latency.is_some());
        assert!(m.check_home().problems.is_empty());
    }
}
