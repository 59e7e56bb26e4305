//! [`Manager::load`] and [`Manager::load_path`]: from a ref (or a path) to a
//! ready, registered agent, and the admission every start goes through.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agent_ref::{AgentRef, ErrorKind};
use agent_spawn::{AgentConn, SpawnOptions};
use agent_store::{Fingerprint, Installer, VerifyMode};

use crate::pinning::Pinned;
use tracing::{Instrument, debug, info_span};

use crate::{LoadOptions, Manager, ManagerError};

impl Manager {
    /// Resolves, pulls when not cached, spawns and waits until the agent is
    /// ready, with the manager's default options
    /// ([`ManagerBuilder::load_defaults`](crate::ManagerBuilder::load_defaults));
    /// the connection is listed under `ref.unique()` (of the resolved ref)
    /// until it is closed ([`AgentConn::close`], [`Manager::cleanup`],
    /// [`Manager::cleanup_all`]), dies with its last handle, or exits by
    /// itself. With [`LoadOptions::managed`] the registry holds it too.
    /// When the environment the manager was built from lists the agent in
    /// `CODEFLY_AGENT_ATTACH`, the load attaches to it instead of spawning
    /// ([`Manager::attach`]).
    ///
    /// On a multi-thread runtime the load runs as a task of that runtime (in
    /// the caller's span and subscriber), so that the wake-ups it waits on land
    /// on the runtime's workers even when it is awaited from `block_on`'s
    /// thread, as in a `#[tokio::main]` function; dropping the future cancels the task, and
    /// with it the start (the child is killed and reaped). Task-local values
    /// of the caller are not visible to it.
    ///
    /// # Errors
    /// Those of [`Manager::pull`], then the spawn kinds (`spawn`,
    /// `agent-exited`, `handshake-timeout`, `handshake-malformed`,
    /// `version-mismatch`, `dial-timeout`, `not-serving`) with the agent's stderr tail;
    /// `admission` when `[sandbox] require = true` and nothing confines the agent, or
    /// its policy cannot be enforced on this machine (checked before anything starts).
    #[doc(alias = "Load")]
    pub async fn load(&self, agent: &AgentRef) -> Result<AgentConn, ManagerError> {
        self.load_with(agent, LoadOptions::new()).await
    }

    /// [`Manager::load`] with `opts` on top of the manager's defaults.
    ///
    /// # Errors
    /// As [`Manager::load`].
    pub async fn load_with(
        &self,
        agent: &AgentRef,
        opts: LoadOptions,
    ) -> Result<AgentConn, ManagerError> {
        let (this, agent) = (self.clone(), agent.clone());
        crate::worker::on_worker(async move { this.load_ref(&agent, opts).await }).await
    }

    async fn load_ref(
        &self,
        agent: &AgentRef,
        opts: LoadOptions,
    ) -> Result<AgentConn, ManagerError> {
        let span = info_span!("load", agent = %agent);
        async {
            let opts = opts.over(&self.inner.defaults);
            let spawn_opts = opts.to_spawn_options();
            if let Some(conn) = self
                .attach_if_listed(agent, spawn_opts.get_dial_timeout())
                .await?
            {
                return Ok(conn);
            }
            let sandbox = self.sandbox_for(Some(agent.publisher()), &agent.to_string(), &opts)?;
            let (resolved, pinned) = self.resolve_pinned(agent).await?;
            let (path, checked) = if pinned.is_some() {
                // Locked: the sha256 of what runs must be the lock's.
                let installed = self
                    .pull_resolved(&resolved, pinned.as_ref())
                    .instrument(info_span!("pull", agent = %resolved))
                    .await?;
                let installed = self
                    .check_pinned(&resolved, installed, pinned.as_ref())
                    .await?;
                (installed.path, None)
            } else {
                // The hot path: the fingerprint check in place (a stat of the
                // opened binary and one read of its small install record, no
                // hashing, no hand-off to another thread), and the descriptor
                // it checked is what runs. A binary that disagrees with its
                // record is hashed; one that fails the hash (truncated or
                // replaced behind our back) is fetched again, never run.
                let mut installer = self.inner.installer.clone();
                if let Some(mode) = opts.verify_mode() {
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
                        self.pull_resolved(&resolved, None)
                            .instrument(info_span!("pull", agent = %resolved))
                            .await?
                            .path,
                        None,
                    ),
                }
            };
            let mut installer = self.inner.installer.clone();
            if let Some(mode) = opts.verify_mode() {
                installer = installer.with_verify(mode);
            }
            let admit =
                restart_admission(installer, resolved.clone(), path.clone(), checked, pinned);
            let conn = self
                .spawn(&path, &opts, spawn_opts.sandbox(sandbox).admit(admit))
                .instrument(info_span!("spawn", agent = %resolved))
                .await?;
            self.register(resolved.unique(), &conn, opts.is_managed());
            Ok(conn)
        }
        .instrument(span)
        .await
    }

    /// Spawns the executable at `path` as is (no resolution, no store), with
    /// the manager's default options, and registers it under `path::{path}`.
    ///
    /// # Errors
    /// `binary-not-found` when there is no file at `path`, then the spawn kinds.
    pub async fn load_path(&self, path: &Path) -> Result<AgentConn, ManagerError> {
        self.load_path_with(path, LoadOptions::new()).await
    }

    /// [`Manager::load_path`] with `opts` on top of the manager's defaults.
    ///
    /// # Errors
    /// As [`Manager::load_path`].
    pub async fn load_path_with(
        &self,
        path: &Path,
        opts: LoadOptions,
    ) -> Result<AgentConn, ManagerError> {
        let (this, path) = (self.clone(), path.to_path_buf());
        crate::worker::on_worker(async move { this.load_file(&path, opts).await }).await
    }

    async fn load_file(&self, path: &Path, opts: LoadOptions) -> Result<AgentConn, ManagerError> {
        let span = info_span!("load", path = %path.display());
        async {
            // One stat, on this thread: a hand-off to the blocking pool and
            // back would cost more than the call.
            if std::fs::metadata(path).is_err() {
                return Err(ManagerError::NoSuchPath {
                    path: path.to_path_buf(),
                });
            }
            let opts = opts.over(&self.inner.defaults);
            let sandbox = self.sandbox_for(None, &path.display().to_string(), &opts)?;
            let spawn_opts = opts.to_spawn_options().sandbox(sandbox);
            let conn = self
                .spawn(path, &opts, spawn_opts)
                .instrument(info_span!("spawn", path = %path.display()))
                .await?;
            self.register(
                format!("path::{}", path.display()),
                &conn,
                opts.is_managed(),
            );
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

    /// The load's sandbox (`opts` are already over the manager's defaults):
    /// its options', else the configuration's, else unconfined unless
    /// `[sandbox] require = true`.
    fn sandbox_for(
        &self,
        publisher: Option<&str>,
        agent: &str,
        opts: &LoadOptions,
    ) -> Result<agent_sandbox::Sandbox, ManagerError> {
        if let Some(s) = opts.sandbox_asked() {
            return Ok(s.clone());
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

    /// Starts the agent (supervised when `opts` restart it) and waits until it is ready.
    async fn spawn(
        &self,
        path: &Path,
        opts: &LoadOptions,
        spawn_opts: SpawnOptions,
    ) -> Result<AgentConn, ManagerError> {
        let started = Instant::now();
        let conn = agent_spawn::spawn_with_restart(path, spawn_opts, opts.restart_policy()).await?;
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
/// went away ends supervision with `integrity`. A ref the lock file pins
/// (`pinned`) is hashed on every restart and must still hash to the lock's
/// sha256.
fn restart_admission(
    installer: Installer,
    agent: AgentRef,
    path: PathBuf,
    checked: Option<agent_spawn::Executable>,
    pinned: Option<Pinned>,
) -> agent_spawn::Admit {
    let installer = if pinned.is_some() {
        installer.with_verify(VerifyMode::Always)
    } else {
        installer
    };
    let pinned = pinned.map(Arc::new);
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let checked = Arc::new(Mutex::new(checked));
    Arc::new(move || {
        let installer = installer.clone();
        let agent = agent.clone();
        let path = path.clone();
        let pinned = pinned.clone();
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
            let hashed = tokio::task::spawn_blocking(move || match pinned {
                // The record was checked against the lock at install; the
                // bytes are hashed against the record and the record's
                // sha256 must still be the lock's.
                Some(pinned) => installer
                    .cached(&r)
                    .map(|hit| hit.filter(|i| pinned.admits(i)).map(|i| i.path)),
                None => installer.cached_path(&r),
            })
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
