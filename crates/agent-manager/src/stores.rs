//! The store crates (one Cargo feature each: `oci`, `http`, `nix`, `github`,
//! all on by default) and how the manager builds them from its settings.
//!
//! An app that uses one store depends on the facade with only that feature
//! (`default-features = false, features = ["oci"]`): no other store crate is
//! compiled or linked. A store the configuration names but this build does
//! not include is a `config` error that says which feature to enable.
//!
//! # Store authority
//!
//! For one agent, `latest` and requirements are resolved from the **first**
//! store, in order, that lists any version of it; lower stores' versions are
//! never merged in, and that store alone is asked for the agent's bytes: a
//! version or platform it lacks is `artifact-missing` naming it, exact
//! versions included. Only when no store lists the agent does a pull move on
//! to the next store on `artifact-missing`. `[stores] fallback = "any"` lifts
//! both rules. `[publishers."P"] stores = [...]` restricts which stores are
//! ever asked for publisher `P`; `nix` is never asked for a publisher that
//! requires signatures unless its `stores` names `nix`.
//!
//! # The GitHub owner is a guess
//!
//! The GitHub store maps publisher `acme.corp` to the org `acme-corp` (`.` →
//! `-`). Nothing proves that whoever owns that org is the publisher: a
//! stranger can register an org that merely looks like a publisher's name.
//! Store authority keeps such an org from overriding a publisher another
//! store already serves, but for a publisher that no earlier store lists, the
//! org's releases are what `latest` finds. The defences are configuration:
//! `[stores] github = false` (no GitHub at all), or
//! `[publishers."acme.corp"] stores = ["http"]` (GitHub is never asked for
//! `acme.corp`), and signing keys per publisher (`keys = [...]`).

#[cfg(feature = "nix")]
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "github")]
pub use agent_store_github as github;
#[cfg(feature = "http")]
pub use agent_store_http as http;
#[cfg(feature = "nix")]
pub use agent_store_nix as nix;
#[cfg(feature = "oci")]
pub use agent_store_oci as oci;

use agent_ref::AgentHome;
use agent_store::AgentStore;
use tracing::debug;

use crate::ManagerError;
use crate::config::ConfigError;
use crate::env::{AGENT_STORES_ENV, StoreId, StoreSelection};
use crate::settings::{Settings, Val};

/// Builds the stores the settings select, in order.
///
/// `home` is where stores keep their own state (GitHub's answer cache);
/// `refresh` bypasses cached answers (GitHub's `latest`).
pub(crate) fn build(
    settings: &Settings,
    home: &AgentHome,
    refresh: bool,
) -> Result<Vec<Arc<dyn AgentStore>>, ManagerError> {
    let order = &settings.order;
    let explicit = matches!(order.value, StoreSelection::Explicit(_));
    let mut out: Vec<Arc<dyn AgentStore>> = Vec::new();
    for id in order.value.candidates() {
        if !explicit && id == StoreId::Github && !settings.github.value {
            debug!("github store off ([stores] github = false)");
            continue;
        }
        match build_one(id, settings, home, refresh)? {
            Some(s) => out.push(s),
            None if explicit => {
                let key = settings.key_error(
                    &order.origin,
                    "stores.order",
                    AGENT_STORES_ENV,
                    format!("names {id} but it is not configured"),
                    id.requirement().to_owned(),
                );
                return Err(ManagerError::Config(key));
            }
            None => debug!(store = %id, "store not configured; skipped"),
        }
    }
    Ok(out)
}

/// A store the settings configure, or `None` when they do not.
fn build_one(
    id: StoreId,
    settings: &Settings,
    home: &AgentHome,
    refresh: bool,
) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    match id {
        StoreId::Nix => nix_store(settings),
        StoreId::Oci => oci_store(settings),
        StoreId::Http => http_store(settings),
        StoreId::Github => github_store(settings, home, refresh),
    }
}

/// A store the configuration names that this build of the facade left out.
#[cfg_attr(
    all(feature = "oci", feature = "http", feature = "nix"),
    allow(dead_code)
)]
fn feature_off(settings: &Settings, id: StoreId, val: Option<&Val<String>>) -> ManagerError {
    let message = format!("agent-manager was built without the `{id}` feature");
    let accepted = format!("enable the `{id}` feature of agent-manager, or remove the setting");
    match val {
        Some(v) => ManagerError::Config(settings.key_error(
            &v.origin,
            &format!("stores.{id}"),
            id.env_var(),
            message,
            accepted,
        )),
        None => ManagerError::Config(ConfigError::var(id.as_str(), message, accepted)),
    }
}

#[cfg_attr(
    not(any(feature = "oci", feature = "http", feature = "github")),
    allow(dead_code)
)]
fn store_config_error(
    settings: &Settings,
    id: StoreId,
    v: &Val<String>,
    e: &agent_store::StoreError,
) -> ManagerError {
    ManagerError::Config(settings.key_error(
        &v.origin,
        &format!("stores.{id}"),
        id.env_var(),
        agent_ref::error_chain(e).to_string(),
        id.requirement().to_owned(),
    ))
}

#[cfg(feature = "http")]
fn http_store(settings: &Settings) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    let Some(v) = &settings.http else {
        return Ok(None);
    };
    let s = agent_store_http::HttpStore::new(v.value.clone())
        .map_err(|e| store_config_error(settings, StoreId::Http, v, &e))?;
    Ok(Some(Arc::new(s)))
}

#[cfg(not(feature = "http"))]
fn http_store(settings: &Settings) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    match &settings.http {
        None => Ok(None),
        Some(v) => Err(feature_off(settings, StoreId::Http, Some(v))),
    }
}

#[cfg(feature = "oci")]
fn oci_store(settings: &Settings) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    use agent_store_oci::{OciStore, RegistryConfig, Scheme};

    use crate::config::OciScheme;
    let Some(v) = &settings.oci else {
        return Ok(None);
    };
    let mut cfg = RegistryConfig::parse(&v.value)
        .map_err(|e| store_config_error(settings, StoreId::Oci, v, &e))?;
    if let Some(s) = &settings.oci_scheme {
        cfg = cfg.with_scheme(match s.value {
            OciScheme::Http => Scheme::Http,
            OciScheme::Https => Scheme::Https,
        });
    }
    // Credentials only ever come from the environment or the docker config.
    let s = OciStore::new(cfg.with_env_credentials())
        .map_err(|e| store_config_error(settings, StoreId::Oci, v, &e))?;
    Ok(Some(Arc::new(s)))
}

#[cfg(not(feature = "oci"))]
fn oci_store(settings: &Settings) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    match &settings.oci {
        None => Ok(None),
        Some(v) => Err(feature_off(settings, StoreId::Oci, Some(v))),
    }
}

#[cfg(feature = "nix")]
fn nix_store(settings: &Settings) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    let Some(v) = &settings.nix else {
        return Ok(None);
    };
    let Some(nix) = find_on_path("nix") else {
        tracing::info!(flake = %v.value, "a nix flake is configured but `nix` is not on PATH; the nix store is off");
        return Ok(None);
    };
    Ok(Some(Arc::new(
        agent_store_nix::NixStore::new(v.value.clone()).with_program(nix),
    )))
}

#[cfg(feature = "nix")]
fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(not(feature = "nix"))]
fn nix_store(settings: &Settings) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    match &settings.nix {
        None => Ok(None),
        Some(v) => Err(feature_off(settings, StoreId::Nix, Some(v))),
    }
}

#[cfg(feature = "github")]
fn github_store(
    settings: &Settings,
    home: &AgentHome,
    refresh: bool,
) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    // As `GithubStore::from_env`, but the API URL follows the settings, the
    // answer cache follows this manager's home, and `refresh` can bypass it.
    // The token only ever comes from the environment.
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let mut b = agent_store_github::GithubStore::builder()
        .token(var("GITHUB_TOKEN").or_else(|| var("GH_TOKEN")))
        .cache_dir(agent_store_github::default_cache_dir(home))
        .refresh(refresh);
    if let Some(url) = &settings.github_api_url {
        b = b.api_url(url.value.clone());
    }
    let s = b.build().map_err(|e| match &settings.github_api_url {
        Some(v) => store_config_error(settings, StoreId::Github, v, &e),
        None => ManagerError::from_store("github", Vec::new(), e),
    })?;
    Ok(Some(Arc::new(s)))
}

#[cfg(not(feature = "github"))]
fn github_store(
    settings: &Settings,
    _home: &AgentHome,
    _refresh: bool,
) -> Result<Option<Arc<dyn AgentStore>>, ManagerError> {
    // GitHub needs no configuration; without the feature it is simply absent,
    // unless it is named explicitly (an error, raised by the caller as "not configured").
    let _ = settings;
    Ok(None)
}
