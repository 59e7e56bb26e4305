//! `agent-manager`: find, fetch, verify, cache, start and stop agents.
//!
//! The facade apps depend on (a Rust rewrite of codefly's Go
//! `agents/manager`; the [`go`] module maps every Go identifier to its
//! counterpart). A [`Manager`] resolves an [`AgentRef`] to a concrete
//! version, finds its binary in the cache or pulls it through the store
//! chain (nix → oci → http → github, each verified and atomically
//! installed), spawns it, waits for its handshake and gRPC health, and hands
//! back an [`AgentConn`]. `ARCHITECTURE.md` at the repository root has the
//! bird's-eye view.
//!
//! ```no_run
//! use agent_manager::Manager;
//!
//! # async fn demo() -> Result<(), agent_manager::ManagerError> {
//! let manager = Manager::from_env()?;
//! let agent = "codefly.dev/echo:latest".parse()?;
//! let conn = manager.load(&agent).await?;
//! println!("pid {} on {}", conn.pid(), conn.endpoint());
//! // talk gRPC over conn.channel() (the token is added to every call) …
//! conn.close().await;
//! # Ok(()) }
//! ```
//!
//! # When an agent dies
//!
//! An agent process runs while something holds a handle to it, and no longer:
//!
//! - **Last handle dropped**: [`AgentConn`] is a cheap clone of one shared
//!   handle. When the last clone is dropped without `close`, the agent's
//!   process group is killed (SIGKILL) and reaped.
//! - **`close`**: [`AgentConn::close`] stops it gracefully: SIGTERM to its
//!   process group, the grace period ([`LoadOptions::grace`], default 30 s),
//!   then SIGKILL; idempotent, every caller gets the same exit.
//! - **`cleanup`**: [`Manager::cleanup`]`(unique)` and
//!   [`Manager::cleanup_all`] close, as `close` does,
//!   every listed agent that is still alive, whoever holds handles to it.
//! - **The manager dropped**: the registry goes with the last clone of the
//!   [`Manager`]; agents it *owned* (loaded with [`LoadOptions::managed`])
//!   die then, unless the app still holds a handle; agents the app holds
//!   live until their last handle goes.
//! - **By itself**: an agent that exits is reaped and unlisted; what it left
//!   in its process group is killed. If the host process dies, agents started
//!   with the lifeline (the default) exit too.
//!
//! The registry ([`Manager::active`]) lists every loaded agent under its
//! `unique()` key, but by default it does not keep one alive: dropping the
//! handle the app got from `load` stops the agent even though it is listed.
//! Opt in to the registry owning it, go-plugin's `Managed`, with
//! [`LoadOptions::managed`]`(true)`: it then runs until `close`, `cleanup`,
//! its own exit, or the manager being dropped.
//!
//! # Configuration
//!
//! [`Manager::from_env`] reads the environment once ([`EnvConfig`]) and the
//! configuration file it names (`$CODEFLY_HOME/config.toml` or
//! `CODEFLY_CONFIG`; schema in [`config`]); every variable wins over the
//! file. [`ManagerBuilder`] sets each setting in code instead, and
//! [`ManagerBuilder::load_defaults`] the [`LoadOptions`] of every load
//! ([`Manager::load_with`] adds a load's own on top). [`Manager::effective_config`]
//! says where each setting came from (`agentctl config`). Stores follow store
//! authority and publisher scoping ([`stores`]). A lock file
//! ([`ManagerBuilder::lockfile`], [`lockfile`]) pins versions and digests.
//!
//! # Features
//!
//! One Cargo feature per store; with `default-features = false, features =
//! ["oci"]` no other store crate is built.
//!
#![doc = document_features::document_features!()]
//!
//! # Re-exports
//!
//! The stores are re-exported under [`stores`] (`stores::oci`,
//! `stores::http`, `stores::nix`, `stores::github`, each behind its feature),
//! the lower crates under short names, so an app needs this one dependency:
//! [`reference`](mod@reference) (refs, versions, the home), [`store`] (the trait, the
//! installer, the chain), [`spawn`] (processes and connections), [`protocol`]
//! (the host↔agent contract). The Go package's file helpers are in [`compat`].
//!
//! # What an agent is given
//!
//! The host's store credentials never reach an agent: `GITHUB_TOKEN`,
//! `GH_TOKEN`, `AGENT_REGISTRY_USERNAME` and `AGENT_REGISTRY_PASSWORD` are
//! removed from the environment it inherits (the configuration file holds no
//! credentials). [`LoadOptions::env_allowlist`] clears the environment down to
//! an allowlist. Files the host's user can read (`~/.docker/config.json`) stay
//! readable by an agent running as that user: the environment is what the
//! host controls, not the file system.
// The library has no unsafe code; its unit tests call libc to set up cases.
#![cfg_attr(not(test), forbid(unsafe_code))]

mod admin;
mod attach;
mod builder;
pub mod compat;
pub mod config;
mod env;
mod error;
pub mod go;
mod load;
pub mod lockfile;
mod manager;
mod options;
mod pinning;
mod registry;
mod resolve;
mod sandbox_policy;
mod settings;
pub mod stores;
mod worker;

pub use agent_protocol as protocol;
pub use agent_ref as reference;
pub use agent_sandbox as sandbox;
pub use agent_spawn as spawn;
pub use agent_store as store;

pub use agent_ref::{
    AgentHome, AgentKind, AgentRef, AgentSource, ErrorKind, Platform, RefError, VersionSpec, semver,
};
pub use agent_spawn::{AgentConn, Endpoint, SpawnError, SpawnOptions};
pub use agent_store::{
    AgentStore, Fallback, Installed, Installer, StoreChain, StoreError, VerifyMode,
};

pub use admin::{StoreStatus, prune_installed, remove_installed};
pub use attach::{ATTACH_ENV, DEFAULT_ATTACH_TIMEOUT};
pub use builder::ManagerBuilder;
pub use config::{Config, ConfigError, EffectiveConfig, Origin, Setting};
pub use env::{AGENT_STORES_ENV, EnvConfig, StoreId, StoreSelection};
pub use error::{ManagerError, NOT_FOUND_REMEDY, StoreAnswer};
pub use manager::Manager;
pub use options::LoadOptions;
pub use registry::ActiveAgent;
pub use sandbox_policy::{EffectiveSandbox, PolicySource};

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
