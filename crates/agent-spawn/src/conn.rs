//! A running, ready agent and its teardown.

use std::fmt;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{OnceCell, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use agent_process::{AgentProcess, Exit};

use crate::{Endpoint, Handshake, StderrRing, TokenInterceptor};

/// A channel that adds the agent's token to every request.
pub type AgentChannel = InterceptedService<Channel, TokenInterceptor>;

/// How an agent process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    /// The exit code, when it exited normally.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// Whether it exited with code 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Whether neither a code nor a signal is known (the reaper was stopped,
    /// e.g. because its runtime shut down).
    #[must_use]
    pub fn is_unknown(&self) -> bool {
        self.code.is_none() && self.signal.is_none()
    }
}

impl From<ExitStatus> for ExitInfo {
    fn from(status: ExitStatus) -> Self {
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
        }
    }
}

impl From<Exit> for ExitInfo {
    fn from(exit: Exit) -> Self {
        ExitInfo {
            code: exit.code,
            signal: exit.signal,
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}{}", signal_name(sig)),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        _ => "",
    }
}

/// Waits until the reaper published the exit; unknown when the reaper is gone.
pub(crate) async fn wait_exit(mut rx: watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
    if let Ok(info) = rx.wait_for(Option::is_some).await {
        return info.unwrap_or_default();
    }
    let last = *rx.borrow();
    last.unwrap_or_default()
}

pub(crate) struct Parts {
    pub(crate) process: Arc<AgentProcess>,
    pub(crate) handshake: Handshake,
    pub(crate) channel: Channel,
    pub(crate) token: String,
    pub(crate) interceptor: TokenInterceptor,
    pub(crate) stderr: StderrRing,
    pub(crate) exit_rx: watch::Receiver<Option<ExitInfo>>,
    pub(crate) grace: Duration,
    pub(crate) socket_dir: Option<tempfile::TempDir>,
}

struct Inner {
    parts: Parts,
    closed: OnceCell<ExitInfo>,
    socket_dir: Mutex<Option<tempfile::TempDir>>,
}

/// A ready agent: its process (group), endpoint and an authenticated channel.
///
/// Cheap to clone. [`AgentConn::close`] stops it gracefully; when the last
/// clone is dropped without `close`, the process group is killed (SIGKILL) and
/// the reaper reaps it.
#[derive(Clone)]
pub struct AgentConn {
    inner: Arc<Inner>,
}

impl fmt::Debug for AgentConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConn")
            .field("pid", &self.pid())
            .field("endpoint", &self.endpoint().to_string())
            .field("protocol", &self.inner.parts.handshake.version)
            .field("exited", &*self.inner.parts.exit_rx.borrow())
            .finish_non_exhaustive()
    }
}

impl AgentConn {
    pub(crate) fn new(mut parts: Parts) -> Self {
        let socket_dir = Mutex::new(parts.socket_dir.take());
        AgentConn {
            inner: Arc::new(Inner {
                parts,
                closed: OnceCell::new(),
                socket_dir,
            }),
        }
    }

    /// The agent's pid, which is also its process-group id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.inner.parts.process.pid()
    }

    /// A handle that does not keep the agent alive (see [`WeakAgentConn`]).
    #[must_use]
    pub fn downgrade(&self) -> WeakAgentConn {
        WeakAgentConn {
            inner: Arc::downgrade(&self.inner),
            pid: self.pid(),
        }
    }

    /// Where the agent listens.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.parts.handshake.endpoint
    }

    /// The protocol version from the handshake.
    #[must_use]
    pub fn protocol_version(&self) -> u32 {
        self.inner.parts.handshake.version
    }

    /// A channel that sends the token on every request; build clients on it
    /// (`EchoClient::new(conn.channel())`).
    #[must_use]
    pub fn channel(&self) -> AgentChannel {
        InterceptedService::new(
            self.inner.parts.channel.clone(),
            self.inner.parts.interceptor.clone(),
        )
    }

    /// The underlying channel, without the token.
    #[must_use]
    pub fn raw_channel(&self) -> Channel {
        self.inner.parts.channel.clone()
    }

    /// The token given to the agent in `CODEFLY_AGENT_TOKEN`.
    #[must_use]
    pub fn token(&self) -> &str {
        &self.inner.parts.token
    }

    /// The last 64 KiB the agent wrote to stderr (lossy UTF-8).
    #[must_use]
    pub fn stderr_tail(&self) -> String {
        self.inner.parts.stderr.tail()
    }

    /// Resolves when the agent process has exited and been reaped.
    ///
    /// When the agent (the group leader) exits, whatever it left in its
    /// process group is killed. The future does not keep the connection alive.
    pub fn exited(&self) -> impl Future<Output = ExitInfo> + Send + 'static {
        wait_exit(self.inner.parts.exit_rx.clone())
    }

    /// Whether the agent process has exited (and been reaped).
    #[must_use]
    pub fn has_exited(&self) -> bool {
        self.inner.parts.exit_rx.borrow().is_some()
    }

    /// Stops the agent: SIGTERM to its group, up to the grace period for it to
    /// exit, then SIGKILL to the group; reaps it, kills whatever is left of the
    /// group, and removes the socket directory.
    ///
    /// Idempotent and safe to call concurrently: every caller gets the same
    /// [`ExitInfo`]. Cancel-safe: a dropped call leaves the work to the next
    /// caller (or to `Drop`).
    pub async fn close(&self) -> ExitInfo {
        let span = tracing::debug_span!("close", pid = self.pid());
        *self
            .inner
            .closed
            .get_or_init(|| self.shutdown().instrument(span))
            .await
    }

    async fn shutdown(&self) -> ExitInfo {
        let parts = &self.inner.parts;
        // SIGTERM to the group now; the reaper thread SIGKILLs it when the
        // grace period is over (no timer of ours: it holds even when this
        // future is dropped or its runtime shut down).
        parts.process.terminate(parts.grace);
        let info = wait_exit(parts.exit_rx.clone()).await;
        // The reaper SIGKILLs the rest of the group once the leader exits.
        drop(
            self.inner
                .socket_dir
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        info
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A no-op once reaped: the group id may belong to someone else by then.
        if self.closed.get().is_none() && self.parts.process.kill() {
            tracing::debug!(
                pid = self.parts.process.pid(),
                "agent dropped without close; killed its group"
            );
        }
    }
}

/// A handle to an agent that does not keep it alive: when the last
/// [`AgentConn`] is dropped the agent is killed, whatever weak handles remain.
#[derive(Clone)]
pub struct WeakAgentConn {
    inner: Weak<Inner>,
    pid: u32,
}

impl WeakAgentConn {
    /// The connection, while some [`AgentConn`] still holds it.
    #[must_use]
    pub fn upgrade(&self) -> Option<AgentConn> {
        self.inner.upgrade().map(|inner| AgentConn { inner })
    }

    /// The agent's pid (which may be gone, or reused, once no strong handle remains).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl fmt::Debug for WeakAgentConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakAgentConn")
            .field("pid", &self.pid)
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}
