//! The cross-process per-artifact lock file `{name}__{version}.lock`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::path::prepare_dir;
use crate::StoreError;

/// Opens (creating it 0600) and locks the lock file at `lock_path`, blocking
/// until the lock is ours. Closing the file releases the lock; the file itself
/// stays (removing it would race with a process that just opened it).
pub(super) fn acquire(root: &Path, lock_path: &Path) -> Result<File, StoreError> {
    prepare_dir(root, lock_path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(lock_path)
        .map_err(|e| StoreError::io(format!("open lock {}", lock_path.display()), e))?;
    file.lock()
        .map_err(|e| StoreError::io(format!("lock {}", lock_path.display()), e))?;
    Ok(file)
}
