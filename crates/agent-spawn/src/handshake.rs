//! The handshake line: waited for, parsed, checked against the assigned socket.

use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{SpawnError, SpawnFailure};
use crate::stdio::FirstLine;
use crate::{Endpoint, Handshake, HandshakeError};

/// Waits for the first stdout line (read by the I/O thread) and parses it.
/// When stdout ends without a line it never returns: the agent's exit is
/// reported by the caller.
pub(crate) async fn handshake(
    line: oneshot::Receiver<FirstLine>,
    startup_timeout: Duration,
    accepted_versions: &[u32],
    assigned_socket: Option<&Path>,
) -> Result<Handshake, SpawnError> {
    let read = async {
        match line.await {
            Ok(line) => line,
            Err(_) => std::future::pending().await,
        }
    };
    let line = tokio::time::timeout(startup_timeout, read)
        .await
        .map_err(|_| SpawnFailure::HandshakeTimeout {
            timeout: startup_timeout,
        })?
        .map_err(|long| {
            HandshakeError::malformed(
                &String::from_utf8_lossy(&long),
                "no newline within 4096 bytes",
            )
        })?;
    let text = std::str::from_utf8(&line)
        .map_err(|_| HandshakeError::malformed(&String::from_utf8_lossy(&line), "not UTF-8"))?;
    let handshake = Handshake::parse(text, accepted_versions)?;
    if let (Some(assigned), Endpoint::Unix(announced)) = (assigned_socket, &handshake.endpoint)
        && announced != assigned
    {
        return Err(HandshakeError::malformed(
            text,
            &format!(
                "the agent announced the socket {}, but the host assigned {}",
                announced.display(),
                assigned.display()
            ),
        )
        .into());
    }
    tracing::debug!(line = text, "handshake");
    Ok(handshake)
}
