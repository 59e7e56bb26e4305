//! The sandbox a load uses: [`LoadOptions::sandbox`](crate::LoadOptions::sandbox) when
//! given, else the configuration's policy for the agent's publisher (its
//! `[publishers."P".sandbox]` table over `[publishers."*".sandbox]`, field by field),
//! else none: unconfined, or refused (`admission`) under `[sandbox] require = true`.

use std::fmt;

use agent_sandbox::{Sandbox, SandboxPolicy, SandboxPolicyPatch};
use serde::Serialize;

use crate::config::{ANY_PUBLISHER, EffectiveConfig, Origin};
use crate::settings::Settings;

/// Where one part of an [`EffectiveSandbox`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicySource {
    /// A `[publishers."P".sandbox]` table (`P` may be `*`) of the configuration.
    Table {
        /// The table's publisher, or `*`.
        publisher: String,
        /// Where the configuration came from.
        origin: Origin,
    },
    /// Set by the caller over the configuration ([`EffectiveSandbox::over`]:
    /// load options, `agentctl --sandbox-*` flags).
    Options,
    /// No table sets it: the policy's default (`network = "none"`, no extra paths).
    Default,
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::Table { publisher, origin } => {
                write!(f, "[publishers.\"{publisher}\".sandbox] ({origin})")
            }
            PolicySource::Options => f.write_str("load options"),
            PolicySource::Default => f.write_str("default"),
        }
    }
}

impl Serialize for PolicySource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The sandbox an agent is loaded with (unless the load says otherwise), and where
/// each part came from: what `agentctl info` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EffectiveSandbox {
    /// `[sandbox] require`: an agent with no policy is refused.
    pub require: bool,
    /// Where `require` came from.
    pub require_origin: Origin,
    /// The policy; `None` when nothing confines the agent.
    pub policy: Option<SandboxPolicy>,
    /// Where `network` came from.
    pub network_from: PolicySource,
    /// Where `read` came from.
    pub read_from: PolicySource,
    /// Where `write` came from.
    pub write_from: PolicySource,
}

impl EffectiveSandbox {
    /// From the configuration, for `publisher` (`None`: an agent loaded by path, which
    /// only the `"*"` table covers).
    pub(crate) fn from_settings(settings: &Settings, publisher: Option<&str>) -> Self {
        let table = |name: &str| {
            settings
                .publishers
                .get(name)
                .and_then(|p| p.sandbox.as_ref())
        };
        let star = table(ANY_PUBLISHER);
        let own = publisher
            .filter(|p| *p != ANY_PUBLISHER)
            .and_then(|p| table(p).map(|t| (p, t)));
        let source = |sets: fn(&SandboxPolicyPatch) -> bool| match (own, star) {
            (Some((p, t)), _) if sets(t) => PolicySource::Table {
                publisher: p.to_owned(),
                origin: settings.publishers_origin.clone(),
            },
            (_, Some(t)) if sets(t) => PolicySource::Table {
                publisher: ANY_PUBLISHER.to_owned(),
                origin: settings.publishers_origin.clone(),
            },
            _ => PolicySource::Default,
        };
        let policy = match (star, own) {
            (None, None) => None,
            (star, own) => Some(
                star.cloned()
                    .unwrap_or_default()
                    .merge(own.map_or(&SandboxPolicyPatch::default(), |(_, t)| t))
                    .into_policy(),
            ),
        };
        EffectiveSandbox {
            require: settings.sandbox_require.value,
            require_origin: settings.sandbox_require.origin.clone(),
            policy,
            network_from: source(|t| t.network.is_some()),
            read_from: source(|t| t.read.is_some()),
            write_from: source(|t| t.write.is_some()),
        }
    }

    /// `patch` over this policy (fields it sets replace the configuration's), marked as
    /// [`PolicySource::Options`]. An empty patch changes nothing; a non-empty one
    /// confines an agent the configuration left unconfined.
    #[must_use]
    pub fn over(mut self, patch: &SandboxPolicyPatch) -> Self {
        if *patch == SandboxPolicyPatch::default() {
            return self;
        }
        let base = self
            .policy
            .take()
            .map_or_else(SandboxPolicyPatch::default, |p| SandboxPolicyPatch {
                network: Some(p.network),
                read: Some(p.read),
                write: Some(p.write),
            });
        self.policy = Some(base.merge(patch).into_policy());
        if patch.network.is_some() {
            self.network_from = PolicySource::Options;
        }
        if patch.read.is_some() {
            self.read_from = PolicySource::Options;
        }
        if patch.write.is_some() {
            self.write_from = PolicySource::Options;
        }
        self
    }

    /// The sandbox to load with: the policy, or `None` when nothing confines the agent.
    #[must_use]
    pub fn sandbox(&self) -> Option<Sandbox> {
        self.policy.clone().map(Sandbox::policy)
    }
}

/// The `[publishers."P".sandbox]` fields a table sets, for `agentctl config`.
pub(crate) fn push_table(
    e: &mut EffectiveConfig,
    name: &str,
    table: &SandboxPolicyPatch,
    origin: &Origin,
) {
    let key = |field: &str| format!("publishers.\"{name}\".sandbox.{field}");
    if let Some(n) = table.network {
        let v = match n {
            agent_sandbox::Network::None => "none",
            agent_sandbox::Network::Any => "any",
        };
        e.push(key("network"), v, origin.clone());
    }
    for (field, list) in [("read", &table.read), ("write", &table.write)] {
        if let Some(list) = list {
            let v = if list.is_empty() {
                "none".to_owned()
            } else {
                list.join(", ")
            };
            e.push(key(field), v, origin.clone());
        }
    }
}
