//! The cross-process per-artifact lock file `{name}__{version}.lock`.
//!
//! The holder writes its pid into the file. A waiter says once whom it waits
//! for, gives up after [`LockTimeouts::wait`] with
//! [`StoreError::LockTimeout`] (retryable, naming the holder). A holder that
//! dies releases the lock with its last descriptor. A lock still held while
//! the process it names is gone (a descriptor inherited by another process)
//! and whose temp files have not grown for [`LockTimeouts::stall`] is broken:
//! the waiter unlinks that lock file and locks a fresh one (an installer that
//! wakes up later still only ever renames verified bytes into place). A live
//! holder is never broken, however quiet: GitHub downloads and Nix builds do
//! not grow the temp file, and every pull is bounded by its own download
//! deadline.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::path::prepare_dir;
use crate::StoreError;

/// How long lock waits may last (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTimeouts {
    /// Give up waiting for the lock after this long (default 10 minutes).
    pub wait: Duration,
    /// Treat a holder that made no progress (its temp file did not grow) for
    /// this long as dead (default 2 minutes).
    pub stall: Duration,
}

impl Default for LockTimeouts {
    fn default() -> Self {
        LockTimeouts {
            wait: Duration::from_secs(600),
            stall: Duration::from_secs(120),
        }
    }
}

/// How often a waiter looks at the lock again.
const POLL: Duration = Duration::from_millis(100);

fn open_lock(lock_path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(lock_path)
        .map_err(|e| StoreError::io(format!("open lock {}", lock_path.display()), e))
}

/// Whether `path` still names the file `file` is open on.
fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn write_pid(file: &mut File) {
    let pid = std::process::id();
    let r = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{pid}"));
    if let Err(e) = r {
        tracing::debug!(error = %e, "could not write our pid into the lock file");
    }
}

/// The pid the lock file names as its holder.
pub(super) fn read_pid(file: &File) -> Option<u32> {
    let mut text = String::new();
    let mut f = file;
    f.rewind().ok()?;
    f.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Tries the lock without waiting: `None` when another holds it.
pub(crate) fn try_acquire(lock_path: &Path) -> Result<Option<File>, StoreError> {
    let mut file = open_lock(lock_path)?;
    match file.try_lock() {
        Ok(()) if still_named(&file, lock_path) => {
            write_pid(&mut file);
            Ok(Some(file))
        }
        Ok(()) | Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => {
            Err(StoreError::io(format!("lock {}", lock_path.display()), e))
        }
    }
}

/// Total bytes of the temp files of the artifact at `binary` (of `holder`
/// when known): the holder's visible progress.
fn holder_progress(binary: &Path, holder: Option<u32>) -> Option<u64> {
    let dir = binary.parent()?;
    let name = binary.file_name()?.to_str()?;
    let prefix = match holder {
        Some(pid) => format!(".{name}.tmp.{pid}."),
        None => format!(".{name}.tmp."),
    };
    let mut total = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
            && let Ok(m) = entry.metadata()
        {
            *total.get_or_insert(0) += m.len();
        }
    }
    total
}

/// Opens (creating it 0600) and locks the lock file at `lock_path` for the
/// artifact at `binary`, waiting as the module docs say. Closing the file
/// releases the lock; the file itself stays (removing it would race with a
/// process that just opened it), except when its holder is treated as dead.
pub(crate) fn acquire(
    root: &Path,
    lock_path: &Path,
    binary: &Path,
    timeouts: LockTimeouts,
) -> Result<File, StoreError> {
    prepare_dir(root, lock_path)?;
    let start = Instant::now();
    let mut said = false;
    let mut progress: Option<u64> = None;
    let mut progressed_at = Instant::now();
    loop {
        let mut file = open_lock(lock_path)?;
        match file.try_lock() {
            Ok(()) => {
                if still_named(&file, lock_path) {
                    write_pid(&mut file);
                    return Ok(file);
                }
                // A waiter broke this lock file while we opened it: lock the new one.
                continue;
            }
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(format!("lock {}", lock_path.display()), e));
            }
        }
        let holder = read_pid(&file);
        if !said {
            said = true;
            let who = holder.map_or_else(|| "another process".to_owned(), |p| format!("pid {p}"));
            tracing::warn!(
                lock = %lock_path.display(),
                holder_pid = holder,
                "waiting for the lock held by {who}"
            );
        }
        let now = holder_progress(binary, holder);
        if now != progress {
            progress = now;
            progressed_at = Instant::now();
        } else if progressed_at.elapsed() >= timeouts.stall && !holder.is_some_and(process_exists) {
            tracing::warn!(
                lock = %lock_path.display(),
                holder_pid = holder,
                stalled_for = ?progressed_at.elapsed(),
                "the lock holder made no progress; treating it as dead"
            );
            break_lock(&file, lock_path);
            progressed_at = Instant::now();
            continue;
        }
        let waited = start.elapsed();
        if waited >= timeouts.wait {
            return Err(StoreError::LockTimeout {
                path: PathBuf::from(lock_path),
                holder_pid: holder,
                waited,
            });
        }
        drop(file);
        std::thread::sleep(POLL.min(timeouts.wait.saturating_sub(waited)));
    }
}

/// Whether a process with this pid exists (possibly another one that reused
/// the pid: then the lock is waited for, never broken, the safe side).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for existence and permission; nothing is sent.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Unlinks the lock file `file` is open on, if `lock_path` still names it.
fn break_lock(file: &File, lock_path: &Path) {
    if still_named(file, lock_path) {
        match fs::remove_file(lock_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(lock = %lock_path.display(), error = %e, "could not remove a stalled lock file");
            }
        }
    }
}
