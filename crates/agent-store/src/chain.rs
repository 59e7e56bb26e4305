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
                tracing::warn!(store, error = %e, ?delay, "store unavailable; retrying");
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

/// Stores tried in order (nix → oci → http → github by default).
///
/// A store answering `store-unavailable` is retried with backoff
/// ([`RetryPolicy`]) before the chain moves on. Tampered bytes stop the chain
/// (`integrity`: never silently fall through to another store); so do local
/// errors (`io`) that every store would hit alike.
#[derive(Debug, Clone, Default)]
pub struct StoreChain {
    stores: Vec<Arc<dyn AgentStore>>,
    retry: RetryPolicy,
}

impl StoreChain {
    /// A chain of `stores`, tried in the given order.
    #[must_use]
    pub fn new(stores: Vec<Arc<dyn AgentStore>>) -> Self {
        StoreChain {
            stores,
            retry: RetryPolicy::default(),
        }
    }

    /// The same chain with another retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
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

    /// The union of every store's versions, sorted ascending, without duplicates.
    /// Stores are asked concurrently.
    ///
    /// # Errors
    /// A [`StoreError::Chain`] when no store answered.
    pub async fn versions(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<Vec<Version>, StoreError> {
        let asks = self.stores.iter().map(|store| async move {
            let answer = self
                .retry
                .run(store.name(), || store.versions(agent, platform))
                .await;
            (store.name().to_owned(), answer)
        });
        let results = futures_util::future::join_all(asks).await;
        let mut all = Vec::new();
        let mut answered = false;
        let mut answers = Vec::new();
        for (name, result) in results {
            match result {
                Ok(vs) => {
                    answered = true;
                    all.extend(vs);
                }
                Err(e) => {
                    tracing::debug!(store = %name, error = %e, "no versions from store");
                    answers.push((name, e));
                }
            }
        }
        if !answered {
            return Err(StoreError::Chain {
                kind: overall_kind(&answers),
                answers,
            });
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// The cached artifact, or the first store's successful pull, under the
    /// installer's lock and single-flight.
    ///
    /// # Errors
    /// [`StoreError::Chain`]: `integrity` if any store served bad bytes,
    /// `artifact-missing` if every store said missing, else `store-unavailable`
    /// (or `io` for a local failure), with every store's answer.
    /// [`StoreError::Ref`] for a non-concrete ref.
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

    /// Tries each store in order, without looking at the cache or locking.
    async fn pull_uncached(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let mut answers: Vec<(String, StoreError)> = Vec::new();
        for store in &self.stores {
            let name = store.name();
            let span = tracing::info_span!("pull", store = name, agent = %agent.identifier());
            match self
                .retry
                .run(name, || store.pull(agent, platform, installer))
                .instrument(span)
                .await
            {
                Ok(installed) => {
                    if !answers.is_empty() {
                        tracing::info!(
                            store = name,
                            skipped = answers.len(),
                            "pulled after earlier stores failed"
                        );
                    }
                    return Ok(installed);
                }
                Err(e) => {
                    let kind = e.kind();
                    tracing::info!(store = name, error = %e, "store could not deliver");
                    answers.push((name.to_owned(), e));
                    if matches!(
                        kind,
                        ErrorKind::Integrity | ErrorKind::Io | ErrorKind::InvalidRef
                    ) {
                        // Tampered bytes or a local failure: trying another
                        // store would hide it (or fail the same way).
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

/// Integrity beats io beats unavailable beats missing; no answer at all is missing.
fn overall_kind(answers: &[(String, StoreError)]) -> ErrorKind {
    let kinds: Vec<ErrorKind> = answers.iter().map(|(_, e)| e.kind()).collect();
    for k in [
        ErrorKind::Integrity,
        ErrorKind::InvalidRef,
        ErrorKind::Io,
        ErrorKind::StoreUnavailable,
    ] {
        if kinds.contains(&k) {
            return k;
        }
    }
    if kinds.iter().all(|k| *k == ErrorKind::ArtifactMissing) {
        ErrorKind::ArtifactMissing
    } else {
        ErrorKind::StoreUnavailable
    }
}
