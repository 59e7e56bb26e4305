//! `agent-spawn`: turn a binary path into a ready, authenticated gRPC connection.
//!
//! [`spawn`] starts the agent in its own process group (stdin null, a fresh
//! `CODEFLY_AGENT_TOKEN`), reads the handshake line from its stdout
//! ([`Handshake`]), connects a tonic channel (TCP or unix socket), waits for
//! `grpc.health.v1` to say SERVING, and returns an [`AgentConn`]. Every RPC made
//! through [`AgentConn::channel`] carries the token as `x-codefly-token`.
//! stderr is kept in a 64 KiB [`StderrRing`]; stdout is drained after the
//! handshake. [`AgentConn::close`] stops the whole group (SIGTERM, grace,
//! SIGKILL) and reaps it; dropping the last clone kills the group. The agent
//! also dies with the host (`PR_SET_PDEATHSIG`, set from a dedicated thread).
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use agent_spawn::{spawn, SpawnOptions};
//!
//! # async fn run() -> Result<(), agent_spawn::SpawnError> {
//! let opts = SpawnOptions { grace: Duration::from_secs(5), ..SpawnOptions::default() };
//! let conn = spawn(Path::new("/usr/local/bin/agent-echo"), opts).await?;
//! println!("pid {} listening on {}", conn.pid(), conn.endpoint());
//! // let mut client = EchoClient::new(conn.channel());
//! let exit = conn.close().await;
//! println!("agent stopped: {exit}");
//! # Ok(()) }
//! ```

mod attach;
mod conn;
mod error;
pub mod logs;
mod process;
mod ring;
mod spawn;
mod supervise;
mod token;

pub use agent_protocol::{
    Endpoint, Handshake, HandshakeError, LIFELINE_ENV, MAX_HANDSHAKE_LEN, PROTOCOL_VERSIONS,
    TOKEN_ENV, TOKEN_METADATA_KEY, UDS_PATH_ENV, WORKDIR_ENV,
};
pub use attach::{AttachInfo, AttachParseError, EndpointParseError, attach};
pub use conn::{AgentChannel, AgentConn, ExitInfo, WeakAgentConn};
pub use error::{SpawnError, SpawnFailure};
pub use logs::AgentLogs;
pub use ring::{STDERR_RING_CAPACITY, StderrRing};
pub use spawn::{SpawnOptions, StderrSink, spawn};
pub use supervise::{
    AgentEvent, GaveUp, ParseRestartError, RestartMode, RestartPolicy, SupervisedChannel,
    SupervisedConn, WeakSupervised, spawn_with_restart, supervise,
};
pub use token::TokenInterceptor;
