//! Private temp directories (signatures before a push, other platforms'
//! binaries while locking).

use std::path::{Path, PathBuf};

use agent_manager::ErrorKind;

use crate::report::Failure;

/// A private temp directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh 0700 directory `{tmp}/{prefix}-{pid}-{n}`.
pub(crate) fn private_temp_dir(prefix: &str) -> Result<TempDir, Failure> {
    use std::os::unix::fs::DirBuilderExt as _;
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let p = base.join(format!("{prefix}-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(TempDir(p)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Failure::io(format!("creating {}", p.display()), &e)),
        }
    }
    Err(Failure::new(
        ErrorKind::Io,
        format!("cannot create a temp directory in {}", base.display()),
    ))
}
