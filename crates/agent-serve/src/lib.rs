//! `agent-serve`: the agent side of the agent-manager handshake.
//!
//! An agent is a program a host starts and talks to over gRPC. This crate
//! does everything such a program owes its host, so an agent's `main` is one
//! call:
//!
//! 1. bind `127.0.0.1:0`, or the unix socket at `CODEFLY_AGENT_UDS_PATH` when
//!    the host asks for one (created 0600, removed on exit);
//! 2. serve `grpc.health.v1.Health` with the overall service `""` SERVING;
//! 3. reject every call that does not carry `CODEFLY_AGENT_TOKEN` as
//!    `x-codefly-token` metadata with `Unauthenticated` (health excepted),
//!    through a tower layer in front of every service of the router. Started
//!    without a token it fails closed: nothing but health is served, unless
//!    `CODEFLY_AGENT_INSECURE=1` (for running an agent by hand), which it
//!    warns about on stderr. At most [`MAX_UNAUTHENTICATED_WATCHES`] health
//!    `Watch` streams without the token are open at once;
//! 4. print exactly one handshake line on stdout and flush it:
//!    `2|dns:///127.0.0.1:PORT` or `2|unix:/abs/path` (protocol 2, the default),
//!    or `1|PORT` with [`Agent::protocol_v1`];
//! 5. on SIGTERM or SIGINT: health NOT_SERVING, stop accepting, drain the
//!    calls in flight, return; after [`Agent::shutdown_grace`] it returns anyway,
//!    and if the runtime is wedged a watchdog exits the process shortly after;
//! 6. when the host dies — EOF on the lifeline pipe `CODEFLY_AGENT_LIFELINE=FD`,
//!    or, as the last resort, a changed `getppid()` (checked every 500 ms) —
//!    SIGTERM its own process group, and SIGKILL it at most 500 ms later, from
//!    a plain OS thread, so a wedged runtime dies too. The group is signalled
//!    only when the agent leads it (the host started it in its own group, as
//!    agent-spawn does); otherwise only the agent itself stops. No
//!    `PR_SET_PDEATHSIG`: it fires when the *thread* that started the agent
//!    ends, not the host;
//! 7. log `tracing` events on stderr, one JSON object per line when the host
//!    asks with `CODEFLY_AGENT_LOG=json`, unless the program installed its own
//!    subscriber (or turned this off with [`Agent::logging`]).
//!
//! Build the router from [`server()`] (not `tonic::transport::Server::builder()`)
//! so the token layer is in place; the compiler refuses anything else. Do not
//! add a health service yourself: [`Agent::health_reporter`] gives you the one
//! that is served.
//!
//! ```no_run
//! use std::time::Duration;
//! # fn my_service() -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
//! #     tonic_health::server::health_reporter().1
//! # }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), agent_serve::ServeError> {
//!     // `my_service()` is your generated `FooServer::new(FooImpl)`.
//!     let router = agent_serve::server().add_service(my_service());
//!     agent_serve::Agent::new()
//!         .shutdown_grace(Duration::from_secs(3))
//!         .serve(router)
//!         .await
//! }
//! ```
//!
//! The simplest agent: `agent_serve::serve(agent_serve::server().add_service(svc)).await`.
//! The `agent-echo` crate is a complete example.
//!
//! ## Platforms
//! Linux and macOS alike (macOS is type-checked in CI, and nothing here is
//! Linux-specific): the lifeline watch, `getppid()`, group signals and unix
//! sockets are plain POSIX. On macOS a unix socket path is limited to 103
//! bytes (104 with the NUL), which the host keeps in mind when it picks one.
//!
//! ## Start-up cost
//! A host waits for the handshake line, so an agent's start is part of every
//! load. Two choices of the agent's own make it cheaper:
//! - a current-thread runtime (`#[tokio::main(flavor = "current_thread")]`,
//!   as above): one agent serves one host, and no worker threads are started
//!   before the handshake;
//! - on Linux with glibc 2.36 or later, packed relative relocations. A Rust
//!   executable is position-independent, and the dynamic loader applies
//!   thousands of relative relocations before `main`, one table entry each.
//!   Linked with `RUSTFLAGS="-C link-arg=-Wl,-z,pack-relative-relocs"` (GNU
//!   ld 2.38 or later, or lld), the table shrinks to a bitmap the loader
//!   walks in a fraction of the time; the binary stays position-independent.
//!   Such a binary does not start on an older glibc: it needs the symbol
//!   version `GLIBC_ABI_DT_RELR`, so only choose it for the systems your
//!   agent ships to. `cargo xtask bench` measures both builds of
//!   `agent-echo` side by side (its `start` section).

mod error;
mod health;
mod logging;
mod parent;
mod token;

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::Stream;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::{Connected, Router, TcpIncoming};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

pub use error::ServeError;
pub use health::MAX_UNAUTHENTICATED_WATCHES;
pub use token::{TokenFuture, TokenLayer, TokenService};

pub use agent_protocol::{
    Handshake, INSECURE_ENV, LIFELINE_ENV, LOG_ENV, LOG_JSON, TOKEN_ENV, TOKEN_METADATA_KEY,
    UDS_PATH_ENV, WORKDIR_ENV,
};
/// How long [`Agent::serve`] drains calls in flight after SIGTERM by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The layers [`server()`] installs: the token check, outermost.
pub type AgentLayer = Stack<TokenLayer, Identity>;
/// A router built from [`server()`]: what [`serve`] and [`Agent::serve`] accept.
pub type AgentRouter = Router<AgentLayer>;

/// A tonic server with the token layer of this agent (from `CODEFLY_AGENT_TOKEN`)
/// in front of every service. Add your services to it and hand the router to
/// [`serve`] or [`Agent::serve`].
#[must_use]
pub fn server() -> Server<AgentLayer> {
    Server::builder().layer(TokenLayer::from_env())
}

/// What [`serve`] accepts: a router whose every service sits behind the token layer.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a router built by `agent_serve::server()`",
    note = "start from `agent_serve::server()` instead of `tonic::transport::Server::builder()`, \
            so the token check covers every service"
)]
pub trait IntoAgentRouter {
    /// Converts into the router to serve.
    fn into_agent_router(self) -> AgentRouter;
}

impl IntoAgentRouter for AgentRouter {
    fn into_agent_router(self) -> AgentRouter {
        self
    }
}

impl IntoAgentRouter for Routes {
    fn into_agent_router(self) -> AgentRouter {
        server().add_routes(self)
    }
}

/// Serves `router` as an agent with the defaults of [`Agent::new`]: protocol 2
/// handshake, 5 s shutdown grace. Returns `Ok(())` once stopped by SIGTERM,
/// SIGINT or the host's death.
///
/// # Errors
/// See [`ServeError`]: bad host environment, bind, handshake write or server failure.
pub async fn serve(router: impl IntoAgentRouter) -> Result<(), ServeError> {
    Agent::new().serve(router).await
}

/// Handshake protocol version to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    V1,
    V2,
}

/// Builder for serving an agent; [`serve`] is `Agent::new().serve(router)`.
#[derive(Debug)]
pub struct Agent {
    protocol: Protocol,
    shutdown_grace: Duration,
    logging: bool,
    health: HealthReporter,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent {
    /// Protocol 2 handshake, [`DEFAULT_SHUTDOWN_GRACE`], health `""` SERVING.
    #[must_use]
    pub fn new() -> Self {
        Self {
            protocol: Protocol::V2,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            logging: true,
            health: HealthReporter::new(),
        }
    }

    /// Announce protocol 1: `1|PORT` over TCP (what the Go loader's
    /// agents print), `1|unix:/abs/path` over a unix socket.
    #[must_use]
    pub fn protocol_v1(mut self) -> Self {
        self.protocol = Protocol::V1;
        self
    }

    /// How long to drain calls in flight after SIGTERM/SIGINT before
    /// [`serve`](Self::serve) returns anyway.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Whether [`serve`](Self::serve) installs its stderr log subscriber
    /// (default yes; it never replaces one the program installed).
    #[must_use]
    pub fn logging(mut self, on: bool) -> Self {
        self.logging = on;
        self
    }

    /// The reporter of the served health service, to set per-service statuses
    /// (the overall `""` is SERVING from the start and NOT_SERVING on shutdown).
    #[must_use]
    pub fn health_reporter(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Binds, prints the handshake and serves `router` plus health until SIGTERM,
    /// SIGINT or the host's death; then drains and returns `Ok(())`.
    ///
    /// # Errors
    /// See [`ServeError`]: bad host environment, bind, handshake write or server failure.
    pub async fn serve(self, router: impl IntoAgentRouter) -> Result<(), ServeError> {
        if self.logging {
            logging::init();
        }
        let policy = token::Policy::from_env();
        if matches!(policy, token::Policy::Insecure) {
            tracing::warn!(
                "{INSECURE_ENV}=1 and no {TOKEN_ENV}: serving every RPC without a token \
                 to any local user"
            );
        }
        // First, before anything can block: make sure we die with the host.
        let original_parent = parent::parent_pid();
        let lifeline = match std::env::var(LIFELINE_ENV) {
            Ok(v) if !v.is_empty() => match parent::take_lifeline(&v) {
                Ok(fd) => Some(fd),
                Err(reason) => {
                    tracing::warn!(
                        "{LIFELINE_ENV} ignored: {reason}; noticing the host's death by its pid only"
                    );
                    None
                }
            },
            _ => None,
        };
        // Handlers go in before the handshake: a SIGTERM right after load must
        // take the graceful path, not the default (die by signal).
        let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
        parent::watch(lifeline, original_parent, self.shutdown_grace);

        let health_service =
            tonic_health::pb::health_server::HealthServer::new(health::CappedHealth::new(
                tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
                policy,
            ));
        let router = router.into_agent_router().add_service(health_service);

        let health = self.health.clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            tokio::select! {
                _ = term.recv() => if parent::host_gone() {
                    tracing::info!("host died: shutting down");
                } else {
                    tracing::info!("SIGTERM: shutting down");
                },
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            let _ = stopping_tx.send(());
        };

        let server = async {
            match listen_addr()? {
                ListenAddr::Tcp => {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                    let listener = std::net::TcpListener::bind(addr)
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                        .and_then(tokio::net::TcpListener::from_std)
                        .map_err(|source| ServeError::Bind {
                            addr: addr.to_string(),
                            source,
                        })?;
                    let port = listener
                        .local_addr()
                        .map_err(|source| ServeError::Bind {
                            addr: addr.to_string(),
                            source,
                        })?
                        .port();
                    // Small unary calls: never wait for Nagle.
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    let line = match self.protocol {
                        Protocol::V1 => Handshake::v1_port(port),
                        Protocol::V2 => {
                            Handshake::tcp(2, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                        }
                    };
                    run(router, incoming, &line.to_string(), stop).await
                }
                ListenAddr::Unix(path) => {
                    let (incoming, _socket) = bind_unix(&path)?;
                    let version = match self.protocol {
                        Protocol::V1 => 1,
                        Protocol::V2 => 2,
                    };
                    let line = Handshake::unix(version, path.clone());
                    run(router, incoming, &line.to_string(), stop).await
                }
            }
        };

        let grace = self.shutdown_grace;
        let deadline = async move {
            if stopping_rx.await.is_err() {
                // The server ended on its own (an error): no deadline to keep.
                return std::future::pending().await;
            }
            let _watchdog = Watchdog::start(grace + WATCHDOG_MARGIN);
            tokio::time::sleep(grace).await;
        };

        let result = tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!(?grace, "calls still in flight after the shutdown grace; stopping anyway");
                Ok(())
            }
        };
        if parent::host_gone() {
            // What of our group outlived the SIGTERM goes with us now.
            parent::finish_host_gone();
        }
        result
    }
}

/// How long after the grace the watchdog exits a process whose runtime could
/// not even notice the deadline (a handler blocking the only thread).
const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

/// Exits the process if not dropped within its timeout.
struct Watchdog(#[allow(dead_code)] mpsc::Sender<()>);

impl Watchdog {
    fn start(timeout: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("agent-serve-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
                    tracing::error!(?timeout, "shutdown is wedged; exiting");
                    std::process::exit(1);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the shutdown watchdog");
        }
        Self(tx)
    }
}

/// Where the host wants us to listen.
enum ListenAddr {
    Tcp,
    Unix(PathBuf),
}

fn listen_addr() -> Result<ListenAddr, ServeError> {
    match std::env::var_os(UDS_PATH_ENV) {
        None => Ok(ListenAddr::Tcp),
        Some(p) if p.is_empty() => Ok(ListenAddr::Tcp),
        Some(p) => {
            let path = PathBuf::from(p);
            if !path.is_absolute() {
                return Err(ServeError::Env {
                    var: UDS_PATH_ENV,
                    reason: format!("{} is not an absolute path", path.display()),
                });
            }
            if path.to_str().is_none_or(|s| s.contains(['\n', '\r'])) {
                return Err(ServeError::Env {
                    var: UDS_PATH_ENV,
                    reason: "the path must be UTF-8 without line breaks (it goes into the handshake line)"
                        .to_owned(),
                });
            }
            Ok(ListenAddr::Unix(path))
        }
    }
}

/// Removes the socket file we created when serving ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0) {
            tracing::debug!(%error, path = %self.0.display(), "cannot remove the socket");
        }
    }
}

fn bind_unix(
    path: &Path,
) -> Result<(tokio_stream::wrappers::UnixListenerStream, SocketFile), ServeError> {
    use std::os::unix::fs::PermissionsExt as _;
    // No unlink first: a file already there is not ours to remove.
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| ServeError::Bind {
        addr: format!("unix:{}", path.display()),
        source,
    })?;
    let socket = SocketFile(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServeError::SocketPermissions {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok((
        tokio_stream::wrappers::UnixListenerStream::new(listener),
        socket,
    ))
}

/// Prints the handshake once the listener is ready, then serves until `stop`.
async fn run<I, IO, IE>(
    router: AgentRouter,
    incoming: I,
    line: &str,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    print_handshake(line).map_err(ServeError::Handshake)?;
    tracing::debug!(handshake = line, "listening");
    router
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .map_err(ServeError::from)
}

fn print_handshake(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}
