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
    #[error("{context}: {source}")]
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
    /// Every store of a chain failed; one answer per store, in order.
    #[error("{}", chain_message(answers))]
    Chain {
        /// The overall kind (integrity beats unavailable beats missing).
        kind: ErrorKind,
        /// `(store name, its error)` in the order tried.
        answers: Vec<(String, StoreError)>,
    },
}

fn chain_message(answers: &[(String, StoreError)]) -> String {
    if answers.is_empty() {
        return "no store is configured".to_owned();
    }
    let parts: Vec<String> = answers.iter().map(|(n, e)| format!("{n}: {e}")).collect();
    format!("every store failed: {}", parts.join("; "))
}

impl StoreError {
    /// The stable kind (DESIGN.md).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Unavailable { .. } => ErrorKind::StoreUnavailable,
            StoreError::Missing { .. } => ErrorKind::ArtifactMissing,
            StoreError::Integrity { .. } => ErrorKind::Integrity,
            StoreError::Io { .. } => ErrorKind::Io,
            StoreError::Ref(e) => e.kind(),
            StoreError::Chain { kind, .. } => *kind,
        }
    }

    /// Whether retrying later might succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::StoreUnavailable
    }

    /// An [`StoreError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

impl StoreError {
    /// A copy for a second waiter of the same single-flight fetch: same kind
    /// and message; opaque sources become their text.
    pub(crate) fn shared_copy(&self) -> StoreError {
        match self {
            StoreError::Unavailable {
                store,
                message,
                retry_after,
                source,
            } => StoreError::Unavailable {
                store: store.clone(),
                message: match source {
                    Some(s) => format!("{message}: {s}"),
                    None => message.clone(),
                },
                retry_after: *retry_after,
                source: None,
            },
            StoreError::Missing { store, what } => StoreError::Missing {
                store: store.clone(),
                what: what.clone(),
            },
            StoreError::Integrity {
                store,
                what,
                message,
            } => StoreError::Integrity {
                store: store.clone(),
                what: what.clone(),
                message: message.clone(),
            },
            StoreError::Io { context, source } => StoreError::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            // RefError is not Clone; a fetch rarely fails this way (refs are
            // validated before any fetch), so the copy keeps only the text.
            StoreError::Ref(e) => StoreError::Io {
                context: "a concurrent pull failed".to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
            },
            StoreError::Chain { kind, answers } => StoreError::Chain {
                kind: *kind,
                answers: answers
                    .iter()
                    .map(|(n, e)| (n.clone(), e.shared_copy()))
                    .collect(),
            },
        }
    }
}
