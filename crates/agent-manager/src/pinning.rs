//! How the lock file pins loads ([`crate::lockfile`] is its format): a ref
//! the lock lists resolves to its locked version without asking any store,
//! the bytes that run must hash to the lock's sha256, and under `locked` an
//! unlisted ref is refused. The lock is consulted once per resolve, pull or
//! load ([`LockFilePins::decide`]); the answer, a [`Pinned`], travels with the
//! ref through pull and spawn, restarts included.

use std::path::{Path, PathBuf};

use agent_ref::{AgentRef, Platform};
use agent_store::Installed;

use crate::ManagerError;
use crate::lockfile::LockFile;

/// The lock file a manager honours (or none), and whether unlisted refs are refused.
#[derive(Debug, Default)]
pub(crate) struct LockFilePins {
    path: Option<PathBuf>,
    file: Option<LockFile>,
    locked: bool,
}

/// What the lock file pins for one ref on the manager's platform.
#[derive(Debug, Clone)]
pub(crate) struct Pinned {
    /// The ref at its locked version.
    pub(crate) agent: AgentRef,
    /// The sha256 the bytes must have, lower-case hex.
    pub(crate) sha256: String,
    /// The lock file that says so.
    pub(crate) lockfile: PathBuf,
}

impl LockFilePins {
    /// Reads the lock file at `path` (the library never looks for one by
    /// itself: the CLI finds `./agents.lock`). `locked` without a lock file
    /// refuses every ref, naming `agents.lock`.
    pub(crate) fn open(path: Option<&PathBuf>, locked: bool) -> Result<Self, ManagerError> {
        let Some(path) = path else {
            return Ok(LockFilePins {
                path: locked.then(|| PathBuf::from(crate::lockfile::LOCKFILE_NAME)),
                file: None,
                locked,
            });
        };
        // The file decides which bytes run.
        agent_store::check_trust_file(path, "lock file").map_err(ManagerError::Store)?;
        let file = LockFile::read(path)?;
        Ok(LockFilePins {
            path: Some(path.clone()),
            file: Some(file),
            locked,
        })
    }

    /// The lock file's path, when one is in use.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether unlisted refs are refused.
    pub(crate) fn is_locked(&self) -> bool {
        self.locked
    }

    /// The lock's decision for `agent` on `platform`: `Some` when the lock
    /// lists it (and its spec accepts the locked version), `None` when no
    /// lock applies and the stores resolve it.
    ///
    /// # Errors
    /// [`ManagerError::NotLocked`] under `locked` for a ref the lock does not list.
    /// [`ManagerError::NotLockedForPlatform`] for a listed ref with no
    /// artifact for `platform`: the lock locks nothing for it, so nothing
    /// the stores serve is accepted in its place.
    pub(crate) fn decide(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<Option<Pinned>, ManagerError> {
        let lockfile = || self.path.clone().unwrap_or_default();
        let Some(entry) = self.file.as_ref().and_then(|f| f.entry(agent)) else {
            if self.locked {
                return Err(ManagerError::NotLocked {
                    agent: agent.identifier(),
                    lockfile: lockfile(),
                });
            }
            return Ok(None);
        };
        let Some(artifact) = entry.artifact(platform) else {
            return Err(ManagerError::NotLockedForPlatform {
                agent: agent.identifier(),
                lockfile: lockfile(),
                platform: platform.to_string(),
                locked: entry
                    .platforms
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                fix: format!(
                    "agentctl lock --platform {platform} {}/{}",
                    agent.publisher(),
                    agent.name()
                ),
            });
        };
        Ok(Some(Pinned {
            agent: agent.with_version(&entry.version)?,
            sha256: artifact.sha256.to_ascii_lowercase(),
            lockfile: lockfile(),
        }))
    }
}

impl Pinned {
    /// The installer's pin: bytes that do not hash to the lock's sha256 are
    /// refused before they reach the cache path.
    pub(crate) fn install_pin(&self) -> Option<agent_store::Pin> {
        Some(agent_store::Pin {
            sha256: self.sha256.parse().ok()?,
            by: format!("the lock file {}", self.lockfile.display()),
        })
    }

    /// Whether `installed` is the locked binary.
    pub(crate) fn admits(&self, installed: &Installed) -> bool {
        installed.sha256.eq_ignore_ascii_case(&self.sha256)
    }
}
