//! `ls`, `rm`, `prune`: presentation over [`agent_manager::store::Cache`],
//! which lists, removes and prunes under the installer's per-artifact lock.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_manager::reference::{AgentHome, AgentKind, AgentRef, VersionSpec};
use agent_manager::semver::Version;
use agent_manager::store::{Cache, CacheEntry, PrunePolicy};
use agent_manager::{ErrorKind, StoreAnswer};
use sha2::Digest as _;

use crate::report::Failure;

/// One installed binary, as `ls`, `rm` and `prune` print it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Entry {
    /// `service`, `application` or `module` (the cache directory it is in).
    pub(crate) kind: &'static str,
    /// `publisher/name:version`.
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    pub(crate) publisher: String,
    pub(crate) name: String,
    #[serde(serialize_with = "as_string")]
    pub(crate) version: Version,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// From the install record, or computed when there is none.
    pub(crate) sha256: String,
    /// From the install record; `local` when there is none (built or copied by hand).
    pub(crate) source: String,
    /// The store that delivered it, when recorded.
    pub(crate) store: Option<String>,
    /// The minisign key id that signed it; `None` = unsigned.
    pub(crate) signer: Option<String>,
    /// The signature's trusted comment.
    pub(crate) signed_as: Option<String>,
    /// When it was last loaded, in seconds since the epoch.
    pub(crate) last_used: u64,
    #[serde(skip)]
    agent: AgentRef,
}

impl Entry {
    /// `signer KEYID` or `unsigned`.
    pub(crate) fn signer_text(&self) -> String {
        self.signer
            .as_deref()
            .map_or_else(|| "unsigned".to_owned(), |k| format!("signed {k}"))
    }

    /// `3d ago`, `never`, …
    pub(crate) fn last_used_text(&self) -> String {
        let t = UNIX_EPOCH + Duration::from_secs(self.last_used);
        match SystemTime::now().duration_since(t) {
            Ok(d) if d < Duration::from_secs(60) => "just now".to_owned(),
            Ok(d) if d < Duration::from_secs(3600) => format!("{}m ago", d.as_secs() / 60),
            Ok(d) if d < Duration::from_secs(86400) => format!("{}h ago", d.as_secs() / 3600),
            Ok(d) => format!("{}d ago", d.as_secs() / 86400),
            Err(_) => "just now".to_owned(),
        }
    }
}

fn as_string<S: serde::Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn kind_name(dir: &str) -> &'static str {
    match dir {
        "applications" => "application",
        "modules" => "module",
        _ => "service",
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn to_entry(e: CacheEntry, with_sha: bool) -> Result<Entry, Failure> {
    let version = e
        .agent
        .concrete_version()
        .cloned()
        .unwrap_or_else(|| Version::new(0, 0, 0));
    let sha256 = match e.sha256 {
        Some(s) => s,
        None if with_sha => {
            sha256_file(&e.path).map_err(|err| Failure::io(e.path.display(), &err))?
        }
        None => String::new(),
    };
    Ok(Entry {
        kind: kind_name(e.agent.kind().cache_dir()),
        reference: e.agent.identifier(),
        publisher: e.agent.publisher().to_owned(),
        name: e.agent.name().to_owned(),
        version,
        path: e.path,
        size: e.size,
        sha256,
        source: e.source,
        store: e.store,
        signer: e.signer.as_ref().map(|s| s.key_id.clone()),
        signed_as: e.signer.map(|s| s.trusted_comment),
        last_used: secs(e.last_used),
        agent: e.agent,
    })
}

fn same_dir_agent(e: &AgentRef, only: &AgentRef) -> bool {
    e.kind().cache_dir() == only.kind().cache_dir()
        && e.publisher() == only.publisher()
        && e.name() == only.name()
}

/// Every installed binary, sorted by kind, publisher, name and version
/// (highest first). `kind` limits to one cache directory, `only` to one agent
/// (and its version spec, unless `latest`).
pub(crate) fn list(
    home: &AgentHome,
    kind: Option<AgentKind>,
    only: Option<&AgentRef>,
    with_sha: bool,
) -> Result<Vec<Entry>, Failure> {
    let kind_dir = only.map(AgentRef::kind).or(kind).map(AgentKind::cache_dir);
    let mut out = Vec::new();
    for e in Cache::new(home.clone()).list()? {
        if kind_dir.is_some_and(|k| k != e.agent.kind().cache_dir()) {
            continue;
        }
        if let Some(r) = only {
            if !same_dir_agent(&e.agent, r) {
                continue;
            }
            let matches = match (r.version_spec(), e.agent.concrete_version()) {
                (VersionSpec::Latest, _) => true,
                (spec, Some(v)) => spec.matches(v),
                (_, None) => false,
            };
            if !matches {
                continue;
            }
        }
        out.push(to_entry(e, with_sha)?);
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Removes the Nix GC root that kept a removed binary's store path alive (if
/// the Nix store installed it), so `nix-collect-garbage` can reclaim it.
fn remove_gc_roots(home: &AgentHome, entry: &Entry) -> Result<(), Failure> {
    for kind in AgentKind::ALL
        .into_iter()
        .filter(|k| k.cache_dir() == entry.agent.kind().cache_dir())
    {
        let agent = entry.agent.clone().with_kind(kind);
        let Ok(root) = agent_manager::stores::nix::NixStore::gc_root(home, &agent) else {
            continue;
        };
        if std::fs::symlink_metadata(&root).is_ok() {
            std::fs::remove_file(&root).map_err(|e| {
                Failure::io(format!("removing the Nix GC root {}", root.display()), &e)
            })?;
        }
    }
    Ok(())
}

/// `rm`: an exact version, every version matching a requirement, or with
/// `all` every version. A bare name without `all` is refused. Each removal
/// holds the artifact's install lock (it waits for a download in progress).
pub(crate) fn rm(home: &AgentHome, agent: &AgentRef, all: bool) -> Result<Vec<Entry>, Failure> {
    let latest = matches!(agent.version_spec(), VersionSpec::Latest);
    if all && !latest {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "--all removes every version; give the agent without a version ({}/{}), not {}",
                agent.publisher(),
                agent.name(),
                agent.identifier()
            ),
        ));
    }
    if latest && !all {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "say which version to remove: {p}/{n}:1.2.3, a requirement such as '{p}/{n}:^1', or --all",
                p = agent.publisher(),
                n = agent.name()
            ),
        ));
    }
    let targets = list(home, None, Some(agent), false)?;
    if targets.is_empty() {
        let answer = StoreAnswer {
            store: "local".to_owned(),
            answer: format!(
                "nothing installed matching {} in {}",
                agent.version_spec(),
                home.publisher_dir(agent).display()
            ),
        };
        return Err(Failure::new(
            ErrorKind::BinaryNotFound,
            format!("agent {} is not installed ({answer})", agent.identifier()),
        ));
    }
    let cache = Cache::new(home.clone());
    let mut removed = Vec::new();
    for t in targets {
        if cache.remove(&t.agent)?.is_some() {
            remove_gc_roots(home, &t)?;
            removed.push(t);
        }
    }
    Ok(removed)
}

/// `prune`: what `policy` says, limited to one kind directory when `kind`
/// is given; returns `(removed, kept)`.
pub(crate) fn prune(
    home: &AgentHome,
    kind: Option<AgentKind>,
    policy: &PrunePolicy,
) -> Result<(Vec<Entry>, Vec<Entry>), Failure> {
    let cache = Cache::new(home.clone());
    let report = match kind {
        None => cache.prune(policy)?,
        Some(k) => {
            // Decide on the whole cache, act on one kind directory.
            let mut plan = cache.prune(&PrunePolicy {
                dry_run: true,
                ..policy.clone()
            })?;
            let (mine, others): (Vec<_>, Vec<_>) = plan
                .removed
                .into_iter()
                .partition(|e| e.agent.kind().cache_dir() == k.cache_dir());
            plan.kept.extend(others);
            let mut removed = Vec::new();
            for e in mine {
                if policy.dry_run || cache.remove(&e.agent)?.is_some() {
                    removed.push(e);
                }
            }
            plan.removed = removed;
            plan.kept
                .retain(|e| e.agent.kind().cache_dir() == k.cache_dir());
            plan
        }
    };
    let removed = report
        .removed
        .into_iter()
        .map(|e| to_entry(e, false))
        .collect::<Result<Vec<_>, _>>()?;
    if !policy.dry_run {
        for e in &removed {
            remove_gc_roots(home, e)?;
        }
    }
    let mut kept = report
        .kept
        .into_iter()
        .map(|e| to_entry(e, false))
        .collect::<Result<Vec<_>, _>>()?;
    kept.sort_by(|a, b| {
        (a.kind, &a.publisher, &a.name)
            .cmp(&(b.kind, &b.publisher, &b.name))
            .then_with(|| b.version.cmp(&a.version))
    });
    Ok((removed, kept))
}

#[cfg(test)]
mod tests {
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

    fn refs(v: &[Entry]) -> Vec<String> {
        v.iter().map(|e| e.reference.clone()).collect()
    }

    fn keep(n: usize) -> PrunePolicy {
        PrunePolicy {
            keep: Some(n),
            ..PrunePolicy::default()
        }
    }

    #[test]
    fn list_reads_records_and_hashes_the_rest() {
        let (_t, home) = home_with(&[
            "services/acme/echo__1.0.0",
            "services/acme/echo__1.10.0",
            "services/acme/.echo__2.0.0.tmp.1.1",
            "modules/acme/mod__0.1.0",
        ]);
        let rec = home.agents_dir().join("services/acme/echo__1.10.0.json");
        std::fs::write(
            &rec,
            r#"{"sha256":"ab","size":3,"source":"oci:x","installed_at":1,"store":"oci","signer":{"key_id":"0123456789ABCDEF","trusted_comment":"codefly-agent acme/echo:1.10.0 linux/amd64"}}"#,
        )
        .unwrap();
        let all = list(&home, None, None, true).unwrap();
        assert_eq!(
            refs(&all),
            ["acme/mod:0.1.0", "acme/echo:1.10.0", "acme/echo:1.0.0"]
        );
        assert_eq!(all[1].sha256, "ab");
        assert_eq!(all[1].source, "oci:x");
        assert_eq!(all[1].signer.as_deref(), Some("0123456789ABCDEF"));
        assert_eq!(all[1].signer_text(), "signed 0123456789ABCDEF");
        assert_eq!(all[2].source, "local");
        assert_eq!(all[2].signer_text(), "unsigned");
        assert_eq!(all[2].sha256.len(), 64);
        assert_eq!(all[0].kind, "module");
        let only: AgentRef = "acme/echo:^1.5".parse().unwrap();
        assert_eq!(
            refs(&list(&home, None, Some(&only), false).unwrap()),
            ["acme/echo:1.10.0"]
        );
        let mods = list(&home, Some(AgentKind::Module), None, false).unwrap();
        assert_eq!(refs(&mods), ["acme/mod:0.1.0"]);
    }

    #[test]
    fn rm_exact_requirement_and_all() {
        let (_t, home) = home_with(&[
            "services/acme/echo__1.0.0",
            "services/acme/echo__1.1.0",
            "services/acme/echo__2.0.0",
            "services/acme/other__1.0.0",
        ]);
        std::fs::write(
            home.agents_dir().join("services/acme/echo__1.0.0.json"),
            r#"{"sha256":"ab","size":3,"source":"oci:x","installed_at":1}"#,
        )
        .unwrap();
        let r = |s: &str| -> AgentRef { s.parse().unwrap() };
        let gone = rm(&home, &r("acme/echo:1.0.0"), false).unwrap();
        assert_eq!(refs(&gone), ["acme/echo:1.0.0"]);
        let dir = home.agents_dir().join("services/acme");
        assert!(!dir.join("echo__1.0.0").exists());
        assert!(!dir.join("echo__1.0.0.json").exists());
        let e = rm(&home, &r("acme/echo:1.0.0"), false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BinaryNotFound);
        let e = rm(&home, &r("acme/echo"), false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRef);
        let e = rm(&home, &r("acme/echo:1.1.0"), true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRef);
        assert_eq!(
            refs(&rm(&home, &r("acme/echo:^1"), false).unwrap()),
            ["acme/echo:1.1.0"]
        );
        assert_eq!(
            refs(&rm(&home, &r("acme/echo"), true).unwrap()),
            ["acme/echo:2.0.0"]
        );
        assert!(dir.join("other__1.0.0").exists());
    }

    #[test]
    fn rm_removes_the_nix_gc_root_of_what_it_removes() {
        let (_t, home) = home_with(&["services/acme/echo__1.0.0", "services/acme/echo__2.0.0"]);
        let roots = home.root().join("nix-gcroots");
        std::fs::create_dir_all(&roots).unwrap();
        // GC roots are symlinks into /nix/store; dangling ones must go too.
        for v in ["1.0.0", "2.0.0"] {
            let link = roots.join(format!("service-runtime-acme-echo-{v}"));
            std::os::unix::fs::symlink("/nix/store/nothing-here", &link).unwrap();
        }
        rm(&home, &"acme/echo:1.0.0".parse().unwrap(), false).unwrap();
        assert!(std::fs::symlink_metadata(roots.join("service-runtime-acme-echo-1.0.0")).is_err());
        assert!(std::fs::symlink_metadata(roots.join("service-runtime-acme-echo-2.0.0")).is_ok());
    }

    #[test]
    fn prune_keeps_the_highest_per_agent() {
        let (_t, home) = home_with(&[
            "services/acme/echo__1.2.0",
            "services/acme/echo__1.10.0",
            "services/acme/echo__1.9.0",
            "services/other/echo__0.1.0",
            "applications/acme/app__3.0.0",
            "applications/acme/app__2.0.0",
        ]);
        let (removed, kept) = prune(&home, None, &keep(2)).unwrap();
        assert_eq!(refs(&removed), ["acme/echo:1.2.0"]);
        assert_eq!(kept.len(), 5);
        let (removed, _) = prune(&home, Some(AgentKind::Application), &keep(1)).unwrap();
        assert_eq!(refs(&removed), ["acme/app:2.0.0"]);
        let dir = home.agents_dir().join("services/acme");
        assert!(dir.join("echo__1.9.0").exists(), "--kind limits prune");
        let (removed, _) = prune(&home, None, &keep(1)).unwrap();
        assert_eq!(refs(&removed), ["acme/echo:1.9.0"]);
        assert!(dir.join("echo__1.10.0").exists());
        assert!(
            home.agents_dir()
                .join("services/other/echo__0.1.0")
                .exists()
        );
    }
}
