//! What a supervised agent's handle reports.

use std::time::Duration;

use agent_ref::ErrorKind;

use crate::{Endpoint, ExitInfo};

/// What happened to a supervised agent, as [`SupervisedConn::events`](crate::SupervisedConn::events) reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AgentEvent {
    /// An agent process is ready (handshake, health SERVING).
    Started {
        /// Its pid (and process group).
        pid: u32,
        /// Where it listens.
        endpoint: Endpoint,
        /// How many restarts preceded it (0 for the first start).
        restarts: u32,
    },
    /// The agent process exited by itself.
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitInfo,
        /// The last of its stderr (lossy UTF-8, at most 64 KiB).
        tail: String,
    },
    /// It will be started again after `delay`.
    Restarting {
        /// 1 for the first restart of the window.
        attempt: u32,
        /// How long until the restart.
        delay: Duration,
    },
    /// A restart did not get a ready agent (the error's kind and message).
    RestartFailed {
        /// Which restart.
        attempt: u32,
        /// The spawn error.
        error: String,
        /// The failed agent's stderr tail.
        tail: String,
    },
    /// Too many restarts within the window: supervision ended.
    GaveUp {
        /// The `agent-exited` error the handle now ends with.
        error: GaveUp,
    },
    /// Supervision ended without giving up: closed, or an exit the policy
    /// does not restart.
    Stopped {
        /// How the last agent process ended.
        status: ExitInfo,
    },
}

/// The end of a supervised handle after too many restarts (kind
/// `agent-exited`), or at once when the admission check refused a restart
/// (the refusal's kind: nothing ran).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the agent exited ({status}) and was restarted {restarts} times within {}s; giving up{}",
    window.as_secs(),
    last_error.as_ref().map(|e| format!(" (last restart: {e})")).unwrap_or_default()
)]
pub struct GaveUp {
    /// How the last agent process ended.
    pub status: ExitInfo,
    /// Its pid.
    pub pid: u32,
    /// Restarts made within the window.
    pub restarts: u32,
    /// The window.
    pub window: Duration,
    /// The last restart's spawn error, when the last attempt did not even start.
    pub last_error: Option<String>,
    /// The last stderr tail.
    pub tail: String,
    /// The kind of the admission's refusal, when a restart was refused.
    pub refused: Option<ErrorKind>,
}

impl GaveUp {
    /// The refusal's kind when the admission refused a restart, else
    /// [`ErrorKind::AgentExited`].
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.refused.unwrap_or(ErrorKind::AgentExited)
    }

    /// The last agent's stderr tail.
    #[must_use]
    pub fn stderr_tail(&self) -> &str {
        &self.tail
    }
}
