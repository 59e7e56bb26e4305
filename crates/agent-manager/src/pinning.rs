//! How the manager honours a lock file ([`crate::lockfile`]): a listed ref
//! resolves to its locked version without asking any store, its binary must
//! hash to the lock's sha256, and under `locked` an unlisted ref is refused.

use std::path::{Path, PathBuf};

use agent_ref::{AgentRef, Platform};

use crate::ManagerError;
use crate::lockfile::LockFile;

/// The lock file a manager honours (or none).
#[derive(Debug, Default)]
pub(crate) struct Lock {
    path: Option<PathBuf>,
    file: Option<LockFile>,
    locked: bool,
}

impl Lock {
    /// Reads the lock file at `path` (the library never looks for one by
    /// itself: the CLI finds `./agents.lock`). `locked` without a lock file
    /// refuses every ref, naming `agents.lock`.
    pub(crate) fn open(path: Option<&PathBuf>, locked: bool) -> Result<Lock, ManagerError> {
        let Some(path) = path else {
            return Ok(Lock {
                path: locked.then(|| PathBuf::from(crate::lockfile::LOCKFILE_NAME)),
                file: None,
                locked,
            });
        };
        // The file decides which bytes run.
        agent_store::check_trust_file(path, "lock file").map_err(ManagerError::Store)?;
        let file = LockFile::read(path)?;
        let path = path.clone();
        Ok(Lock {
            path: Some(path),
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

    /// The locked ref for `agent`: `Some` when the lock lists it (and its
    /// spec accepts the locked version), `None` when no lock applies.
    ///
    /// # Errors
    /// [`ManagerError::NotLocked`] under `locked` for a ref the lock does not list.
    /// [`ManagerError::NotLockedForPlatform`] for a listed ref with no
    /// artifact for `platform`: the lock locks nothing for it, so nothing
    /// the stores serve is accepted in its place.
    pub(crate) fn pin(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<Option<AgentRef>, ManagerError> {
        let entry = self.file.as_ref().and_then(|f| f.entry(agent));
        match entry {
            Some(e) if e.artifact(platform).is_none() => Err(ManagerError::NotLockedForPlatform {
                agent: agent.identifier(),
                lockfile: self.path.clone().unwrap_or_default(),
                platform: platform.to_string(),
                locked: e.platforms.keys().cloned().collect::<Vec<_>>().join(", "),
                fix: format!(
                    "agentctl lock --platform {platform} {}/{}",
                    agent.publisher(),
                    agent.name()
                ),
            }),
            Some(e) => Ok(Some(agent.with_version(&e.version)?)),
            None if self.locked => Err(ManagerError::NotLocked {
                agent: agent.identifier(),
                lockfile: self.path.clone().unwrap_or_default(),
            }),
            None => Ok(None),
        }
    }

    /// The sha256 the lock pins for `agent` (a concrete ref) on `platform`.
    pub(crate) fn expected_sha256(&self, agent: &AgentRef, platform: &Platform) -> Option<String> {
        let e = self.file.as_ref()?.entry(agent)?;
        if agent.concrete_version() != Some(&e.version) {
            return None;
        }
        e.artifact(platform).map(|a| a.sha256.to_ascii_lowercase())
    }
}
