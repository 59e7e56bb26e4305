//! The handle of a supervised agent, and its first start.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{OnceCell, broadcast, watch};
use tracing::Instrument;

use super::run::{Respawn, Supervisor};
use super::{AgentEvent, GaveUp, Inner, Phase, RestartPolicy, Snapshot, Stop, SupervisedChannel};
use crate::{AgentConn, Endpoint, ExitInfo, SpawnError, SpawnOptions};

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
