use std::time::Duration;

use agent_ref::ErrorKind;
use agent_store::StoreError;

use crate::STORE_NAME;

/// What went wrong talking to Nix. Every store method returns these as a
/// [`StoreError`] (`From` is implemented); [`NixError::kind`] gives the same kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NixError {
    /// The `nix` program could not be found.
    #[error("`{program}` was not found; install Nix (Debian: apt install nix-bin)")]
    NotInstalled {
        /// The program we tried to run.
        program: String,
    },
    /// The flake has no such attribute.
    #[error("{installable} (nix: {stderr})")]
    MissingAttribute {
        /// The installable that was asked for.
        installable: String,
        /// What nix said.
        stderr: String,
    },
    /// nix exited unsuccessfully: an evaluation or build failure.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of nix's stderr (at most 4 KiB).
        stderr: String,
    },
    /// nix did not finish within the configured timeout; it was stopped.
    #[error("`{command}` did not finish within {after:?}; it was stopped")]
    Timeout {
        /// The command line.
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// nix answered something we could not understand.
    #[error("unexpected answer from `{command}`: {message}")]
    BadAnswer {
        /// The command line.
        command: String,
        /// What was wrong with the answer.
        message: String,
    },
    /// The build output holds no agent binary in any accepted layout.
    #[error("agent binary in {path}: {reason}")]
    BadOutput {
        /// The store path that was built.
        path: String,
        /// What was found instead.
        reason: String,
    },
    /// A local I/O error.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl NixError {
    /// The stable kind (ARCHITECTURE.md): a missing attribute or an output without
    /// an agent is `artifact-missing`; local I/O is `io`; everything else
    /// (nix missing, evaluation or build failure, timeout) is `store-unavailable`.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            NixError::MissingAttribute { .. } | NixError::BadOutput { .. } => {
                ErrorKind::ArtifactMissing
            }
            NixError::Io { .. } => ErrorKind::Io,
            NixError::NotInstalled { .. }
            | NixError::Failed { .. }
            | NixError::Timeout { .. }
            | NixError::BadAnswer { .. } => ErrorKind::StoreUnavailable,
        }
    }
}

impl From<NixError> for StoreError {
    fn from(e: NixError) -> Self {
        match e {
            NixError::MissingAttribute { .. } | NixError::BadOutput { .. } => StoreError::Missing {
                store: STORE_NAME.to_owned(),
                what: e.to_string(),
            },
            NixError::Io { context, source } => StoreError::Io { context, source },
            other => StoreError::Unavailable {
                store: STORE_NAME.to_owned(),
                message: other.to_string(),
                retry_after: None,
                source: None,
            },
        }
    }
}
