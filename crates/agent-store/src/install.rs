use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use agent_ref::{AgentHome, AgentRef};

use crate::{Sha256Digest, StoreError};

/// The default cap on the bytes of one artifact: 4 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// Temp files untouched for this long are removed whoever owns them.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Bytes per chunk handed from the reading task to the hashing/writing thread.
const CHUNK: usize = 256 * 1024;

/// Chunks in flight between reader and writer (bounds memory to ~1 MiB).
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the installer must check the bytes against.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The published digest; a mismatch is [`StoreError::Integrity`].
    pub sha256: Option<Sha256Digest>,
    /// The published size; a mismatch is [`StoreError::Integrity`].
    pub size: Option<u64>,
    /// A hard cap on bytes written, whatever the store claims (default: 4 GiB).
    pub max_size: Option<u64>,
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

/// The record written beside each installed binary as `{name}__{version}.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallRecord {
    /// The binary's sha256, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it came from (the `source` given to the installer).
    pub source: String,
    /// When it was installed, in seconds since the Unix epoch.
    pub installed_at: u64,
}

/// One in-process flight per final path: the leader fetches while holding
/// `state`; waiters that queued while it ran take its outcome.
#[derive(Default)]
struct Flight {
    /// Completed fetches so far; read before queueing to tell whether a
    /// fetch finished while we waited.
    completed: AtomicU64,
    state: tokio::sync::Mutex<Option<Result<Installed, StoreError>>>,
}

type FlightMap = Mutex<HashMap<PathBuf, Weak<Flight>>>;

/// Process-wide, so that two `Installer`s on one home still share fetches.
static FLIGHTS: LazyLock<FlightMap> = LazyLock::new(FlightMap::default);

fn flight_for(path: &Path) -> Arc<Flight> {
    let mut map = FLIGHTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(f) = map.get(path).and_then(Weak::upgrade) {
        return f;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let f = Arc::new(Flight::default());
    map.insert(path.to_path_buf(), Arc::downgrade(&f));
    f
}

/// What sits at a cache path.
enum Lookup {
    Absent,
    Recorded(PathBuf, InstallRecord),
    Unrecorded(PathBuf),
}

/// The only way bytes reach the agent cache. Cheap to clone.
///
/// Every install streams into a temp file (`.{name}__{version}.tmp.{pid}.{n}`,
/// hidden from cache scans) in the target directory, hashing while writing;
/// checks the size cap, digest and size; fsyncs, sets mode 0755, renames
/// atomically and fsyncs the directory. Nothing is ever left at the final path
/// by a failed or interrupted install. New cache directories are created 0700
/// and a symlink anywhere inside the home on the way to the cache path is
/// refused ([`StoreError::Io`]).
#[derive(Debug, Clone)]
pub struct Installer {
    home: AgentHome,
}

impl Installer {
    /// An installer writing into `home`.
    #[must_use]
    pub fn new(home: AgentHome) -> Self {
        Installer { home }
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
    /// Cheap when the install record is present (a `stat`); a binary without a
    /// record (installed by the Go loader, or by hand) is hashed and reported
    /// with source `local`. A binary whose size disagrees with its record is
    /// treated as not installed (it was changed behind our back). This is
    /// blocking file I/O.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref, [`StoreError::Io`] on read
    /// errors, for a symlink inside the home, or when something other than a
    /// regular file sits at the cache path.
    pub fn cached(&self, agent: &AgentRef) -> Result<Option<Installed>, StoreError> {
        Ok(match self.lookup(agent)? {
            Lookup::Absent => None,
            Lookup::Recorded(path, rec) => Some(Installed {
                path,
                sha256: rec.sha256,
                size: rec.size,
                source: rec.source,
            }),
            Lookup::Unrecorded(path) => {
                let (digest, size) = hash_file(&path)?;
                Some(Installed {
                    path,
                    sha256: digest.to_hex(),
                    size,
                    source: "local".to_owned(),
                })
            }
        })
    }

    /// The cached binary's path, checked as [`Installer::cached`] checks it
    /// but never hashed: the hot path of every load. A binary with no record
    /// (the Go loader's) is accepted as it is, as the Go loader does.
    ///
    /// # Errors
    /// As [`Installer::cached`].
    pub fn cached_path(&self, agent: &AgentRef) -> Result<Option<PathBuf>, StoreError> {
        Ok(match self.lookup(agent)? {
            Lookup::Absent => None,
            Lookup::Recorded(path, _) | Lookup::Unrecorded(path) => Some(path),
        })
    }

    fn lookup(&self, agent: &AgentRef) -> Result<Lookup, StoreError> {
        let path = self.home.binary_path(agent)?;
        if !check_parents(self.home.root(), &path, false)? {
            return Ok(Lookup::Absent);
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Absent),
            Err(e) => return Err(StoreError::io(format!("stat {}", path.display()), e)),
        };
        if meta.file_type().is_symlink() {
            return Err(symlink_refused(&path));
        }
        if !meta.is_file() {
            return Err(StoreError::io(
                format!("cache path {}", path.display()),
                io::Error::other("is not a regular file"),
            ));
        }
        match read_record(&sibling(&path, "", ".json"))? {
            Some(rec) if rec.size == meta.len() => Ok(Lookup::Recorded(path, rec)),
            Some(rec) => {
                tracing::warn!(
                    path = %path.display(),
                    recorded = rec.size,
                    actual = meta.len(),
                    "cached binary does not match its install record; treating it as not installed"
                );
                Ok(Lookup::Absent)
            }
            None => Ok(Lookup::Unrecorded(path)),
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
    /// while it ran get its result (or a copy of its error). Other processes
    /// wait on the lock file `{name}__{version}.lock` and then find the
    /// artifact cached.
    ///
    /// # Errors
    /// Whatever `fetch` returns, or [`StoreError::Io`] for lock errors.
    pub async fn ensure<F, Fut>(&self, agent: &AgentRef, fetch: F) -> Result<Installed, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Installed, StoreError>> + Send,
    {
        let path = self.home.binary_path(agent)?;
        if let Some(hit) = self.cached_blocking(agent).await? {
            return Ok(hit);
        }

        let flight = flight_for(&path);
        let seen = flight.completed.load(Ordering::Acquire);
        let mut state = flight.state.lock().await;
        if flight.completed.load(Ordering::Acquire) != seen
            && let Some(outcome) = state.as_ref()
        {
            tracing::debug!(path = %path.display(), "joined a concurrent fetch");
            return match outcome {
                Ok(i) => Ok(i.clone()),
                Err(e) => Err(e.shared_copy()),
            };
        }

        let outcome = self.locked_fetch(agent, &path, fetch).await;
        *state = Some(match &outcome {
            Ok(i) => Ok(i.clone()),
            Err(e) => Err(e.shared_copy()),
        });
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
        let lock = tokio::task::spawn_blocking(move || -> Result<File, StoreError> {
            prepare_dir(&root, &lock_path)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&lock_path)
                .map_err(|e| StoreError::io(format!("open lock {}", lock_path.display()), e))?;
            file.lock()
                .map_err(|e| StoreError::io(format!("lock {}", lock_path.display()), e))?;
            Ok(file)
        })
        .await
        .map_err(join_error)??;

        // Another process may have installed it while we waited for the lock.
        let result = match self.cached_blocking(agent).await {
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
        let this = self.clone();
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || this.cached(&agent))
            .await
            .map_err(join_error)?
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

        let (digest, size) = match stream_to_file(reader, file, cap, expected.size).await {
            Ok(v) => v,
            Err(StreamError::Read(e)) => {
                return Err(match on_read_error {
                    ReadFailure::Store => StoreError::Unavailable {
                        store: store.to_owned(),
                        message: format!("reading {what} from {source} failed: {e}"),
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

        let record = InstallRecord {
            sha256: digest.to_hex(),
            size,
            source: source.to_owned(),
            installed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let final_path = path.clone();
        let rec = record.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            refuse_symlink_at(&final_path)?;
            fs::set_permissions(&temp_path, fs::Permissions::from_mode(0o755))
                .map_err(|e| StoreError::io(format!("chmod {}", temp_path.display()), e))?;
            fs::rename(&temp_path, &final_path).map_err(|e| {
                StoreError::io(
                    format!("rename {} to {}", temp_path.display(), final_path.display()),
                    e,
                )
            })?;
            write_record(&final_path, &rec)?;
            sync_dir(&final_path)
        })
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

enum StreamError {
    Read(io::Error),
    Write(io::Error),
    TooLarge { limit: u64, expected: bool },
}

/// Removes the temp file unless disarmed (on error, panic or cancellation).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "could not remove temp file");
        }
    }
}

/// How many written bytes may wait in the page cache before their writeback
/// is started, so the final `fsync` finds little left to do.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Starts (does not wait for) writeback of a written range. Only a hint: the
/// `fsync` before the rename is what makes the file durable.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: the descriptor is open for the duration of the call; the kernel
    // only reads the arguments.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Reads `reader` on this task and hashes + writes on a blocking thread, so
/// network reads, hashing and disk writes overlap. Memory is bounded by
/// `CHUNKS_IN_FLIGHT` buffers of `CHUNK` bytes.
async fn stream_to_file<R>(
    mut reader: R,
    file: File,
    cap: u64,
    expected_size: Option<u64>,
) -> Result<(Sha256Digest, u64), StreamError>
where
    R: AsyncRead + Unpin + Send,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (back_tx, mut back_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::task::spawn_blocking(move || -> io::Result<Sha256Digest> {
        let mut file = file;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut flushed: u64 = 0;
        while let Some(buf) = rx.blocking_recv() {
            hasher.update(&buf);
            file.write_all(&buf)?;
            written += buf.len() as u64;
            if written - flushed >= WRITEBACK_EVERY {
                start_writeback(&file, flushed, written - flushed);
                flushed = written;
            }
            // The reader may be gone already; then the buffer is just dropped.
            let _ = back_tx.send(buf);
        }
        file.sync_all()?;
        Ok(Sha256Digest(hasher.finalize().into()))
    });

    let limit = expected_size.map_or(cap, |s| s.min(cap));
    let mut total: u64 = 0;
    let read_result: Result<(), StreamError> = async {
        loop {
            let mut buf = back_rx.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            let mut eof = false;
            while filled < CHUNK {
                let n = reader
                    .read(&mut buf[filled..])
                    .await
                    .map_err(StreamError::Read)?;
                if n == 0 {
                    eof = true;
                    break;
                }
                filled += n;
                total += n as u64;
                if total > limit {
                    return Err(StreamError::TooLarge {
                        limit,
                        expected: expected_size.is_some_and(|s| s <= cap),
                    });
                }
            }
            buf.truncate(filled);
            if filled > 0 && tx.send(buf).await.is_err() {
                // The writer stopped: its error is reported below.
                return Ok(());
            }
            if eof {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| StreamError::Write(io::Error::other(e)))?;
    read_result?;
    let digest = written.map_err(StreamError::Write)?;
    Ok((digest, total))
}

/// `{dir}/{prefix}{name}__{version}{suffix}` for the binary at `path`.
fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{prefix}{name}{suffix}"))
}

/// The store's name from a `store:detail` source string.
fn store_name(source: &str) -> &str {
    source.split_once(':').map_or(source, |(s, _)| s)
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::io("install task failed", io::Error::other(e))
}

fn symlink_refused(path: &Path) -> StoreError {
    StoreError::io(
        format!("refusing to use cache path {}", path.display()),
        io::Error::other("it is a symlink (a cache path must be a real directory or file)"),
    )
}

/// Walks the directories from `root` down to `path`'s parent: refuses
/// symlinks, and creates missing ones 0700 when `create`. Returns whether every
/// directory exists.
fn check_parents(root: &Path, path: &Path, create: bool) -> Result<bool, StoreError> {
    let Some(parent) = path.parent() else {
        return Ok(true);
    };
    let rel = parent.strip_prefix(root).map_err(|_| {
        StoreError::io(
            format!("cache path {}", path.display()),
            io::Error::other(format!("is outside the home {}", root.display())),
        )
    })?;
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StoreError::io(
                format!("agent home {}", root.display()),
                io::Error::other("is not a directory"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !create {
                return Ok(false);
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| StoreError::io(format!("create {}", root.display()), e))?;
        }
        Err(e) => return Err(StoreError::io(format!("stat {}", root.display()), e)),
    }
    let mut cur = root.to_path_buf();
    for comp in rel.components() {
        let Component::Normal(c) = comp else {
            return Err(StoreError::io(
                format!("cache path {}", path.display()),
                io::Error::other("has a non-normal component"),
            ));
        };
        cur.push(c);
        // Two tries: a concurrent installer may create the directory between
        // our stat and our mkdir.
        for _ in 0..2 {
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(&cur)),
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(StoreError::io(
                        format!("cache directory {}", cur.display()),
                        io::Error::other("is not a directory"),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(false);
                    }
                    match fs::DirBuilder::new().mode(0o700).create(&cur) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            return Err(StoreError::io(format!("create {}", cur.display()), e));
                        }
                    }
                }
                Err(e) => return Err(StoreError::io(format!("stat {}", cur.display()), e)),
            }
        }
    }
    Ok(true)
}

fn prepare_dir(root: &Path, path: &Path) -> Result<(), StoreError> {
    check_parents(root, path, true).map(|_| ())
}

fn refuse_symlink_at(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(path)),
        Ok(m) if m.is_dir() => Err(StoreError::io(
            format!("cache path {}", path.display()),
            io::Error::other("is a directory"),
        )),
        _ => Ok(()),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `.{name}__{version}{kind}.tmp.{pid}.{unique}` beside `path`, mode 0600.
fn create_temp(path: &Path, kind: &str) -> Result<(PathBuf, File), StoreError> {
    let pid = std::process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = sibling(path, ".", &format!("{kind}.tmp.{pid}.{nanos:x}{n:x}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
        {
            Ok(f) => return Ok((temp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(format!("create {}", temp.display()), e)),
        }
    }
}

/// Removes temp files of this artifact left by dead processes, or untouched
/// for an hour. Best effort: failures are logged, never fatal.
fn clean_stale_temps(path: &Path) {
    let Some(dir) = path.parent() else { return };
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefixes = [format!(".{name}.tmp."), format!(".{name}.json.tmp.")];
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(fname) = file_name.to_str() else {
            continue;
        };
        let Some(rest) = prefixes.iter().find_map(|p| fname.strip_prefix(p.as_str())) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        let old = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        let dead = pid.is_some_and(|p| p != me && !process_alive(p));
        if dead || old {
            let p = entry.path();
            match fs::remove_file(&p) {
                Ok(()) => tracing::info!(path = %p.display(), "removed stale temp file"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove stale temp file");
                }
            }
        }
    }
}

/// Whether a process with this pid exists (EPERM counts as alive).
#[allow(unsafe_code)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn read_record(path: &Path) -> Result<Option<InstallRecord>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<InstallRecord>(&bytes) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable install record");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(format!("read {}", path.display()), e)),
    }
}

/// Writes the record beside `binary` atomically (temp, fsync, rename).
fn write_record(binary: &Path, record: &InstallRecord) -> Result<(), StoreError> {
    let target = sibling(binary, "", ".json");
    let (temp, mut file) = create_temp(binary, ".json")?;
    let mut guard = TempGuard(Some(temp.clone()));
    let mut body = serde_json::to_vec_pretty(record)
        .map_err(|e| StoreError::io("encode install record", io::Error::other(e)))?;
    body.push(b'\n');
    file.write_all(&body)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(format!("write {}", temp.display()), e))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o644))
        .map_err(|e| StoreError::io(format!("chmod {}", temp.display()), e))?;
    fs::rename(&temp, &target).map_err(|e| {
        StoreError::io(
            format!("rename {} to {}", temp.display(), target.display()),
            e,
        )
    })?;
    guard.0 = None;
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsync {}", dir.display()), e))
}

fn hash_file(path: &Path) -> Result<(Sha256Digest, u64), StoreError> {
    let mut file =
        File::open(path).map_err(|e| StoreError::io(format!("open {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher)
        .map_err(|e| StoreError::io(format!("read {}", path.display()), e))?;
    Ok((Sha256Digest(hasher.finalize().into()), size))
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
        let f = chain.versions(&agent, &platform);
        assert_send(&f);
    }

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
    }
}
