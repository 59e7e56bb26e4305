//! The install record beside each binary: what was installed, from where,
//! signed by whom, and the file identity that makes the load-time check one
//! `stat`.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use super::path::{TempGuard, create_temp, sibling};
use crate::StoreError;

/// Records are small; anything bigger is not ours.
pub(super) const MAX_RECORD_SIZE: u64 = 64 * 1024;

/// The identity of a file as `stat` reports it. Any difference on load means
/// the binary is hashed against its record before it runs: rewriting a file
/// in place changes mtime/ctime (and `utimensat` cannot set ctime back),
/// replacing it changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
}

impl FileIdentity {
    /// The identity in `meta`.
    #[must_use]
    pub fn of(meta: &Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }
}

/// Who signed an installed binary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signer {
    /// The minisign key id, 16 upper-case hex digits (as `minisign` prints it).
    pub key_id: String,
    /// The signature's trusted comment
    /// (`codefly-agent {publisher}/{name}:{version} {os}/{arch}`).
    pub trusted_comment: String,
}

/// The record written beside each installed binary as `{name}__{version}.json`.
///
/// Its modification time is the artifact's last use (one `futimens` per
/// load; see [`crate::Cache`]).
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
    /// The binary's file identity when it was installed or last verified;
    /// `None` in records written before identities were recorded (then the
    /// next load hashes once and records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<FileIdentity>,
    /// The store that delivered it (`oci`, `http`, …; `local` for adopted binaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Who signed it; `None` = unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
}

/// Opens the record without following a symlink and without blocking on a
/// FIFO, and reads it only if it is a regular file under [`MAX_RECORD_SIZE`].
/// Returns the record and the open file (for the last-used touch).
///
/// An unparsable record is `Ok(None)` (the binary is then hashed and
/// re-recorded); a symlink, FIFO, device or oversized file in its place is
/// [`StoreError::Untrusted`].
pub(crate) fn open_record(path: &Path) -> Result<Option<(InstallRecord, File)>, StoreError> {
    Ok(open_record_marked(path)?.map(|(rec, file, _)| (rec, file)))
}

/// [`open_record`], with the record's modification time from the same
/// `fstat`: when the agent was last marked used.
pub(crate) fn open_record_marked(
    path: &Path,
) -> Result<Option<(InstallRecord, File, SystemTime)>, StoreError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(not_a_record(path, "it is a symlink"));
        }
        Err(e) => return Err(StoreError::io(format!("open {}", path.display()), e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io(format!("stat {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(not_a_record(path, "it is not a regular file"));
    }
    if meta.len() > MAX_RECORD_SIZE {
        return Err(not_a_record(
            path,
            &format!(
                "it is {} bytes (a record is under {MAX_RECORD_SIZE})",
                meta.len()
            ),
        ));
    }
    let bytes = read_small(&mut file, meta.len())
        .map_err(|e| StoreError::io(format!("read {}", path.display()), e))?;
    if bytes.len() as u64 > MAX_RECORD_SIZE {
        return Err(not_a_record(
            path,
            &format!("it grew past {MAX_RECORD_SIZE} bytes while it was read"),
        ));
    }
    let marked = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    match serde_json::from_slice::<InstallRecord>(&bytes) {
        Ok(r) => Ok(Some((r, file, marked))),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable install record");
            Ok(None)
        }
    }
}

/// Reads a small regular file of `len` bytes (as `fstat` said) in one
/// `read` in the usual case: the buffer has room for one byte more, and a
/// regular file's read is short only at its end, so a read that stops at
/// `len` has seen the end without a second read. Reads on (bounded by
/// [`MAX_RECORD_SIZE`] + 1) if the file grew.
fn read_small(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let cap = usize::try_from(MAX_RECORD_SIZE + 1).unwrap_or(usize::MAX);
    let want = usize::try_from(len).unwrap_or(cap).min(cap - 1);
    let mut bytes = vec![0u8; want + 1];
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            if bytes.len() >= cap {
                break;
            }
            bytes.resize(bytes.len().saturating_mul(2).min(cap), 0);
        }
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled == want {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

fn not_a_record(path: &Path, reason: &str) -> StoreError {
    StoreError::Untrusted {
        path_or_artifact: path.display().to_string(),
        reason: format!("install record refused: {reason}"),
        fix: format!("rm {}", path.display()),
    }
}

pub(super) fn read_record(path: &Path) -> Result<Option<InstallRecord>, StoreError> {
    Ok(open_record(path)?.map(|(r, _)| r))
}

/// Writes the record beside `binary` atomically (temp, fsync, rename).
pub(super) fn write_record(binary: &Path, record: &InstallRecord) -> Result<(), StoreError> {
    let temp = write_record_temp(binary, record)?;
    let target = sibling(binary, "", ".json");
    commit_record_temp(temp, &target)
}

/// A written, fsynced record under a temp name beside `binary`, removed
/// when the guard drops unless committed.
pub(super) fn write_record_temp(
    binary: &Path,
    record: &InstallRecord,
) -> Result<TempGuard, StoreError> {
    let (temp, mut file) = create_temp(binary, ".json")?;
    let guard = TempGuard(Some(temp.clone()));
    let mut body = serde_json::to_vec_pretty(record)
        .map_err(|e| StoreError::io("encode install record", io::Error::other(e)))?;
    body.push(b'\n');
    file.write_all(&body)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(format!("write {}", temp.display()), e))?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(0o644))
        .map_err(|e| StoreError::io(format!("chmod {}", temp.display()), e))?;
    Ok(guard)
}

/// Renames a record written by [`write_record_temp`] to `target`.
pub(super) fn commit_record_temp(mut temp: TempGuard, target: &Path) -> Result<(), StoreError> {
    let Some(path) = temp.0.as_ref() else {
        return Ok(());
    };
    fs::rename(path, target).map_err(|e| {
        StoreError::io(
            format!("rename {} to {}", path.display(), target.display()),
            e,
        )
    })?;
    temp.0 = None;
    Ok(())
}
