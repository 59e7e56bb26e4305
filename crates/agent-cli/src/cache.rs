//! `ls`, `rm`, `prune`: the installed agents of a home, read straight from disk.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use agent_manager::reference::{AgentHome, AgentKind, AgentRef, VersionSpec};
use agent_manager::semver::Version;
use agent_manager::{ErrorKind, StoreAnswer};
use sha2::Digest as _;

use crate::report::Failure;

/// One installed binary.
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
}

fn as_string<S: serde::Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The cache directories and the kind each stands for.
const KIND_DIRS: [(&str, &str); 3] = [
    ("services", "service"),
    ("applications", "application"),
    ("modules", "module"),
];

/// Every installed binary, sorted by kind, publisher, name and version
/// (highest first). `kind` limits to one cache directory, `only` to one agent
/// (and its version spec, unless `latest`).
pub(crate) fn list(
    home: &AgentHome,
    kind: Option<AgentKind>,
    only: Option<&AgentRef>,
    with_sha: bool,
) -> Result<Vec<Entry>, Failure> {
    let mut out = Vec::new();
    let kind_dir = only.map(AgentRef::kind).or(kind).map(AgentKind::cache_dir);
    for (dir, kind_name) in KIND_DIRS {
        if kind_dir.is_some_and(|k| k != dir) {
            continue;
        }
        let root = home.agents_dir().join(dir);
        for publisher in read_dir_names(&root)? {
            if only.is_some_and(|r| r.publisher() != publisher) {
                continue;
            }
            let pdir = root.join(&publisher);
            if !is_plain_dir(&pdir) {
                continue;
            }
            for file in read_dir_names(&pdir)? {
                let Some((name, version)) = parse_binary_name(&file) else {
                    continue;
                };
                if let Some(r) = only {
                    if r.name() != name {
                        continue;
                    }
                    if !matches!(r.version_spec(), VersionSpec::Latest)
                        && !r.version_spec().matches(&version)
                    {
                        continue;
                    }
                }
                let path = pdir.join(&file);
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let record = read_record(&pdir.join(format!("{file}.json")));
                let (sha256, source) = match record {
                    Some((sha, source)) => (sha, source),
                    None if with_sha => (
                        sha256_file(&path).map_err(|e| Failure::io(path.display(), &e))?,
                        "local".to_owned(),
                    ),
                    None => (String::new(), "local".to_owned()),
                };
                out.push(Entry {
                    kind: kind_name,
                    reference: format!("{publisher}/{name}:{version}"),
                    publisher: publisher.clone(),
                    name: name.to_owned(),
                    version,
                    path,
                    size: meta.len(),
                    sha256,
                    source,
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (a.kind, &a.publisher, &a.name)
            .cmp(&(b.kind, &b.publisher, &b.name))
            .then_with(|| b.version.cmp(&a.version))
    });
    Ok(out)
}

/// `{name}__{version}` with a strict semver version (no temp, lock or record files).
fn parse_binary_name(file: &str) -> Option<(&str, Version)> {
    if file.starts_with('.') {
        return None;
    }
    let (name, version) = file.rsplit_once("__")?;
    let v = Version::parse(version).ok()?;
    (v.build.is_empty() && !name.is_empty()).then_some((name, v))
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, Failure> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Failure::io(format!("reading {}", dir.display()), &e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

fn is_plain_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// `(sha256, source)` from an install record, if it is readable.
fn read_record(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let sha = v.get("sha256")?.as_str()?.to_owned();
    let source = v
        .get("source")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    Some((sha, source))
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

/// Removes one installed binary, its install record, and the Nix GC root that
/// kept its store path alive (if the Nix store installed it), so `nix-collect-garbage`
/// can reclaim it.
fn remove(home: &AgentHome, entry: &Entry) -> Result<(), Failure> {
    for kind in AgentKind::ALL
        .into_iter()
        .filter(|k| k.cache_dir() == format!("{}s", entry.kind))
    {
        let Ok(agent) = AgentRef::new(
            kind,
            &entry.publisher,
            &entry.name,
            &entry.version.to_string(),
        ) else {
            continue;
        };
        let Ok(root) = agent_manager::stores::nix::NixStore::gc_root(home, &agent) else {
            continue;
        };
        if std::fs::symlink_metadata(&root).is_ok() {
            std::fs::remove_file(&root).map_err(|e| {
                Failure::io(format!("removing the Nix GC root {}", root.display()), &e)
            })?;
        }
    }
    std::fs::remove_file(&entry.path)
        .map_err(|e| Failure::io(format!("removing {}", entry.path.display()), &e))?;
    let mut record = entry.path.clone().into_os_string();
    record.push(".json");
    match std::fs::remove_file(&record) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::io(
            format!("removing {}", PathBuf::from(record).display()),
            &e,
        )),
    }
}

/// `rm`: an exact version, every version matching a requirement, or with
/// `all` every version. A bare name without `all` is refused.
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
    for t in &targets {
        remove(home, t)?;
    }
    Ok(targets)
}

/// `prune`: keeps the `keep` highest versions of every agent; returns `(removed, kept)`.
pub(crate) fn prune(
    home: &AgentHome,
    kind: Option<AgentKind>,
    keep: usize,
) -> Result<(Vec<Entry>, Vec<Entry>), Failure> {
    let all = list(home, kind, None, false)?;
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    let mut current: Option<(&'static str, String, String)> = None;
    let mut seen = 0usize;
    // `list` sorts each agent's versions highest first.
    for e in all {
        let key = (e.kind, e.publisher.clone(), e.name.clone());
        if current.as_ref() != Some(&key) {
            current = Some(key);
            seen = 0;
        }
        seen += 1;
        if seen > keep {
            remove(home, &e)?;
            removed.push(e);
        } else {
            kept.push(e);
        }
    }
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

    #[test]
    fn names_are_strict() {
        assert!(parse_binary_name("echo__1.2.3").is_some());
        assert_eq!(parse_binary_name("go__grpc__1.0.0").unwrap().0, "go__grpc");
        for bad in [
            "echo__1.2.3.json",
            "echo__1.2.3.lock",
            ".echo__1.2.3.tmp.1.2",
            "echo__v1.2.3",
            "echo__1.2",
            "echo",
            "__1.0.0",
            "echo__1.0.0+build",
        ] {
            assert!(parse_binary_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn list_reads_records_and_hashes_the_rest() {
        let (_t, home) = home_with(&[
            "services/acme/echo__1.0.0",
            "services/acme/echo__1.10.0",
            "services/acme/echo__1.10.0.json",
            "services/acme/.echo__2.0.0.tmp.1.1",
            "modules/acme/mod__0.1.0",
        ]);
        let rec = home.agents_dir().join("services/acme/echo__1.10.0.json");
        std::fs::write(
            &rec,
            r#"{"sha256":"ab","size":3,"source":"oci:x","installed_at":1}"#,
        )
        .unwrap();
        let all = list(&home, None, None, true).unwrap();
        assert_eq!(
            refs(&all),
            ["acme/mod:0.1.0", "acme/echo:1.10.0", "acme/echo:1.0.0"]
        );
        assert_eq!(all[1].sha256, "ab");
        assert_eq!(all[1].source, "oci:x");
        assert_eq!(all[2].source, "local");
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
            "services/acme/echo__1.0.0.json",
            "services/acme/echo__1.1.0",
            "services/acme/echo__2.0.0",
            "services/acme/other__1.0.0",
        ]);
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
            "services/acme/echo__1.9.0.json",
            "services/other/echo__0.1.0",
            "applications/acme/app__3.0.0",
            "applications/acme/app__2.0.0",
        ]);
        let (removed, kept) = prune(&home, None, 2).unwrap();
        assert_eq!(refs(&removed), ["acme/echo:1.2.0"]);
        assert_eq!(kept.len(), 5);
        let (removed, _) = prune(&home, None, 1).unwrap();
        assert_eq!(refs(&removed), ["acme/app:2.0.0", "acme/echo:1.9.0"]);
        let dir = home.agents_dir().join("services/acme");
        assert!(dir.join("echo__1.10.0").exists());
        assert!(!dir.join("echo__1.9.0.json").exists());
        assert!(
            home.agents_dir()
                .join("services/other/echo__0.1.0")
                .exists()
        );
    }
}
