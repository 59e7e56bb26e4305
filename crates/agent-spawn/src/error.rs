//! Errors of `spawn`, each with a stable kind and, for agent failures, the stderr tail.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use agent_ref::ErrorKind;

use crate::{Endpoint, ExitInfo, HandshakeError};

/// What went wrong while starting an agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnFailure {
    /// The program could not be started (`spawn`).
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The program path is relative (`spawn`): the path that is checked must
    /// be the path that runs, so there is no `PATH` search and no working
    /// directory involved.
    #[error("cannot start {}: the program path must be absolute (the checked path is the path that runs)", program.display())]
    RelativeProgram {
        /// The program as given.
        program: PathBuf,
    },
    /// The agent exited before it was ready (`agent-exited`).
    #[error("the agent exited before it was ready ({status})")]
    Exited {
        /// How it ended.
        status: ExitInfo,
    },
    /// No handshake line within the startup timeout (`handshake-timeout`).
    #[error("no handshake line on stdout within {}", fmt_duration(*timeout))]
    HandshakeTimeout {
        /// The startup timeout.
        timeout: Duration,
    },
    /// The first stdout line is not a handshake (`handshake-malformed`).
    #[error("malformed handshake line {line:?}: {reason}")]
    HandshakeMalformed {
        /// The line (at most 200 characters of it).
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The agent speaks a protocol version the host does not accept (`version-mismatch`).
    #[error(
        "the agent speaks protocol version {version}; this host accepts {}",
        list(accepted)
    )]
    VersionMismatch {
        /// The version in the handshake.
        version: u32,
        /// The versions this host accepts.
        accepted: Vec<u32>,
    },
    /// No gRPC connection within the dial timeout (`dial-timeout`).
    #[error("could not connect to {endpoint} within {}: {last}", fmt_duration(*timeout))]
    DialTimeout {
        /// Where the agent said it listens.
        endpoint: Endpoint,
        /// The dial timeout.
        timeout: Duration,
        /// The last connection error.
        last: String,
    },
    /// The health service never reported SERVING (`not-serving`).
    #[error("the agent at {endpoint} did not report SERVING within {} (last answer: {last})", fmt_duration(*timeout))]
    NotServing {
        /// Where the agent listens.
        endpoint: Endpoint,
        /// The readiness deadline.
        timeout: Duration,
        /// The last health answer.
        last: String,
    },
    /// The caller's admission check refused to start the program (its own
    /// kind: `untrusted`, `integrity`, `not-locked`, …); nothing ran.
    #[error("{message}")]
    Refused {
        /// The kind the admission gave.
        kind: ErrorKind,
        /// What was refused and why.
        message: String,
        /// The admission's own error, when it had one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The sandbox could not be set up (`admission` when this machine cannot
    /// enforce the policy, `config` for a bad policy path, `io`); nothing ran.
    #[error("cannot confine {}", program.display())]
    Sandbox {
        /// The program.
        program: PathBuf,
        /// What is missing or wrong, and the fix.
        #[source]
        source: agent_sandbox::SandboxError,
    },
    /// A local OS error (`io`).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl SpawnFailure {
    /// The stable kind (`agent_ref::ErrorKind`; ARCHITECTURE.md, "Errors").
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpawnFailure::Spawn { .. } | SpawnFailure::RelativeProgram { .. } => ErrorKind::Spawn,
            SpawnFailure::Exited { .. } => ErrorKind::AgentExited,
            SpawnFailure::HandshakeTimeout { .. } => ErrorKind::HandshakeTimeout,
            SpawnFailure::HandshakeMalformed { .. } => ErrorKind::HandshakeMalformed,
            SpawnFailure::VersionMismatch { .. } => ErrorKind::VersionMismatch,
            SpawnFailure::DialTimeout { .. } => ErrorKind::DialTimeout,
            SpawnFailure::NotServing { .. } => ErrorKind::NotServing,
            SpawnFailure::Refused { kind, .. } => *kind,
            SpawnFailure::Sandbox { source, .. } => source.kind(),
            SpawnFailure::Io { .. } => ErrorKind::Io,
        }
    }
}

/// The error of [`spawn`](crate::spawn): a [`SpawnFailure`] plus the agent's
/// stderr tail when the agent had started.
///
/// `Display` shows the cause; the stderr tail is separate
/// ([`SpawnError::stderr_tail`]) so a CLI can print it under the message.
#[derive(Debug)]
pub struct SpawnError {
    failure: SpawnFailure,
    stderr_tail: Option<String>,
    pid: Option<u32>,
}

impl SpawnError {
    /// The stable kind (`agent_ref::ErrorKind`; ARCHITECTURE.md, "Errors").
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.failure.kind()
    }

    /// What went wrong.
    #[must_use]
    pub fn failure(&self) -> &SpawnFailure {
        &self.failure
    }

    /// The last bytes the agent wrote to stderr (lossy UTF-8), when it had started.
    #[must_use]
    pub fn stderr_tail(&self) -> Option<&str> {
        self.stderr_tail.as_deref()
    }

    /// The pid (and process-group id) of the agent, when it had started.
    /// The group is gone by the time the error is returned.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// A refusal by the caller's admission check (see
    /// [`SpawnOptions::admit`](crate::SpawnOptions::admit)): the error keeps
    /// `kind` and `message`, with `cause` as its source.
    #[must_use]
    pub fn refused(
        kind: ErrorKind,
        message: impl Into<String>,
        cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        SpawnFailure::Refused {
            kind,
            message: message.into(),
            source: cause,
        }
        .into()
    }

    /// Whether the admission check refused the program (nothing ran).
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(self.failure, SpawnFailure::Refused { .. })
    }

    /// Attaches what is known about the started agent (empty tails are dropped).
    pub(crate) fn with_agent(mut self, pid: u32, tail: String) -> Self {
        self.pid = Some(pid);
        self.stderr_tail = (!tail.is_empty()).then_some(tail);
        self
    }
}

impl From<SpawnFailure> for SpawnError {
    fn from(failure: SpawnFailure) -> Self {
        SpawnError {
            failure,
            stderr_tail: None,
            pid: None,
        }
    }
}

impl From<HandshakeError> for SpawnError {
    fn from(err: HandshakeError) -> Self {
        match err {
            HandshakeError::VersionMismatch { version, accepted } => {
                SpawnFailure::VersionMismatch { version, accepted }.into()
            }
            HandshakeError::Malformed { line, reason } => {
                SpawnFailure::HandshakeMalformed { line, reason }.into()
            }
            // `HandshakeError` is non-exhaustive: a future variant is still a bad line.
            other => SpawnFailure::HandshakeMalformed {
                line: String::new(),
                reason: other.to_string(),
            }
            .into(),
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.failure, f)
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.failure)
    }
}

fn list(versions: &[u32]) -> String {
    let v: Vec<String> = versions.iter().map(u32::to_string).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
