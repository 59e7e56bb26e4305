//! Finding a cached binary: its record, the checks that need no hash (the
//! fingerprint), the full lookup, and the adoption of a binary that has no
//! record.

use super::*;

/// The binary at a cache path, opened, with what needs no hash checked.
#[allow(clippy::large_enum_variant)] // as `Fingerprint`
enum Probe {
    /// No binary, or a cache directory on the way is missing.
    Missing,
    /// A binary without a readable record.
    Unrecorded { path: PathBuf },
    /// A binary and its record.
    Recorded {
        path: PathBuf,
        file: fs::File,
        identity: FileIdentity,
        rec: InstallRecord,
        rec_file: fs::File,
        /// When the record was last marked used.
        rec_marked: std::time::SystemTime,
    },
}

impl Installer {
    /// The path of the install record of `agent` (concrete version):
    /// `{name}__{version}.json` beside the binary.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref.
    pub fn record_path(&self, agent: &AgentRef) -> Result<PathBuf, StoreError> {
        Ok(sibling(&self.home.binary_path(agent)?, "", ".json"))
    }

    /// The install record of `agent` (concrete version), if there is a readable one.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref, [`StoreError::Io`] on read errors.
    pub fn record(&self, agent: &AgentRef) -> Result<Option<InstallRecord>, StoreError> {
        read_record(&self.record_path(agent)?)
    }

    /// The cached artifact for `agent` (concrete version), if one is installed.
    ///
    /// Cheap when the binary's identity (device, inode, size, mtime, ctime;
    /// one `stat`) equals its record's: otherwise the binary is hashed
    /// against the record, and a mismatch is treated as not installed (it
    /// was changed behind our back; the caller fetches it again); a match
    /// updates the recorded identity. A binary without a record (installed
    /// by the Go loader, or by hand) is hashed once and recorded with source
    /// `local`. This is blocking file I/O.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref; [`StoreError::Untrusted`]
    /// when the home, a cache directory or the binary is writable by group
    /// or others or owned by another user (root excepted), or when something
    /// other than a small regular file sits at the record's path;
    /// [`StoreError::Io`] on read errors, for a symlink inside the home, or
    /// when something other than a regular file sits at the cache path.
    pub fn cached(&self, agent: &AgentRef) -> Result<Option<Installed>, StoreError> {
        self.cached_as(agent, false)
    }

    /// [`Installer::cached`], by a caller that may already hold the artifact's lock.
    fn cached_as(
        &self,
        agent: &AgentRef,
        lock_held: bool,
    ) -> Result<Option<Installed>, StoreError> {
        Ok(self
            .lookup(agent, false, lock_held)?
            .map(|(path, rec)| Installed {
                path,
                sha256: rec.sha256,
                size: rec.size,
                source: rec.source,
            }))
    }

    /// The cached binary's path, checked as [`Installer::cached`] checks it:
    /// the hot path of every load (a `stat` of each directory, of the binary
    /// and of its record, no hashing unless the identity changed). Marks the
    /// artifact as used (one `futimens` of its record, unless its mark is
    /// under a minute old) for `Cache::prune`.
    ///
    /// # Errors
    /// As [`Installer::cached`].
    pub fn cached_path(&self, agent: &AgentRef) -> Result<Option<PathBuf>, StoreError> {
        Ok(self.lookup(agent, true, false)?.map(|(path, _)| path))
    }

    /// [`Installer::lookup_file`], then, for a kind that loads only behind a
    /// verified-artifact descriptor (provider, solution), the descriptor
    /// check of the cached binary: however it got into the cache (a Nix
    /// install, the Go loader, by hand), it is returned only when its
    /// descriptor vouches for it, else the lookup is `untrusted`.
    fn lookup(&self, agent: &AgentRef, touch: bool, lock_held: bool) -> Result<Lookup, StoreError> {
        let found = self.lookup_file(agent, touch, lock_held)?;
        if let Some((path, _)) = &found
            && agent.kind().needs_descriptor()
        {
            crate::descriptor::verify(path, agent).map_err(|e| StoreError::Untrusted {
                path_or_artifact: path.display().to_string(),
                reason: agent_ref::error_chain(&e).to_string(),
                fix: format!(
                    "install {agent} with its provider.artifact.json and provider.codefly.yaml (a Nix install copies them beside the binary), or remove {}",
                    path.display()
                ),
            })?;
        }
        Ok(found)
    }

    /// The fingerprint check of a load, done in place (a few system calls,
    /// no hashing, no thread hand-off): the cache directories and the
    /// binary pass the ownership and mode checks of [`Installer::cached`],
    /// the binary is opened and its identity (device, inode, size, mtime,
    /// ctime; one `fstat` of the opened descriptor) compared with its
    /// record's (one small read). On [`Fingerprint::Match`] the descriptor
    /// returned is the file whose identity matched: execute it, not the
    /// path. Marks the artifact as used (one `futimens` of its record, left
    /// out when the mark is under a minute old), as [`Installer::cached_path`]
    /// does.
    ///
    /// Nothing is hashed here: a binary whose identity differs from its
    /// record, a binary without a record, an installer that verifies always
    /// ([`VerifyMode::Always`]) and a kind that loads only behind its
    /// descriptor (provider, solution) give [`Fingerprint::NeedsHash`], and
    /// the caller then runs [`Installer::cached_path`] (blocking; it hashes).
    ///
    /// # Errors
    /// As [`Installer::cached`].
    pub fn cached_path_fingerprint(&self, agent: &AgentRef) -> Result<Fingerprint, StoreError> {
        self.fingerprint(agent, true)
    }

    pub(super) fn fingerprint(
        &self,
        agent: &AgentRef,
        touch: bool,
    ) -> Result<Fingerprint, StoreError> {
        if self.verify == VerifyMode::Always || agent.kind().needs_descriptor() {
            self.home.binary_path(agent)?;
            return Ok(Fingerprint::NeedsHash);
        }
        let (path, file, identity, rec, rec_file, rec_marked) = match self.probe(agent)? {
            Probe::Missing => return Ok(Fingerprint::Missing),
            Probe::Unrecorded { .. } => return Ok(Fingerprint::NeedsHash),
            Probe::Recorded {
                path,
                file,
                identity,
                rec,
                rec_file,
                rec_marked,
            } => (path, file, identity, rec, rec_file, rec_marked),
        };
        if rec.identity != Some(identity) {
            return Ok(Fingerprint::NeedsHash);
        }
        if !self.admitted(agent, &path, &rec) {
            return Ok(Fingerprint::Missing);
        }
        if touch && let Err(e) = mark_used(&rec_file, rec_marked) {
            tracing::debug!(path = %path.display(), error = %e, "could not mark the install record used");
        }
        Ok(Fingerprint::Match(CachedBinary {
            path,
            file,
            record: rec,
        }))
    }

    /// What sits at the cache path of `agent`, opened and checked for what
    /// needs no hash: the directories on the way, the binary (opened without
    /// following a symlink, a regular file, ours) and its record.
    fn probe(&self, agent: &AgentRef) -> Result<Probe, StoreError> {
        let path = self.home.binary_path(agent)?;
        if !check_parents(self.home.root(), &path, false)? {
            return Ok(Probe::Missing);
        }
        // Non-blocking: a FIFO planted at the path must not hang the load.
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(symlink_refused(&path)),
            Err(e) => return Err(StoreError::io(format!("open {}", path.display()), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?;
        if !meta.is_file() {
            return Err(StoreError::io(
                format!("cache path {}", path.display()),
                io::Error::other("is not a regular file"),
            ));
        }
        check_trusted(&path, &meta, "cached binary")?;
        Ok(match open_record_marked(&sibling(&path, "", ".json"))? {
            None => Probe::Unrecorded { path },
            Some((rec, rec_file, rec_marked)) => Probe::Recorded {
                path,
                file,
                identity: FileIdentity::of(&meta),
                rec,
                rec_file,
                rec_marked,
            },
        })
    }

    fn lookup_file(
        &self,
        agent: &AgentRef,
        touch: bool,
        lock_held: bool,
    ) -> Result<Lookup, StoreError> {
        let (path, seen, mut rec, file, marked) = match self.probe(agent)? {
            Probe::Missing => return Ok(None),
            Probe::Unrecorded { path } => {
                return Ok(self
                    .adopt(&path, lock_held)?
                    .filter(|(p, rec)| self.admitted(agent, p, rec)));
            }
            Probe::Recorded {
                path,
                identity,
                rec,
                rec_file,
                rec_marked,
                ..
            } => (path, identity, rec, rec_file, rec_marked),
        };
        if self.verify == VerifyMode::Always || rec.identity != Some(seen) {
            let (digest, size, hashed) = hash_file_identity(&path)?;
            if digest.to_hex() != rec.sha256 || size != rec.size {
                tracing::warn!(
                    path = %path.display(),
                    recorded_sha256 = %rec.sha256,
                    recorded_size = rec.size,
                    actual_sha256 = %digest,
                    actual_size = size,
                    "cached binary does not match its install record; treating it as not installed"
                );
                return Ok(None);
            }
            if hashed != seen {
                tracing::warn!(path = %path.display(), "cached binary changed while it was checked; treating it as not installed");
                return Ok(None);
            }
            if rec.identity != Some(hashed) {
                tracing::debug!(path = %path.display(), "cached binary verified by hash; recording its identity");
                rec.identity = Some(hashed);
                if let Err(e) = write_record(&path, &rec) {
                    tracing::warn!(path = %path.display(), error = %e, "could not update the install record");
                }
                if !self.admitted(agent, &path, &rec) {
                    return Ok(None);
                }
                return Ok(Some((path, rec)));
            }
        }
        if !self.admitted(agent, &path, &rec) {
            return Ok(None);
        }
        if touch && let Err(e) = mark_used(&file, marked) {
            tracing::debug!(path = %path.display(), error = %e, "could not mark the install record used");
        }
        Ok(Some((path, rec)))
    }

    /// Whether the current trust policy admits a cached binary's recorded signer.
    fn admitted(&self, agent: &AgentRef, path: &Path, rec: &InstallRecord) -> bool {
        if rec.signer.is_none()
            && rec
                .store
                .as_deref()
                .is_some_and(|s| self.trust.store_vouches(s, agent.publisher()))
        {
            return true;
        }
        match self
            .trust
            .for_publisher(agent.publisher())
            .admits(rec.signer.as_ref())
        {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(
                    agent = %agent,
                    path = %path.display(),
                    reason,
                    "the trust policy no longer admits the cached binary; treating it as not installed"
                );
                false
            }
        }
    }

    pub(super) async fn cached_blocking(
        &self,
        agent: &AgentRef,
    ) -> Result<Option<Installed>, StoreError> {
        self.cached_blocking_as(agent, false).await
    }

    pub(super) async fn cached_blocking_as(
        &self,
        agent: &AgentRef,
        lock_held: bool,
    ) -> Result<Option<Installed>, StoreError> {
        let this = self.clone();
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || this.cached_as(&agent, lock_held))
            .await
            .map_err(join_error)?
    }

    /// A binary with no record (the Go loader's, or copied by hand): hashed
    /// once and recorded with source `local`, under the artifact's lock so
    /// an install in progress is never adopted half-way. When another
    /// process holds the lock (installing, or adopting the same binary),
    /// this waits for it as an install would ([`LockTimeouts`]) and then
    /// uses what it recorded.
    fn adopt(&self, path: &Path, lock_held: bool) -> Result<Lookup, StoreError> {
        let lock_path = sibling(path, "", ".lock");
        let lock = if lock_held {
            None
        } else {
            match lock::try_acquire(&lock_path)? {
                Some(l) => Some(l),
                None => Some(lock::acquire(
                    self.home.root(),
                    &lock_path,
                    path,
                    self.lock,
                )?),
            }
        };
        adopt_locked(path, lock)
    }
}

/// [`Installer::adopt`] once the artifact's lock is held (`lock`, or by the caller).
fn adopt_locked(path: &Path, lock: Option<std::fs::File>) -> Result<Lookup, StoreError> {
    let record_path = sibling(path, "", ".json");
    if let Some((rec, _)) = open_record(&record_path)? {
        // Installed or adopted while we looked: that record wins.
        drop(lock);
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("stat {}", path.display()), e)),
        };
        return Ok(if rec.identity == Some(FileIdentity::of(&meta)) {
            Some((path.to_path_buf(), rec))
        } else {
            None
        });
    }
    let (digest, size, identity) = hash_file_identity(path)?;
    let rec = InstallRecord {
        sha256: digest.to_hex(),
        size,
        source: "local".to_owned(),
        installed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        identity: Some(identity),
        store: Some("local".to_owned()),
        signer: None,
    };
    if let Err(e) = write_record(path, &rec) {
        tracing::warn!(path = %path.display(), error = %agent_ref::error_chain(&e), "could not record an unrecorded binary");
    } else {
        tracing::info!(path = %path.display(), sha256 = %rec.sha256, "recorded a binary installed without a record");
    }
    drop(lock);
    Ok(Some((path.to_path_buf(), rec)))
}
