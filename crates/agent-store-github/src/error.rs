use std::time::Duration;

use agent_ref::ErrorKind;
use agent_store::StoreError;

use crate::STORE_NAME;

/// Why the GitHub store could not deliver. Converted into
/// [`StoreError`] at the [`agent_store::AgentStore`] boundary; [`GithubError::kind`]
/// says which stable kind each case becomes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GithubError {
    /// GitHub's API rate limit is exhausted (403/429 with
    /// `x-ratelimit-remaining: 0` or `Retry-After`). Never retried by this store.
    #[error("{message}")]
    RateLimited {
        /// When it resets, and what to do about it (set `GITHUB_TOKEN`).
        message: String,
        /// How long until the limit resets, when GitHub said.
        retry_after: Option<Duration>,
    },
    /// The API or download host could not be reached (connection refused,
    /// DNS, TLS, timeout).
    #[error("cannot reach {url}: {message}")]
    Unreachable {
        /// The URL we tried.
        url: String,
        /// What went wrong.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server answered with an unexpected status (5xx, 401, 403 without a
    /// rate limit, …).
    #[error("{url} answered {status}: {message}")]
    Status {
        /// The URL we asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// GitHub's `message`, or the remedy.
        message: String,
    },
    /// The server answered 2xx but the body is not what GitHub sends.
    #[error("unexpected answer from {url}: {message}")]
    BadResponse {
        /// The URL we asked.
        url: String,
        /// What was wrong with it.
        message: String,
    },
    /// The release, asset or binary does not exist.
    #[error("{0}")]
    Missing(String),
    /// A redirect (or asset URL) pointed at a host we do not download from.
    #[error(
        "refusing to download from {url}: only the API host, github.com and *.githubusercontent.com are trusted"
    )]
    ForeignHost {
        /// The refused URL.
        url: String,
    },
    /// Downloaded bytes did not match the published sha256 (or size), or no
    /// checksum was published and one is required.
    #[error("{what}: {message}")]
    Checksum {
        /// The asset.
        what: String,
        /// Expected vs actual, or why nothing could be checked.
        message: String,
    },
    /// The archive is unsafe or malformed (absolute or `..` paths, links,
    /// device files, too large, too many entries, not a gzip tarball).
    #[error("unsafe archive {asset}: {reason}")]
    UnsafeArchive {
        /// The asset name.
        asset: String,
        /// What was refused.
        reason: String,
    },
    /// A local file-system error (cache, temp dir).
    #[error("{context}")]
    Io {
        /// What we were doing, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store is misconfigured (bad `GITHUB_API_URL`, token with bad bytes…).
    #[error("invalid GitHub store configuration: {0}")]
    Config(String),
}

impl GithubError {
    /// The stable kind (ARCHITECTURE.md). A redirect to a foreign host is
    /// `integrity`: the store was steered towards bytes we do not trust, and
    /// the chain must not silently fall through to another store.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            GithubError::RateLimited { .. }
            | GithubError::Unreachable { .. }
            | GithubError::Status { .. }
            | GithubError::BadResponse { .. }
            | GithubError::Config(_) => ErrorKind::StoreUnavailable,
            GithubError::Missing(_) => ErrorKind::ArtifactMissing,
            GithubError::ForeignHost { .. }
            | GithubError::Checksum { .. }
            | GithubError::UnsafeArchive { .. } => ErrorKind::Integrity,
            GithubError::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        GithubError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<GithubError> for StoreError {
    fn from(e: GithubError) -> Self {
        let store = STORE_NAME.to_owned();
        match e {
            GithubError::RateLimited {
                message,
                retry_after,
            } => StoreError::Unavailable {
                store,
                message,
                retry_after,
                source: None,
            },
            GithubError::Missing(what) => StoreError::Missing { store, what },
            GithubError::ForeignHost { url } => StoreError::Integrity {
                store,
                what: url,
                message: "redirected to a host that is not GitHub's (only the API host, \
                          github.com and *.githubusercontent.com are trusted)"
                    .to_owned(),
            },
            GithubError::Checksum { what, message } => StoreError::Integrity {
                store,
                what,
                message,
            },
            GithubError::UnsafeArchive { asset, reason } => StoreError::Integrity {
                store,
                what: asset,
                message: format!("unsafe archive: {reason}"),
            },
            GithubError::Io { context, source } => StoreError::Io { context, source },
            GithubError::Unreachable {
                url,
                message,
                source,
            } => StoreError::Unavailable {
                store,
                message: format!("cannot reach {url}: {message}"),
                retry_after: None,
                source,
            },
            GithubError::Status {
                url,
                status,
                message,
            } => match http::StatusCode::from_u16(status).map(agent_store_transport::classify) {
                Ok(agent_store_transport::Class::Denied) => StoreError::Denied {
                    store,
                    status,
                    message: format!("{url} answered {status}: {message}"),
                    hint: "check GITHUB_TOKEN/GH_TOKEN and its access to the repository".to_owned(),
                },
                Ok(agent_store_transport::Class::Missing) => StoreError::Missing {
                    store,
                    what: format!("{url} ({status}: {message})"),
                },
                _ => StoreError::Unavailable {
                    store,
                    message: format!("{url} answered {status}: {message}"),
                    retry_after: None,
                    source: None,
                },
            },
            other @ (GithubError::BadResponse { .. } | GithubError::Config(_)) => {
                StoreError::Unavailable {
                    store,
                    message: other.to_string(),
                    retry_after: None,
                    source: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_take_the_shared_retry_class() {
        let e = |status: u16| {
            StoreError::from(GithubError::Status {
                url: "https://api.github.com/repos/a/b".to_owned(),
                status,
                message: "m".to_owned(),
            })
        };
        for denied in [401, 403, 422] {
            let err = e(denied);
            assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
            assert!(!err.is_retryable(), "{denied} is not retried");
            assert!(err.to_string().contains("GITHUB_TOKEN"), "{err}");
        }
        for retry in [429, 500, 502, 503] {
            assert!(e(retry).is_retryable(), "{retry} is retried");
        }
        assert_eq!(e(404).kind(), ErrorKind::ArtifactMissing);
    }
}
