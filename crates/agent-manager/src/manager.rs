//! The [`Manager`]: its shared state, what it says about itself, resolve and pull.
//! Loading is in `load.rs`, the registry of active agents in `registry.rs`,
//! the builder in `builder.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use agent_ref::{AgentHome, AgentRef, AgentSource, Platform};
use agent_store::{Installed, Installer, StoreChain};
use tracing::{Instrument, debug, info_span};

use crate::config::{EffectiveConfig, Origin};
use crate::env::EnvConfig;
use crate::pinning::{LockFilePins, Pinned};
use crate::registry::Entry;
use crate::settings::Settings;
use crate::{LoadOptions, ManagerBuilder, ManagerError, StoreAnswer, resolve};

/// What every clone of a [`Manager`] shares.
pub(crate) struct Inner {
    pub(crate) home: AgentHome,
    pub(crate) installer: Installer,
    pub(crate) source: AgentSource,
    pub(crate) chain: StoreChain,
    pub(crate) settings: Settings,
    pub(crate) lock: LockFilePins,
    pub(crate) platform: Platform,
    pub(crate) defaults: LoadOptions,
    /// `CODEFLY_AGENT_ATTACH` as the environment gave it when the manager
    /// was built: the agents to attach to instead of spawning.
    pub(crate) attach: Option<String>,
    pub(crate) active: Mutex<HashMap<String, Vec<Entry>>>,
    pub(crate) next_id: AtomicU64,
}

/// Finds, fetches, starts and stops agents. Cheap to clone (shared state).
///
/// Every loaded agent is listed in a registry under its `unique()` key
/// ([`Manager::active`], [`Manager::cleanup`], [`Manager::cleanup_all`]).
/// The registry keeps an agent alive only when it was loaded with
/// [`LoadOptions::managed`]; see the crate docs, *When an agent dies*.
#[derive(Clone)]
pub struct Manager {
    pub(crate) inner: Arc<Inner>,
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

    /// The manager the environment describes: the variables
    /// ([`EnvConfig::from_env`]) and the configuration file they name
    /// (`CODEFLY_CONFIG`, else `$CODEFLY_HOME/config.toml`), the stores they
    /// select. Short for
    /// `Manager::builder().env_config(EnvConfig::from_env()?).build()`.
    ///
    /// # Errors
    /// As [`EnvConfig::from_env`] and [`ManagerBuilder::build`].
    pub fn from_env() -> Result<Manager, ManagerError> {
        Manager::builder()
            .env_config(EnvConfig::from_env()?)
            .build()
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
        self.resolve_pinned(agent)
            .await
            .map(|(resolved, _)| resolved)
    }

    /// [`Manager::resolve`], with the lock file's decision for the ref (taken
    /// here, once): what a pull or load of it carries on.
    pub(crate) async fn resolve_pinned(
        &self,
        agent: &AgentRef,
    ) -> Result<(AgentRef, Option<Pinned>), ManagerError> {
        let i = &self.inner;
        if let Some(pinned) = i.lock.decide(agent, &i.platform)? {
            debug!(agent = %agent, pinned = %pinned.agent, "resolved from the lock file");
            return Ok((pinned.agent.clone(), Some(pinned)));
        }
        let chain = self.chain_for(agent);
        let resolved = resolve::resolve(&i.home, i.source, &chain, &i.platform, agent)
            .instrument(info_span!("resolve", agent = %agent))
            .await?;
        Ok((resolved, None))
    }

    /// The newest version the authoritative store offers, never lower than
    /// one already installed. A locked ref gives its locked version. Exact
    /// versions are returned untouched.
    ///
    /// # Errors
    /// As [`Manager::resolve`].
    #[doc(alias = "PinToLatestRelease")]
    pub async fn pin_to_latest_release(&self, agent: &AgentRef) -> Result<AgentRef, ManagerError> {
        if let Some(pinned) = self.inner.lock.decide(agent, &self.inner.platform)? {
            return Ok(pinned.agent);
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
        let (resolved, pinned) = self.resolve_pinned(agent).await?;
        let installed = self
            .pull_resolved(&resolved, pinned.as_ref())
            .instrument(info_span!("pull", agent = %resolved))
            .await?;
        self.check_pinned(&resolved, installed, pinned.as_ref())
            .await
    }

    /// A locked ref's binary must hash to the lock's sha256; a mismatch is
    /// `integrity`, and the binary is removed from the cache (never run).
    pub(crate) async fn check_pinned(
        &self,
        agent: &AgentRef,
        installed: Installed,
        pinned: Option<&Pinned>,
    ) -> Result<Installed, ManagerError> {
        let Some(pinned) = pinned else {
            return Ok(installed);
        };
        if pinned.admits(&installed) {
            return Ok(installed);
        }
        let record = self.inner.installer.record_path(agent).ok();
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
            lockfile: pinned.lockfile.clone(),
            expected: pinned.sha256.clone(),
            actual: installed.sha256,
            path: installed.path,
        })
    }

    /// The cached binary of `agent` (a concrete ref), or the chain's pull of
    /// it; a pinned ref installs under the lock's sha256.
    pub(crate) async fn pull_resolved(
        &self,
        agent: &AgentRef,
        pinned: Option<&Pinned>,
    ) -> Result<Installed, ManagerError> {
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
        let installer = match pinned.and_then(Pinned::install_pin) {
            Some(pin) => i.installer.clone().with_pin(pin),
            None => i.installer.clone(),
        };
        chain
            .pull(agent, &i.platform, &installer)
            .await
            .map_err(|e| ManagerError::from_store(&agent.identifier(), vec![local], e))
    }
}
