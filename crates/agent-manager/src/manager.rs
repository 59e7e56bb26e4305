//! The [`Manager`]: resolve, pull, load, and the registry of active agents.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_ref::{AgentHome, AgentRef, AgentSource, Platform};
use agent_spawn::{AgentConn, Endpoint, SpawnOptions};
use agent_store::{AgentStore, Installed, Installer, StoreChain};
use tracing::{Instrument, debug, info_span};

use crate::env::{EnvConfig, StoreId, StoreSelection};
use crate::{ManagerError, StoreAnswer, resolve};

/// Builds a [`Manager`]. Anything not set explicitly comes from the
/// environment when [`ManagerBuilder::from_env`] was called, else from the
/// defaults: home from `CODEFLY_HOME`/`~/.codefly`, remote source, no stores.
#[derive(Default)]
#[must_use]
pub struct ManagerBuilder {
    home: Option<AgentHome>,
    source: Option<AgentSource>,
    stores: Option<Vec<Arc<dyn AgentStore>>>,
    env: Option<EnvConfig>,
    read_env: bool,
    platform: Option<Platform>,
    refresh: bool,
    defaults: SpawnOptions,
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("home", &self.home)
            .field("source", &self.source)
            .field("stores", &self.stores)
            .field("env", &self.env)
            .field("read_env", &self.read_env)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// The agent home (the cache root, `CODEFLY_HOME`).
    pub fn home(mut self, home: AgentHome) -> Self {
        self.home = Some(home);
        self
    }

    /// Where `latest` is resolved from.
    pub fn source(mut self, source: AgentSource) -> Self {
        self.source = Some(source);
        self
    }

    /// The store chain, tried in this order (empty = no store; only the cache).
    pub fn stores(mut self, stores: Vec<Arc<dyn AgentStore>>) -> Self {
        self.stores = Some(stores);
        self
    }

    /// Fill what is not set explicitly from the process environment:
    /// `CODEFLY_HOME`, `CODEFLY_AGENT_SOURCE`, `CODEFLY_AGENT_STORES` (comma list
    /// of `nix,oci,http,github` or `none`; unset = every configured store in that
    /// order, GitHub always configured), and each store's own variables
    /// (`AGENT_NIX_FLAKE`, `AGENT_REGISTRY`, `AGENT_REGISTRY_SCHEME`,
    /// `AGENT_HTTP_STORE`, `GITHUB_API_URL`, `GITHUB_TOKEN`).
    pub fn from_env(mut self) -> Self {
        self.read_env = true;
        self
    }

    /// Like [`ManagerBuilder::from_env`] with settings already parsed (see
    /// [`EnvConfig::from_lookup`]); the stores still read their own variables.
    pub fn env_config(mut self, config: EnvConfig) -> Self {
        self.env = Some(config);
        self
    }

    /// Stores built from the environment bypass their cached answers
    /// (GitHub caches `latest` for an hour; `agentctl resolve --refresh`).
    pub fn refresh(mut self, refresh: bool) -> Self {
        self.refresh = refresh;
        self
    }

    /// The platform to fetch binaries for (default: this one).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Default spawn options for every load. A `stderr_sink` here is ignored:
    /// a sink belongs to one agent; give it per load with [`LoadOptions::stderr_sink`].
    pub fn spawn_options(mut self, mut opts: SpawnOptions) -> Self {
        opts.stderr_sink = None;
        self.defaults = opts;
        self
    }

    /// Builds the manager; with `from_env`, builds the configured stores.
    ///
    /// # Errors
    /// [`ManagerError::Ref`]/[`ManagerError::Config`] for bad environment
    /// values or a store named in `CODEFLY_AGENT_STORES` that is not
    /// configured; a store's own construction error.
    pub fn build(self) -> Result<Manager, ManagerError> {
        let env = match (self.env, self.read_env) {
            (Some(e), _) => Some(e),
            (None, true) => Some(EnvConfig::from_process_env()?),
            (None, false) => None,
        };
        let home = match (self.home, &env) {
            (Some(h), _) => h,
            (None, Some(e)) => e.home.clone(),
            (None, None) => AgentHome::from_env()?,
        };
        let source = self
            .source
            .or_else(|| env.as_ref().map(|e| e.source))
            .unwrap_or_default();
        let stores = match (self.stores, &env) {
            (Some(s), _) => s,
            (None, Some(e)) => stores_from_env(&e.stores, &home, self.refresh)?,
            (None, None) => Vec::new(),
        };
        debug!(
            home = %home.root().display(),
            ?source,
            stores = ?stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "manager built"
        );
        Ok(Manager {
            inner: Arc::new(Inner {
                installer: Installer::new(home.clone()),
                home,
                source,
                chain: StoreChain::new(stores),
                platform: self.platform.unwrap_or_else(Platform::current),
                defaults: Mutex::new(self.defaults),
                active: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }
}

/// Builds the stores a selection names, from their own environment variables.
/// `home` is where stores keep their own state (GitHub's answer cache);
/// `refresh` bypasses cached answers (GitHub's `latest`).
///
/// # Errors
/// [`ManagerError::Config`] when an explicitly selected store is not configured.
pub fn stores_from_env(
    selection: &StoreSelection,
    home: &AgentHome,
    refresh: bool,
) -> Result<Vec<Arc<dyn AgentStore>>, ManagerError> {
    let explicit = matches!(selection, StoreSelection::Explicit(_));
    let mut out: Vec<Arc<dyn AgentStore>> = Vec::new();
    for id in selection.candidates() {
        let built = build_store(id, home, refresh)
            .map_err(|e| ManagerError::from_store("store", Vec::new(), e))?;
        match built {
            Some(s) => out.push(s),
            None if explicit => {
                return Err(ManagerError::Config {
                    message: format!(
                        "CODEFLY_AGENT_STORES names {id} but it is not configured: {}",
                        id.requirement()
                    ),
                });
            }
            None => debug!(store = %id, "store not configured; skipped"),
        }
    }
    Ok(out)
}

fn build_store(
    id: StoreId,
    home: &AgentHome,
    refresh: bool,
) -> Result<Option<Arc<dyn AgentStore>>, agent_store::StoreError> {
    Ok(match id {
        StoreId::Nix => agent_store_nix::NixStore::from_env()?.map(|s| Arc::new(s) as _),
        StoreId::Oci => agent_store_oci::OciStore::from_env()?.map(|s| Arc::new(s) as _),
        StoreId::Http => agent_store_http::HttpStore::from_env()?.map(|s| Arc::new(s) as _),
        StoreId::Github => {
            // As `GithubStore::from_env`, but its answer cache follows this
            // manager's home, and `refresh` can bypass it.
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
            let mut b = agent_store_github::GithubStore::builder()
                .token(var("GITHUB_TOKEN").or_else(|| var("GH_TOKEN")))
                .cache_dir(agent_store_github::default_cache_dir(home))
                .refresh(refresh);
            if let Some(url) = var("GITHUB_API_URL") {
                b = b.api_url(url);
            }
            Some(Arc::new(b.build()?) as _)
        }
    })
}

/// Per-load settings on top of the manager's defaults. Unset fields keep the default.
#[derive(Default)]
#[must_use]
pub struct LoadOptions {
    startup_timeout: Option<Duration>,
    dial_timeout: Option<Duration>,
    grace: Option<Duration>,
    workdir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    stderr_sink: Option<Box<dyn std::io::Write + Send>>,
    unix_socket: Option<bool>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("startup_timeout", &self.startup_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("grace", &self.grace)
            .field("workdir", &self.workdir)
            .field("env", &self.env)
            .field("args", &self.args)
            .field("stderr_sink", &self.stderr_sink.is_some())
            .field("unix_socket", &self.unix_socket)
            .finish()
    }
}

impl LoadOptions {
    /// Defaults of the manager.
    pub fn new() -> Self {
        Self::default()
    }
    /// How long to wait for the handshake line (Go: `WithStartupTimeout`).
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.startup_timeout = Some(d);
        self
    }
    /// How long to wait for the gRPC connection and health (Go: `WithDialTimeout`).
    pub fn dial_timeout(mut self, d: Duration) -> Self {
        self.dial_timeout = Some(d);
        self
    }
    /// How long `close` waits after SIGTERM before SIGKILL.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = Some(d);
        self
    }
    /// The agent's working directory, exported as `CODEFLY_AGENT_WORKDIR` (Go: `WithWorkDir`).
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }
    /// One more environment variable for the agent (added to the defaults).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// One more command-line argument for the agent (added to the defaults).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
    /// Tee the agent's stderr to `sink` as it arrives (Go: `WithLogWriter`).
    pub fn stderr_sink(mut self, sink: Box<dyn std::io::Write + Send>) -> Self {
        self.stderr_sink = Some(sink);
        self
    }
    /// Serve on a unix socket in a private directory instead of loopback TCP.
    pub fn unix_socket(mut self, on: bool) -> Self {
        self.unix_socket = Some(on);
        self
    }

    fn into_spawn(self, d: &SpawnOptions) -> SpawnOptions {
        let mut o = d.clone_without_sink();
        o.startup_timeout = self.startup_timeout.unwrap_or(d.startup_timeout);
        o.dial_timeout = self.dial_timeout.unwrap_or(d.dial_timeout);
        o.grace = self.grace.unwrap_or(d.grace);
        if self.workdir.is_some() {
            o.workdir = self.workdir;
        }
        o.env.extend(self.env);
        o.args.extend(self.args);
        o.stderr_sink = self.stderr_sink;
        o.unix_socket = self.unix_socket.unwrap_or(d.unix_socket);
        o
    }
}

/// One registered agent, as [`Manager::active`] lists it.
#[derive(Debug, Clone)]
pub struct ActiveAgent {
    /// The registry key: `ref.unique()` (`kind::publisher/name:version`), or
    /// `path::{path}` for [`Manager::load_path`].
    pub unique: String,
    /// The process id (also its process group id).
    pub pid: u32,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// The connection (a clone; cheap).
    pub conn: AgentConn,
}

struct Entry {
    id: u64,
    conn: AgentConn,
}

struct Inner {
    home: AgentHome,
    installer: Installer,
    source: AgentSource,
    chain: StoreChain,
    platform: Platform,
    /// A mutex only because `SpawnOptions` (its sink) is not `Sync`; held for a clone.
    defaults: Mutex<SpawnOptions>,
    active: Mutex<HashMap<String, Vec<Entry>>>,
    next_id: AtomicU64,
}

/// Finds, fetches, starts and stops agents. Cheap to clone (shared state).
///
/// Every loaded agent is kept in a registry under its `unique()` key until
/// [`Manager::cleanup`]/[`Manager::cleanup_all`] closes it or it exits by
/// itself. Dropping the last clone of the manager (and of the conns) kills
/// whatever is still running.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("home", &self.inner.home)
            .field("source", &self.inner.source)
            .field("stores", &self.store_names())
            .field("platform", &self.inner.platform)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Starts a [`ManagerBuilder`].
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// The agent home.
    #[must_use]
    pub fn home(&self) -> &AgentHome {
        &self.inner.home
    }

    /// The installer writing into the home.
    #[must_use]
    pub fn installer(&self) -> &Installer {
        &self.inner.installer
    }

    /// Where `latest` is resolved from.
    #[must_use]
    pub fn source(&self) -> AgentSource {
        self.inner.source
    }

    /// The platform binaries are fetched for.
    #[must_use]
    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    /// The store chain.
    #[must_use]
    pub fn chain(&self) -> &StoreChain {
        &self.inner.chain
    }

    /// The stores' names, in the order they are tried.
    #[must_use]
    pub fn store_names(&self) -> Vec<String> {
        self.inner
            .chain
            .stores()
            .iter()
            .map(|s| s.name().to_owned())
            .collect()
    }

    /// `latest` and requirements → a concrete version (Go: `ResolveLatest`):
    /// with `CODEFLY_AGENT_SOURCE=local` the local cache only; else the local
    /// cache, then the stores, then the local cache again. Exact versions are
    /// returned untouched.
    ///
    /// # Errors
    /// [`ManagerError::NotFound`] (`binary-not-found`, or `store-unavailable`
    /// when a store could not be asked) listing every answer.
    pub async fn resolve(&self, agent: &AgentRef) -> Result<AgentRef, ManagerError> {
        let i = &self.inner;
        resolve::resolve(&i.home, i.source, i.chain.stores(), &i.platform, agent)
            .instrument(info_span!("resolve", agent = %agent))
            .await
    }

    /// The newest version the stores offer, never lower than one already
    /// installed (Go: `PinToLatestRelease`). Exact versions are returned untouched.
    ///
    /// # Errors
    /// As [`Manager::resolve`].
    pub async fn pin_to_latest_release(&self, agent: &AgentRef) -> Result<AgentRef, ManagerError> {
        let i = &self.inner;
        resolve::pin_to_latest_release(&i.home, i.source, i.chain.stores(), &i.platform, agent)
            .instrument(info_span!("resolve", agent = %agent, pin = true))
            .await
    }

    /// Resolves `agent`, then returns the cached binary or fetches it through
    /// the store chain. Concurrent pulls of one artifact (in this process or
    /// others) share one fetch.
    ///
    /// # Errors
    /// As [`Manager::resolve`]; `binary-not-found` when every store says
    /// missing, `store-unavailable`, `integrity` when a store served bytes that
    /// do not match their digest (nothing is cached then), `io`.
    pub async fn pull(&self, agent: &AgentRef) -> Result<Installed, ManagerError> {
        let resolved = self.resolve(agent).await?;
        self.pull_resolved(&resolved)
            .instrument(info_span!("pull", agent = %resolved))
            .await
    }

    async fn pull_resolved(&self, agent: &AgentRef) -> Result<Installed, ManagerError> {
        let i = &self.inner;
        let installer = i.installer.clone();
        let a = agent.clone();
        let cached = tokio::task::spawn_blocking(move || installer.cached(&a))
            .await
            .map_err(|e| ManagerError::io("cache lookup", std::io::Error::other(e)))?
            .map_err(|e| ManagerError::from_store(&agent.identifier(), Vec::new(), e))?;
        if let Some(hit) = cached {
            debug!(path = %hit.path.display(), "cached");
            return Ok(hit);
        }
        let local = StoreAnswer {
            store: "local".to_owned(),
            answer: format!("no {}", i.home.binary_path(agent)?.display()),
        };
        if i.chain.is_empty() {
            return Err(ManagerError::NotFound {
                agent: agent.identifier(),
                answers: vec![local, StoreAnswer::no_store_enabled()],
                unavailable: false,
            });
        }
        i.chain
            .pull(agent, &i.platform, &i.installer)
            .await
            .map_err(|e| ManagerError::from_store(&agent.identifier(), vec![local], e))
    }

    /// Resolves, pulls when not cached, spawns and waits until the agent is
    /// ready; the connection is registered under `ref.unique()` (of the
    /// resolved ref) until closed through [`Manager::cleanup`] /
    /// [`Manager::cleanup_all`] or until the agent exits by itself.
    ///
    /// # Errors
    /// Those of [`Manager::pull`], then the spawn kinds (`spawn`,
    /// `agent-exited`, `handshake-timeout`, `handshake-malformed`,
    /// `version-mismatch`, `dial-timeout`, `not-serving`) with the agent's stderr tail.
    pub async fn load(
        &self,
        agent: &AgentRef,
        opts: LoadOptions,
    ) -> Result<AgentConn, ManagerError> {
        let span = info_span!("load", agent = %agent);
        async {
            let resolved = self.resolve(agent).await?;
            // The hot path: a stat and the small install record, no hashing.
            // A binary whose size disagrees with its record (truncated or
            // replaced behind our back) is fetched again, never run.
            let installer = self.inner.installer.clone();
            let r = resolved.clone();
            let cached = tokio::task::spawn_blocking(move || installer.cached_path(&r))
                .await
                .map_err(|e| ManagerError::io("cache lookup", std::io::Error::other(e)))?
                .map_err(|e| ManagerError::from_store(&resolved.identifier(), Vec::new(), e))?;
            let path = if let Some(path) = cached {
                path
            } else {
                self.pull_resolved(&resolved)
                    .instrument(info_span!("pull", agent = %resolved))
                    .await?
                    .path
            };
            let conn = self
                .spawn_at(&path, opts)
                .instrument(info_span!("spawn", agent = %resolved))
                .await?;
            self.register(resolved.unique(), &conn);
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
            let conn = self
                .spawn_at(path, opts)
                .instrument(info_span!("spawn", path = %path.display()))
                .await?;
            self.register(format!("path::{}", path.display()), &conn);
            Ok(conn)
        }
        .instrument(span)
        .await
    }

    async fn spawn_at(&self, path: &Path, opts: LoadOptions) -> Result<AgentConn, ManagerError> {
        let started = Instant::now();
        let spawn_opts = {
            let d = self
                .inner
                .defaults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            opts.into_spawn(&d)
        };
        let conn = agent_spawn::spawn(path, spawn_opts).await?;
        debug!(
            pid = conn.pid(),
            endpoint = %conn.endpoint(),
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "agent ready"
        );
        Ok(conn)
    }

    fn register(&self, unique: String, conn: &AgentConn) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_active()
            .entry(unique.clone())
            .or_default()
            .push(Entry {
                id,
                conn: conn.clone(),
            });
        // Unregister when the agent exits by itself. The task holds a weak
        // reference so that it never keeps the manager (and its agents) alive.
        let exited = conn.exited();
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let info = exited.await;
            if let Some(inner) = weak.upgrade() {
                debug!(unique, ?info, "agent exited; unregistered");
                remove_entry(&inner, &unique, id);
            }
        });
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        lock(&self.inner)
    }

    /// Every registered agent.
    #[must_use]
    pub fn active(&self) -> Vec<ActiveAgent> {
        let map = self.lock_active();
        let mut out: Vec<ActiveAgent> = map
            .iter()
            .flat_map(|(unique, entries)| {
                entries.iter().map(move |e| ActiveAgent {
                    unique: unique.clone(),
                    pid: e.conn.pid(),
                    endpoint: e.conn.endpoint().clone(),
                    conn: e.conn.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.unique.cmp(&b.unique).then(a.pid.cmp(&b.pid)));
        out
    }

    /// Closes every agent registered under `unique` (gracefully, concurrently)
    /// and unregisters it (Go: `Cleanup`). Returns how many were closed.
    pub async fn cleanup(&self, unique: &str) -> usize {
        let entries = self.lock_active().remove(unique).unwrap_or_default();
        close_all(entries).await
    }

    /// Closes every registered agent (gracefully, concurrently) and empties the
    /// registry (Go: `CleanupAll`). Returns how many were closed.
    pub async fn cleanup_all(&self) -> usize {
        let entries: Vec<Entry> = self.lock_active().drain().flat_map(|(_, v)| v).collect();
        close_all(entries).await
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
    inner
        .active
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn remove_entry(inner: &Inner, unique: &str, id: u64) {
    let mut map = lock(inner);
    if let Some(v) = map.get_mut(unique) {
        v.retain(|e| e.id != id);
        if v.is_empty() {
            map.remove(unique);
        }
    }
}

async fn close_all(entries: Vec<Entry>) -> usize {
    let n = entries.len();
    futures_util::future::join_all(entries.iter().map(|e| e.conn.close())).await;
    n
}
