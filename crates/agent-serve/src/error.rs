//! The one error type of this crate.

use std::path::PathBuf;

/// Why [`serve`](crate::serve) could not start or keep serving.
///
/// Stopping because of SIGTERM, SIGINT or the host's death is not an error:
/// `serve` then returns `Ok(())`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// An environment variable set by the host has a value we cannot use.
    #[error("{var} is invalid: {reason}")]
    Env {
        /// The variable, e.g. `CODEFLY_AGENT_UDS_PATH`.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding the TCP port or the unix socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address or socket path.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Restricting the unix socket to its owner (chmod 0600) failed.
    #[error("cannot chmod 0600 {path}: {source}", path = .path.display())]
    SocketPermissions {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Installing the SIGTERM/SIGINT handlers failed.
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    /// Writing the handshake line to stdout failed (the host is gone or closed the pipe).
    #[error("cannot write the handshake to stdout: {0}")]
    Handshake(#[source] std::io::Error),
    /// The gRPC server failed while running.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}
