//! [`ManagerBuilder`]: the settings a [`Manager`] is built from.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use agent_ref::{AgentHome, AgentSource, Platform};
use agent_store::{AgentStore, Fallback, Installer, StoreChain, VerifyMode};

use crate::config::{Config, ConfigError, FallbackSetting, Origin, VerifySetting};
use crate::env::EnvConfig;
use crate::manager::{Inner, Manager};
use crate::pinning::LockFilePins;
use crate::settings::{Settings, Val};
use crate::{LoadOptions, ManagerError};
use tracing::debug;

/// Builds a [`Manager`].
///
/// Settings come, per setting, from (highest first): the builder's own
/// methods ([`home`](Self::home), [`stores`](Self::stores), …); the
/// environment, as an [`EnvConfig`] given to [`env_config`](Self::env_config)
/// ([`Manager::from_env`] gives the process's); the configuration file (found
/// from that environment: `CODEFLY_CONFIG`, else `$CODEFLY_HOME/config.toml`)
/// or the [`Config`] given to [`config`](Self::config); the defaults (home
/// from `CODEFLY_HOME`/`~/.codefly`, remote source, no stores).
///
/// `Debug` shows no secret: the environment's `CODEFLY_AGENT_ATTACH` (it
/// holds tokens) is hidden, credentials are never held here.
#[derive(Default)]
#[must_use]
pub struct ManagerBuilder {
    home: Option<AgentHome>,
    source: Option<AgentSource>,
    stores: Option<Vec<Arc<dyn AgentStore>>>,
    env: Option<EnvConfig>,
    config: Option<Config>,
    platform: Option<Platform>,
    refresh: bool,
    defaults: LoadOptions,
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
            .field("config", &self.config)
            .field("load_defaults", &self.defaults)
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

    /// The environment's settings ([`EnvConfig::from_env`], or
    /// [`EnvConfig::from_lookup`] in tests): `CODEFLY_HOME`,
    /// `CODEFLY_AGENT_SOURCE`, `CODEFLY_AGENT_STORES`, `CODEFLY_CONFIG`,
    /// `CODEFLY_AGENT_LOCKFILE`, `CODEFLY_AGENT_ATTACH` and the store
    /// variables, each winning over the configuration file, which is found
    /// from them. Without it the manager reads no variable but
    /// `CODEFLY_HOME`/`HOME` (for the default home) and the credentials of the
    /// stores it builds, no configuration file, and attaches to nothing.
    pub fn env_config(mut self, config: EnvConfig) -> Self {
        self.env = Some(config);
        self
    }

    /// A configuration built in code (or read with [`Config::load`]): used
    /// instead of the file the environment names. Environment variables
    /// given with [`env_config`](Self::env_config) still win over it.
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

    /// The options of every load: timeouts, work dir, environment, stderr
    /// sink, restart policy, sandbox, … (see [`LoadOptions`]). The options a
    /// load is given ([`Manager::load_with`]) apply on top: what they set
    /// wins, their variables and arguments are added to these. A stderr sink
    /// here receives the stderr of every agent whose load sets none.
    pub fn load_defaults(mut self, opts: LoadOptions) -> Self {
        self.defaults = opts;
        self
    }

    /// The lock file to honour (default: `CODEFLY_AGENT_LOCKFILE` of the
    /// [`env_config`](Self::env_config), else none). A ref it lists resolves to the locked version
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

    /// Builds the manager: reads the configuration file (the one the
    /// environment names), merges the settings and builds the stores they select.
    ///
    /// # Errors
    /// [`ManagerError::Config`] (kind `config`) for a configuration file or
    /// variable that does not validate, or a store that is selected but not
    /// configured (or not compiled in); a store's own construction error;
    /// [`ManagerError::Ref`] when there is no home at all.
    pub fn build(self) -> Result<Manager, ManagerError> {
        let env = self.env;
        let attach = env.as_ref().and_then(|e| e.attach.clone());
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
        let lock = LockFilePins::open(settings.lockfile.as_ref().map(|v| &v.value), self.locked)?;
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
                attach,
                active: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }
}
