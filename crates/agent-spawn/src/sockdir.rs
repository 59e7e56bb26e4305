//! The private directories that hold agents' unix sockets: short enough for
//! `sun_path` by construction, named after the host that made them, and
//! swept once their host is dead.
//!
//! A directory is `agent-h{pid}-XXXXXX` (0700) in `$TMPDIR`, or in `/tmp`
//! when `$TMPDIR` would make the socket path too long (macOS's `$TMPDIR` is
//! long and its `sun_path` short). It holds [`HOST_FILE`]: the host's pid and
//! start time (`/proc/<pid>/stat` field 22), so a recycled pid is not taken
//! for the host. A host killed with SIGKILL cannot remove its directories;
//! the next host removes them at its first unix-socket spawn: only
//! directories owned by our uid, whose host is gone or is another process
//! under the same pid.

use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Once;

use agent_protocol::MAX_UNIX_PATH;

/// The socket's file name inside its directory.
pub(crate) const SOCKET_NAME: &str = "agent.sock";
/// The file naming the directory's host: `{pid} {start time}`.
const HOST_FILE: &str = "host";
/// The random part `tempfile` adds to a directory name.
const RANDOM_LEN: usize = 6;
/// Where sockets go when `$TMPDIR` is too long.
const SHORT_BASE: &str = "/tmp";

fn prefix(pid: u32) -> String {
    format!("agent-h{pid}-")
}

/// The socket path's length under `base` for host `pid` (the longest it can
/// be: `{base}/agent-h{pid}-XXXXXX/agent.sock`).
fn socket_path_len(base: &Path, pid: u32) -> usize {
    base.as_os_str().len() + 1 + prefix(pid).len() + RANDOM_LEN + 1 + SOCKET_NAME.len()
}

/// Where this host's socket directories go: `preferred` when the socket path
/// fits in `max` bytes, else `/tmp`; an error (never a truncated path) when
/// neither fits.
fn choose_base(preferred: &Path, pid: u32, max: usize) -> io::Result<PathBuf> {
    for base in [preferred, Path::new(SHORT_BASE)] {
        if socket_path_len(base, pid) <= max {
            return Ok(base.to_owned());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "a unix socket under {} would be {} bytes, over the {max} bytes sun_path allows \
             (set TMPDIR to a shorter directory)",
            preferred.display(),
            socket_path_len(preferred, pid)
        ),
    ))
}

/// The start time of process `pid` in clock ticks since boot, when it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after the last ')' are plain. Start time is field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Creates a socket directory for this host, sweeping dead hosts' first
/// (once per process).
pub(crate) fn create() -> io::Result<tempfile::TempDir> {
    let pid = std::process::id();
    let base = choose_base(&std::env::temp_dir(), pid, MAX_UNIX_PATH)?;
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        sweep(&std::env::temp_dir());
        if Path::new(SHORT_BASE) != std::env::temp_dir() {
            sweep(Path::new(SHORT_BASE));
        }
    });
    let dir = tempfile::Builder::new()
        .prefix(&prefix(pid))
        .rand_bytes(RANDOM_LEN)
        .tempdir_in(&base)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    let start = start_time(pid).unwrap_or(0);
    std::fs::write(dir.path().join(HOST_FILE), format!("{pid} {start}\n"))?;
    Ok(dir)
}

/// Removes the socket directories in `base` whose host is dead. Errors are
/// logged, never returned: sweeping is housekeeping.
pub(crate) fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let uid = unsafe { libc::geteuid() };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("agent-h"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        // Not followed: a symlink is nobody's socket directory.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || pid == me || host_alive(&path, pid) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::debug!(dir = %path.display(), pid, "removed a dead host's socket directory");
            }
            Err(error) => {
                tracing::debug!(dir = %path.display(), %error, "cannot remove a dead host's socket directory");
            }
        }
    }
}

/// Whether the host that made `dir` (pid `pid` by its name) still runs. A
/// directory without a readable host file is taken as alive while its pid
/// exists (its host may be writing the file right now).
fn host_alive(dir: &Path, pid: u32) -> bool {
    let Some(now) = start_time(pid) else {
        return false;
    };
    let recorded = std::fs::read_to_string(dir.join(HOST_FILE))
        .ok()
        .and_then(|s| {
            let (p, start) = s.trim().split_once(' ')?;
            Some((p.parse::<u32>().ok()?, start.parse::<u64>().ok()?))
        });
    match recorded {
        Some((p, start)) => p == pid && start == now,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_tmpdir_is_used() {
        let base = choose_base(Path::new("/tmp"), 4_194_304, 103).unwrap();
        assert_eq!(base, Path::new("/tmp"));
        assert!(socket_path_len(&base, 4_194_304) <= 103);
    }

    #[test]
    fn a_long_tmpdir_falls_back_to_tmp() {
        // macOS: /var/folders/xx/…/T/ and 103 usable bytes.
        let long = PathBuf::from(format!("/var/folders/zz/{}/T", "x".repeat(70)));
        assert!(socket_path_len(&long, 99_999) > 103);
        assert_eq!(choose_base(&long, 99_999, 103).unwrap(), Path::new("/tmp"));
        // Linux's 107 bytes take a TMPDIR that macOS's 103 do not.
        let edge = PathBuf::from(format!("/{}", "d".repeat(107 - 1 - 30)));
        let len = socket_path_len(&edge, 1234);
        assert_eq!(choose_base(&edge, 1234, len).unwrap(), edge);
        assert_eq!(
            choose_base(&edge, 1234, len - 1).unwrap(),
            Path::new("/tmp")
        );
    }

    #[test]
    fn no_room_at_all_is_an_error_not_a_truncated_path() {
        let e = choose_base(Path::new("/tmp"), 1, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("sun_path"), "{e}");
    }

    #[test]
    fn start_time_reads_our_own() {
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
        assert_eq!(start_time(u32::MAX), None);
    }
}
