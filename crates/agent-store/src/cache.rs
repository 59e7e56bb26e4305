//! The cache as a library: list, remove and prune installed agents under the
//! same per-artifact lock the [`Installer`] takes, so a removal never races a
//! download, and the last-used mark that pruning by age and size reads.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use agent_ref::semver::Version;
use agent_ref::{AgentHome, AgentKind, AgentRef};

use crate::install::{acquire_lock, open_install_record, touch_file, try_lock};
use crate::{Installer, LockTimeouts, Signer, StoreError};

/// One installed binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The agent, with its concrete version (kind `service` for everything in
    /// `services/`, whose sub-kinds share the directory).
    pub agent: AgentRef,
    /// The binary's path.
    pub path: PathBuf,
    /// Its size in bytes (as on disk).
    pub size: u64,
    /// Its sha256 from the install record; `None` without a (readable) record.
    pub sha256: Option<String>,
    /// Where it came from (`oci:…`, `http:…`, `local`); `local` without a record.
    pub source: String,
    /// The store that delivered it, when recorded.
    pub store: Option<String>,
    /// Who signed it; `None` = unsigned (or no record).
    pub signer: Option<Signer>,
    /// When it was installed (from the record; else the binary's mtime).
    pub installed_at: SystemTime,
    /// When it was last loaded, to the minute (the record's mtime, which a
    /// load leaves as it is when it is under a minute old; else the
    /// binary's mtime).
    pub last_used: SystemTime,
}

/// What [`Cache::remove`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The entry as it was.
    pub entry: CacheEntry,
    /// Every file removed (binary, record).
    pub files: Vec<PathBuf>,
}

/// What [`Cache::prune`] removes. An entry goes when it is beyond the `keep`
/// highest versions of its agent, or unused for longer than `unused_for`;
/// then, while the rest is larger than `max_size`, the least recently used
/// goes first. `None` everywhere removes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Keep at most this many versions of each agent (the highest).
    pub keep: Option<usize>,
    /// Remove what was not loaded for this long.
    pub unused_for: Option<Duration>,
    /// Keep the whole cache under this many bytes.
    pub max_size: Option<u64>,
    /// Report what would go, remove nothing.
    pub dry_run: bool,
}

/// What [`Cache::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Removed (or, with `dry_run`, to be removed).
    pub removed: Vec<CacheEntry>,
    /// Kept, including entries skipped because an install held their lock.
    pub kept: Vec<CacheEntry>,
}

impl PruneReport {
    /// Bytes freed (or to be freed).
    #[must_use]
    pub fn freed(&self) -> u64 {
        self.removed.iter().map(|e| e.size).sum()
    }
}

/// The installed agents of a home.
#[derive(Debug, Clone)]
pub struct Cache {
    home: AgentHome,
    lock: LockTimeouts,
}

/// One cache directory per kind that loads (aliases share their kind's directory).
fn kind_dirs() -> impl Iterator<Item = (&'static str, AgentKind)> {
    AgentKind::ALL
        .into_iter()
        .filter(|k| k.canonical() == *k && k.loads())
        .map(|k| (k.cache_dir(), k))
}

impl Cache {
    /// The cache of `home`.
    #[must_use]
    pub fn new(home: AgentHome) -> Self {
        Cache {
            home,
            lock: LockTimeouts::default(),
        }
    }

    /// The cache an installer writes, with its lock timeouts.
    #[must_use]
    pub fn of(installer: &Installer) -> Self {
        Cache {
            home: installer.home().clone(),
            lock: installer.lock_timeouts(),
        }
    }

    /// How long [`Cache::remove`] waits for an install holding the lock.
    #[must_use]
    pub fn with_lock_timeouts(mut self, lock: LockTimeouts) -> Self {
        self.lock = lock;
        self
    }

    /// The home.
    #[must_use]
    pub fn home(&self) -> &AgentHome {
        &self.home
    }

    /// Every installed binary, sorted by kind directory, publisher, name and
    /// version (highest first). Only regular files named
    /// `{name}__{MAJOR.MINOR.PATCH[-PRE]}` count; temp, lock and record files,
    /// symlinks and directories are skipped. Blocking file I/O.
    ///
    /// # Errors
    /// [`StoreError::Io`] when a cache directory cannot be read.
    pub fn list(&self) -> Result<Vec<CacheEntry>, StoreError> {
        let mut out = Vec::new();
        for (dir, kind) in kind_dirs() {
            let root = self.home.agents_dir().join(dir);
            for publisher in dir_names(&root)? {
                let pdir = root.join(&publisher);
                if !fs::symlink_metadata(&pdir).is_ok_and(|m| m.is_dir()) {
                    continue;
                }
                for file in dir_names(&pdir)? {
                    let Some((name, version)) = parse_binary_name(&file) else {
                        continue;
                    };
                    let Ok(agent) = AgentRef::new(kind, &publisher, name, &version.to_string())
                    else {
                        continue;
                    };
                    if let Some(e) = entry(&pdir.join(&file), agent) {
                        out.push(e);
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            let key = |e: &CacheEntry| {
                (
                    e.agent.kind().cache_dir(),
                    e.agent.publisher().to_owned(),
                    e.agent.name().to_owned(),
                )
            };
            key(a)
                .cmp(&key(b))
                .then_with(|| version(b).cmp(&version(a)))
        });
        Ok(out)
    }

    /// The entry of `agent` (concrete version), if installed.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref.
    pub fn get(&self, agent: &AgentRef) -> Result<Option<CacheEntry>, StoreError> {
        let path = self.home.binary_path(agent)?;
        Ok(entry(&path, agent.clone()))
    }

    /// Removes `agent` (concrete version): its binary and its record, holding
    /// the artifact's install lock, so it waits for an install in progress
    /// (and gives up with [`StoreError::LockTimeout`] after the lock wait).
    /// `None` when it was not installed. Blocking.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref, [`StoreError::LockTimeout`],
    /// [`StoreError::Io`] when a file cannot be removed.
    pub fn remove(&self, agent: &AgentRef) -> Result<Option<Removed>, StoreError> {
        let path = self.home.binary_path(agent)?;
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Ok(None);
        }
        let lock = acquire_lock(
            self.home.root(),
            &with_suffix(&path, ".lock"),
            &path,
            self.lock,
        )?;
        let removed = remove_locked(&path, agent.clone());
        drop(lock);
        removed
    }

    /// Removes what `policy` says (see [`PrunePolicy`]). An entry whose lock
    /// an install holds right now is kept, not waited for. Blocking.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the cache cannot be read or a file cannot be removed.
    pub fn prune(&self, policy: &PrunePolicy) -> Result<PruneReport, StoreError> {
        let all = self.list()?;
        let now = SystemTime::now();
        let mut doomed = vec![false; all.len()];
        let mut seen: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        for (i, e) in all.iter().enumerate() {
            let n = seen
                .entry((
                    e.agent.kind().cache_dir(),
                    e.agent.publisher(),
                    e.agent.name(),
                ))
                .or_default();
            *n += 1;
            if policy.keep.is_some_and(|k| *n > k) {
                doomed[i] = true;
            }
            if let Some(d) = policy.unused_for
                && now.duration_since(e.last_used).is_ok_and(|age| age > d)
            {
                doomed[i] = true;
            }
        }
        if let Some(max) = policy.max_size {
            let mut total: u64 = all
                .iter()
                .zip(&doomed)
                .filter(|(_, d)| !**d)
                .map(|(e, _)| e.size)
                .sum();
            let mut lru: Vec<usize> = (0..all.len()).filter(|&i| !doomed[i]).collect();
            lru.sort_by_key(|&i| all[i].last_used);
            for i in lru {
                if total <= max {
                    break;
                }
                doomed[i] = true;
                total -= all[i].size;
            }
        }
        let mut report = PruneReport::default();
        for (e, d) in all.into_iter().zip(doomed) {
            if !d {
                report.kept.push(e);
                continue;
            }
            if policy.dry_run {
                report.removed.push(e);
                continue;
            }
            let Some(lock) = try_lock(&with_suffix(&e.path, ".lock"))? else {
                tracing::info!(agent = %e.agent, "an install holds its lock; kept");
                report.kept.push(e);
                continue;
            };
            let r = remove_locked(&e.path, e.agent.clone());
            drop(lock);
            if r?.is_some() {
                report.removed.push(e);
            }
        }
        Ok(report)
    }

    /// Marks `agent` (concrete version) as used now: one `futimens` of its
    /// install record, never a rewrite of the binary.
    /// [`Installer::cached_path`] does this on every load whose mark is a
    /// minute old or more.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref, [`StoreError::Untrusted`]
    /// for something other than a record at the record's path, [`StoreError::Io`].
    pub fn touch_last_used(&self, agent: &AgentRef) -> Result<(), StoreError> {
        let path = with_suffix(&self.home.binary_path(agent)?, ".json");
        if let Some((_, file)) = open_install_record(&path)? {
            touch_file(&file)
                .map_err(|e| StoreError::io(format!("touch {}", path.display()), e))?;
        }
        Ok(())
    }
}

fn version(e: &CacheEntry) -> Option<&Version> {
    e.agent.concrete_version()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn entry(path: &Path, agent: AgentRef) -> Option<CacheEntry> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let record_path = with_suffix(path, ".json");
    let record = match open_install_record(&record_path) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %record_path.display(), error = %agent_ref::error_chain(&e), "ignoring the install record");
            None
        }
    };
    Some(match record {
        Some((rec, file)) => {
            let used = file.metadata().and_then(|m| m.modified()).unwrap_or(mtime);
            CacheEntry {
                agent,
                path: path.to_path_buf(),
                size: meta.len(),
                sha256: Some(rec.sha256),
                source: rec.source,
                store: rec.store,
                signer: rec.signer,
                installed_at: SystemTime::UNIX_EPOCH + Duration::from_secs(rec.installed_at),
                last_used: used,
            }
        }
        None => CacheEntry {
            agent,
            path: path.to_path_buf(),
            size: meta.len(),
            sha256: None,
            source: "local".to_owned(),
            store: None,
            signer: None,
            installed_at: mtime,
            last_used: mtime,
        },
    })
}

fn remove_locked(path: &Path, agent: AgentRef) -> Result<Option<Removed>, StoreError> {
    let Some(e) = entry(path, agent) else {
        return Ok(None);
    };
    let mut files = Vec::new();
    for p in [path.to_path_buf(), with_suffix(path, ".json")] {
        match fs::remove_file(&p) {
            Ok(()) => files.push(p),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(StoreError::io(format!("remove {}", p.display()), err)),
        }
    }
    tracing::info!(agent = %e.agent, path = %path.display(), "removed from the cache");
    Ok(Some(Removed { entry: e, files }))
}

fn dir_names(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(format!("read {}", dir.display()), e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// `{name}__{version}` with a strict semver version (no temp, lock or record files).
fn parse_binary_name(file: &str) -> Option<(&str, Version)> {
    if file.starts_with('.') {
        return None;
    }
    let (name, version) = file.rsplit_once("__")?;
    if version
        .rsplit('.')
        .next()
        .is_some_and(|s| ["json", "lock", "tmp", "sha256", "minisig"].contains(&s))
    {
        return None;
    }
    let v = Version::parse(version).ok()?;
    (v.build.is_empty() && !name.is_empty()).then_some((name, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_strict() {
        assert!(parse_binary_name("echo__1.2.3").is_some());
        assert_eq!(parse_binary_name("go__grpc__1.0.0").unwrap().0, "go__grpc");
        for bad in [
            "echo__1.2.3.json",
            "echo__1.2.3.lock",
            "echo__1.0.0-rc.1.json",
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
}
