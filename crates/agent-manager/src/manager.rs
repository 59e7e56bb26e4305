//! The [`Manager`]: resolve, pull, load, and the registry of active agents.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_ref::{AgentHome, AgentRef, AgentSource, ErrorKind, Platform};
use agent_spawn::{AgentConn, Endpoint, SpawnOptions, WeakAgentConn};
use agent_store::{
    AgentStore, Fallback, Fingerprint, Installed, Installer, StoreChain, VerifyMode,
};
use tracing::{Instrument, debug, info_span};

use crate::config::{Config, ConfigError, EffectiveConfig, FallbackSetting, Origin, VerifySetting};
use crate::env::EnvConfig;
use crate::locking::Lock;
use crate::settings::{Settings, Val};
use crate::{ManagerError, StoreAnswer, resolve};

/// Builds a [`Manager`].
///
/// Settings come, per setting, from (highest first): the builder's own
/// methods ([`home`](Self::home), [`stores`](Self::stores), …); the
/// environment (with [`from_env`](Self::from_env) or
/// [`env_config`](Self::env_config)); the configuration file (read with
/// `from_env`: `CODEFLY_CONFIG`, else `$CODEFLY_HOME/config.toml`) or the
/// [`Config`] given to [`config`](Self::config); the defaults (home from
/// `CODEFLY_HOME`/`~/.codefly`, remote source, no stores).
#[derive(Default)]
#[must_use]
pub struct ManagerBuilder {
    home: Option<AgentHome>,
    source: Option<AgentSource>,
    stores: Option<Vec<Arc<dyn AgentStore>>>,
    env: Option<EnvConfig>,
    read_env: bool,
    config: Option<Config>,
    platform: Option<Platform>,
    refresh: bool,
    defaults: LoadOptions,
    base: SpawnOptions,
    lockfile: Option<PathBuf>,
    locked: bool,
    progress: Option<agent_store::ProgressFn>,
}

impl std::fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("home", &self.home)
            .field("source", &self.source)
            .field("stores", &self.stores)
            .field("env", &self.env)
            .field("read_env", &self.read_env)
            .field("config", &self.config)
            .field("lockfile", &self.lockfile)
            .field("locked", &self.locked)
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

    /// The store chain, tried in this order (empty = no store; only the
    /// cache). Replaces the stores the settings would build; publisher
    /// scoping (`[publishers."P"] stores`) still applies, by store name.
    pub fn stores(mut self, stores: Vec<Arc<dyn AgentStore>>) -> Self {
        self.stores = Some(stores);
        self
    }

    /// Read the environment and the configuration file: `CODEFLY_HOME`,
    /// `CODEFLY_AGENT_SOURCE`, `CODEFLY_AGENT_STORES` (comma list of
    /// `nix,oci,http,github` or `none`; unset = every configured store in
    /// that order), `CODEFLY_CONFIG`, `CODEFLY_AGENT_LOCKFILE` and the store
    /// variables (`AGENT_NIX_FLAKE`, `AGENT_REGISTRY`, `AGENT_REGISTRY_SCHEME`,
    /// `AGENT_HTTP_STORE`, `GITHUB_API_URL`), each winning over the file.
    /// Credentials (`GITHUB_TOKEN`/`GH_TOKEN`, `AGENT_REGISTRY_USERNAME`/
    /// `AGENT_REGISTRY_PASSWORD`, the docker config) are read when the stores are built.
    pub fn from_env(mut self) -> Self {
        self.read_env = true;
        self
    }

    /// Like [`ManagerBuilder::from_env`] with the variables already parsed
    /// (see [`EnvConfig::from_lookup`]); the configuration file is discovered
    /// from them.
    pub fn env_config(mut self, config: EnvConfig) -> Self {
        self.env = Some(config);
        self
    }

    /// A configuration built in code (or read with [`Config::load`]): used
    /// instead of the file `from_env` would discover. Environment variables
    /// still win over it when `from_env` is also called.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Stores built from the settings bypass their cached answers
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

    /// Default options for every load; a [`LoadOptions`] given to
    /// [`Manager::load`] is applied on top (its set fields win, its env and
    /// args are appended). A stderr sink here is shared by every agent
    /// this manager loads (it is an `Arc`), unless a load sets its own.
    pub fn load_defaults(mut self, opts: LoadOptions) -> Self {
        self.defaults = opts;
        self
    }

    /// The spawn options every load starts from (every field of agent-spawn:
    /// timeouts, grace, work dir, env, args, the stderr sink, lifeline, …);
    /// [`load_defaults`](Self::load_defaults) and each load's
    /// [`LoadOptions`] apply on top. A stderr sink here applies to every load
    /// that does not set its own.
    pub fn spawn_options(mut self, opts: SpawnOptions) -> Self {
        self.base = opts;
        self
    }

    /// The lock file to honour (default: `CODEFLY_AGENT_LOCKFILE` with
    /// `from_env`, else none). A ref it lists resolves to the locked version
    /// without asking any store, and the binary's sha256 must equal the lock's.
    pub fn lockfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.lockfile = Some(path.into());
        self
    }

    /// Refuse (kind `not-locked`) every ref the lock file does not list.
    pub fn locked(mut self, locked: bool) -> Self {
        self.locked = locked;
        self
    }

    /// Called by the installer as the bytes of every pull arrive (and once
    /// more when it ends), from the installing task: keep it quick (update a
    /// progress bar, send on a channel). `agentctl pull` draws its bar from it.
    pub fn progress(mut self, progress: agent_store::ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Builds the manager: reads the configuration file (with `from_env`),
    /// merges the settings and builds the stores they select.
    ///
    /// # Errors
    /// [`ManagerError::Config`] (kind `config`) for a configuration file or
    /// variable that does not validate, or a store that is selected but not
    /// configured (or not compiled in); a store's own construction error;
    /// [`ManagerError::Ref`] when there is no home at all.
    pub fn build(self) -> Result<Manager, ManagerError> {
        let env = match (self.env, self.read_env) {
            (Some(e), _) => Some(e),
            (None, true) => Some(EnvConfig::from_process_env()?),
            (None, false) => None,
        };
        let home = match (self.home, &env) {
            (Some(h), _) => Val::new(h, Origin::Code),
            (None, Some(e)) => {
                let origin = if e.is_set(agent_ref::CODEFLY_HOME_ENV) {
                    Origin::Env(agent_ref::CODEFLY_HOME_ENV.to_owned())
                } else {
                    Origin::Default
                };
                Val::new(e.home.clone(), origin)
            }
            (None, None) => Val::new(AgentHome::from_env()?, Origin::Default),
        };
        let (config, text, config_origin) = match (self.config, &env) {
            (Some(c), _) => (Some(c), None, Origin::Code),
            (None, Some(e)) => match Config::discover(e.config.as_deref(), &home.value)? {
                Some(path) => {
                    // The file decides which stores and keys are trusted.
                    agent_store::check_trust_file(&path, "configuration file")
                        .map_err(ManagerError::Store)?;
                    let text = std::fs::read_to_string(&path)
                        .map_err(|err| ManagerError::Config(ConfigError::unreadable(&path, err)))?;
                    let c = Config::parse(&text, Some(&path))?;
                    let origin = if e.config.is_some() {
                        Origin::Env(crate::config::CONFIG_ENV.to_owned())
                    } else {
                        Origin::Default
                    };
                    (Some(c), Some(text), origin)
                }
                None => (None, None, Origin::Default),
            },
            (None, None) => (None, None, Origin::Default),
        };
        let mut settings =
            Settings::merge(home, config.as_ref(), text, config_origin, env.as_ref());
        if let Some(source) = self.source {
            settings.source = Val::new(source, Origin::Code);
        }
        if let Some(p) = self.lockfile {
            settings.lockfile = Some(Val::new(p, Origin::Code));
        }
        let home = settings.home.value.clone();
        let stores = match (self.stores, env.is_some() || config.is_some()) {
            (Some(s), _) => s,
            (None, true) => crate::stores::build(&settings, &home, self.refresh)?,
            (None, false) => Vec::new(),
        };
        let fallback = match settings.fallback.value {
            FallbackSetting::Missing => Fallback::Missing,
            FallbackSetting::Any => Fallback::Any,
        };
        let chain = StoreChain::new(stores).with_fallback(fallback);
        let lock =
            crate::locking::Lock::open(settings.lockfile.as_ref().map(|v| &v.value), self.locked)?;
        debug!(
            home = %home.root().display(),
            source = ?settings.source.value,
            stores = ?chain.stores().iter().map(|s| s.name()).collect::<Vec<_>>(),
            config = ?settings.file,
            "manager built"
        );
        let verify = match settings.verify.value {
            VerifySetting::Fingerprint => VerifyMode::Fingerprint,
            VerifySetting::Always => VerifyMode::Always,
        };
        let mut installer = Installer::new(home.clone())
            .with_verify(verify)
            .with_download_timeout(settings.download_timeout.value)
            .with_trust(settings.trust_policy()?);
        if let Some(progress) = self.progress {
            installer = installer.with_progress(progress);
        }
        Ok(Manager {
            inner: Arc::new(Inner {
                installer,
                home,
                source: settings.source.value,
                chain,
                settings,
                lock,
                platform: self.platform.unwrap_or_else(Platform::current),
                defaults: self.defaults,
                base: self.base,
                active: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }
}

/// The agent's stderr, as it arrives: called from a plain thread, never on
/// an async worker, with each chunk read (not split into lines).
pub use agent_spawn::StderrSink;

/// Per-load settings on top of the manager's defaults.
/// Unset fields keep the default; `Clone` (the sink is shared).
#[doc(alias = "LoadOption")]
#[derive(Default, Clone)]
#[must_use]
pub struct LoadOptions {
    startup_timeout: Option<Duration>,
    dial_timeout: Option<Duration>,
    grace: Option<Duration>,
    workdir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    stderr_sink: Option<StderrSink>,
    unix_socket: Option<bool>,
    env_allowlist: Option<Vec<String>>,
    env_remove: Vec<OsString>,
    managed: Option<bool>,
    verify: Option<VerifyMode>,
    restart: Option<agent_spawn::RestartPolicy>,
    sandbox: Option<agent_sandbox::Sandbox>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("startup_timeout", &self.startup_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("grace", &self.grace)
            .field("workdir", &self.workdir)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("args", &self.args)
            .field("stderr_sink", &self.stderr_sink.is_some())
            .field("unix_socket", &self.unix_socket)
            .field("env_allowlist", &self.env_allowlist)
            .field("env_remove", &self.env_remove)
            .field("managed", &self.managed)
            .field("verify", &self.verify)
            .field("restart", &self.restart)
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

impl LoadOptions {
    /// Defaults of the manager.
    pub fn new() -> Self {
        Self::default()
    }
    /// How long to wait for the handshake line.
    #[doc(alias = "WithStartupTimeout")]
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.startup_timeout = Some(d);
        self
    }
    /// How long to wait for the gRPC connection and health.
    #[doc(alias = "WithDialTimeout")]
    pub fn dial_timeout(mut self, d: Duration) -> Self {
        self.dial_timeout = Some(d);
        self
    }
    /// How long `close` waits after SIGTERM before SIGKILL.
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = Some(d);
        self
    }
    /// The agent's working directory, exported as `CODEFLY_AGENT_WORKDIR`.
    #[doc(alias = "WithWorkDir")]
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }
    /// One more environment variable for the agent (added to the defaults).
    /// An explicit variable is given even when it is a credential's name.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// One more command-line argument for the agent (added to the defaults).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
    /// Tee the agent's stderr to `sink` as it arrives.
    /// Called from a plain thread with each chunk read.
    #[doc(alias = "WithLogWriter")]
    pub fn stderr_sink(mut self, sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.stderr_sink = Some(Arc::new(sink));
        self
    }
    /// As [`LoadOptions::stderr_sink`], with a sink already shared.
    pub fn stderr_sink_arc(mut self, sink: StderrSink) -> Self {
        self.stderr_sink = Some(sink);
        self
    }
    /// Serve on a unix socket in a private directory instead of loopback TCP.
    pub fn unix_socket(mut self, on: bool) -> Self {
        self.unix_socket = Some(on);
        self
    }
    /// Clear the agent's environment down to an allowlist: `PATH`, `HOME`,
    /// `USER`, `LANG`, `LC_*`, `TZ`, `TMPDIR`, `TERM`, `OTEL_*`, plus `extra`
    /// (a trailing `*` matches a prefix). The `CODEFLY_AGENT_*` variables and
    /// those given with [`LoadOptions::env`] are always set.
    pub fn env_allowlist<I, S>(mut self, extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env_allowlist = Some(extra.into_iter().map(Into::into).collect());
        self
    }
    /// Remove one more inherited variable from the agent's environment (on
    /// top of the store credentials, which are always removed).
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }
    /// Let the manager's registry own the agent (go-plugin's `Managed`): it
    /// then runs until [`AgentConn::close`], [`Manager::cleanup`] /
    /// [`Manager::cleanup_all`], its own exit, or the manager being dropped,
    /// even after every handle the app held is gone. Default `false`: the
    /// agent dies with the last handle the app holds (the registry only
    /// lists it and can still close it).
    #[doc(alias = "Managed")]
    pub fn managed(mut self, on: bool) -> Self {
        self.managed = Some(on);
        self
    }
    /// How the cached binary is checked before it runs: by its file
    /// identity (default, one `stat`) or by hashing it every time
    /// (`[cache] verify = "always"`).
    pub fn verify(mut self, mode: VerifyMode) -> Self {
        self.verify = Some(mode);
        self
    }
    /// Restart the agent when it exits, as `policy` says (default never):
    /// the returned connection and its channel follow the restarts (see
    /// [`agent_spawn::supervise`]).
    pub fn restart(mut self, policy: agent_spawn::RestartPolicy) -> Self {
        self.restart = Some(policy);
        self
    }

    /// How the agent is confined, over the configuration's policy: a
    /// [`Sandbox::policy`](agent_sandbox::Sandbox::policy), or
    /// [`Sandbox::unconfined`](agent_sandbox::Sandbox::unconfined) as the explicit
    /// opt-out. A policy this machine cannot enforce is `admission`, nothing started.
    #[doc(alias = "WithSandbox")]
    #[doc(alias = "WithoutSandbox")]
    pub fn sandbox(mut self, sandbox: agent_sandbox::Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// `self` on top of `d` (the manager's defaults): set fields win, env and args are appended.
    fn over(self, d: &LoadOptions) -> LoadOptions {
        let mut env = d.env.clone();
        env.extend(self.env);
        let mut args = d.args.clone();
        args.extend(self.args);
        let mut env_remove = d.env_remove.clone();
        env_remove.extend(self.env_remove);
        LoadOptions {
            startup_timeout: self.startup_timeout.or(d.startup_timeout),
            dial_timeout: self.dial_timeout.or(d.dial_timeout),
            grace: self.grace.or(d.grace),
            workdir: self.workdir.or_else(|| d.workdir.clone()),
            env,
            args,
            stderr_sink: self.stderr_sink.or_else(|| d.stderr_sink.clone()),
            unix_socket: self.unix_socket.or(d.unix_socket),
            env_allowlist: self.env_allowlist.or_else(|| d.env_allowlist.clone()),
            env_remove,
            managed: self.managed.or(d.managed),
            verify: self.verify.or(d.verify),
            restart: self.restart.or(d.restart),
            sandbox: self.sandbox.or_else(|| d.sandbox.clone()),
        }
    }

    /// The spawn options: `base` (the builder's `spawn_options`) with the
    /// fields set here on top (env and args appended); the store credentials
    /// are removed from the inherited environment.
    fn into_spawn(self, base: &SpawnOptions) -> SpawnOptions {
        let mut o = base.clone();
        if let Some(d) = self.startup_timeout {
            o.startup_timeout = d;
        }
        if let Some(d) = self.dial_timeout {
            o.dial_timeout = d;
        }
        if let Some(d) = self.grace {
            o.grace = d;
        }
        if self.workdir.is_some() {
            o.workdir = self.workdir;
        }
        o.env.extend(self.env);
        o.args.extend(self.args);
        if self.stderr_sink.is_some() {
            o.stderr_sink = self.stderr_sink;
        }
        o.unix_socket = self.unix_socket.unwrap_or(o.unix_socket);
        if self.env_allowlist.is_some() {
            o.env_allowlist = self.env_allowlist;
        }
        if let Some(sandbox) = self.sandbox {
            o.sandbox = sandbox;
        }
        for v in credential_env().into_iter().chain(self.env_remove) {
            if !o.env_remove.contains(&v) {
                o.env_remove.push(v);
            }
        }
        o
    }
}

/// The inherited variables that carry store credentials, never given to an
/// agent: agent-spawn always strips `HOST_SECRET_ENV`; naming them here too
/// keeps the facade's guarantee visible in one place, whatever the lower crate.
fn credential_env() -> Vec<OsString> {
    agent_protocol::HOST_SECRET_ENV
        .iter()
        .map(OsString::from)
        .collect()
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
    held: Held,
}

/// How the registry holds an agent (see the crate docs, *When an agent dies*).
enum Held {
    /// `LoadOptions::managed(true)`: the registry keeps it alive.
    Managed(AgentConn),
    /// The default: listed, closable by `cleanup`, but alive only while the
    /// app holds a handle.
    Listed(WeakAgentConn),
}

impl Held {
    fn conn(&self) -> Option<AgentConn> {
        match self {
            Held::Managed(c) => Some(c.clone()),
            Held::Listed(w) => w.upgrade(),
        }
    }
}

struct Inner {
    home: AgentHome,
    installer: Installer,
    source: AgentSource,
    chain: StoreChain,
    settings: Settings,
    lock: Lock,
    platform: Platform,
    defaults: LoadOptions,
    base: SpawnOptions,
    active: Mutex<HashMap<String, Vec<Entry>>>,
    next_id: AtomicU64,
}

/// Finds, fetches, starts and stops agents. Cheap to clone (shared state).
///
/// Every loaded agent is listed in a registry under its `unique()` key
/// ([`Manager::active`], [`Manager::cleanup`], [`Manager::cleanup_all`]).
/// The registry keeps an agent alive only when it was loaded with
/// [`LoadOptions::managed`]; see the crate docs, *When an agent dies*.
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

    /// The store chain (every store, before publisher scoping).
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

    /// Every effective setting and where it came from (file, env VAR,
    /// default, code); never a secret. `agentctl config [--json]` prints it.
    #[must_use]
    pub fn effective_config(&self) -> EffectiveConfig {
        let mut e = self.inner.settings.effective();
        e.push(
            "stores.built",
            {
                let names = self.store_names();
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            },
            Origin::Default,
        );
        if let Some(p) = self.inner.lock.path() {
            e.push(
                "locked",
                self.inner.lock.is_locked().to_string(),
                Origin::Code,
            );
            let _ = p;
        }
        e
    }

    /// The lock file in use, if any.
    #[must_use]
    pub fn lockfile(&self) -> Option<&Path> {
        self.inner.lock.path()
    }

    /// The stores that may be asked for `agent`: every store, or only those
    /// its publisher is scoped to (`[publishers."P"] stores = [...]`, its
    /// table over `"*"`'s); never `nix` for a publisher that requires
    /// signatures unless its `stores` names `nix`.
    #[must_use]
    pub fn chain_for(&self, agent: &AgentRef) -> StoreChain {
        let chain = &self.inner.chain;
        match self.inner.settings.scope(agent.publisher()) {
            None => chain.clone(),
            Some(allowed) => {
                let stores = chain
                    .stores()
                    .iter()
                    .filter(|s| allowed.iter().any(|id| id.as_str() == s.name()))
                    .cloned()
                    .collect();
                StoreChain::new(stores)
                    .with_retry(*chain.retry_policy())
                    .with_fallback(chain.fallback())
            }
        }
    }

    /// `latest` and requirements → a concrete version:
    /// a ref the lock file lists → its locked version, no store asked; with
    /// `CODEFLY_AGENT_SOURCE=local` the local cache only; else the local
    /// cache, then the authoritative store (the first, in order, that lists
    /// any version), then the local cache again. Exact versions are returned
    /// untouched.
    ///
    /// # Errors
    /// [`ManagerError::NotFound`] (`binary-not-found`), or
    /// [`ManagerError::StoresUnavailable`] (`store-unavailable`) when a store
    /// could not be asked, listing every answer;
    /// [`ManagerError::NotLocked`] under `locked` for a ref the lock does not list.
    #[doc(alias = "ResolveLatest")]
    pub async fn resolve(&self, agent: &AgentRef) -> Result<AgentRef, ManagerError> {
        if let Some(pinned) = self.inner.lock.pin(agent, &self.inner.platform)? {
            debug!(agent = %agent, pinned = %pinned, "resolved from the lock file");
            return Ok(pinned);
        }
        let i = &self.inner;
        let chain = self.chain_for(agent);
        resolve::resolve(&i.home, i.source, &chain, &i.platform, agent)
            .instrument(info_span!("resolve", agent = %agent))
            .await
    }

    /// The newest version the authoritative store offers, never lower than
    /// one already installed. A locked ref gives its locked version. Exact
    /// versions are returned untouched.
    ///
    /// # Errors
    /// As [`Manager::resolve`].
    #[doc(alias = "PinToLatestRelease")]
    pub async fn pin_to_latest_release(&self, agent: &AgentRef) -> Result<AgentRef, ManagerError> {
        if let Some(pinned) = self.inner.lock.pin(agent, &self.inner.platform)? {
            return Ok(pinned);
        }
        let i = &self.inner;
        let chain = self.chain_for(agent);
        resolve::pin_to_latest_release(&i.home, i.source, &chain, &i.platform, agent)
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
        let installed = self
            .pull_resolved(&resolved)
            .instrument(info_span!("pull", agent = %resolved))
            .await?;
        self.check_locked(&resolved, installed).await
    }

    /// A locked ref's binary must hash to the lock's sha256; a mismatch is
    /// `integrity`, and the binary is removed from the cache (never run).
    async fn check_locked(
        &self,
        agent: &AgentRef,
        installed: Installed,
    ) -> Result<Installed, ManagerError> {
        let i = &self.inner;
        let Some(expected) = i.lock.expected_sha256(agent, &i.platform) else {
            return Ok(installed);
        };
        if installed.sha256.eq_ignore_ascii_case(&expected) {
            return Ok(installed);
        }
        let record = i.installer.record_path(agent).ok();
        let (bin, rec) = (installed.path.clone(), record);
        // Nothing that disagrees with the lock stays in the cache.
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(&bin);
            if let Some(r) = rec {
                let _ = std::fs::remove_file(r);
            }
        })
        .await;
        Err(ManagerError::LockMismatch {
            agent: agent.identifier(),
            lockfile: i.lock.path().map(Path::to_path_buf).unwrap_or_default(),
            expected,
            actual: installed.sha256,
            path: installed.path,
        })
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
        let chain = self.chain_for(agent);
        if chain.is_empty() {
            return Err(ManagerError::NotFound {
                agent: agent.identifier(),
                answers: vec![local, StoreAnswer::no_store_enabled()],
            });
        }
        // A locked ref installs under a pin: bytes that do not hash to the
        // lock's sha256 are refused before they reach the cache path.
        let pin = i
            .lock
            .expected_sha256(agent, &i.platform)
            .and_then(|hex| hex.parse().ok())
            .map(|sha256| agent_store::Pin {
                sha256,
                by: format!(
                    "the lock file {}",
                    i.lock.path().unwrap_or(Path::new("")).display()
                ),
            });
        let installer = match pin {
            Some(pin) => i.installer.clone().with_pin(pin),
            None => i.installer.clone(),
        };
        chain
            .pull(agent, &i.platform, &installer)
            .await
            .map_err(|e| ManagerError::from_store(&agent.identifier(), vec![local], e))
    }

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

    pub(crate) fn register(&self, unique: String, conn: &AgentConn, managed: bool) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let held = if managed {
            Held::Managed(conn.clone())
        } else {
            Held::Listed(conn.downgrade())
        };
        self.lock_active()
            .entry(unique.clone())
            .or_default()
            .push(Entry { id, held });
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

    /// Every registered agent that is still alive.
    #[must_use]
    pub fn active(&self) -> Vec<ActiveAgent> {
        let map = self.lock_active();
        let mut out: Vec<ActiveAgent> = map
            .iter()
            .flat_map(|(unique, entries)| {
                entries.iter().filter_map(move |e| {
                    let conn = e.held.conn()?;
                    Some(ActiveAgent {
                        unique: unique.clone(),
                        pid: conn.pid(),
                        endpoint: conn.endpoint().clone(),
                        conn,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| a.unique.cmp(&b.unique).then(a.pid.cmp(&b.pid)));
        out
    }

    /// Closes every agent registered under `unique` (gracefully, concurrently)
    /// and unregisters it. Returns how many were closed.
    #[doc(alias = "Cleanup")]
    pub async fn cleanup(&self, unique: &str) -> usize {
        let entries = self.lock_active().remove(unique).unwrap_or_default();
        close_all(entries).await
    }

    /// Closes every registered agent (gracefully, concurrently) and empties the
    /// registry. Returns how many were closed.
    #[doc(alias = "CleanupAll")]
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
    let conns: Vec<AgentConn> = entries.iter().filter_map(|e| e.held.conn()).collect();
    let n = conns.len();
    futures_util::future::join_all(conns.iter().map(AgentConn::close)).await;
    n
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
