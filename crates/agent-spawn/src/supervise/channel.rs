//! The channel that always talks to a supervised handle's current agent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use super::{Phase, Snapshot};
use crate::AgentChannel;

type InnerResponse = <AgentChannel as Service<http::Request<Body>>>::Response;

/// A channel to whichever agent of a [`SupervisedConn`](crate::SupervisedConn) is current.
///
/// A tower service like tonic's `Channel`: build generated clients on it.
/// Transport failures are `UNAVAILABLE`; see [`supervise`](crate::supervise()).
#[derive(Clone)]
pub struct SupervisedChannel {
    pub(super) state: watch::Receiver<Snapshot>,
    pub(super) wait: Duration,
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
