//! The pipeline of one spawn: start, handshake, connect, health, hand over.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agent_process::AgentProcess;
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

use crate::confine::{ConfineChild, Paths};
use crate::conn::{Parts, wait_exit};
use crate::error::{SpawnError, SpawnFailure};
use crate::exec::Executable;
use crate::logs::{AgentLogger, AgentLogs};
use crate::options::SpawnOptions;
use crate::process::{Exec, Spawned, lifeline_read_end, spawn_in_group};
use crate::token::fresh_token;
use crate::{
    AgentConn, Endpoint, ExitInfo, Handshake, HandshakeError, MAX_HANDSHAKE_LEN, Network,
    StderrRing, TokenInterceptor,
};
use agent_protocol::{
    HOST_SECRET_ENV, INSECURE_ENV, LIFELINE_ENV, LOG_ENV, LOG_JSON, TOKEN_ENV, UDS_PATH_ENV,
    WORKDIR_ENV, env_allowed,
};

/// How long a failed spawn waits for the agent's stderr to reach EOF after
/// killing it, so the error carries everything the agent said.
const STDERR_SETTLE: Duration = Duration::from_secs(2);

/// How long the I/O thread keeps draining after the agent exited, for output
/// still buffered or held by a process outside its group.
const DRAIN_LINGER: Duration = Duration::from_secs(2);

/// Receives a live copy of the agent's stderr, chunk by chunk. Called from the
/// agent's own I/O thread (a plain OS thread), never on an async worker; keep
/// it quick all the same (it delays the agent's next stderr read).
pub type StderrSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Starts `program` and returns once it is ready: handshake read, gRPC
/// connected, health SERVING (an agent without `grpc.health.v1` is
/// `not-serving`).
///
/// `program` must be an absolute path (no `PATH` search, no
/// working-directory surprise). It is opened once and the descriptor is
/// executed, so the file opened is the file that runs; with
/// [`SpawnOptions::admit`] the admission's descriptor runs instead (and a
/// refusal is returned with its kind, nothing started).
///
/// On every failure after the process started, its group is killed and
/// reaped before the error returns; the error carries the stderr tail.
/// Dropping the returned future kills the group too.
///
/// # Errors
/// [`SpawnError`] with kind `spawn`, `agent-exited`, `handshake-timeout`,
/// `handshake-malformed`, `version-mismatch`, `dial-timeout`, `not-serving`,
/// `io`, or the admission's refusal kind.
pub async fn spawn(program: &Path, opts: SpawnOptions) -> Result<AgentConn, SpawnError> {
    let span = tracing::info_span!(
        "spawn",
        program = %program.display(),
        pid = tracing::field::Empty
    );
    spawn_inner(program, opts).instrument(span).await
}

/// Kills the group on drop unless disarmed: covers cancellation and early returns.
struct GroupGuard {
    process: Arc<AgentProcess>,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.process.kill();
        }
    }
}

/// The variables the host controls: never inherited, never taken from `env`.
const HOST_SET: &[&str] = &[
    TOKEN_ENV,
    WORKDIR_ENV,
    UDS_PATH_ENV,
    LIFELINE_ENV,
    INSECURE_ENV,
];

/// The agent's environment by the rules of [`SpawnOptions`], before the
/// variables the host sets.
fn build_env(opts: &SpawnOptions) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = match &opts.env_allowlist {
        Some(extra) => std::env::vars_os()
            .filter(|(name, _)| {
                name.to_str().is_some_and(|n| env_allowed(n, extra))
                    && !opts.env_remove.iter().any(|r| r == name)
            })
            .collect(),
        None => std::env::vars_os()
            .filter(|(name, _)| {
                !HOST_SECRET_ENV.iter().any(|s| OsStr::new(s) == name)
                    && !opts.env_remove.iter().any(|r| r == name)
            })
            .collect(),
    };
    env.retain(|(name, _)| !HOST_SET.iter().any(|h| OsStr::new(h) == name));
    for (name, value) in &opts.env {
        if !HOST_SET.iter().any(|h| OsStr::new(h) == name) {
            set_env(&mut env, name.clone(), value.clone());
        }
    }
    env
}

fn set_env(env: &mut Vec<(OsString, OsString)>, name: OsString, value: OsString) {
    if let Some(slot) = env.iter_mut().find(|(n, _)| *n == name) {
        slot.1 = value;
    } else {
        env.push((name, value));
    }
}

async fn spawn_inner(program: &Path, opts: SpawnOptions) -> Result<AgentConn, SpawnError> {
    let started = std::time::Instant::now();
    let phase = |name: &'static str| {
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(phase = name, elapsed_us, "spawn phase");
    };
    let io_err = |context: &str| {
        let context = context.to_owned();
        move |source| SpawnError::from(SpawnFailure::Io { context, source })
    };
    // The descriptor checked here (or by the caller's admission) is what
    // runs: the path is only argv[0].
    let executable = match &opts.admit {
        Some(admit) => admit().await?,
        None => Executable::open(program)?,
    };
    let (program_path, program_fd) = executable.into_parts();
    let program = program_path.as_path();
    let token = fresh_token().map_err(io_err("cannot draw a token"))?;
    let interceptor = TokenInterceptor::new(&token)
        .map_err(|e| io_err("invalid token")(io::Error::other(e.to_string())))?;

    // An agent without a network is reachable over its unix socket only.
    let no_network = opts
        .sandbox
        .policy_ref()
        .is_some_and(|p| p.network == Network::None);
    let socket_dir = if opts.unix_socket || no_network {
        Some(crate::sockdir::create().map_err(io_err("cannot create the socket directory"))?)
    } else {
        None
    };
    let socket_path = socket_dir
        .as_ref()
        .map(|d| d.path().join(crate::sockdir::SOCKET_NAME));

    let mut env = build_env(&opts);
    set_env(&mut env, TOKEN_ENV.into(), token.clone().into());
    if opts.agent_logs != AgentLogs::Off {
        set_env(&mut env, LOG_ENV.into(), LOG_JSON.into());
    }
    if let Some(dir) = &opts.workdir {
        set_env(&mut env, WORKDIR_ENV.into(), dir.clone().into_os_string());
    }
    if let Some(path) = &socket_path {
        set_env(&mut env, UDS_PATH_ENV.into(), path.clone().into_os_string());
    }
    let home = env
        .iter()
        .find(|(name, _)| name == "HOME")
        .map(|(_, v)| PathBuf::from(v));
    let confined = crate::confine::prepare(
        &opts.sandbox,
        &Paths {
            program,
            workdir: opts.workdir.as_deref(),
            socket_dir: socket_dir.as_ref().map(tempfile::TempDir::path),
            home: home.as_deref(),
        },
    )?;
    let tmpdir = confined
        .as_ref()
        .and_then(|c| c.prepared.tmpdir().map(Path::to_owned));
    if let Some(dir) = &tmpdir {
        set_env(&mut env, "TMPDIR".into(), dir.clone().into_os_string());
    }
    let lifeline = if opts.lifeline {
        let fd = lifeline_read_end().map_err(io_err("cannot create the lifeline pipe"))?;
        set_env(&mut env, LIFELINE_ENV.into(), fd.to_string().into());
        Some(fd)
    } else {
        None
    };
    let mut exec = Exec {
        program: program.to_owned(),
        args: opts.args.clone(),
        env,
        // A confined agent without a work directory works in its private TMPDIR.
        cwd: opts.workdir.clone().or(tmpdir),
        keep_fd: lifeline,
        program_fd: Some(program_fd),
        child_setup: None,
    };
    if let Some(c) = &confined {
        match c.prepared.exec_wrapper() {
            // macOS: sandbox-exec runs the agent by path.
            Some((wrapper, leading)) => {
                let mut args: Vec<OsString> = leading.into_iter().map(OsString::from).collect();
                args.push(program.as_os_str().to_owned());
                args.append(&mut exec.args);
                exec.program = PathBuf::from(wrapper);
                exec.args = args;
                exec.program_fd = None;
            }
            None => exec.child_setup = Some(Arc::new(ConfineChild(Arc::clone(&c.prepared)))),
        }
    }

    let Spawned {
        process,
        stdout,
        stderr,
    } = spawn_in_group(exec)
        .await
        .map_err(|source| SpawnFailure::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let pid = process.pid();
    let mut guard = GroupGuard {
        process: Arc::clone(&process),
        armed: true,
    };
    tracing::Span::current().record("pid", pid);
    phase("spawned");

    // Registered first, so the private TMPDIR is gone by the time anyone
    // learns of the exit.
    if let Some(c) = confined {
        let prepared = c.prepared;
        process.on_exit(move |_| drop(prepared));
    }
    // The reaper thread (agent-process) owns reaping; everyone else watches `exit_rx`.
    let (exit_tx, exit_rx) = watch::channel(None::<ExitInfo>);
    process.on_exit(move |exit| {
        tracing::debug!(pid, %exit, "agent reaped");
        let _ = exit_tx.send(Some(ExitInfo::from(exit)));
    });

    let ring = StderrRing::default();
    let (eof_tx, eof_rx) = watch::channel(false);
    let (line_tx, line_rx) = oneshot::channel();
    let log_name = opts.log_name.clone().unwrap_or_else(|| {
        program.file_name().map_or_else(
            || program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let io = AgentIo {
        stdout,
        stderr,
        ring: ring.clone(),
        sink: opts.stderr_sink.clone(),
        logs: AgentLogger::new(opts.agent_logs, &log_name, pid),
        line: Some(line_tx),
        exit: exit_rx.clone(),
        eof: eof_tx,
    };
    std::thread::Builder::new()
        .name(format!("agent-io-{pid}"))
        .stack_size(256 * 1024)
        .spawn(move || io.run())
        .map_err(io_err("cannot start the agent's I/O thread"))?;

    let accepted = &opts.accepted_versions;
    let transport = Transport::watching(exit_rx.clone());
    let start = async {
        let handshake = handshake(
            line_rx,
            opts.startup_timeout,
            accepted,
            socket_path.as_deref(),
        )
        .instrument(tracing::debug_span!("handshake"))
        .await?;
        phase("handshake");
        let channel = ready(
            &handshake.endpoint,
            interceptor.clone(),
            opts.dial_timeout,
            &transport,
        )
        .instrument(tracing::debug_span!("ready", endpoint = %handshake.endpoint))
        .await?;
        phase("serving");
        Ok::<_, SpawnError>((handshake, channel))
    };
    let outcome = tokio::select! {
        biased;
        r = start => r,
        status = wait_exit(exit_rx.clone()) => Err(SpawnFailure::Exited { status }.into()),
    };

    match outcome {
        Ok((handshake, channel)) => {
            guard.armed = false;
            tracing::debug!(endpoint = %handshake.endpoint, "agent ready");
            Ok(AgentConn::new(Parts {
                process,
                handshake,
                channel,
                transport,
                token,
                interceptor,
                stderr: ring,
                exit_rx,
                stderr_eof: eof_rx,
                grace: opts.grace,
                socket_dir,
            }))
        }
        Err(err) => {
            process.kill();
            let status = wait_exit(exit_rx).await;
            guard.armed = false;
            let mut eof = eof_rx;
            let _ = tokio::time::timeout(STDERR_SETTLE, eof.wait_for(|done| *done)).await;
            tracing::debug!(kind = %err.kind(), %status, "agent failed to start");
            Err(err.with_agent(pid, ring.tail()))
        }
    }
}

/// What the I/O thread read as the first stdout line: the bytes, or "too long".
type FirstLine = Result<Vec<u8>, Vec<u8>>;

/// Waits for the first stdout line (read by the I/O thread) and parses it.
/// When stdout ends without a line it never returns: the agent's exit is
/// reported by the caller.
async fn handshake(
    line: oneshot::Receiver<FirstLine>,
    startup_timeout: Duration,
    accepted_versions: &[u32],
    assigned_socket: Option<&Path>,
) -> Result<Handshake, SpawnError> {
    let read = async {
        match line.await {
            Ok(line) => line,
            Err(_) => std::future::pending().await,
        }
    };
    let line = tokio::time::timeout(startup_timeout, read)
        .await
        .map_err(|_| SpawnFailure::HandshakeTimeout {
            timeout: startup_timeout,
        })?
        .map_err(|long| {
            HandshakeError::malformed(
                &String::from_utf8_lossy(&long),
                "no newline within 4096 bytes",
            )
        })?;
    let text = std::str::from_utf8(&line)
        .map_err(|_| HandshakeError::malformed(&String::from_utf8_lossy(&line), "not UTF-8"))?;
    let handshake = Handshake::parse(text, accepted_versions)?;
    if let (Some(assigned), Endpoint::Unix(announced)) = (assigned_socket, &handshake.endpoint)
        && announced != assigned
    {
        return Err(HandshakeError::malformed(
            text,
            &format!(
                "the agent announced the socket {}, but the host assigned {}",
                announced.display(),
                assigned.display()
            ),
        )
        .into());
    }
    tracing::debug!(line = text, "handshake");
    Ok(handshake)
}

/// The socket under a channel, so that closing an agent can end our side of
/// the connection before the agent is asked to stop (as the Go loader's
/// `cc.Close()` before SIGTERM): a graceful server then has no open
/// connection to drain and exits at once.
///
/// Holds the descriptor number of the newest connection the channel made,
/// not a duplicate (a host holding 200 agents keeps no extra descriptor per
/// agent): the connection's [`Tracked`] wrapper clears the entry, under the
/// same lock, before its socket closes, so the number is never stale. Two
/// connections alive at once have different numbers, so a wrapper clears
/// the entry only if it still names its own socket.
///
/// It also refuses to dial once the agent has exited: tonic reconnects to
/// the same address after any error, and after the agent's exit whoever
/// binds its port next would receive the call and its token.
#[derive(Clone, Default)]
pub(crate) struct Transport {
    fd: Arc<Mutex<Option<RawFd>>>,
    exit: Option<watch::Receiver<Option<ExitInfo>>>,
}

impl Transport {
    /// A transport that stops dialling once `exit` holds the agent's exit.
    pub(crate) fn watching(exit: watch::Receiver<Option<ExitInfo>>) -> Self {
        Transport {
            fd: Arc::default(),
            exit: Some(exit),
        }
    }

    /// `agent-exited` when the agent is known to have exited: no connection
    /// may be attempted then.
    fn dial_allowed(&self) -> io::Result<()> {
        match self.exit.as_ref().and_then(|rx| *rx.borrow()) {
            Some(status) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "agent-exited: the agent exited ({status}); its address is not dialled again"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Makes `stream` the connection that [`Transport::shutdown`] ends.
    fn track<S: AsRawFd>(&self, stream: S) -> Tracked<S> {
        *self.fd.lock().unwrap_or_else(PoisonError::into_inner) = Some(stream.as_raw_fd());
        Tracked {
            stream,
            transport: self.clone(),
        }
    }

    /// Shuts the connection down (both directions): calls in flight fail
    /// with `UNAVAILABLE`, the agent reads end-of-file.
    #[allow(unsafe_code)]
    pub(crate) fn shutdown(&self) {
        let slot = self.fd.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fd) = *slot {
            // SAFETY: while the entry is set (and we hold the lock) its
            // `Tracked` is alive, so `fd` is its open socket; shutdown only
            // changes the socket's state, the descriptor stays valid.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// A connection registered in a [`Transport`] while it is open.
struct Tracked<S: AsRawFd> {
    stream: S,
    transport: Transport,
}

impl<S: AsRawFd> Drop for Tracked<S> {
    fn drop(&mut self) {
        // Runs before `stream` (and its descriptor) is dropped.
        let mut slot = self
            .transport
            .fd
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *slot == Some(self.stream.as_raw_fd()) {
            *slot = None;
        }
    }
}

impl<S: AsRawFd + tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsRawFd + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

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
            Ok(Err(e)) => agent_ref::error_chain(&e).to_string(),
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

/// The agent's stdio, drained by one plain OS thread: the handshake line
/// from stdout (then stdout is discarded, so a chatty agent never blocks on a
/// full pipe), stderr into the ring and the sink.
struct AgentIo {
    stdout: OwnedFd,
    stderr: OwnedFd,
    ring: StderrRing,
    sink: Option<StderrSink>,
    logs: AgentLogger,
    line: Option<oneshot::Sender<FirstLine>>,
    exit: watch::Receiver<Option<ExitInfo>>,
    eof: watch::Sender<bool>,
}

impl AgentIo {
    #[allow(unsafe_code)]
    fn run(mut self) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut first = Vec::with_capacity(128);
        let (mut out_open, mut err_open) = (true, true);
        let mut exited_at: Option<std::time::Instant> = None;
        while out_open || err_open {
            if exited_at.is_none() && self.exit.borrow().is_some() {
                exited_at = Some(std::time::Instant::now());
            }
            if exited_at.is_some_and(|t| t.elapsed() > DRAIN_LINGER) {
                break; // something outside the group holds the pipes
            }
            let mut fds = [
                libc::pollfd {
                    fd: if out_open {
                        self.stdout.as_raw_fd()
                    } else {
                        -1
                    },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if err_open {
                        self.stderr.as_raw_fd()
                    } else {
                        -1
                    },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: a valid array of two pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, 200) };
            if rc < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[0].revents != 0 {
                match read(&self.stdout, &mut buf) {
                    Read::Closed => out_open = false,
                    Read::Again => {}
                    Read::Data(n) => self.stdout_chunk(&buf[..n], &mut first),
                }
            }
            if fds[1].revents != 0 {
                match read(&self.stderr, &mut buf) {
                    Read::Closed => err_open = false,
                    Read::Again => {}
                    Read::Data(n) => {
                        let chunk = &buf[..n];
                        self.ring.push(chunk);
                        if let Some(sink) = &self.sink {
                            sink(chunk);
                        }
                        self.logs.feed(chunk);
                    }
                }
            }
        }
        self.logs.finish();
        let _ = self.eof.send(true);
    }

    fn stdout_chunk(&mut self, data: &[u8], first: &mut Vec<u8>) {
        if self.line.is_none() {
            return; // after the handshake: discarded
        }
        let newline = data.iter().position(|&b| b == b'\n');
        first.extend_from_slice(&data[..newline.unwrap_or(data.len())]);
        let answer = if first.len() > MAX_HANDSHAKE_LEN + 1 {
            Err(std::mem::take(first))
        } else if newline.is_some() {
            Ok(std::mem::take(first))
        } else {
            return;
        };
        if let Some(tx) = self.line.take() {
            let _ = tx.send(answer);
        }
    }
}

enum Read {
    Data(usize),
    Closed,
    Again,
}

/// One `read`, retried on EINTR.
#[allow(unsafe_code)]
fn read(fd: &OwnedFd, buf: &mut [u8]) -> Read {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) => return Read::Closed,
            Ok(n) => return Read::Data(n),
            Err(_) => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return Read::Again,
                _ => return Read::Closed,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    #[test]
    fn spawn_future_is_send() {
        let future = spawn(Path::new("/nonexistent"), SpawnOptions::default());
        is_send(&future);
    }
}
