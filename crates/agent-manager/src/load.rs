//! [`Manager::load`] and [`Manager::load_path`]: from a ref (or a path) to a
//! ready, registered agent, and the admission every start goes through.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agent_ref::{AgentRef, ErrorKind};
use agent_spawn::AgentConn;
use agent_store::{Fingerprint, Installer, VerifyMode};
use tracing::{Instrument, debug, info_span};

use crate::{LoadOptions, Manager, ManagerError};

impl Manager {
    /// Resolves, pulls when not cached, spawns and waits until the agent is
    /// ready; the connection is listed under `ref.unique()` (of the resolved
    /// ref) until it is closed ([`AgentConn::close`], [`Manager::cleanup`],
    /// [`Manager::cleanup_all`]), dies with its last handle, or exits by
    /// itself. With [`LoadOptions::managed`] the registry holds it too.
    ///
    /// # Errors
    /// Those of [`Manager::pull`], then the spawn kinds (`spawn`,
    /// `agent-exited`, `handshake-timeout`, `handshake-malformed`,
    /// `version-mismatch`, `dial-timeout`, `not-serving`) with the agent's stderr tail;
    /// `admission` when `[sandbox] require = true` and nothing confines the agent, or
    /// its policy cannot be enforced on this machine (checked before anything starts).
    pub async fn load(
        &self,
        agent: &AgentRef,
        opts: LoadOptions,
    ) -> Result<AgentConn, ManagerError> {
        let span = info_span!("load", agent = %agent);
        async {
            // CODEFLY_AGENT_ATTACH (src/attach.rs): attach instead of spawning.
            let dial = opts.dial_timeout.or(self.inner.defaults.dial_timeout);
            let dial = dial.unwrap_or(crate::attach::DEFAULT_ATTACH_TIMEOUT);
            if let Some(conn) = self.attach_if_listed(agent, dial).await? {
                return Ok(conn);
            }
            let mut opts = opts;
            opts.sandbox =
                Some(self.sandbox_for(Some(agent.publisher()), &agent.to_string(), &opts)?);
            let resolved = self.resolve(agent).await?;
            let locked = self
                .inner
                .lock
                .expected_sha256(&resolved, &self.inner.platform)
                .is_some();
            let (path, checked) = if locked {
                // Locked: the sha256 of what runs must be the lock's.
                let installed = self
                    .pull_resolved(&resolved)
                    .instrument(info_span!("pull", agent = %resolved))
                    .await?;
                (self.check_locked(&resolved, installed).await?.path, None)
            } else {
                // The hot path: the fingerprint check in place (a stat of the
                // opened binary and one read of its small install record, no
                // hashing, no hand-off to another thread), and the descriptor
                // it checked is what runs. A binary that disagrees with its
                // record is hashed; one that fails the hash (truncated or
                // replaced behind our back) is fetched again, never run.
                let mut installer = self.inner.installer.clone();
                if let Some(mode) = opts.verify.or(self.inner.defaults.verify) {
                    installer = installer.with_verify(mode);
                }
                let store_error =
                    |e| ManagerError::from_store(&resolved.identifier(), Vec::new(), e);
                let cached = match installer
                    .cached_path_fingerprint(&resolved)
                    .map_err(store_error)?
                {
                    Fingerprint::Match(hit) => Some((
                        hit.path.clone(),
                        Some(agent_spawn::Executable::from_parts(
                            hit.path,
                            hit.file.into(),
                        )),
                    )),
                    Fingerprint::Missing => None,
                    Fingerprint::NeedsHash => {
                        let r = resolved.clone();
                        tokio::task::spawn_blocking(move || installer.cached_path(&r))
                            .await
                            .map_err(|e| {
                                ManagerError::io("cache lookup", std::io::Error::other(e))
                            })?
                            .map_err(store_error)?
                            .map(|path| (path, None))
                    }
                };
                match cached {
                    Some(hit) => hit,
                    None => (
                        self.pull_resolved(&resolved)
                            .instrument(info_span!("pull", agent = %resolved))
                            .await?
                            .path,
                        None,
                    ),
                }
            };
            let managed = opts
                .managed
                .or(self.inner.defaults.managed)
                .unwrap_or(false);
            let mut installer = self.inner.installer.clone();
            if let Some(mode) = opts.verify.or(self.inner.defaults.verify) {
                installer = installer.with_verify(mode);
            }
            if locked {
                // The record's sha256 was checked against the lock at install:
                // a restart hashes the binary against it.
                installer = installer.with_verify(VerifyMode::Always);
            }
            let admit = restart_admission(installer, resolved.clone(), path.clone(), checked);
            let conn = self
                .spawn_checked(&path, opts, Some(admit))
                .instrument(info_span!("spawn", agent = %resolved))
                .await?;
            self.register(resolved.unique(), &conn, managed);
            Ok(conn)
        }
        .instrument(span)
        .await
    }

    /// Spawns the executable at `path` as is (no resolution, no store) and
    /// registers it under `path::{path}`.
    ///
    /// # Errors
    /// `binary-not-found` when there is no file at `path`, then the spawn kinds.
    pub async fn load_path(
        &self,
        path: &Path,
        opts: LoadOptions,
    ) -> Result<AgentConn, ManagerError> {
        let span = info_span!("load", path = %path.display());
        async {
            if tokio::fs::metadata(path).await.is_err() {
                return Err(ManagerError::NoSuchPath {
                    path: path.to_path_buf(),
                });
            }
            let mut opts = opts;
            opts.sandbox = Some(self.sandbox_for(None, &path.display().to_string(), &opts)?);
            let managed = opts
                .managed
                .or(self.inner.defaults.managed)
                .unwrap_or(false);
            let conn = self
                .spawn_at(path, opts)
                .instrument(info_span!("spawn", path = %path.display()))
                .await?;
            self.register(format!("path::{}", path.display()), &conn, managed);
            Ok(conn)
        }
        .instrument(span)
        .await
    }

    /// The sandbox `agent` is loaded with when the load does not say
    /// ([`LoadOptions::sandbox`]): the configuration's policy for its publisher
    /// (`None` when nothing confines it), with where each part came from.
    #[must_use]
    pub fn effective_sandbox(&self, agent: &AgentRef) -> crate::EffectiveSandbox {
        crate::EffectiveSandbox::from_settings(&self.inner.settings, Some(agent.publisher()))
    }

    /// The sandbox an agent loaded by path ([`Manager::load_path`]) gets when the
    /// load does not say: only `[publishers."*".sandbox]` applies (a path names no
    /// publisher).
    #[must_use]
    pub fn effective_path_sandbox(&self) -> crate::EffectiveSandbox {
        crate::EffectiveSandbox::from_settings(&self.inner.settings, None)
    }

    /// The load's sandbox: its options', else the configuration's, else
    /// unconfined unless `[sandbox] require = true`.
    fn sandbox_for(
        &self,
        publisher: Option<&str>,
        agent: &str,
        opts: &LoadOptions,
    ) -> Result<agent_sandbox::Sandbox, ManagerError> {
        if let Some(s) = opts
            .sandbox
            .clone()
            .or_else(|| self.inner.defaults.sandbox.clone())
        {
            return Ok(s);
        }
        let effective = crate::EffectiveSandbox::from_settings(&self.inner.settings, publisher);
        match effective.sandbox() {
            Some(s) => Ok(s),
            None if effective.require => Err(ManagerError::SandboxRequired {
                agent: agent.to_owned(),
                publisher: publisher.unwrap_or(crate::config::ANY_PUBLISHER).to_owned(),
                config: self.inner.settings.file.clone(),
            }),
            None => Ok(agent_sandbox::Sandbox::unconfined()),
        }
    }

    async fn spawn_at(&self, path: &Path, opts: LoadOptions) -> Result<AgentConn, ManagerError> {
        self.spawn_checked(path, opts, None).await
    }

    async fn spawn_checked(
        &self,
        path: &Path,
        opts: LoadOptions,
        admit: Option<agent_spawn::Admit>,
    ) -> Result<AgentConn, ManagerError> {
        let started = Instant::now();
        let opts = opts.over(&self.inner.defaults);
        let restart = opts.restart.unwrap_or_default();
        let mut spawn_opts = opts.into_spawn(&self.inner.base);
        if admit.is_some() {
            spawn_opts.admit = admit;
        }
        let conn = agent_spawn::spawn_with_restart(path, spawn_opts, restart).await?;
        debug!(
            pid = conn.pid(),
            endpoint = %conn.endpoint(),
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "agent ready"
        );
        Ok(conn)
    }
}

/// The admission every start of a cached agent goes through: the first start
/// runs the file the load just checked (`checked`, the descriptor the
/// fingerprint check opened, or the path opened now after a hash); every
/// restart checks the cache again (the fingerprint check in place, a hash
/// when it cannot vouch or when `installer` verifies always) and runs only a
/// binary that still matches, by its descriptor. A binary that changed or
/// went away ends supervision with `integrity`.
fn restart_admission(
    installer: Installer,
    agent: AgentRef,
    path: PathBuf,
    checked: Option<agent_spawn::Executable>,
) -> agent_spawn::Admit {
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let checked = Arc::new(Mutex::new(checked));
    Arc::new(move || {
        let installer = installer.clone();
        let agent = agent.clone();
        let path = path.clone();
        let first = first.swap(false, std::sync::atomic::Ordering::SeqCst);
        let checked = if first {
            checked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        } else {
            None
        };
        Box::pin(async move {
            if first {
                return match checked {
                    Some(exe) => Ok(exe),
                    None => agent_spawn::Executable::open(&path),
                };
            }
            let changed = || {
                agent_spawn::SpawnError::refused(
                    ErrorKind::Integrity,
                    format!(
                        "{agent}: the cached binary {} changed or is gone since it was checked; not restarting it",
                        path.display()
                    ),
                    None,
                )
            };
            let failed = |e: agent_store::StoreError| {
                agent_spawn::SpawnError::refused(
                    e.kind(),
                    format!("{agent}: the cache check before a restart failed"),
                    Some(Box::new(e)),
                )
            };
            match installer.cached_path_fingerprint(&agent).map_err(failed)? {
                Fingerprint::Match(hit) if hit.path == path => {
                    return Ok(agent_spawn::Executable::from_parts(
                        hit.path,
                        hit.file.into(),
                    ));
                }
                Fingerprint::Match(_) | Fingerprint::Missing => return Err(changed()),
                Fingerprint::NeedsHash => {}
            }
            let r = agent.clone();
            let hashed = tokio::task::spawn_blocking(move || installer.cached_path(&r))
                .await
                .map_err(|e| {
                    agent_spawn::SpawnError::refused(
                        ErrorKind::Io,
                        "the cache check before a restart did not finish",
                        Some(Box::new(std::io::Error::other(e))),
                    )
                })?;
            match hashed.map_err(failed)? {
                Some(p) if p == path => agent_spawn::Executable::open(&p),
                _ => Err(changed()),
            }
        })
    })
}
