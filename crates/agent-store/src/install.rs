use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::io::AsyncRead;

use agent_ref::{AgentHome, AgentRef};

use crate::{Sha256Digest, StoreError};

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

/// The only way bytes reach the agent cache. Cheap to clone.
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

    /// The cached artifact for `agent` (concrete version), if one is installed.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref, [`StoreError::Io`] on read errors.
    pub fn cached(&self, agent: &AgentRef) -> Result<Option<Installed>, StoreError> {
        let _ = agent;
        todo!("agent-store issue #5")
    }

    /// Streams `reader` into the cache path of `agent`, verifying `expected`.
    ///
    /// # Errors
    /// [`StoreError::Integrity`] on digest/size mismatch, [`StoreError::Io`] otherwise.
    /// On any error nothing is left at the final path.
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
        let _ = (agent, source, expected, reader);
        todo!("agent-store issue #5")
    }

    /// Copies a local file (a Nix output, an extracted archive member) into the cache.
    ///
    /// # Errors
    /// As [`Installer::install_reader`].
    pub async fn install_file(
        &self,
        agent: &AgentRef,
        source: &str,
        expected: &Expected,
        path: &Path,
    ) -> Result<Installed, StoreError> {
        let _ = (agent, source, expected, path);
        todo!("agent-store issue #5")
    }

    /// Returns the cached artifact, or runs `fetch` holding the artifact's
    /// in-process single-flight slot and cross-process lock file, re-checking
    /// the cache once the lock is held.
    ///
    /// # Errors
    /// Whatever `fetch` returns, or [`StoreError::Io`] for lock errors.
    pub async fn ensure<F, Fut>(&self, agent: &AgentRef, fetch: F) -> Result<Installed, StoreError>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<Installed, StoreError>> + Send,
    {
        let _ = (agent, fetch);
        todo!("agent-store issue #5")
    }
}
