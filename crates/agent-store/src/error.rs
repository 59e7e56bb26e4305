use std::time::Duration;

use agent_ref::{ErrorKind, RefError};

/// Why a store could not deliver an artifact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or refused to answer; worth retrying later.
    #[error("store {store} unavailable: {message}")]
    Unavailable {
        /// The store's name.
        store: String,
        /// What happened, with the remedy where there is one.
        message: String,
        /// How long the store asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
        /// The underlying cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store refused us (401, 403 or another 4xx that is not "missing"):
    /// asking again will not help until the credentials or the configuration
    /// change. Not retried; kind `store-unavailable`.
    #[error("store {store} denied the request: {message} ({hint})")]
    Denied {
        /// The store's name.
        store: String,
        /// The HTTP status (or 0 when the refusal was not an HTTP status).
        status: u16,
        /// What was refused, with the URL.
        message: String,
        /// What to do about it (which credential to set or check).
        hint: String,
    },
    /// The store answered, and it has no such artifact.
    #[error("store {store} has no {what}")]
    Missing {
        /// The store's name.
        store: String,
        /// What was missing (ref, platform, tag…).
        what: String,
    },
    /// The bytes did not match their digest or size, or an archive was unsafe.
    #[error("integrity check failed for {what} from {store}: {message}")]
    Integrity {
        /// The store's name.
        store: String,
        /// What was being verified.
        what: String,
        /// Expected vs actual.
        message: String,
    },
    /// A local I/O error while installing.
    #[error("{context}")]
    Io {
        /// What we were doing, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The reference is not acceptable.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// The cache, a binary or its signature is not trusted: a home or cache
    /// directory others can write, a binary owned by another user, a missing,
    /// bad or foreign signature. Never retried; nothing is run or cached.
    #[error("refusing {path_or_artifact}: {reason} (fix: {fix})")]
    Untrusted {
        /// The path or the artifact refused.
        path_or_artifact: String,
        /// Why.
        reason: String,
        /// What fixes it (the exact command where there is one).
        fix: String,
    },
    /// Waiting for another installer's lock took too long; worth retrying.
    #[error("{}", lock_timeout_message(path, *holder_pid, *waited))]
    LockTimeout {
        /// The lock file.
        path: std::path::PathBuf,
        /// The pid the lock file names as its holder, if it names one.
        holder_pid: Option<u32>,
        /// How long we waited.
        waited: Duration,
    },
    /// A pull did not finish within the whole-download deadline (kind
    /// `store-unavailable`, not retried: the deadline covers the retries).
    /// Nothing was cached; the temp file is removed.
    #[error(
        "store {store}: pulling {what} did not finish within the download deadline of {deadline:?} (set by {setting})"
    )]
    Deadline {
        /// The store that was pulling.
        store: String,
        /// The artifact.
        what: String,
        /// The deadline.
        deadline: Duration,
        /// Where it is set (`[stores] download-timeout`).
        setting: String,
    },
    /// Every store of a chain failed; one answer per store, in order.
    #[error("{}", chain_message(answers))]
    Chain {
        /// The overall kind (integrity beats unavailable beats missing).
        kind: ErrorKind,
        /// `(store name, its error)` in the order tried.
        answers: Vec<(String, StoreError)>,
    },
    /// One error shared by every caller of one single-flight fetch
    /// ([`Installer::ensure`](crate::Installer::ensure)) when another caller
    /// joined it: the same kind, text and source as the shared error, which
    /// [`StoreError::unshared`] returns.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

fn lock_timeout_message(path: &std::path::Path, holder: Option<u32>, waited: Duration) -> String {
    let who = holder.map_or_else(|| "another process".to_owned(), |p| format!("pid {p}"));
    format!(
        "gave up after {}s waiting for the install lock {} held by {who}; retry later, or stop that process",
        waited.as_secs(),
        path.display()
    )
}

fn chain_message(answers: &[(String, StoreError)]) -> String {
    if answers.is_empty() {
        return "no store is configured".to_owned();
    }
    // The answers are not one chain of causes: each is rendered with its own.
    let parts: Vec<String> = answers
        .iter()
        .map(|(n, e)| format!("{n}: {}", agent_ref::error_chain(e)))
        .collect();
    format!("every store failed: {}", parts.join("; "))
}

impl StoreError {
    /// The stable kind (ARCHITECTURE.md).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Unavailable { .. }
            | StoreError::Denied { .. }
            | StoreError::LockTimeout { .. }
            | StoreError::Deadline { .. } => ErrorKind::StoreUnavailable,
            StoreError::Missing { .. } => ErrorKind::ArtifactMissing,
            StoreError::Integrity { .. } => ErrorKind::Integrity,
            StoreError::Io { .. } => ErrorKind::Io,
            StoreError::Ref(e) => e.kind(),
            StoreError::Untrusted { .. } => ErrorKind::Untrusted,
            StoreError::Chain { kind, .. } => *kind,
            StoreError::Shared(e) => e.kind(),
        }
    }

    /// The error itself: for [`StoreError::Shared`], the shared error (so a
    /// caller can match its variant), else `self`.
    #[must_use]
    pub fn unshared(&self) -> &StoreError {
        match self {
            StoreError::Shared(e) => e.unshared(),
            other => other,
        }
    }

    /// Whether retrying later might succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.unshared(),
            StoreError::Denied { .. } | StoreError::Deadline { .. }
        ) && self.kind() == ErrorKind::StoreUnavailable
    }

    /// An [`StoreError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}
