//! Cleanup of temp files left by dead or long-gone installers.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Temp files untouched for this long are removed whoever owns them.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Whether `name` is an installer's temp file: `.{name}__{version}[.json].tmp.{pid}.{unique}`.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

/// Whether a file was last modified longer than [`STALE_AFTER`] before `now`.
pub(crate) fn untouched_too_long(meta: &fs::Metadata, now: SystemTime) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age > STALE_AFTER)
}

/// Removes temp files of this artifact left by dead processes, or untouched
/// for an hour. Best effort: failures are logged, never fatal.
pub(super) fn clean_stale_temps(path: &Path) {
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
            .is_ok_and(|m| untouched_too_long(&m, SystemTime::now()));
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
pub(super) fn process_alive(pid: u32) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
    }
}
