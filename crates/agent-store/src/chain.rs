use std::sync::Arc;

use agent_ref::semver::Version;
use agent_ref::{AgentRef, Platform};

use crate::{AgentStore, Installed, Installer, StoreError};

/// Stores tried in order (nix → oci → http → github by default).
#[derive(Debug, Clone, Default)]
pub struct StoreChain {
    stores: Vec<Arc<dyn AgentStore>>,
}

impl StoreChain {
    /// A chain of `stores`, tried in the given order.
    #[must_use]
    pub fn new(stores: Vec<Arc<dyn AgentStore>>) -> Self {
        StoreChain { stores }
    }

    /// The stores, in order.
    #[must_use]
    pub fn stores(&self) -> &[Arc<dyn AgentStore>] {
        &self.stores
    }

    /// Whether the chain has no store.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// The union of every store's versions.
    ///
    /// # Errors
    /// A [`StoreError::Chain`] when no store answered.
    pub async fn versions(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<Vec<Version>, StoreError> {
        let _ = (agent, platform);
        todo!("agent-store issue #5")
    }

    /// The cached artifact, or the first store's successful pull, under the
    /// installer's lock and single-flight.
    ///
    /// # Errors
    /// [`StoreError::Chain`]: `integrity` if any store served bad bytes,
    /// `artifact-missing` if every store said missing, else `store-unavailable`.
    pub async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let _ = (agent, platform, installer);
        todo!("agent-store issue #5")
    }
}
