//! Queries over the cache: the installed binaries of one kind or one agent
//! (the versions a ref's spec matches), their sha256 when no record holds
//! it, removal of every version a ref matches, and pruning limited to one
//! kind directory.

use agent_ref::{AgentKind, AgentRef, VersionSpec};

use crate::install::hash_file_identity;
use crate::{Cache, CacheEntry, PrunePolicy, PruneReport, StoreError};

/// Which installed binaries [`Cache::query`] returns: every one by default.
#[derive(Debug, Clone, Default)]
pub struct CacheQuery {
    kind: Option<AgentKind>,
    agent: Option<AgentRef>,
    hash_unrecorded: bool,
}

impl CacheQuery {
    /// Every installed binary.
    #[must_use]
    pub fn all() -> Self {
        CacheQuery::default()
    }

    /// Only those in `kind`'s cache directory (its aliases share it);
    /// `None` for every kind. An [`CacheQuery::agent`] decides the kind itself.
    #[must_use]
    pub fn kind(mut self, kind: Option<AgentKind>) -> Self {
        self.kind = kind;
        self
    }

    /// Only `agent`'s versions that its version spec matches (every version
    /// for `latest`), in its kind's cache directory.
    #[must_use]
    pub fn agent(mut self, agent: &AgentRef) -> Self {
        self.agent = Some(agent.clone());
        self
    }

    /// Hash the binaries that have no install record (built or copied by
    /// hand), so every entry carries a sha256. Reads each such file whole.
    #[must_use]
    pub fn hash_unrecorded(mut self, on: bool) -> Self {
        self.hash_unrecorded = on;
        self
    }

    fn matches(&self, e: &CacheEntry) -> bool {
        let kind = self
            .agent
            .as_ref()
            .map(AgentRef::kind)
            .or(self.kind)
            .map(AgentKind::cache_dir);
        if kind.is_some_and(|k| k != e.agent.kind().cache_dir()) {
            return false;
        }
        let Some(only) = &self.agent else {
            return true;
        };
        if e.agent.publisher() != only.publisher() || e.agent.name() != only.name() {
            return false;
        }
        match (only.version_spec(), e.agent.concrete_version()) {
            (VersionSpec::Latest, _) => true,
            (spec, Some(v)) => spec.matches(v),
            (_, None) => false,
        }
    }
}

impl Cache {
    /// The installed binaries `q` selects, in [`Cache::list`]'s order.
    /// Blocking file I/O (and hashing, with [`CacheQuery::hash_unrecorded`]).
    ///
    /// # Errors
    /// [`StoreError::Io`] when a cache directory cannot be read, or a binary
    /// to hash cannot be read.
    pub fn query(&self, q: &CacheQuery) -> Result<Vec<CacheEntry>, StoreError> {
        let mut out = Vec::new();
        for mut e in self.list()? {
            if !q.matches(&e) {
                continue;
            }
            if q.hash_unrecorded && e.sha256.is_none() {
                let (digest, _, _) = hash_file_identity(&e.path)?;
                e.sha256 = Some(digest.to_hex());
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Removes every installed version of `agent` its version spec matches
    /// (every version for `latest`), each under its install lock as
    /// [`Cache::remove`] does; returns the entries removed (empty when
    /// nothing matched). Blocking.
    ///
    /// # Errors
    /// As [`Cache::list`] and [`Cache::remove`].
    pub fn remove_matching(&self, agent: &AgentRef) -> Result<Vec<CacheEntry>, StoreError> {
        let mut removed = Vec::new();
        for e in self.query(&CacheQuery::all().agent(agent))? {
            if self.remove(&e.agent)?.is_some() {
                removed.push(e);
            }
        }
        Ok(removed)
    }

    /// [`Cache::prune`] acting on one kind directory only (`None`: every
    /// kind). The policy is decided over the whole cache (`--keep` and
    /// `--max-size` count every agent), then only `kind`'s entries are
    /// removed, each waiting for its install lock; the report's `kept` lists
    /// that kind's entries only. Blocking.
    ///
    /// # Errors
    /// As [`Cache::prune`] and [`Cache::remove`].
    pub fn prune_kind(
        &self,
        kind: Option<AgentKind>,
        policy: &PrunePolicy,
    ) -> Result<PruneReport, StoreError> {
        let Some(k) = kind else {
            return self.prune(policy);
        };
        let mut plan = self.prune(&PrunePolicy {
            dry_run: true,
            ..policy.clone()
        })?;
        let (mine, others): (Vec<_>, Vec<_>) = plan
            .removed
            .into_iter()
            .partition(|e| e.agent.kind().cache_dir() == k.cache_dir());
        plan.kept.extend(others);
        let mut removed = Vec::new();
        for e in mine {
            if policy.dry_run || self.remove(&e.agent)?.is_some() {
                removed.push(e);
            }
        }
        plan.removed = removed;
        plan.kept
            .retain(|e| e.agent.kind().cache_dir() == k.cache_dir());
        Ok(plan)
    }
}
