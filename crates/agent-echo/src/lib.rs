//! `agent-echo`: the example agent — an Echo gRPC service served with
//! [`agent_serve`], used by the demo, the tests and the benchmarks.
//!
//! The binary `agent-echo` prints the handshake and serves `codefly.echo.v1.Echo`
//! plus `grpc.health.v1.Health`; `--version` prints its version, `--protocol 1`
//! switches to the protocol-1 handshake (`1|PORT`). This library holds the
//! generated protobuf code ([`pb`], compiled by `protox`, no system `protoc`)
//! and the service implementation ([`EchoService`]), so hosts and tests can
//! talk to the agent:
//!
//! ```no_run
//! use agent_echo::pb::{EchoRequest, echo_client::EchoClient};
//!
//! # async fn demo(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
//! // `channel` comes from the host, e.g. `agent_spawn::AgentConn::raw_channel()`.
//! let mut echo = EchoClient::new(channel);
//! let reply = echo.echo(EchoRequest { message: "hi".into() }).await?;
//! assert_eq!(reply.into_inner().message, "hi");
//! # Ok(()) }
//! ```
//!
//! Serving it in-process is one line:
//! `agent_serve::serve(agent_echo::router()).await`.

use std::time::Duration;

use tonic::{Request, Response, Status};

/// Generated protobuf and gRPC code for `codefly.echo.v1` (`proto/echo.proto`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]
pub mod pb {
    tonic::include_proto!("codefly.echo.v1");
}

/// The agent's version: the crate version, printed by `agent-echo --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest a `Sleep` call may ask for, so a test cannot park the agent forever.
pub const MAX_SLEEP: Duration = Duration::from_secs(600);

/// The Echo service: `Echo` returns the message, `Info` describes the process,
/// `Sleep` answers late (a call in flight during shutdown).
#[derive(Debug, Clone, Default)]
pub struct EchoService {
    workdir: String,
    token_required: bool,
}

impl EchoService {
    /// The service as the host configured this process: reads
    /// `CODEFLY_AGENT_WORKDIR` and whether `CODEFLY_AGENT_TOKEN` is set.
    #[must_use]
    pub fn from_env() -> Self {
        let workdir = std::env::var_os(agent_serve::WORKDIR_ENV)
            .map(|w| w.to_string_lossy().into_owned())
            .unwrap_or_default();
        let token_required =
            std::env::var_os(agent_serve::TOKEN_ENV).is_some_and(|t| !t.is_empty());
        Self {
            workdir,
            token_required,
        }
    }

    /// The generated tonic server wrapping this service.
    #[must_use]
    pub fn into_server(self) -> pb::echo_server::EchoServer<Self> {
        pb::echo_server::EchoServer::new(self)
    }
}

/// The agent's router: [`EchoService::from_env`] behind `agent-serve`'s token layer.
#[must_use]
pub fn router() -> agent_serve::AgentRouter {
    agent_serve::server().add_service(EchoService::from_env().into_server())
}

#[tonic::async_trait]
impl pb::echo_server::Echo for EchoService {
    async fn echo(
        &self,
        request: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoReply>, Status> {
        let message = request.into_inner().message;
        Ok(Response::new(pb::EchoReply { message }))
    }

    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoReply>, Status> {
        Ok(Response::new(pb::InfoReply {
            pid: std::process::id(),
            version: VERSION.to_owned(),
            workdir: self.workdir.clone(),
            ppid: std::os::unix::process::parent_id(),
            token_required: self.token_required,
        }))
    }

    async fn sleep(
        &self,
        request: Request<pb::SleepRequest>,
    ) -> Result<Response<pb::SleepReply>, Status> {
        let asked = Duration::from_millis(request.into_inner().millis);
        if asked > MAX_SLEEP {
            return Err(Status::invalid_argument(format!(
                "sleep at most {} ms",
                MAX_SLEEP.as_millis()
            )));
        }
        tokio::time::sleep(asked).await;
        let slept_millis = u64::try_from(asked.as_millis()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::SleepReply { slept_millis }))
    }
}

#[cfg(test)]
mod tests {
    use super::pb::echo_server::Echo as _;
    use super::*;

    #[tokio::test]
    async fn echo_returns_the_message() {
        let reply = EchoService::default()
            .echo(Request::new(pb::EchoRequest {
                message: "héllo".into(),
            }))
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "héllo");
    }

    #[tokio::test]
    async fn info_names_this_process() {
        let svc = EchoService {
            workdir: "/w".into(),
            token_required: true,
        };
        let info = svc
            .info(Request::new(pb::InfoRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.version, VERSION);
        assert_eq!(info.workdir, "/w");
        assert!(info.token_required);
    }

    #[tokio::test]
    async fn sleep_refuses_absurd_durations() {
        let err = EchoService::default()
            .sleep(Request::new(pb::SleepRequest { millis: u64::MAX }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
