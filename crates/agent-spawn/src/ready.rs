//! Readiness: connect, then `grpc.health.v1` until SERVING.

use std::io;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::error::{SpawnError, SpawnFailure};
use crate::transport::Transport;
use crate::{Endpoint, TokenInterceptor};

/// Connects, then asks `grpc.health.v1.Health/Check("")` until SERVING; an
/// agent without the health service (`UNIMPLEMENTED`) is `not-serving` at once.
pub(crate) async fn ready(
    endpoint: &Endpoint,
    interceptor: TokenInterceptor,
    dial_timeout: Duration,
    transport: &Transport,
) -> Result<Channel, SpawnError> {
    let deadline = Instant::now() + dial_timeout;
    let channel = connect(endpoint, deadline, dial_timeout, transport).await?;
    tracing::debug!(phase = "connected", "spawn phase");

    let mut health = HealthClient::new(InterceptedService::new(channel.clone(), interceptor));
    let mut backoff = Duration::from_micros(500);
    let mut last = None;
    loop {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        match tokio::time::timeout_at(deadline, health.check(request)).await {
            Ok(Ok(answer)) => match answer.into_inner().status() {
                ServingStatus::Serving => return Ok(channel),
                status => last = Some(status.as_str_name().to_owned()),
            },
            // Only SERVING is ready, as codefly has it: an agent without a
            // health service never will be, so this answer is final.
            Ok(Err(status)) if status.code() == Code::Unimplemented => {
                return Err(SpawnFailure::NotServing {
                    endpoint: endpoint.clone(),
                    timeout: dial_timeout,
                    last: format!(
                        "UNIMPLEMENTED: the agent has no grpc.health.v1 service ({})",
                        status.message()
                    ),
                }
                .into());
            }
            Ok(Err(status)) => {
                last = Some(format!("{:?}: {}", status.code(), status.message()));
            }
            Err(_) => {}
        }
        if Instant::now() + backoff >= deadline {
            return Err(SpawnFailure::NotServing {
                endpoint: endpoint.clone(),
                timeout: dial_timeout,
                last: last.unwrap_or_else(|| "no answer".to_owned()),
            }
            .into());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

/// Opens the channel, retrying (tiny backoff) until the deadline.
async fn connect(
    endpoint: &Endpoint,
    deadline: Instant,
    dial_timeout: Duration,
    transport: &Transport,
) -> Result<Channel, SpawnError> {
    let mut backoff = Duration::from_micros(500);
    loop {
        let attempt = tokio::time::timeout_at(deadline, connect_once(endpoint, transport)).await;
        let last = match attempt {
            Ok(Ok(channel)) => return Ok(channel),
            Ok(Err(e)) => error_chain(&e),
            Err(_) => "timed out".to_owned(),
        };
        if Instant::now() + backoff >= deadline {
            return Err(SpawnFailure::DialTimeout {
                endpoint: endpoint.clone(),
                timeout: dial_timeout,
                last,
            }
            .into());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

async fn connect_once(
    endpoint: &Endpoint,
    transport: &Transport,
) -> Result<Channel, tonic::transport::Error> {
    let transport = transport.clone();
    match endpoint {
        Endpoint::Tcp(addr) => {
            let addr = *addr;
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                    let transport = transport.clone();
                    async move {
                        transport.dial_allowed()?;
                        let stream = tokio::net::TcpStream::connect(addr).await?;
                        stream.set_nodelay(true)?;
                        Ok::<_, io::Error>(TokioIo::new(transport.track(stream)))
                    }
                }))
                .await
        }
        Endpoint::Unix(path) => {
            let path = path.clone();
            tonic::transport::Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                    let (path, transport) = (path.clone(), transport.clone());
                    async move {
                        transport.dial_allowed()?;
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, io::Error>(TokioIo::new(transport.track(stream)))
                    }
                }))
                .await
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
