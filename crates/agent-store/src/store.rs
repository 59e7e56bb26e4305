use agent_ref::semver::Version;
use async_trait::async_trait;

use agent_ref::{AgentRef, Platform};

use crate::{Installed, Installer, StoreError, StoreProbe};

/// A place agent binaries can be fetched from. Object-safe: stores are held as
/// `Arc<dyn AgentStore>`.
///
/// Implementations never write to the cache themselves: `pull` hands the bytes
/// to the [`Installer`], which verifies and installs them atomically.
#[async_trait]
pub trait AgentStore: Send + Sync + std::fmt::Debug {
    /// A short name for messages and records: `oci`, `http`, `nix`, `github`.
    fn name(&self) -> &str;

    /// Whether the store has `agent` (concrete version) for `platform`,
    /// without downloading it.
    async fn available(&self, agent: &AgentRef, platform: &Platform) -> Result<bool, StoreError>;

    /// Every version of `agent` the store offers (for `latest` and requirements).
    /// Order is unspecified; non-semver tags are left out.
    async fn versions(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<Vec<Version>, StoreError>;

    /// Fetches `agent` (concrete version) for `platform` and installs it
    /// through `installer`, returning what was installed.
    async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError>;

    /// What the store says about itself: reachable or not, how it answered,
    /// whether its credentials are accepted, the configuration that matters.
    /// Bounded by [`crate::PROBE_TIMEOUT`]; never prints a secret. The
    /// default is [`StoreProbe::not_probed`].
    async fn probe(&self) -> StoreProbe {
        StoreProbe::not_probed()
    }
}
