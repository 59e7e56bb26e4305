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
//!
//! Code map: `policy` (when to restart, the backoff), `events` (what is
//! reported), `handle` (the handle and its start), `run` (the supervisor's
//! loop), `channel` (the channel that follows restarts).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OnceCell, broadcast, watch};

use crate::{AgentChannel, AgentConn, Endpoint, ExitInfo, StderrRing};

mod channel;
mod events;
mod handle;
mod policy;
mod run;

pub use channel::SupervisedChannel;
pub(crate) use channel::transport_status;
pub use events::{AgentEvent, GaveUp};
pub use handle::{SupervisedConn, WeakSupervised, spawn_with_restart, supervise};
pub use policy::{ParseRestartError, RestartMode, RestartPolicy};

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
