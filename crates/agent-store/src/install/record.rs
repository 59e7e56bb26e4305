//! The install record beside each binary.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::path::{TempGuard, create_temp, sibling};
use crate::StoreError;

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

pub(super) fn read_record(path: &Path) -> Result<Option<InstallRecord>, StoreError> {
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
pub(super) fn write_record(binary: &Path, record: &InstallRecord) -> Result<(), StoreError> {
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
