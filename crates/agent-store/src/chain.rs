use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agent_ref::semver::Version;
use agent_ref::{AgentRef, ErrorKind, Platform};
use backon::{ExponentialBuilder, Retryable};
use tracing::Instrument;

use crate::{AgentStore, Installed, Installer, StoreError};

/// How a [`StoreChain`] retries a store that answered `store-unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per store and operation, the first included (1 = no retry).
    pub attempts: usize,
    /// The first backoff delay (doubled each time, with jitter).
    pub min_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
    /// The longest `Retry-After` we wait for; a store asking for more is not
    /// retried (its error says when to come back).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    #[must_use]
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            ..Self::default()
        }
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the
    /// attempts are used up; honours the error's `retry_after` (capped).
    async fn run<T, F, Fut>(&self, store: &str, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1))
            .with_jitter();
        let cap = self.max_retry_after;
        op.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(StoreError::is_retryable)
            .adjust(move |e, delay| match (delay, retry_after(e)) {
                (Some(d), Some(ra)) if ra <= cap => Some(d.max(ra)),
                (d, None) => d,
                // Out of attempts, or asked to wait longer than we would.
                (_, Some(_)) => None,
            })
            .notify(|e, delay| {
                tracing::warn!(store, error = %agent_ref::error_chain(e), ?delay, "store unavailable; retrying");
            })
            .await
    }
}

fn retry_after(e: &StoreError) -> Option<Duration> {
    match e {
        StoreError::Unavailable { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// When a [`StoreChain`] moves on to the next store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Only when a store answers `artifact-missing` (the default, and the
    /// defence against dependency confusion: a store that is down never lets
    /// a lower store serve the agent instead).
    #[default]
    Missing,
    /// Also when a store is unreachable or failing (`store-unavailable`,
    /// denied included). Tampered bytes (`integrity`), refused signatures
    /// (`untrusted`), local failures (`io`) and bad refs still stop the chain.
    Any,
}

/// Which store is authoritative for an agent, and the versions it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The store that listed versions (the first in order that listed any).
    pub store: String,
    /// Its versions, sorted ascending, without duplicates.
    pub versions: Vec<Version>,
    /// What each store before it answered, in order: `(store, answer)`.
    pub answers: Vec<(String, String)>,
}

/// Stores tried in order (nix → oci → http → github by default).
///
/// A store answering `store-unavailable` is retried with backoff
/// ([`RetryPolicy`]); a pull moves on to the next store only when a store
/// answers `artifact-missing` (unless [`Fallback::Any`]). Tampered bytes stop
/// the chain (`integrity`: never silently fall through to another store), and
/// so do refused signatures and local errors (`io`) that every store would hit
/// alike. Versions come from one store only ([`StoreChain::authoritative_versions`]).
#[derive(Debug, Clone, Default)]
pub struct StoreChain {
    stores: Vec<Arc<dyn AgentStore>>,
    retry: RetryPolicy,
    fallback: Fallback,
}

impl StoreChain {
    /// A chain of `stores`, tried in the given order.
    #[must_use]
    pub fn new(stores: Vec<Arc<dyn AgentStore>>) -> Self {
        StoreChain {
            stores,
            retry: RetryPolicy::default(),
            fallback: Fallback::default(),
        }
    }

    /// The same chain with another retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same chain with another fallback rule (config `[stores] fallback`).
    #[must_use]
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The fallback rule.
    #[must_use]
    pub fn fallback(&self) -> Fallback {
        self.fallback
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

    /// Whether an error of `kind` lets the chain ask the next store.
    fn moves_on(&self, kind: ErrorKind) -> bool {
        match kind {
            ErrorKind::ArtifactMissing => true,
            ErrorKind::StoreUnavailable => self.fallback == Fallback::Any,
            _ => false,
        }
    }

    /// The versions of `agent` from the store authoritative for it: the
    /// first store, in order, that lists any version. Never a union: a lower
    /// store publishing a higher version cannot take the agent over. Each
    /// store is asked through the same retry path pulls use.
    ///
    /// A store that answers `artifact-missing` or lists nothing is passed
    /// over; a store that fails ends the resolution with its error
    /// (`store-unavailable` naming it), unless [`Fallback::Any`].
    ///
    /// # Errors
    /// [`StoreError::Chain`]: `artifact-missing` when no store lists a
    /// version (or no store is configured), else the failing store's kind,
    /// with every store's answer so far.
    pub async fn authoritative_versions(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<Authority, StoreError> {
        let (store, versions, answers) = self.authority(agent, platform).await?;
        Ok(Authority {
            store,
            versions,
            answers: answers
                .iter()
                .map(|(n, e)| (n.clone(), e.to_string()))
                .collect(),
        })
    }

    /// [`StoreChain::authoritative_versions`], with the earlier stores' errors as they are.
    async fn authority(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<(String, Vec<Version>, Vec<(String, StoreError)>), StoreError> {
        let (store, mut versions, answers) = self
            .first_answer("versions", agent, |store| async move {
                let versions = store.versions(agent, platform).await?;
                if versions.is_empty() {
                    // Lists nothing: as good as missing, ask the next store.
                    return Err(StoreError::Missing {
                        store: store.name().to_owned(),
                        what: format!("version of {}", agent.identifier()),
                    });
                }
                Ok(versions)
            })
            .await?;
        versions.sort_unstable();
        versions.dedup();
        Ok((store, versions, answers))
    }

    /// The cached artifact, or the first store's successful pull, under the
    /// installer's lock and single-flight.
    ///
    /// # Errors
    /// [`StoreError::Chain`] with every store's answer so far: the kind of the
    /// store that stopped the chain (`store-unavailable` for a store that is
    /// down, `integrity`, `untrusted`, `io`), or `artifact-missing` when every
    /// store said missing. [`StoreError::Ref`] for a non-concrete ref.
    pub async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        installer
            .ensure(agent, || self.pull_uncached(agent, platform, installer))
            .await
    }

    /// [`StoreChain::pull_authoritative`] within the installer's
    /// whole-download deadline ([`Installer::with_download_timeout`]).
    async fn pull_uncached(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let limit = installer.download_timeout();
        let deadline = tokio::time::Instant::now() + limit;
        let asking = std::sync::Mutex::new(String::new());
        let pull = self.pull_authoritative(agent, platform, installer, &asking);
        match tokio::time::timeout_at(deadline, pull).await {
            Ok(r) => r,
            // The pull future is dropped: the installer removes its temp file.
            Err(_) => Err(StoreError::Deadline {
                store: asking
                    .lock()
                    .ok()
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| "stores".to_owned(), |s| s.clone()),
                what: agent.identifier(),
                deadline: limit,
                setting: "[stores] download-timeout".to_owned(),
            }),
        }
    }

    /// Pulls from the store authoritative for the agent, without looking at
    /// the cache or locking: once a store lists any version of the agent,
    /// it alone is asked for its bytes, and a version or platform it lacks
    /// is `artifact-missing` naming it (a lower store publishing that
    /// version cannot serve it). When no store lists the agent, each store
    /// is tried in order. [`Fallback::Any`] skips the authority lookup.
    /// `asking` names the store being asked, for a deadline error.
    async fn pull_authoritative(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
        asking: &std::sync::Mutex<String>,
    ) -> Result<Installed, StoreError> {
        let note = |name: &str| {
            if let Ok(mut s) = asking.lock() {
                name.clone_into(&mut s);
            }
        };
        if self.fallback == Fallback::Missing && self.stores.len() > 1 {
            let latest = AgentRef::new(agent.kind(), agent.publisher(), agent.name(), "latest")?;
            match self.authority(&latest, platform).await {
                Ok(authority) => {
                    note(&authority.0);
                    return self
                        .pull_from_authority(agent, platform, installer, authority)
                        .await;
                }
                Err(StoreError::Chain {
                    kind: ErrorKind::ArtifactMissing,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        self.first_answer("pull", agent, |store| {
            note(store.name());
            store.pull(agent, platform, installer)
        })
        .await
        .map(|(_, installed, _)| installed)
    }

    async fn pull_from_authority(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
        (name, versions, mut answers): (String, Vec<Version>, Vec<(String, StoreError)>),
    ) -> Result<Installed, StoreError> {
        let store = self
            .stores
            .iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| StoreError::Missing {
                store: name.clone(),
                what: agent.identifier(),
            })?;
        let why = format!(
            "(it is the authoritative store for {}/{}, listing {}; lower stores are not asked)",
            agent.publisher(),
            agent.name(),
            versions_text(&versions)
        );
        let answer = if agent
            .concrete_version()
            .is_some_and(|v| versions.contains(v))
        {
            let span = tracing::info_span!("store", op = "pull", store = %name, agent = %agent.identifier());
            self.retry
                .run(&name, || store.pull(agent, platform, installer))
                .instrument(span)
                .await
        } else {
            Err(StoreError::Missing {
                store: name.clone(),
                what: agent.identifier(),
            })
        };
        answer.map_err(|e| {
            let kind = e.kind();
            let e = match e {
                StoreError::Missing { store, what } => StoreError::Missing {
                    store,
                    what: format!("{what} {why}"),
                },
                e => e,
            };
            answers.push((name, e));
            StoreError::Chain { kind, answers }
        })
    }

    /// Asks each store in order (each through the retry policy) until one
    /// answers: returns its name, its answer and what the stores before it
    /// said. Moves on only as [`StoreChain::moves_on`] allows: a store that
    /// is down, tampered bytes, a refused signature or a local failure stops
    /// the chain — asking another store would hide it, or let a lower store
    /// take the agent over.
    async fn first_answer<'a, T, F, Fut>(
        &'a self,
        op: &'static str,
        agent: &AgentRef,
        mut ask: F,
    ) -> Result<(String, T, Vec<(String, StoreError)>), StoreError>
    where
        F: FnMut(&'a Arc<dyn AgentStore>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut answers: Vec<(String, StoreError)> = Vec::new();
        for store in &self.stores {
            let name = store.name();
            let span = tracing::info_span!("store", op, store = name, agent = %agent.identifier());
            match self.retry.run(name, || ask(store)).instrument(span).await {
                Ok(answer) => {
                    if !answers.is_empty() {
                        tracing::info!(
                            op,
                            store = name,
                            skipped = answers.len(),
                            "answered after earlier stores did not have it"
                        );
                    }
                    return Ok((name.to_owned(), answer, answers));
                }
                Err(e) => {
                    let kind = e.kind();
                    tracing::info!(op, store = name, error = %agent_ref::error_chain(&e), "store could not answer");
                    answers.push((name.to_owned(), e));
                    if !self.moves_on(kind) {
                        return Err(StoreError::Chain { kind, answers });
                    }
                }
            }
        }
        Err(StoreError::Chain {
            kind: overall_kind(&answers),
            answers,
        })
    }
}

/// The overall kind once every store was asked: `artifact-missing` when all
/// said missing (or none is configured), else `store-unavailable` (only
/// reachable with [`Fallback::Any`]).
fn overall_kind(answers: &[(String, StoreError)]) -> ErrorKind {
    if answers
        .iter()
        .all(|(_, e)| e.kind() == ErrorKind::ArtifactMissing)
    {
        ErrorKind::ArtifactMissing
    } else {
        ErrorKind::StoreUnavailable
    }
}

fn versions_text(v: &[Version]) -> String {
    let shown: Vec<String> = v.iter().rev().take(5).map(ToString::to_string).collect();
    let more = v.len().saturating_sub(shown.len());
    if more == 0 {
        shown.join(", ")
    } else {
        format!("{} and {more} more", shown.join(", "))
    }
}
