//! The installer: the only path by which bytes become a cached binary.
//!
//! Split by concern: [`flight`] (in-process single flight), [`lock`] (the
//! cross-process lock file), [`path`] (path safety, temp files, fsync),
//! [`stream`] (hash while writing), [`record`] (the install record),
//! [`stale`] (cleanup of temp files left behind).

mod flight;
mod lock;
mod path;
mod record;
mod stale;
mod stream;

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncRead;

use agent_ref::{AgentHome, AgentRef, Platform};

use crate::trust::{SigCheck, TrustPolicy};
use crate::{Sha256Digest, StoreError};

use flight::flight_for;
pub use lock::LockTimeouts;
pub(crate) use lock::{acquire as acquire_lock, try_acquire as try_lock};
pub use path::check_trust_file;
pub(crate) use path::touch_now as touch_file;
pub(crate) use path::{Exposure, exposures, hash_file_identity};
use path::{
    TempGuard, check_parents, check_trusted, create_temp, prepare_dir, refuse_symlink_at, sibling,
    symlink_refused, sync_dir, touch_now,
};
pub(crate) use record::open_record as open_install_record;
pub use record::{FileIdentity, InstallRecord, Signer};
use record::{commit_record_temp, open_record, read_record, write_record, write_record_temp};
use stale::clean_stale_temps;
pub(crate) use stale::{is_temp_name, untouched_too_long};
use stream::{StreamError, stream_to_file};

/// The default cap on the bytes of one artifact: 4 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// What the installer must check the bytes against.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The published digest; a mismatch is [`StoreError::Integrity`].
    pub sha256: Option<Sha256Digest>,
    /// The published size; a mismatch is [`StoreError::Integrity`].
    pub size: Option<u64>,
    /// A hard cap on bytes written, whatever the store claims (default: 4 GiB).
    pub max_size: Option<u64>,
    /// The text of the artifact's `.minisig`, fetched by the store (`None`:
    /// the store has none). Checked against [`Installer::with_trust`].
    pub signature: Option<String>,
    /// The platform the artifact is for (its signature's trusted comment
    /// names it); `None` = [`Platform::current`].
    pub platform: Option<Platform>,
    /// A signature the store already verified over the artifact these bytes
    /// were extracted from (with [`crate::trust::verify_detached`]; GitHub's
    /// tarball signature). Used only when `signature` is `None`: the record
    /// keeps it, and it satisfies a publisher's require-signature if the
    /// policy admits its key.
    pub verified_signer: Option<Signer>,
}

/// An artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    /// The binary's absolute path in the cache.
    pub path: PathBuf,
    /// Its sha256, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it came from (`oci:…`, `http:…`, `nix:…`, `github:…`, `local`).
    pub source: String,
}

/// What sits at a cache path: a binary and its (checked) record, or nothing usable.
type Lookup = Option<(PathBuf, InstallRecord)>;

/// What the fingerprint check of a load found at a cache path
/// ([`Installer::cached_path_fingerprint`]).
#[derive(Debug)]
// Returned once per load and matched at once: a box would be one more
// allocation on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum Fingerprint {
    /// The binary's identity equals its record's and the trust policy
    /// admits it: run the descriptor it holds.
    Match(CachedBinary),
    /// Nothing usable: no binary (or a cache directory on the way is
    /// missing), or one whose recorded signer the trust policy no longer
    /// admits. Fetch it.
    Missing,
    /// A binary is there, but only a hash can vouch for it: hash it with
    /// [`Installer::cached_path`].
    NeedsHash,
}

/// A cached binary that passed the fingerprint check, held open.
#[derive(Debug)]
pub struct CachedBinary {
    /// The binary's absolute path in the cache.
    pub path: PathBuf,
    /// The binary, opened read-only and close-on-exec before its identity
    /// was compared: the file that was checked.
    pub file: fs::File,
    /// Its install record.
    pub record: InstallRecord,
}

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
    },
}

/// How a cached binary is checked before it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyMode {
    /// One `stat`: the binary's identity (device, inode, size, mtime, ctime)
    /// is compared with its record; any difference means it is hashed against
    /// the record before it runs (the default).
    #[default]
    Fingerprint,
    /// Hash the binary against its record on every load.
    Always,
}

/// How far an install has come, reported through [`Installer::with_progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The artifact being installed.
    pub agent: AgentRef,
    /// Bytes received so far.
    pub bytes: u64,
    /// The expected total, when the store published one.
    pub total: Option<u64>,
    /// Whether this is the last report of the install (success or failure).
    pub done: bool,
}

/// The callback of [`Installer::with_progress`]; called from the installing
/// task, so it must be quick (update a bar, send on a channel).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// The only way bytes reach the agent cache. Cheap to clone.
///
/// Every install streams into a temp file (`.{name}__{version}.tmp.{pid}.{n}`,
/// hidden from cache scans) in the target directory, hashing while writing;
/// checks the size cap, digest and size; fsyncs, sets mode 0755, renames
/// atomically and fsyncs the directory. Nothing is ever left at the final path
/// by a failed or interrupted install. New cache directories are created 0700
/// and a symlink anywhere inside the home on the way to the cache path is
/// refused ([`StoreError::Io`]).
#[derive(Clone)]
pub struct Installer {
    home: AgentHome,
    verify: VerifyMode,
    progress: Option<ProgressFn>,
    lock: LockTimeouts,
    trust: Arc<TrustPolicy>,
    pin: Option<Arc<Pin>>,
    download_timeout: std::time::Duration,
}

/// The default whole-download deadline of a pull through a [`crate::StoreChain`]: 10 minutes.
pub const DEFAULT_DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// A digest that an install must produce whatever its store says (a lock
/// file's sha256): bytes that hash otherwise are refused as
/// [`StoreError::Integrity`] before they reach the cache path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The sha256 the installed bytes must have.
    pub sha256: Sha256Digest,
    /// Who pins it, for the error (`the lock file /p/agents.lock`).
    pub by: String,
}

impl std::fmt::Debug for Installer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installer")
            .field("home", &self.home)
            .field("verify", &self.verify)
            .field("progress", &self.progress.is_some())
            .field("lock", &self.lock)
            .field("trust", &self.trust)
            .field("pin", &self.pin)
            .field("download_timeout", &self.download_timeout)
            .finish_non_exhaustive()
    }
}

impl Installer {
    /// An installer writing into `home`.
    #[must_use]
    pub fn new(home: AgentHome) -> Self {
        Installer {
            home,
            verify: VerifyMode::default(),
            progress: None,
            lock: LockTimeouts::default(),
            trust: Arc::new(TrustPolicy::default()),
            pin: None,
            download_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
        }
    }

    /// The longest a whole pull through a [`crate::StoreChain`] may take,
    /// every store and retry included (default
    /// [`DEFAULT_DOWNLOAD_TIMEOUT`]; config `[stores] download-timeout`).
    /// Past it the pull is [`StoreError::Deadline`] and the temp file is
    /// removed: the stall timer of each store resets on every byte, so a
    /// store trickling bytes would otherwise hold the pull, and the
    /// artifact lock, as long as it likes.
    #[must_use]
    pub fn with_download_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.download_timeout = timeout;
        self
    }

    /// The whole-download deadline.
    #[must_use]
    pub fn download_timeout(&self) -> std::time::Duration {
        self.download_timeout
    }

    /// Every install by this installer must hash to `pin.sha256` (meant for
    /// a clone that installs one artifact, as a lock file pins it): other
    /// bytes are refused before the rename, so they are never at the cache
    /// path, not even for a moment.
    #[must_use]
    pub fn with_pin(mut self, pin: Pin) -> Self {
        self.pin = Some(Arc::new(pin));
        self
    }

    /// Which signatures are required and accepted, per publisher (default:
    /// none required). Applies to installs and to every cached binary on
    /// load (a binary whose recorded signer the policy no longer admits is
    /// treated as not installed, and fetched and verified again).
    #[must_use]
    pub fn with_trust(mut self, trust: TrustPolicy) -> Self {
        self.trust = Arc::new(trust);
        self
    }

    /// The trust policy.
    #[must_use]
    pub fn trust(&self) -> &TrustPolicy {
        &self.trust
    }

    /// How cached binaries are checked before they are returned (default
    /// [`VerifyMode::Fingerprint`]).
    #[must_use]
    pub fn with_verify(mut self, verify: VerifyMode) -> Self {
        self.verify = verify;
        self
    }

    /// Calls `progress` as the bytes of each install arrive (every chunk,
    /// and once with `done` at the end).
    #[must_use]
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// How long to wait for another installer's lock, and after how long
    /// without progress its holder is treated as dead.
    #[must_use]
    pub fn with_lock_timeouts(mut self, timeouts: LockTimeouts) -> Self {
        self.lock = timeouts;
        self
    }

    /// The lock timeouts.
    #[must_use]
    pub fn lock_timeouts(&self) -> LockTimeouts {
        self.lock
    }

    /// The verify mode.
    #[must_use]
    pub fn verify_mode(&self) -> VerifyMode {
        self.verify
    }

    /// The home it writes into.
    #[must_use]
    pub fn home(&self) -> &AgentHome {
        &self.home
    }

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
    /// artifact as used (one `futimens` of its record) for
    /// `Cache::prune`.
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
    /// path. Marks the artifact as used (one `futimens` of its record), as
    /// [`Installer::cached_path`] does.
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

    fn fingerprint(&self, agent: &AgentRef, touch: bool) -> Result<Fingerprint, StoreError> {
        if self.verify == VerifyMode::Always || agent.kind().needs_descriptor() {
            self.home.binary_path(agent)?;
            return Ok(Fingerprint::NeedsHash);
        }
        let (path, file, identity, rec, rec_file) = match self.probe(agent)? {
            Probe::Missing => return Ok(Fingerprint::Missing),
            Probe::Unrecorded { .. } => return Ok(Fingerprint::NeedsHash),
            Probe::Recorded {
                path,
                file,
                identity,
                rec,
                rec_file,
            } => (path, file, identity, rec, rec_file),
        };
        if rec.identity != Some(identity) {
            return Ok(Fingerprint::NeedsHash);
        }
        if !self.admitted(agent, &path, &rec) {
            return Ok(Fingerprint::Missing);
        }
        if touch && let Err(e) = touch_now(&rec_file) {
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
        Ok(match open_record(&sibling(&path, "", ".json"))? {
            None => Probe::Unrecorded { path },
            Some((rec, rec_file)) => Probe::Recorded {
                path,
                file,
                identity: FileIdentity::of(&meta),
                rec,
                rec_file,
            },
        })
    }

    fn lookup_file(
        &self,
        agent: &AgentRef,
        touch: bool,
        lock_held: bool,
    ) -> Result<Lookup, StoreError> {
        let (path, seen, mut rec, file) = match self.probe(agent)? {
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
                ..
            } => (path, identity, rec, rec_file),
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
        if touch && let Err(e) = touch_now(&file) {
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

    /// Streams `reader` into the cache path of `agent`, verifying `expected`.
    ///
    /// `source` is recorded as the artifact's origin; the part before its
    /// first `:` (`http`, `oci`…) names the store in errors. An error while
    /// *reading* `reader` is the store's failure
    /// ([`StoreError::Unavailable`], retryable); errors writing the cache are
    /// [`StoreError::Io`].
    ///
    /// # Errors
    /// [`StoreError::Integrity`] on digest/size mismatch or when the size cap
    /// is exceeded, [`StoreError::Unavailable`] when the reader fails,
    /// [`StoreError::Io`] otherwise. On any error (and if this future is
    /// dropped) nothing is left at the final path and the temp file is removed.
    pub async fn install_reader<R>(
        &self,
        agent: &AgentRef,
        source: &str,
        expected: &Expected,
        reader: R,
    ) -> Result<Installed, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        self.install(agent, source, expected, reader, ReadFailure::Store)
            .await
    }

    /// Copies a local file (a Nix output, an extracted archive member) into the cache.
    ///
    /// # Errors
    /// As [`Installer::install_reader`], except that read errors are [`StoreError::Io`].
    pub async fn install_file(
        &self,
        agent: &AgentRef,
        source: &str,
        expected: &Expected,
        path: &Path,
    ) -> Result<Installed, StoreError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
        self.install(agent, source, expected, file, ReadFailure::Local)
            .await
    }

    /// Returns the cached artifact, or runs `fetch` holding the artifact's
    /// in-process single-flight slot and cross-process lock file, re-checking
    /// the cache once the lock is held.
    ///
    /// Concurrent callers in one process share one fetch: those that queued
    /// while it ran get its result. A failed fetch that nobody waited for is
    /// returned as `fetch` made it; one that others waited for is one
    /// [`StoreError::Shared`] every caller holds (same kind, text and
    /// source; [`StoreError::unshared`] gives the variant). Other processes
    /// wait on the lock file `{name}__{version}.lock` and then find the
    /// artifact cached.
    ///
    /// # Errors
    /// Whatever `fetch` returns (possibly [`StoreError::Shared`]), or
    /// [`StoreError::Io`] for lock errors.
    pub async fn ensure<F, Fut>(&self, agent: &AgentRef, fetch: F) -> Result<Installed, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Installed, StoreError>> + Send,
    {
        let path = self.home.binary_path(agent)?;
        // The fingerprint check in place; the hashing lookup only when it
        // cannot vouch for the binary.
        match self.fingerprint(agent, false)? {
            Fingerprint::Match(hit) => {
                return Ok(Installed {
                    path: hit.path,
                    sha256: hit.record.sha256,
                    size: hit.record.size,
                    source: hit.record.source,
                });
            }
            Fingerprint::Missing => {}
            Fingerprint::NeedsHash => {
                if let Some(hit) = self.cached_blocking(agent).await? {
                    return Ok(hit);
                }
            }
        }

        let flight = flight_for(&path);
        let seen = flight.completed.load(Ordering::Acquire);
        let queued = flight.queue();
        let mut state = flight.state.lock().await;
        drop(queued);
        if flight.completed.load(Ordering::Acquire) != seen
            && let Some(outcome) = state.as_ref()
        {
            tracing::debug!(path = %path.display(), "joined a concurrent fetch");
            return match outcome {
                Ok(i) => Ok(i.clone()),
                Err(e) => Err(StoreError::Shared(Arc::clone(e))),
            };
        }

        let outcome = match self.locked_fetch(agent, &path, fetch).await {
            Ok(i) => {
                *state = Some(Ok(i.clone()));
                Ok(i)
            }
            // Someone queued behind this fetch: they get this very error.
            Err(e) if flight.waiting.load(Ordering::Acquire) > 0 => {
                let e = Arc::new(e);
                *state = Some(Err(Arc::clone(&e)));
                Err(StoreError::Shared(e))
            }
            // Nobody to share it with: a caller that queues from now on
            // finds no outcome and fetches again.
            Err(e) => {
                *state = None;
                Err(e)
            }
        };
        flight.completed.fetch_add(1, Ordering::AcqRel);
        drop(state);
        outcome
    }

    async fn locked_fetch<F, Fut>(
        &self,
        agent: &AgentRef,
        path: &Path,
        fetch: F,
    ) -> Result<Installed, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Installed, StoreError>> + Send,
    {
        // Someone may have finished while we queued in-process.
        if let Some(hit) = self.cached_blocking(agent).await? {
            return Ok(hit);
        }
        let root = self.home.root().to_path_buf();
        let lock_path = sibling(path, "", ".lock");
        let binary = path.to_path_buf();
        let timeouts = self.lock;
        let lock = tokio::task::spawn_blocking(move || {
            lock::acquire(&root, &lock_path, &binary, timeouts)
        })
        .await
        .map_err(join_error)??;

        // Another process may have installed it while we waited for the lock.
        let result = match self.cached_blocking_as(agent, true).await {
            Ok(Some(hit)) => Ok(hit),
            Ok(None) => {
                tracing::debug!(path = %path.display(), "fetching");
                fetch().await
            }
            Err(e) => Err(e),
        };
        // Closing the file releases the lock; the lock file itself stays (removing
        // it would race with a process that just opened it).
        drop(lock);
        result
    }

    async fn cached_blocking(&self, agent: &AgentRef) -> Result<Option<Installed>, StoreError> {
        self.cached_blocking_as(agent, false).await
    }

    async fn cached_blocking_as(
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

    async fn install<R>(
        &self,
        agent: &AgentRef,
        source: &str,
        expected: &Expected,
        reader: R,
        on_read_error: ReadFailure,
    ) -> Result<Installed, StoreError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let path = self.home.binary_path(agent)?;
        let platform = expected.platform.clone().unwrap_or_else(Platform::current);
        let pre_verified = expected
            .signature
            .is_none()
            .then_some(expected.verified_signer.as_ref())
            .flatten();
        if let Some(signer) = pre_verified
            && let Err(reason) = self
                .trust
                .for_publisher(agent.publisher())
                .admits(Some(signer))
        {
            return Err(StoreError::Untrusted {
                path_or_artifact: agent.identifier(),
                reason,
                fix: format!(
                    "add the publisher's key to [publishers.\"{}\"] keys",
                    agent.publisher()
                ),
            });
        }
        let check = if expected.signature.is_none()
            && (pre_verified.is_some()
                || self
                    .trust
                    .store_vouches(store_name(source), agent.publisher()))
        {
            None
        } else {
            SigCheck::prepare(
                self.trust.for_publisher(agent.publisher()),
                agent,
                &platform,
                expected.signature.as_deref(),
            )?
        };
        let root = self.home.root().to_path_buf();
        let target = path.clone();
        let (temp_path, file) = tokio::task::spawn_blocking(move || {
            prepare_dir(&root, &target)?;
            refuse_symlink_at(&target)?;
            clean_stale_temps(&target);
            create_temp(&target, "")
        })
        .await
        .map_err(join_error)??;
        let mut guard = TempGuard(Some(temp_path.clone()));

        let cap = expected.max_size.unwrap_or(DEFAULT_MAX_SIZE);
        let store = store_name(source);
        let what = agent.identifier();
        let integrity = |message: String| StoreError::Integrity {
            store: store.to_owned(),
            what: what.clone(),
            message,
        };

        let report = |bytes: u64, done: bool| {
            if let Some(p) = &self.progress {
                p(Progress {
                    agent: agent.clone(),
                    bytes,
                    total: expected.size,
                    done,
                });
            }
        };
        let streamed = stream_to_file(
            reader,
            file,
            cap,
            expected.size,
            &|n| report(n, false),
            check,
        )
        .await;
        if let Ok(s) = &streamed {
            report(s.size, true);
        } else {
            report(0, true);
        }
        let stream::Streamed {
            digest,
            size,
            check,
            verdict,
        } = match streamed {
            Ok(v) => v,
            Err(StreamError::Read(e)) => {
                return Err(match on_read_error {
                    ReadFailure::Store => StoreError::Unavailable {
                        store: store.to_owned(),
                        message: format!("reading {what} from {source} failed"),
                        retry_after: None,
                        source: Some(Box::new(e)),
                    },
                    ReadFailure::Local => StoreError::io(format!("reading {source}"), e),
                });
            }
            Err(StreamError::Write(e)) => {
                return Err(StoreError::io(
                    format!("writing {}", temp_path.display()),
                    e,
                ));
            }
            Err(StreamError::TooLarge { limit, expected }) => {
                return Err(integrity(if expected {
                    format!("more than the expected {limit} bytes")
                } else {
                    format!("more than the {limit}-byte size cap")
                }));
            }
        };
        if let Some(want) = expected.size.filter(|&w| w != size) {
            return Err(integrity(format!("expected {want} bytes, got {size}")));
        }
        if let Some(want) = expected.sha256.filter(|w| *w != digest) {
            return Err(integrity(format!(
                "expected sha256 {want}, got {digest} ({size} bytes)"
            )));
        }
        if let Some(pin) = self.pin.as_deref().filter(|p| p.sha256 != digest) {
            return Err(integrity(format!(
                "its sha256 is {digest} ({size} bytes), but {} pins {}",
                pin.by, pin.sha256
            )));
        }

        let signer = match &check {
            None => pre_verified.cloned(),
            Some(c) => {
                let verdict = match verdict {
                    Some(v) => v,
                    None => {
                        // Legacy (whole-message) signature: re-read the temp file.
                        let t = temp_path.clone();
                        let bytes = tokio::task::spawn_blocking(move || fs::read(&t))
                            .await
                            .map_err(join_error)?
                            .map_err(|e| {
                                StoreError::io(format!("read {}", temp_path.display()), e)
                            })?;
                        c.verify_legacy(&bytes).map_err(|e| e.to_string())
                    }
                };
                if let Err(e) = verdict {
                    return Err(StoreError::Untrusted {
                        path_or_artifact: what.clone(),
                        reason: format!(
                            "its signature by key {} does not verify over the bytes from {source} ({e}): tampered or re-signed",
                            c.signer().key_id
                        ),
                        fix: "fetch it from a store you trust; the publisher must re-sign it if the binary changed".to_owned(),
                    });
                }
                Some(c.signer())
            }
        };
        let record = InstallRecord {
            sha256: digest.to_hex(),
            size,
            source: source.to_owned(),
            installed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            identity: None,
            store: Some(store.to_owned()),
            signer,
        };
        let final_path = path.clone();
        let rec = record.clone();
        let record = tokio::task::spawn_blocking(move || commit(&temp_path, &final_path, rec))
            .await
            .map_err(join_error)??;
        guard.0 = None;
        tracing::info!(
            agent = %what,
            path = %path.display(),
            size,
            sha256 = %record.sha256,
            source,
            "installed"
        );
        Ok(Installed {
            path,
            sha256: record.sha256,
            size,
            source: record.source,
        })
    }
}

#[derive(Clone, Copy)]
enum ReadFailure {
    /// The reader is a store's stream: its failure is the store's.
    Store,
    /// The reader is a local file: its failure is ours.
    Local,
}

/// Moves a verified temp file into place with its record, so that no binary
/// is ever at the final path without its record: chmod 0755, rename the
/// binary, take its identity, write the record under a temp name, rename it;
/// if the record cannot be committed the binary is removed again.
fn commit(
    temp: &Path,
    final_path: &Path,
    mut rec: InstallRecord,
) -> Result<InstallRecord, StoreError> {
    refuse_symlink_at(final_path)?;
    fs::set_permissions(temp, fs::Permissions::from_mode(0o755))
        .map_err(|e| StoreError::io(format!("chmod {}", temp.display()), e))?;
    // The identity recorded is that of the file renamed, taken from a
    // descriptor opened on it before the rename: a path looked up after it
    // could name another install's file.
    let renamed = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(temp)
        .map_err(|e| StoreError::io(format!("open {}", temp.display()), e))?;
    fs::rename(temp, final_path).map_err(|e| {
        StoreError::io(
            format!("rename {} to {}", temp.display(), final_path.display()),
            e,
        )
    })?;
    let recorded = renamed
        .metadata()
        .map_err(|e| StoreError::io(format!("stat {}", final_path.display()), e))
        .and_then(|m| {
            rec.identity = Some(FileIdentity::of(&m));
            let temp = write_record_temp(final_path, &rec)?;
            commit_record_temp(temp, &sibling(final_path, "", ".json"))
        });
    if let Err(e) = recorded {
        if let Err(rm) = fs::remove_file(final_path) {
            tracing::warn!(path = %final_path.display(), error = %rm, "could not roll back a binary whose record failed");
        }
        return Err(e);
    }
    sync_dir(final_path)?;
    Ok(rec)
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

/// The store's name from a `store:detail` source string.
fn store_name(source: &str) -> &str {
    source.split_once(':').map_or(source, |(s, _)| s)
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::io("install task failed", io::Error::other(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_names() {
        let p = Path::new("/h/agents/services/p/echo__1.0.0");
        assert_eq!(
            sibling(p, "", ".json"),
            Path::new("/h/agents/services/p/echo__1.0.0.json")
        );
        assert_eq!(
            sibling(p, ".", ".tmp.1.2"),
            Path::new("/h/agents/services/p/.echo__1.0.0.tmp.1.2")
        );
    }

    #[test]
    fn store_names() {
        assert_eq!(store_name("http:http://x/y"), "http");
        assert_eq!(store_name("local"), "local");
    }

    fn assert_send<T: Send>(_: &T) {}

    /// Stores call these from `#[async_trait]` methods, which need `Send` futures.
    #[test]
    fn futures_are_send() {
        let installer = Installer::new(AgentHome::new("/nonexistent"));
        let agent = AgentRef::parse("echo:1.0.0").unwrap();
        let expected = Expected::default();
        let f = installer.install_reader(&agent, "t:x", &expected, &b""[..]);
        assert_send(&f);
        let f = installer.install_file(&agent, "t:x", &expected, Path::new("/x"));
        assert_send(&f);
        let f = installer.ensure(&agent, || async {
            Err(StoreError::io("x", io::Error::other("x")))
        });
        assert_send(&f);
        let chain = crate::StoreChain::default();
        let platform = agent_ref::Platform::current();
        let f = chain.pull(&agent, &platform, &installer);
        assert_send(&f);
    }
}
