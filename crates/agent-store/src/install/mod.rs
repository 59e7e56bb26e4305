//! The installer: the only path by which bytes become a cached binary.
//!
//! Split by concern: [`flight`] (in-process single flight), [`lock`] (the
//! cross-process lock file), [`path`] (path safety, temp files, fsync),
//! [`stream`] (hash while writing), [`record`] (the install record),
//! [`stale`] (cleanup of temp files left behind), [`lookup`] (finding a
//! cached binary and adopting one without a record), [`write`] (streaming,
//! verifying and committing a new one).

mod flight;
mod lock;
mod lookup;
mod path;
mod record;
mod stale;
mod stream;
mod write;

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
    TempGuard, check_parents, check_trusted, create_temp, mark_used, prepare_dir,
    refuse_symlink_at, sibling, symlink_refused, sync_dir,
};
pub(crate) use record::open_record as open_install_record;
pub use record::{FileIdentity, InstallRecord, Signer};
use record::{
    commit_record_temp, open_record, open_record_marked, read_record, write_record,
    write_record_temp,
};
use stale::clean_stale_temps;
pub(crate) use stale::{is_temp_name, untouched_too_long};
use stream::{StreamError, stream_to_file};
use write::ReadFailure;

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
