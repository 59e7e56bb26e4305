//! `agent-manager`: find, fetch, verify, cache, start and stop agents.
//!
//! The facade apps depend on (a Rust rewrite of codefly's Go
//! `agents/manager`). A [`Manager`] resolves an [`AgentRef`] to a concrete
//! version, finds its binary in the cache or pulls it through the store chain
//! (nix → oci → http → github, each verified and atomically installed),
//! spawns it, waits for its handshake and gRPC health, and hands back an
//! [`AgentConn`]. Loaded agents are registered until closed.
//!
//! ```no_run
//! use agent_manager::{LoadOptions, Manager};
//!
//! # async fn demo() -> Result<(), agent_manager::ManagerError> {
//! let manager = Manager::builder().from_env().build()?;
//! let agent = "codefly.dev/echo:latest".parse()?;
//! let conn = manager.load(&agent, LoadOptions::new()).await?;
//! println!("pid {} on {}", conn.pid(), conn.endpoint());
//! // talk gRPC over conn.channel() (the token is added to every call) …
//! manager.cleanup_all().await;
//! # Ok(()) }
//! ```
//!
//! The lower crates are re-exported under short names, gitoxide style, so an
//! app needs this one dependency: [`reference`] (refs, versions, the home),
//! [`store`] (the trait and the installer), [`spawn`] (processes and
//! connections) and the stores [`oci`], [`http`], [`nix`], [`github`].

mod env;
mod error;
mod files;
pub mod lock;
mod manager;
mod resolve;

pub use agent_ref as reference;
pub use agent_spawn as spawn;
pub use agent_store as store;
pub use agent_store_github as github;
pub use agent_store_http as http;
pub use agent_store_nix as nix;
pub use agent_store_oci as oci;

pub use agent_ref::{
    AgentHome, AgentKind, AgentRef, AgentSource, ErrorKind, Platform, RefError, VersionSpec, semver,
};
pub use agent_spawn::{AgentConn, Endpoint, SpawnError, SpawnOptions};
pub use agent_store::{AgentStore, Installed, Installer, StoreChain, StoreError};

pub use env::{AGENT_STORES_ENV, EnvConfig, StoreId, StoreSelection};
pub use error::{ManagerError, NOT_FOUND_REMEDY, StoreAnswer};
pub use files::{copy_file, move_file, platform_suffix};
pub use manager::{ActiveAgent, LoadOptions, Manager, ManagerBuilder, stores_from_env};

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
