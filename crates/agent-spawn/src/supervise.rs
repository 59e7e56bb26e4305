//! Supervised agents: restart on exit with jittered exponential backoff, one
//! handle (and one channel) across restarts.
//!
//! [`supervise`] starts the agent with [`spawn`](crate::spawn), then watches
//! it. When it exits, the exit (status or signal, stderr tail) is reported as
//! an [`AgentEvent`] and a `tracing` warning; the [`RestartPolicy`] decides
//! whether it is started again, after a delay that doubles from 200 ms up to
//! 30 s (±20 % jitter), at most `max_restarts` times within `window`.
//! Every restart goes through the same admission as the first start
//! ([`SpawnOptions::admit`](crate::SpawnOptions::admit)) and executes the
//! descriptor it returns; a refusal ends supervision at once with the
//! refusal's kind ([`GaveUp::kind`]), and nothing runs.
//!
//! The [`SupervisedChannel`] of [`SupervisedConn::channel`] always talks to the
//! *current* agent: a client built on it before a crash works on the restarted
//! agent. A call in flight when the agent dies fails with `UNAVAILABLE`; a call
//! made while it restarts waits for the new agent (at most the dial timeout),
//! then fails with `UNAVAILABLE`. Once supervision ended (the policy gave up, or
//! the exit was not one to restart), every call fails at once with
//! `UNAVAILABLE` naming the exit, and [`SupervisedConn::failure`] holds the
//! `agent-exited` error with the last stderr tail.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use agent_ref::ErrorKind;
use tokio::sync::{OnceCell, broadcast, watch};
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::conn::STDERR_SETTLE;
use crate::{
    AgentChannel, AgentConn, Endpoint, ExitInfo, SpawnError, SpawnOptions, StderrRing, StderrSink,
};

/// When a supervised agent is started again after it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartMode {
    /// Never (the default): the exit ends the handle.
    #[default]
    Never,
    /// After an exit that is not a success (non-zero status or a signal).
    OnFailure,
    /// After every exit, clean ones included.
    Always,
}

impl RestartMode {
    /// The spelling of [`FromStr`]/[`fmt::Display`]: `never`, `on-failure`, `always`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMode::Never => "never",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Always => "always",
        }
    }
}

impl fmt::Display for RestartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A restart mode that does not parse: names what was given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown restart policy {given:?}: expected never, on-failure or always")]
pub struct ParseRestartError {
    /// What was given.
    pub given: String,
}

impl FromStr for RestartMode {
    type Err = ParseRestartError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" | "no" => Ok(RestartMode::Never),
            "on-failure" => Ok(RestartMode::OnFailure),
            "always" => Ok(RestartMode::Always),
            other => Err(ParseRestartError {
                given: other.to_owned(),
            }),
        }
    }
}

/// Whether, how often and how fast a supervised agent is restarted.
///
/// `RestartPolicy::default()` never restarts. `"on-failure".parse()` (or
/// [`RestartPolicy::on_failure`]) restarts after failures, at most
/// [`max_restarts`](RestartPolicy::max_restarts) (default 5) within
/// [`window`](RestartPolicy::window) (default 60 s), waiting
/// `initial_backoff · 2^(n-1)` (200 ms, 400 ms, …, at most 30 s, ±20 %)
/// before the n-th restart of the window.
///
/// ```
/// use std::time::Duration;
/// use agent_spawn::{RestartMode, RestartPolicy};
///
/// let p: RestartPolicy = "on-failure".parse().unwrap();
/// let p = p.with_max_restarts(3).with_window(Duration::from_secs(10));
/// assert_eq!(p.mode, RestartMode::OnFailure);
/// assert_eq!(p.max_restarts, 3);
/// assert!(RestartPolicy::default().is_never());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// Most restarts within `window`; one more exit gives up (`agent-exited`).
    pub max_restarts: u32,
    /// The sliding window `max_restarts` counts in; quiet windows reset the backoff.
    pub window: Duration,
    /// The delay before the first restart of a window (default 200 ms).
    pub initial_backoff: Duration,
    /// The longest delay (default 30 s).
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::new(RestartMode::Never)
    }
}

impl RestartPolicy {
    /// A policy of `mode` with the default limits.
    #[must_use]
    pub const fn new(mode: RestartMode) -> Self {
        RestartPolicy {
            mode,
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// Never restart.
    #[must_use]
    pub const fn never() -> Self {
        RestartPolicy::new(RestartMode::Never)
    }

    /// Restart after failures.
    #[must_use]
    pub const fn on_failure() -> Self {
        RestartPolicy::new(RestartMode::OnFailure)
    }

    /// Restart after every exit.
    #[must_use]
    pub const fn always() -> Self {
        RestartPolicy::new(RestartMode::Always)
    }

    /// With at most `n` restarts within the window.
    #[must_use]
    pub const fn with_max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }

    /// With `window` as the sliding window of `max_restarts`.
    #[must_use]
    pub const fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// With backoff from `initial` doubling up to `max`.
    #[must_use]
    pub const fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Whether this policy never restarts.
    #[must_use]
    pub fn is_never(&self) -> bool {
        self.mode == RestartMode::Never
    }

    /// Whether an exit with `status` is restarted (ignoring the limits).
    /// An unknown status (the reaper was stopped) is never restarted.
    #[must_use]
    pub fn restarts_after(&self, status: &ExitInfo) -> bool {
        match self.mode {
            RestartMode::Never => false,
            _ if status.is_unknown() => false,
            RestartMode::OnFailure => !status.success(),
            RestartMode::Always => true,
        }
    }

    /// The delay before the `attempt`-th restart of a window (1-based), with
    /// `jitter` in `[0, 1)` spreading it over ±20 %.
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        base.mul_f64(factor).min(self.max_backoff)
    }
}

impl FromStr for RestartPolicy {
    type Err = ParseRestartError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(RestartPolicy::new(s.parse()?))
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("never");
        }
        write!(
            f,
            "{} (at most {} restarts in {}s)",
            self.mode,
            self.max_restarts,
            self.window.as_secs()
        )
    }
}

/// What happened to a supervised agent, as [`SupervisedConn::events`] reports it.
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

/// How supervision ended.
#[derive(Debug, Clone)]
struct Ending {
    status: ExitInfo,
    gave_up: Option<GaveUp>,
    /// Why calls fail now.
    reason: String,
}

#[derive(Clone)]
enum Phase {
    /// Serving: calls go to this channel.
    Up(AgentChannel),
    /// Exited, restarting.
    Down,
    /// Supervision ended.
    Ended(Arc<Ending>),
}

/// What the handles see: the phase and the current (or last) agent.
#[derive(Clone)]
struct Snapshot {
    phase: Phase,
    raw: tonic::transport::Channel,
    pid: u32,
    endpoint: Endpoint,
    token: String,
    protocol: u32,
    stderr: StderrRing,
    restarts: u32,
}

impl Snapshot {
    fn of(conn: &AgentConn, stderr: StderrRing, restarts: u32) -> Self {
        Snapshot {
            phase: Phase::Up(conn.channel()),
            raw: conn.raw_channel(),
            pid: conn.pid(),
            endpoint: conn.endpoint(),
            token: conn.token(),
            protocol: conn.protocol_version(),
            stderr,
            restarts,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    Close,
}

struct Inner {
    state: watch::Receiver<Snapshot>,
    events: broadcast::Sender<AgentEvent>,
    /// Dropping it (the last handle) makes the supervisor kill the agent.
    stop: watch::Sender<Stop>,
    closed: OnceCell<ExitInfo>,
    wait: Duration,
}

/// A supervised agent: the handle stays valid across restarts.
///
/// Cheap to clone. [`SupervisedConn::close`] stops supervision and the
/// current agent (gracefully); dropping the last clone stops supervision and
/// kills the current agent's group. Channels taken from it do not keep it alive.
#[derive(Clone)]
pub struct SupervisedConn {
    inner: Arc<Inner>,
}

impl fmt::Debug for SupervisedConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.state.borrow();
        f.debug_struct("SupervisedConn")
            .field("pid", &s.pid)
            .field("endpoint", &s.endpoint.to_string())
            .field("restarts", &s.restarts)
            .field(
                "phase",
                &match &s.phase {
                    Phase::Up(_) => "up",
                    Phase::Down => "restarting",
                    Phase::Ended(_) => "ended",
                },
            )
            .finish_non_exhaustive()
    }
}

/// Starts `program` under supervision: like [`spawn`](crate::spawn), then
/// restarts it as `policy` says (see [`RestartPolicy`]).
///
/// The first start is not retried: its failure is returned as is. Later
/// starts reuse `opts` (the stderr sink receives every agent's stderr).
///
/// # Errors
/// Those of [`spawn`](crate::spawn), for the first start.
pub async fn supervise(
    program: &Path,
    mut opts: SpawnOptions,
    policy: RestartPolicy,
) -> Result<SupervisedConn, SpawnError> {
    let sink = opts.stderr_sink.take();
    let wait = opts.dial_timeout;
    let respawn = Respawn {
        program: program.to_owned(),
        opts,
        sink,
    };
    let (first_opts, ring) = respawn.options();
    let first = crate::spawn(program, first_opts).await?;
    let (state_tx, state_rx) = watch::channel(Snapshot::of(&first, ring, 0));
    let (events, _) = broadcast::channel(64);
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let supervisor = Supervisor {
        respawn,
        policy,
        state: state_tx,
        events: events.clone(),
        stop: stop_rx,
    };
    // Nobody listens yet: the first start is the return value, not an event.
    tracing::debug!(pid = first.pid(), endpoint = %first.endpoint(), "supervised agent started");
    let span = tracing::info_span!("supervise", program = %program.display());
    tokio::spawn(supervisor.run(first).instrument(span));
    Ok(SupervisedConn {
        inner: Arc::new(Inner {
            state: state_rx,
            events,
            stop: stop_tx,
            closed: OnceCell::new(),
            wait,
        }),
    })
}

/// [`spawn`](crate::spawn) when `policy` never restarts, else
/// [`supervise`]: one call for hosts that take the policy as a setting
/// (`LoadOptions::restart`). Either way an [`AgentConn`].
///
/// # Errors
/// Those of [`spawn`](crate::spawn), for the first start.
pub async fn spawn_with_restart(
    program: &Path,
    opts: SpawnOptions,
    policy: RestartPolicy,
) -> Result<AgentConn, SpawnError> {
    if policy.is_never() {
        crate::spawn(program, opts).await
    } else {
        supervise(program, opts, policy).await.map(AgentConn::from)
    }
}

impl SupervisedConn {
    /// The current (or last) agent's pid, which is also its process group.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.inner.state.borrow().pid
    }

    /// Where the current (or last) agent listens.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint {
        self.inner.state.borrow().endpoint.clone()
    }

    /// The current (or last) agent's token (each start draws a fresh one; the
    /// channel follows).
    #[must_use]
    pub fn token(&self) -> String {
        self.inner.state.borrow().token.clone()
    }

    /// The protocol version of the current (or last) agent's handshake.
    #[must_use]
    pub fn protocol_version(&self) -> u32 {
        self.inner.state.borrow().protocol
    }

    /// The current (or last) process's channel without the token; it does
    /// NOT follow restarts (use [`SupervisedConn::channel`]).
    #[must_use]
    pub fn raw_channel(&self) -> tonic::transport::Channel {
        self.inner.state.borrow().raw.clone()
    }

    /// A handle that does not keep supervision (or the agent) alive.
    #[must_use]
    pub fn downgrade(&self) -> WeakSupervised {
        WeakSupervised {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// How many times the agent was restarted so far.
    #[must_use]
    pub fn restarts(&self) -> u32 {
        self.inner.state.borrow().restarts
    }

    /// The last 64 KiB the current (or last) agent wrote to stderr.
    #[must_use]
    pub fn stderr_tail(&self) -> String {
        self.inner.state.borrow().stderr.tail()
    }

    /// A channel to whichever agent is current, sending its token on every
    /// call; build clients on it once (`EchoClient::new(conn.channel())`).
    #[must_use]
    pub fn channel(&self) -> SupervisedChannel {
        SupervisedChannel {
            state: self.inner.state.clone(),
            wait: self.inner.wait,
        }
    }

    /// Every event from now on (exits, restarts, the end). A receiver that
    /// lags more than 64 events behind loses the oldest.
    #[must_use]
    pub fn events(&self) -> broadcast::Receiver<AgentEvent> {
        self.inner.events.subscribe()
    }

    /// Whether supervision ended (gave up, closed, or an exit not restarted).
    #[must_use]
    pub fn has_ended(&self) -> bool {
        matches!(self.inner.state.borrow().phase, Phase::Ended(_))
    }

    /// The `agent-exited` error when supervision gave up.
    #[must_use]
    pub fn failure(&self) -> Option<GaveUp> {
        match &self.inner.state.borrow().phase {
            Phase::Ended(e) => e.gave_up.clone(),
            _ => None,
        }
    }

    /// Resolves when supervision has ended, with the last agent's exit.
    /// The future does not keep the handle alive.
    pub fn exited(&self) -> impl Future<Output = ExitInfo> + Send + 'static {
        let mut rx = self.inner.state.clone();
        async move {
            match rx
                .wait_for(|s| matches!(s.phase, Phase::Ended(_)))
                .await
                .map(|s| s.phase.clone())
            {
                Ok(Phase::Ended(e)) => e.status,
                _ => ExitInfo::default(),
            }
        }
    }

    /// Stops supervision and the current agent (SIGTERM, grace, SIGKILL, as
    /// [`AgentConn::close`]); returns the last agent's exit. Idempotent.
    pub async fn close(&self) -> ExitInfo {
        *self
            .inner
            .closed
            .get_or_init(|| async {
                self.inner.stop.send_replace(Stop::Close);
                self.exited().await
            })
            .await
    }
}

/// A [`SupervisedConn`] that does not keep it alive.
#[derive(Clone)]
pub struct WeakSupervised {
    inner: std::sync::Weak<Inner>,
}

impl fmt::Debug for WeakSupervised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakSupervised")
            .field("alive", &self.alive())
            .finish()
    }
}

impl WeakSupervised {
    /// The handle, while some strong clone still holds it.
    #[must_use]
    pub fn upgrade(&self) -> Option<SupervisedConn> {
        self.inner.upgrade().map(|inner| SupervisedConn { inner })
    }

    /// Whether a strong clone still holds it.
    #[must_use]
    pub fn alive(&self) -> bool {
        self.inner.strong_count() > 0
    }
}

/// Spawns the same program again with the same options.
struct Respawn {
    program: PathBuf,
    opts: SpawnOptions,
    /// The caller's sink: receives every agent's stderr.
    sink: Option<StderrSink>,
}

impl Respawn {
    /// Options for one more start, and the ring that start's stderr goes to
    /// (the handle's view of the current agent's stderr).
    fn options(&self) -> (SpawnOptions, StderrRing) {
        let mut o = self.opts.clone();
        let ring = StderrRing::default();
        let tee_ring = ring.clone();
        let sink = self.sink.clone();
        o.stderr_sink = Some(Arc::new(move |bytes: &[u8]| {
            tee_ring.push(bytes);
            if let Some(sink) = &sink {
                sink(bytes);
            }
        }));
        (o, ring)
    }
}

struct Supervisor {
    respawn: Respawn,
    policy: RestartPolicy,
    state: watch::Sender<Snapshot>,
    events: broadcast::Sender<AgentEvent>,
    stop: watch::Receiver<Stop>,
}

/// Resolves when the handle asks to stop: `true` = close gracefully,
/// `false` = every handle is gone (kill).
async fn stop_requested(stop: &mut watch::Receiver<Stop>) -> bool {
    stop.wait_for(|s| *s != Stop::Run).await.is_ok()
}

impl Supervisor {
    fn emit(&self, event: AgentEvent) {
        // No receiver is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    fn end(&self, status: ExitInfo, gave_up: Option<GaveUp>, reason: String) {
        match &gave_up {
            Some(g) => self.emit(AgentEvent::GaveUp { error: g.clone() }),
            None => self.emit(AgentEvent::Stopped { status }),
        }
        let ending = Arc::new(Ending {
            status,
            gave_up,
            reason,
        });
        self.state
            .send_modify(|s| s.phase = Phase::Ended(Arc::clone(&ending)));
    }

    async fn run(mut self, first: AgentConn) {
        let mut conn = first;
        let mut window: VecDeque<Instant> = VecDeque::new();
        let mut restarts: u32 = 0;
        loop {
            let pid = conn.pid();
            if restarts > 0 {
                // The first start is announced by `supervise` itself.
                self.emit(AgentEvent::Started {
                    pid,
                    endpoint: conn.endpoint(),
                    restarts,
                });
            }
            let status = tokio::select! {
                status = conn.exited() => status,
                graceful = stop_requested(&mut self.stop) => {
                    let status = if graceful {
                        conn.close().await
                    } else {
                        drop(conn); // the last strong handle: kills the group
                        ExitInfo::default()
                    };
                    self.end(status, None, format!("the agent was closed ({status})"));
                    return;
                }
            };
            // The agent exited by itself.
            self.state.send_modify(|s| s.phase = Phase::Down);
            // The exit can be seen before its last stderr bytes are read.
            conn.stderr_settled(STDERR_SETTLE).await;
            let mut tail = conn.stderr_tail();
            conn.close().await; // removes the socket directory
            tracing::warn!(pid, %status, tail = %last_lines(&tail, 5), "supervised agent exited");
            self.emit(AgentEvent::Exited {
                pid,
                status,
                tail: tail.clone(),
            });
            if !self.policy.restarts_after(&status) {
                tracing::info!(pid, %status, policy = %self.policy, "not restarting");
                self.end(
                    status,
                    None,
                    format!(
                        "the agent exited ({status}) and the restart policy is {}",
                        self.policy.mode
                    ),
                );
                return;
            }

            let mut last_error = None;
            // A refused restart ends supervision: the admission's answer
            // does not change by trying again.
            let mut refused = None;
            let (next, ring) = loop {
                let now = Instant::now();
                while window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.policy.window)
                {
                    window.pop_front();
                }
                let in_window = u32::try_from(window.len()).unwrap_or(u32::MAX);
                if in_window >= self.policy.max_restarts || refused.is_some() {
                    let gave_up = GaveUp {
                        status,
                        pid,
                        restarts: in_window,
                        window: self.policy.window,
                        last_error,
                        tail: tail.clone(),
                        refused,
                    };
                    tracing::warn!(error = %gave_up, tail = %last_lines(&tail, 5), "supervised agent: giving up");
                    let reason = format!("{}: {gave_up}\n{}", gave_up.kind(), last_lines(&tail, 5));
                    self.end(status, Some(gave_up), reason);
                    return;
                }
                window.push_back(now);
                let attempt = in_window + 1;
                let delay = self.policy.delay(attempt, jitter());
                tracing::warn!(attempt, ?delay, "restarting the supervised agent");
                self.emit(AgentEvent::Restarting { attempt, delay });
                let started = tokio::select! {
                    started = async {
                        tokio::time::sleep(delay).await;
                        let (opts, ring) = self.respawn.options();
                        crate::spawn(&self.respawn.program, opts).await.map(|c| (c, ring))
                    } => started,
                    graceful = stop_requested(&mut self.stop) => {
                        let _ = graceful; // nothing runs: nothing to close
                        self.end(status, None, format!("the agent exited ({status}) and was closed while restarting"));
                        return;
                    }
                };
                restarts = restarts.saturating_add(1);
                match started {
                    Ok(next) => break next,
                    Err(e) => {
                        let e_tail = e.stderr_tail().unwrap_or_default().to_owned();
                        tracing::warn!(attempt, kind = %e.kind(), error = %agent_ref::error_chain(&e), "restart failed");
                        self.emit(AgentEvent::RestartFailed {
                            attempt,
                            error: format!("{}: {}", e.kind(), agent_ref::error_chain(&e)),
                            tail: e_tail.clone(),
                        });
                        last_error = Some(format!("{}: {}", e.kind(), agent_ref::error_chain(&e)));
                        if e.is_refusal() {
                            refused = Some(e.kind());
                        }
                        if !e_tail.is_empty() {
                            tail = e_tail;
                        }
                    }
                }
            };
            conn = next;
            self.state.send_replace(Snapshot::of(&conn, ring, restarts));
        }
    }
}

/// The last `n` lines of `text`, for log lines and messages.
fn last_lines(text: &str, n: usize) -> &str {
    let trimmed = text.trim_end();
    let mut start = trimmed.len();
    for _ in 0..n {
        match trimmed[..start].rfind('\n') {
            Some(i) => start = i,
            None => return trimmed,
        }
    }
    trimmed[start..].trim_start_matches('\n')
}

/// A number in `[0, 1)`; 0.5 when the OS has no randomness to give.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

type InnerResponse = <AgentChannel as Service<http::Request<Body>>>::Response;

/// A channel to whichever agent of a [`SupervisedConn`] is current.
///
/// A tower service like tonic's `Channel`: build generated clients on it.
/// Transport failures are `UNAVAILABLE`; see [`supervise`].
#[derive(Clone)]
pub struct SupervisedChannel {
    state: watch::Receiver<Snapshot>,
    wait: Duration,
}

impl fmt::Debug for SupervisedChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisedChannel")
            .field("pid", &self.state.borrow().pid)
            .finish_non_exhaustive()
    }
}

impl SupervisedChannel {
    /// The current agent's channel: waits (at most the dial timeout) while
    /// the agent restarts; fails at once when supervision ended.
    async fn current(
        mut state: watch::Receiver<Snapshot>,
        wait: Duration,
    ) -> Result<AgentChannel, tonic::Status> {
        let deadline = Instant::now() + wait;
        loop {
            let phase = state.borrow_and_update().phase.clone();
            match phase {
                Phase::Up(channel) => return Ok(channel),
                Phase::Ended(e) => return Err(tonic::Status::unavailable(e.reason.clone())),
                Phase::Down => {}
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(tonic::Status::unavailable("agent supervision stopped"));
                }
                Err(_) => {
                    return Err(tonic::Status::unavailable(format!(
                        "the agent is restarting and was not back within {} ms",
                        wait.as_millis()
                    )));
                }
            }
        }
    }
}

/// A transport error as a gRPC status: `UNAVAILABLE` unless it carries a status.
pub(crate) fn transport_status(err: tonic::transport::Error) -> tonic::Status {
    let status = tonic::Status::from_error(Box::new(err));
    match status.code() {
        tonic::Code::Unknown | tonic::Code::Internal => {
            tonic::Status::unavailable(format!("the agent connection failed: {}", status.message()))
        }
        _ => status,
    }
}

/// The error of a direct agent channel as a gRPC status.
pub(crate) trait IntoStatus {
    fn into_status(self) -> tonic::Status;
}

impl IntoStatus for tonic::transport::Error {
    fn into_status(self) -> tonic::Status {
        transport_status(self)
    }
}

impl IntoStatus for tonic::Status {
    fn into_status(self) -> tonic::Status {
        self
    }
}

impl Service<http::Request<Body>> for SupervisedChannel {
    type Response = InnerResponse;
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the current agent's channel's, awaited in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let state = self.state.clone();
        let wait = self.wait;
        Box::pin(async move {
            let channel = Self::current(state, wait).await?;
            channel
                .oneshot(request)
                .await
                .map_err(IntoStatus::into_status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_modes() {
        for (s, m) in [
            ("never", RestartMode::Never),
            ("on-failure", RestartMode::OnFailure),
            ("always", RestartMode::Always),
        ] {
            assert_eq!(s.parse::<RestartMode>().unwrap(), m);
            assert_eq!(m.to_string(), s);
        }
        let e = "sometimes".parse::<RestartPolicy>().unwrap_err();
        assert!(e.to_string().contains("on-failure"), "{e}");
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RestartPolicy::on_failure();
        for (attempt, base_ms) in [(1u32, 200u64), (2, 400), (3, 800), (8, 25_600)] {
            let lo = p.delay(attempt, 0.0);
            let hi = p.delay(attempt, 0.999_999);
            assert_eq!(
                lo,
                Duration::from_millis(base_ms * 8 / 10),
                "attempt {attempt}"
            );
            assert!(hi <= Duration::from_millis(base_ms * 12 / 10) && hi > lo);
        }
        assert_eq!(p.delay(9, 0.0), Duration::from_secs(24));
        assert_eq!(p.delay(40, 0.999), Duration::from_secs(30));
        assert_eq!(p.delay(u32::MAX, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn which_exits_restart() {
        let ok = ExitInfo {
            code: Some(0),
            signal: None,
        };
        let bad = ExitInfo {
            code: Some(1),
            signal: None,
        };
        let killed = ExitInfo {
            code: None,
            signal: Some(9),
        };
        let unknown = ExitInfo::default();
        let of = RestartPolicy::on_failure();
        assert!(!of.restarts_after(&ok) && of.restarts_after(&bad) && of.restarts_after(&killed));
        assert!(RestartPolicy::always().restarts_after(&ok));
        assert!(!RestartPolicy::always().restarts_after(&unknown));
        assert!(!RestartPolicy::never().restarts_after(&killed));
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 3), "a");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
