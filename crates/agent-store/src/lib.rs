//! `agent-store`: where agent binaries come from, and the one safe way they
//! reach the cache.
//!
//! This crate is to the stores what `tower-service` is to tower: the
//! [`AgentStore`] trait, the [`StoreError`] type, and the [`Installer`] — the
//! only path by which bytes become a cached binary (temp file in the target
//! directory, sha256 while writing, verify, fsync, chmod, atomic rename,
//! per-artifact lock and in-process single-flight). [`StoreChain`] tries
//! stores in order. [`Cache`] lists, queries ([`CacheQuery`]), removes and
//! prunes what is installed, under the installer's own lock, and finds the
//! temp files interrupted installs left; [`check_home`] checks the home by
//! the installer's permission rule. Each store answers [`AgentStore::probe`]
//! about itself ([`StoreProbe`]). [`trust`] holds the signature policy
//! ([`TrustPolicy`]; minisign, verified while the bytes stream) and the
//! signing helpers.
//!
//! What a cached binary must pass before [`Installer::cached_path`] returns
//! it (the load hot path): the home, every cache directory and the binary
//! are neither group/world-writable nor owned by another user (root
//! excepted); the record is a small regular file (never a FIFO or symlink);
//! the binary's identity (device, inode, size, mtime, ctime) equals the
//! record's — else it is hashed, and a mismatch is never returned; the
//! current [`TrustPolicy`] admits the recorded signer. A load makes these
//! checks in place with [`Installer::cached_path_fingerprint`] (no hashing,
//! no thread hand-off) and gets the opened binary to execute; only a
//! [`Fingerprint::NeedsHash`] answer sends it to the hashing path.
//!
//! Protocol-specific stores live in their own crates
//! (`agent-store-oci`, `-http`, `-nix`, `-github`) and depend only on this one.
//!
//! ```no_run
//! use agent_store::{Installer, StoreChain};
//! use agent_ref::{AgentHome, AgentRef, Platform};
//!
//! # async fn demo(stores: Vec<std::sync::Arc<dyn agent_store::AgentStore>>) -> Result<(), agent_store::StoreError> {
//! let installer = Installer::new(AgentHome::new("/tmp/codefly"));
//! let chain = StoreChain::new(stores);
//! let agent: AgentRef = "codefly.dev/echo:1.0.0".parse()?;
//! let installed = chain.pull(&agent, &Platform::current(), &installer).await?;
//! println!("{} ({} bytes, sha256 {})", installed.path.display(), installed.size, installed.sha256);
//! # Ok(()) }
//! ```

mod cache;
mod cache_query;
mod chain;
pub mod descriptor;
mod digest;
mod error;
mod home_check;
mod install;
mod probe;
mod store;
pub mod trust;

pub use cache::{Cache, CacheEntry, PrunePolicy, PruneReport, Removed};
pub use cache_query::CacheQuery;
pub use chain::{Authority, Fallback, RetryPolicy, StoreChain};
pub use digest::Sha256Digest;
pub use error::StoreError;
pub use home_check::{HomeCheck, HomeProblem, check_home};
pub use install::{
    CachedBinary, DEFAULT_DOWNLOAD_TIMEOUT, DEFAULT_MAX_SIZE, Expected, FileIdentity, Fingerprint,
    InstallRecord, Installed, Installer, LockTimeouts, Pin, Progress, ProgressFn, Signer,
    VerifyMode, check_trust_file,
};
pub use probe::{PROBE_TIMEOUT, ProbeStatus, StoreProbe};
pub use store::AgentStore;
pub use trust::{
    KeyPair, PublisherTrust, TrustError, TrustPolicy, TrustedKey, keygen, sign_file,
    trusted_comment, verify_detached,
};

pub use agent_ref::{AgentHome, AgentRef, ErrorKind, Platform};
