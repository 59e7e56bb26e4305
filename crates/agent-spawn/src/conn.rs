//! A running, ready agent and its teardown.

use std::fmt;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OnceCell, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use agent_process::{AgentProcess, Exit};

use crate::attach::{AttachInfo, Attached};
use crate::supervise::{AgentEvent, GaveUp, SupervisedChannel, SupervisedConn, WeakSupervised};
use crate::{Endpoint, Handshake, StderrRing, TokenInterceptor};

/// How long an exit report waits for the agent's last stderr bytes.
pub(crate) const STDERR_SETTLE: Duration = Duration::from_secs(2);

/// The channel of one agent process: tonic's channel plus its token.
pub(crate) type DirectChannel = InterceptedService<Channel, TokenInterceptor>;

/// A channel that adds the agent's token to every request: a tower service
/// like tonic's `Channel`, for generated clients (`EchoClient::new(conn.channel())`).
///
/// Transport failures (the agent died, the connection broke) are
/// `UNAVAILABLE`. The channel of a supervised agent follows its restarts.
#[derive(Clone)]
pub struct AgentChannel {
    repr: ChannelRepr,
}

#[derive(Clone)]
enum ChannelRepr {
    /// One process's channel, and its exit (calls after it fail fast).
    Direct(DirectChannel, Option<watch::Receiver<Option<ExitInfo>>>),
    Supervised(SupervisedChannel),
}

impl fmt::Debug for AgentChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            ChannelRepr::Direct(..) => f.write_str("AgentChannel(direct)"),
            ChannelRepr::Supervised(s) => fmt::Debug::fmt(s, f),
        }
    }
}

impl AgentChannel {
    pub(crate) fn direct(
        channel: DirectChannel,
        exit: Option<watch::Receiver<Option<ExitInfo>>>,
    ) -> Self {
        AgentChannel {
            repr: ChannelRepr::Direct(channel, exit),
        }
    }

    /// `UNAVAILABLE` naming `agent-exited` once the agent process has exited.
    fn exited(&self) -> Option<tonic::Status> {
        match &self.repr {
            ChannelRepr::Direct(_, Some(exit)) => (*exit.borrow()).map(|status| {
                tonic::Status::unavailable(format!("agent-exited: the agent exited ({status})"))
            }),
            _ => None,
        }
    }
}

type ChannelResponse = http::Response<tonic::service::interceptor::ResponseBody<tonic::body::Body>>;

impl tower::Service<http::Request<tonic::body::Body>> for AgentChannel {
    type Response = ChannelResponse;
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An exited agent is reported by `call`: a readiness error would
        // reach the caller as `UNKNOWN`.
        match &mut self.repr {
            ChannelRepr::Direct(c, _) => {
                c.poll_ready(cx).map_err(crate::supervise::transport_status)
            }
            ChannelRepr::Supervised(c) => c.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(status) = self.exited() {
            return Box::pin(std::future::ready(Err(status)));
        }
        match &mut self.repr {
            ChannelRepr::Direct(c, _) => {
                let f = c.call(request);
                Box::pin(async move { f.await.map_err(crate::supervise::transport_status) })
            }
            ChannelRepr::Supervised(c) => c.call(request),
        }
    }
}

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
    /// The channel's socket, shut down first by [`AgentConn::close`].
    pub(crate) transport: crate::transport::Transport,
    pub(crate) token: String,
    pub(crate) interceptor: TokenInterceptor,
    pub(crate) stderr: StderrRing,
    pub(crate) exit_rx: watch::Receiver<Option<ExitInfo>>,
    /// Turns true when the I/O thread has read the agent's stderr to EOF.
    pub(crate) stderr_eof: watch::Receiver<bool>,
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
///
/// Three kinds share this handle: an agent [`spawn`](crate::spawn) started;
/// a supervised one ([`supervise`](crate::supervise)), restarted as its policy
/// says, whose pid, endpoint and token follow the current process and whose
/// [`channel`](AgentConn::channel) follows restarts; and an attached one
/// ([`attach`](crate::attach)), which this host did not start and never
/// signals (close and drop only drop the channel).
#[derive(Clone)]
pub struct AgentConn {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Spawned(Arc<Inner>),
    Supervised(SupervisedConn),
    Attached(Arc<Attached>),
}

impl fmt::Debug for AgentConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Spawned(inner) => f
                .debug_struct("AgentConn")
                .field("pid", &self.pid())
                .field("endpoint", &self.endpoint().to_string())
                .field("protocol", &inner.parts.handshake.version)
                .field("exited", &*inner.parts.exit_rx.borrow())
                .finish_non_exhaustive(),
            Repr::Supervised(s) => fmt::Debug::fmt(s, f),
            Repr::Attached(a) => f
                .debug_struct("AgentConn")
                .field("attached", &a.info)
                .finish_non_exhaustive(),
        }
    }
}

impl From<SupervisedConn> for AgentConn {
    fn from(conn: SupervisedConn) -> Self {
        AgentConn {
            repr: Repr::Supervised(conn),
        }
    }
}

impl AgentConn {
    pub(crate) fn new(mut parts: Parts) -> Self {
        let socket_dir = Mutex::new(parts.socket_dir.take());
        AgentConn {
            repr: Repr::Spawned(Arc::new(Inner {
                parts,
                closed: OnceCell::new(),
                socket_dir,
            })),
        }
    }

    pub(crate) fn attached(attached: Attached) -> Self {
        AgentConn {
            repr: Repr::Attached(Arc::new(attached)),
        }
    }

    /// The agent's pid, which is also its process-group id. Supervised: the
    /// current (or last) process. Attached: the pid it was given, 0 when none.
    #[must_use]
    pub fn pid(&self) -> u32 {
        match &self.repr {
            Repr::Spawned(inner) => inner.parts.process.pid(),
            Repr::Supervised(s) => s.pid(),
            Repr::Attached(a) => a.info.pid.unwrap_or(0),
        }
    }

    /// A handle that does not keep the agent alive (see [`WeakAgentConn`]).
    #[must_use]
    pub fn downgrade(&self) -> WeakAgentConn {
        let inner = match &self.repr {
            Repr::Spawned(inner) => WeakRepr::Spawned(Arc::downgrade(inner)),
            Repr::Supervised(s) => WeakRepr::Supervised(s.downgrade()),
            Repr::Attached(a) => WeakRepr::Attached(Arc::downgrade(a)),
        };
        WeakAgentConn {
            inner,
            pid: self.pid(),
        }
    }

    /// Where the agent listens (supervised: the current or last process's endpoint).
    #[must_use]
    pub fn endpoint(&self) -> Endpoint {
        match &self.repr {
            Repr::Spawned(inner) => inner.parts.handshake.endpoint.clone(),
            Repr::Supervised(s) => s.endpoint(),
            Repr::Attached(a) => a.info.endpoint.clone(),
        }
    }

    /// The protocol version from the handshake (0 when attached: no handshake was read).
    #[must_use]
    pub fn protocol_version(&self) -> u32 {
        match &self.repr {
            Repr::Spawned(inner) => inner.parts.handshake.version,
            Repr::Supervised(s) => s.protocol_version(),
            Repr::Attached(_) => 0,
        }
    }

    /// A channel that sends the token on every request; build clients on it
    /// (`EchoClient::new(conn.channel())`). A supervised agent's channel
    /// follows its restarts.
    #[must_use]
    pub fn channel(&self) -> AgentChannel {
        match &self.repr {
            Repr::Spawned(inner) => AgentChannel::direct(
                InterceptedService::new(
                    inner.parts.channel.clone(),
                    inner.parts.interceptor.clone(),
                ),
                Some(inner.parts.exit_rx.clone()),
            ),
            Repr::Supervised(s) => AgentChannel {
                repr: ChannelRepr::Supervised(s.channel()),
            },
            Repr::Attached(a) => AgentChannel::direct(
                InterceptedService::new(a.channel.clone(), a.interceptor.clone()),
                Some(a.exit_rx.clone()),
            ),
        }
    }

    /// The underlying channel, without the token. Supervised: the current
    /// process's channel, which does NOT follow restarts (use [`AgentConn::channel`]).
    #[must_use]
    pub fn raw_channel(&self) -> Channel {
        match &self.repr {
            Repr::Spawned(inner) => inner.parts.channel.clone(),
            Repr::Supervised(s) => s.raw_channel(),
            Repr::Attached(a) => a.channel.clone(),
        }
    }

    /// The token sent as `x-codefly-token` (given to the agent in
    /// `CODEFLY_AGENT_TOKEN`; supervised: the current process's).
    #[must_use]
    pub fn token(&self) -> String {
        match &self.repr {
            Repr::Spawned(inner) => inner.parts.token.clone(),
            Repr::Supervised(s) => s.token(),
            Repr::Attached(a) => a.info.token.clone(),
        }
    }

    /// Who this agent is and how to reach it, for another host to
    /// [`attach`](crate::attach) to it (`agentctl load --hold --json`).
    #[must_use]
    pub fn attach_info(&self) -> AttachInfo {
        AttachInfo {
            pid: Some(self.pid()).filter(|p| *p != 0),
            endpoint: self.endpoint(),
            token: self.token(),
        }
    }

    /// The last 64 KiB the agent wrote to stderr (lossy UTF-8; empty when attached).
    #[must_use]
    pub fn stderr_tail(&self) -> String {
        match &self.repr {
            Repr::Spawned(inner) => inner.parts.stderr.tail(),
            Repr::Supervised(s) => s.stderr_tail(),
            Repr::Attached(_) => String::new(),
        }
    }

    /// Waits (at most `max`) until everything the agent wrote to stderr is in
    /// the ring: an exit can be seen before its last stderr bytes are read, and
    /// a report of the exit should carry them.
    pub(crate) async fn stderr_settled(&self, max: Duration) {
        if let Repr::Spawned(inner) = &self.repr {
            let mut eof = inner.parts.stderr_eof.clone();
            let _ = tokio::time::timeout(max, eof.wait_for(|done| *done)).await;
        }
    }

    /// The supervisor's events (exits, restarts, the end). Only a supervised
    /// agent reports events; other kinds give a receiver that is already closed.
    #[must_use]
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<AgentEvent> {
        match &self.repr {
            Repr::Supervised(s) => s.events(),
            _ => tokio::sync::broadcast::channel(1).1,
        }
    }

    /// The supervised handle, when this agent is supervised.
    #[must_use]
    pub fn supervised(&self) -> Option<&SupervisedConn> {
        match &self.repr {
            Repr::Supervised(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this agent was attached to (not started by this host).
    #[must_use]
    pub fn is_attached(&self) -> bool {
        matches!(self.repr, Repr::Attached(_))
    }

    /// The `agent-exited` error of a supervised agent whose policy gave up.
    #[must_use]
    pub fn failure(&self) -> Option<GaveUp> {
        self.supervised().and_then(SupervisedConn::failure)
    }

    /// Resolves when the agent process has exited and been reaped, and what it
    /// wrote to stderr before it exited is in [`stderr_tail`](Self::stderr_tail)
    /// (waiting at most 2 s for a descendant that holds stderr open).
    ///
    /// When the agent (the group leader) exits, whatever it left in its
    /// process group is killed. The future does not keep the connection alive.
    /// Supervised: when supervision ended (gave up, closed, or an exit the
    /// policy does not restart). Attached: when its pid is gone (status
    /// unknown); never without a pid.
    pub fn exited(&self) -> Pin<Box<dyn Future<Output = ExitInfo> + Send + 'static>> {
        match &self.repr {
            Repr::Spawned(inner) => {
                let exit = inner.parts.exit_rx.clone();
                let mut eof = inner.parts.stderr_eof.clone();
                Box::pin(async move {
                    let info = wait_exit(exit).await;
                    let _ = tokio::time::timeout(STDERR_SETTLE, eof.wait_for(|done| *done)).await;
                    info
                })
            }
            Repr::Supervised(s) => Box::pin(s.exited()),
            Repr::Attached(a) => Box::pin(wait_exit(a.exit_rx.clone())),
        }
    }

    /// Whether the agent process has exited (and been reaped); supervised:
    /// whether supervision ended.
    #[must_use]
    pub fn has_exited(&self) -> bool {
        match &self.repr {
            Repr::Spawned(inner) => inner.parts.exit_rx.borrow().is_some(),
            Repr::Supervised(s) => s.has_ended(),
            Repr::Attached(a) => a.exit_rx.borrow().is_some(),
        }
    }

    /// Stops the agent: ends this host's connection to it (calls still in
    /// flight on the channel fail with `UNAVAILABLE`, as after the Go loader's
    /// `conn.Close()`), then SIGTERM to its group, up to the grace period for
    /// it to exit, then SIGKILL to the group; reaps it, kills whatever is left
    /// of the group, and removes the socket directory. With no connection of
    /// ours left to drain, a graceful server (tonic, grpc-go's
    /// `GracefulStop`) exits at once. Supervised: stops supervision
    /// too. Attached: signals nothing (unknown status returned).
    ///
    /// Idempotent and safe to call concurrently: every caller gets the same
    /// [`ExitInfo`]. Cancel-safe: a dropped call leaves the work to the next
    /// caller (or to `Drop`).
    pub async fn close(&self) -> ExitInfo {
        match &self.repr {
            Repr::Spawned(inner) => {
                let span = tracing::debug_span!("close", pid = self.pid());
                *inner
                    .closed
                    .get_or_init(|| shutdown(inner).instrument(span))
                    .await
            }
            Repr::Supervised(s) => s.close().await,
            Repr::Attached(a) => {
                tracing::debug!(pid = ?a.info.pid, "detached (the agent keeps running)");
                ExitInfo::default()
            }
        }
    }
}

async fn shutdown(inner: &Inner) -> ExitInfo {
    let parts = &inner.parts;
    // Our side of the connection first: a graceful server (grpc-go's
    // GracefulStop, tonic's serve_with_shutdown) then has nothing to drain.
    parts.transport.shutdown();
    // SIGTERM to the group now; the reaper thread SIGKILLs it when the
    // grace period is over (no timer of ours: it holds even when this
    // future is dropped or its runtime shut down).
    parts.process.terminate(parts.grace);
    let info = wait_exit(parts.exit_rx.clone()).await;
    // The reaper SIGKILLs the rest of the group once the leader exits.
    drop(
        inner
            .socket_dir
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(),
    );
    info
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
    inner: WeakRepr,
    pid: u32,
}

#[derive(Clone)]
enum WeakRepr {
    Spawned(Weak<Inner>),
    Supervised(WeakSupervised),
    Attached(Weak<Attached>),
}

impl WeakAgentConn {
    /// The connection, while some [`AgentConn`] still holds it.
    #[must_use]
    pub fn upgrade(&self) -> Option<AgentConn> {
        let repr = match &self.inner {
            WeakRepr::Spawned(w) => Repr::Spawned(w.upgrade()?),
            WeakRepr::Supervised(w) => Repr::Supervised(w.upgrade()?),
            WeakRepr::Attached(w) => Repr::Attached(w.upgrade()?),
        };
        Some(AgentConn { repr })
    }

    /// The agent's pid (which may be gone, or reused, once no strong handle remains).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn alive(&self) -> bool {
        match &self.inner {
            WeakRepr::Spawned(w) => w.strong_count() > 0,
            WeakRepr::Supervised(w) => w.alive(),
            WeakRepr::Attached(w) => w.strong_count() > 0,
        }
    }
}

impl fmt::Debug for WeakAgentConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakAgentConn")
            .field("pid", &self.pid)
            .field("alive", &self.alive())
            .finish()
    }
}
