//! `agent-spawn`: turn a binary path into a ready, authenticated gRPC connection.
//!
//! [`spawn`] starts the agent in its own process group (stdin null, a fresh
//! `CODEFLY_AGENT_TOKEN`), reads the handshake line from its stdout
//! ([`Handshake`]), connects a tonic channel (TCP or unix socket), waits for
//! `grpc.health.v1` to say SERVING, and returns an [`AgentConn`]. Every RPC made
//! through [`AgentConn::channel`] carries the token as `x-codefly-token`.
//! stderr is kept in a 64 KiB [`StderrRing`]; stdout is drained after the
//! handshake. [`AgentConn::close`] stops the whole group (SIGTERM, grace,
//! SIGKILL) and reaps it; dropping the last clone kills the group.
//!
//! ## What an agent is given
//! Its environment is the host's minus the host's store credentials
//! ([`HOST_SECRET_ENV`](agent_protocol::HOST_SECRET_ENV), always) and minus
//! [`SpawnOptions::env_remove`], or, with [`SpawnOptions::env_allowlist`], only
//! the allowlisted variables; then [`SpawnOptions::env`]; then the
//! `CODEFLY_AGENT_*` variables the host sets. No descriptor but 0, 1, 2 and the
//! lifeline survives exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` in the
//! child, falling back to `/proc/self/fd`, then to every number below
//! `RLIMIT_NOFILE`). The program must be an absolute path; what runs is the
//! descriptor that was checked ([`Executable`]: opened by spawn, or returned by
//! the caller's [`Admit`] hook on every start, restarts included), executed
//! with `execveat(fd, "", AT_EMPTY_PATH)`. In unix-socket mode only the
//! assigned socket is accepted in the handshake.
//!
//! ## Confinement
//! [`SpawnOptions::sandbox`] (default [`Sandbox::Unconfined`]) is prepared for
//! every start, restarts included ([`Sandbox::prepare`](agent_sandbox::Sandbox::prepare)):
//! a policy this machine cannot enforce, or that the portable process backend
//! cannot apply, is `admission` and nothing starts. On the pidfd backend the
//! child enters its user and network namespace (`network = "none"`) and
//! restricts itself with Landlock between clone and exec (an
//! [`agent_process::ChildSetup`] hook); it gets a private `TMPDIR`, removed
//! once it is reaped. `network = "none"` puts the agent in an empty network
//! namespace, so it is reached over its unix socket. On macOS the agent runs
//! under `sandbox-exec`, started by path.
//!
//! ## Lifecycle: who signals, who reaps, what dies with the host
//! - One owner per agent process: [`agent_process::AgentProcess`] holds a pidfd
//!   from spawn. The leader is signalled through the pidfd; the group only
//!   while the leader is unreaped, so a recycled pid or group id is never hit.
//!   One process-wide reaper thread (no async runtime) reaps every agent,
//!   SIGKILLs what its leader left in the group, and keeps `close`'s SIGKILL
//!   deadline, so `close` escalates even when the runtime that spawned the
//!   agent is gone.
//! - Host death: the agent gets `PR_SET_PDEATHSIG(SIGKILL)` from the
//!   long-lived spawner thread (the signal follows the *thread* that forked).
//!   That kills the agent only, so every agent's group is also registered with
//!   the host's watchdog ([`agent_process::watchdog`]): a process forked once
//!   per host that SIGKILLs every registered group when the host's end of its
//!   socket closes, however the host died. Chosen over a subreaper (useless
//!   once the host itself is dead) and a pid namespace per agent (needs
//!   privilege, and pid 1 ignores signals it has no handler for, which breaks
//!   graceful close); cost per load: two `send` calls. Agents that want to
//!   react themselves get the lifeline: `CODEFLY_AGENT_LIFELINE=FD`, the read
//!   end of one pipe whose write end only the host holds (close-on-exec).
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use agent_spawn::{spawn, SpawnOptions};
//!
//! # async fn run() -> Result<(), agent_spawn::SpawnError> {
//! let opts = SpawnOptions::new().grace(Duration::from_secs(5));
//! let conn = spawn(Path::new("/usr/local/bin/agent-echo"), opts).await?;
//! println!("pid {} listening on {}", conn.pid(), conn.endpoint());
//! // let mut client = EchoClient::new(conn.channel());
//! let exit = conn.close().await;
//! println!("agent stopped: {exit}");
//! # Ok(()) }
//! ```

mod attach;
mod confine;
mod conn;
mod env;
mod error;
mod exec;
mod handshake;
pub mod logs;
mod options;
mod process;
mod ready;
mod ring;
mod sockdir;
mod spawn;
mod stdio;
mod supervise;
mod token;
mod transport;

/// The process backend in use: `"pidfd"` (Linux) or `"portable"` (`posix_spawn`:
/// macOS and other Unix, or Linux built with `--cfg agent_portable`).
pub use agent_process::backend as process_backend;
pub use agent_protocol::{
    ATTACH_ENV, Endpoint, Handshake, HandshakeError, LIFELINE_ENV, MAX_HANDSHAKE_LEN,
    PROTOCOL_VERSIONS, TOKEN_ENV, TOKEN_METADATA_KEY, UDS_PATH_ENV, WORKDIR_ENV,
};
/// The sandbox types of [`SpawnOptions::sandbox`] (crate `agent-sandbox`).
pub use agent_sandbox::{Network, Sandbox, SandboxError, SandboxPolicy};
pub use attach::{AttachInfo, AttachParseError, EndpointParseError, attach};
pub use conn::{AgentChannel, AgentConn, ExitInfo, WeakAgentConn};
pub use error::{SpawnError, SpawnFailure};
pub use exec::{Admit, Executable};
pub use logs::AgentLogs;
pub use options::SpawnOptions;
pub use ring::{STDERR_RING_CAPACITY, StderrRing};
pub use spawn::{StderrSink, spawn};
pub use supervise::{
    AgentEvent, GaveUp, ParseRestartError, RestartMode, RestartPolicy, SupervisedChannel,
    SupervisedConn, WeakSupervised, spawn_with_restart, supervise,
};
pub use token::TokenInterceptor;
