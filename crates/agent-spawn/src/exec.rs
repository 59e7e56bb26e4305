//! The file an agent runs as: a descriptor of the file that was checked, so
//! the bytes that were checked are the bytes that run.

use std::fmt;
use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{SpawnError, SpawnFailure};

/// An agent program held open: the descriptor of the file that was checked,
/// and its path (the agent's `argv[0]` and what messages show).
///
/// Spawning executes the descriptor, not the path: replacing or rewriting the
/// path after the check does not change what runs.
pub struct Executable {
    path: PathBuf,
    fd: OwnedFd,
}

impl fmt::Debug for Executable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executable")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Executable {
    /// Opens `path` (read-only, close-on-exec). The path must be absolute
    /// (no `PATH` search, no working-directory surprise).
    ///
    /// # Errors
    /// `spawn` when the path is relative or cannot be opened.
    pub fn open(path: &Path) -> Result<Executable, SpawnError> {
        let spawn_error = |source| SpawnFailure::Spawn {
            program: path.to_owned(),
            source,
        };
        if !path.is_absolute() {
            return Err(SpawnFailure::RelativeProgram {
                program: path.to_owned(),
            }
            .into());
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(spawn_error)?;
        Ok(Executable {
            path: path.to_owned(),
            fd: file.into(),
        })
    }

    /// An executable from a descriptor the caller already checked, and the
    /// path it was opened at.
    #[must_use]
    pub fn from_parts(path: PathBuf, fd: OwnedFd) -> Executable {
        Executable { path, fd }
    }

    /// The path (`argv[0]`).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path and the descriptor.
    #[must_use]
    pub fn into_parts(self) -> (PathBuf, OwnedFd) {
        (self.path, self.fd)
    }
}

impl AsFd for Executable {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The admission every start of an agent goes through, the first one and
/// every supervised restart: it checks the program (fingerprint, trust,
/// lock, …) and returns the descriptor it checked, or refuses with
/// [`SpawnError::refused`] (then nothing runs, and the error has the
/// refusal's kind).
pub type Admit = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Executable, SpawnError>> + Send>> + Send + Sync,
>;
