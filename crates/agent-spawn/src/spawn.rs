//! The pipeline of one spawn: start, handshake, connect, health, hand over.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

use crate::conn::{Parts, wait_exit};
use crate::error::{SpawnError, SpawnFailure};
use crate::process::{kill_group, spawn_in_group};
use crate::token::fresh_token;
use crate::{
    AgentConn, Endpoint, ExitInfo, Handshake, HandshakeError, MAX_HANDSHAKE_LEN, StderrRing,
    TOKEN_ENV, TokenInterceptor, UDS_PATH_ENV, WORKDIR_ENV,
};

/// How long a failed spawn waits for the agent's stderr to reach EOF after
/// killing it, so the error carries everything the agent said.
const STDERR_SETTLE: Duration = Duration::from_secs(2);

/// How to start an agent. `SpawnOptions::default()` gives the documented defaults.
pub struct SpawnOptions {
    /// Time allowed for the handshake line (default 30 s).
    pub startup_timeout: Duration,
    /// Time allowed, after the handshake, to connect and see SERVING (default 10 s).
    pub dial_timeout: Duration,
    /// Time `close` gives the agent between SIGTERM and SIGKILL (default 30 s).
    pub grace: Duration,
    /// Work directory: the agent's current directory and `CODEFLY_AGENT_WORKDIR`.
    pub workdir: Option<PathBuf>,
    /// Extra environment (the `CODEFLY_AGENT_*` variables above always win).
    pub env: Vec<(OsString, OsString)>,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Receives a live copy of the agent's stderr; owned and dropped by the connection.
    pub stderr_sink: Option<Box<dyn Write + Send>>,
    /// Ask the agent to listen on a unix socket in a private 0700 directory.
    pub unix_socket: bool,
    /// Protocol versions this host accepts (default 1 and 2).
    pub accepted_versions: Vec<u32>,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            startup_timeout: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(30),
            workdir: None,
            env: Vec::new(),
            args: Vec::new(),
            stderr_sink: None,
            unix_socket: false,
            accepted_versions: vec![1, 2],
        }
    }
}

impl SpawnOptions {
    /// A copy of these options without the stderr sink (which cannot be cloned).
    #[must_use]
    pub fn clone_without_sink(&self) -> SpawnOptions {
        SpawnOptions {
            startup_timeout: self.startup_timeout,
            dial_timeout: self.dial_timeout,
            grace: self.grace,
            workdir: self.workdir.clone(),
            env: self.env.clone(),
            args: self.args.clone(),
            stderr_sink: None,
            unix_socket: self.unix_socket,
            accepted_versions: self.accepted_versions.clone(),
        }
    }
}

impl std::fmt::Debug for SpawnOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnOptions")
            .field("startup_timeout", &self.startup_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("grace", &self.grace)
            .field("workdir", &self.workdir)
            .field("env", &self.env)
            .field("args", &self.args)
            .field("stderr_sink", &self.stderr_sink.is_some())
            .field("unix_socket", &self.unix_socket)
            .field("accepted_versions", &self.accepted_versions)
            .finish()
    }
}

/// Starts `program` and returns once it is ready: handshake read, gRPC
/// connected, health SERVING (or no health service at all).
///
/// On every failure after the process started, its group is killed and
/// reaped before the error returns; the error carries the stderr tail.
/// Dropping the returned future kills the group too.
///
/// # Errors
/// [`SpawnError`] with kind `spawn`, `agent-exited`, `handshake-timeout`,
/// `handshake-malformed`, `version-mismatch`, `dial-timeout`, `not-serving` or `io`.
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
    pgid: u32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            kill_group(self.pgid, libc::SIGKILL);
        }
    }
}

async fn spawn_inner(program: &Path, opts: SpawnOptions) -> Result<AgentConn, SpawnError> {
    // Destructured so no borrow of the (non-`Sync`) sink lives across an await.
    let SpawnOptions {
        startup_timeout,
        dial_timeout,
        grace,
        workdir,
        env,
        args,
        stderr_sink,
        unix_socket,
        accepted_versions,
    } = opts;
    let io_err = |context: &str| {
        let context = context.to_owned();
        move |source| SpawnError::from(SpawnFailure::Io { context, source })
    };
    let token = fresh_token().map_err(io_err("cannot draw a token"))?;
    let interceptor = TokenInterceptor::new(&token)
        .map_err(|e| io_err("invalid token")(io::Error::other(e.to_string())))?;

    let socket_dir = if unix_socket {
        let dir = tempfile::Builder::new()
            .prefix("agent-")
            .tempdir()
            .map_err(io_err("cannot create the socket directory"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot restrict the socket directory"))?;
        Some(dir)
    } else {
        None
    };

    let mut command = Command::new(program);
    command
        .args(&args)
        .env_remove(TOKEN_ENV)
        .env_remove(WORKDIR_ENV)
        .env_remove(UDS_PATH_ENV)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(TOKEN_ENV, &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(dir) = &workdir {
        command.current_dir(dir).env(WORKDIR_ENV, dir);
    }
    if let Some(dir) = &socket_dir {
        command.env(UDS_PATH_ENV, dir.path().join("agent.sock"));
    }

    let mut child = spawn_in_group(command)
        .await
        .map_err(|source| SpawnFailure::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let Some(pid) = child.id() else {
        return Err(io_err("the agent has no pid")(io::Error::other(
            "reaped early",
        )));
    };
    let mut guard = GroupGuard {
        pgid: pid,
        armed: true,
    };
    tracing::Span::current().record("pid", pid);

    // The reaper owns `wait`; everyone else watches `exit_rx`.
    let (exit_tx, exit_rx) = watch::channel(None::<ExitInfo>);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let status = child.wait().await;
        // Whatever the leader left in its group (grandchildren) goes with it.
        kill_group(pid, libc::SIGKILL);
        let info = status.map(ExitInfo::from).unwrap_or_default();
        tracing::debug!(pid, %info, "agent reaped");
        let _ = exit_tx.send(Some(info));
    });

    let ring = StderrRing::default();
    let (eof_tx, eof_rx) = watch::channel(false);
    if let Some(stderr) = stderr {
        tokio::spawn(drain_stderr(stderr, ring.clone(), stderr_sink, eof_tx));
    }

    let start = async {
        let stdout = stdout.ok_or_else(|| io_err("no stdout pipe")(io::Error::other("missing")))?;
        let (handshake, stdout) = handshake(stdout, startup_timeout, &accepted_versions)
            .instrument(tracing::debug_span!("handshake"))
            .await?;
        tokio::spawn(drain_stdout(stdout));
        let channel = ready(&handshake.endpoint, interceptor.clone(), dial_timeout)
            .instrument(tracing::debug_span!("ready", endpoint = %handshake.endpoint))
            .await?;
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
                pid,
                handshake,
                channel,
                token,
                interceptor,
                stderr: ring,
                exit_rx,
                grace,
                socket_dir,
            }))
        }
        Err(err) => {
            kill_group(pid, libc::SIGKILL);
            let status = wait_exit(exit_rx).await;
            guard.armed = false;
            let mut eof = eof_rx;
            let _ = tokio::time::timeout(STDERR_SETTLE, eof.wait_for(|done| *done)).await;
            tracing::debug!(kind = %err.kind(), %status, "agent failed to start");
            Err(err.with_agent(pid, ring.tail()))
        }
    }
}

/// Reads the first stdout line (at most 4 KiB) and parses it. On EOF without
/// a line it never returns: the agent's exit is reported by the caller.
async fn handshake(
    mut stdout: ChildStdout,
    startup_timeout: Duration,
    accepted_versions: &[u32],
) -> Result<(Handshake, ChildStdout), SpawnError> {
    let read = async {
        let mut line = Vec::with_capacity(128);
        let mut chunk = [0u8; 1024];
        loop {
            let n = match stdout.read(&mut chunk).await {
                Ok(0) => std::future::pending().await,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(SpawnError::from(SpawnFailure::Io {
                        context: "cannot read the agent's stdout".into(),
                        source,
                    }));
                }
            };
            let data = &chunk[..n];
            let newline = data.iter().position(|&b| b == b'\n');
            line.extend_from_slice(&data[..newline.unwrap_or(n)]);
            if line.len() > MAX_HANDSHAKE_LEN + 1 {
                let text = String::from_utf8_lossy(&line);
                return Err(
                    HandshakeError::malformed(&text, "no newline within 4096 bytes").into(),
                );
            }
            if newline.is_some() {
                return Ok(line);
            }
        }
    };
    let line = tokio::time::timeout(startup_timeout, read)
        .await
        .map_err(|_| SpawnFailure::HandshakeTimeout {
            timeout: startup_timeout,
        })??;
    let text = std::str::from_utf8(&line)
        .map_err(|_| HandshakeError::malformed(&String::from_utf8_lossy(&line), "not UTF-8"))?;
    let handshake = Handshake::parse(text, accepted_versions)?;
    tracing::debug!(line = text, "handshake");
    Ok((handshake, stdout))
}

/// Connects, then asks `grpc.health.v1.Health/Check("")` until SERVING.
async fn ready(
    endpoint: &Endpoint,
    interceptor: TokenInterceptor,
    dial_timeout: Duration,
) -> Result<Channel, SpawnError> {
    let deadline = Instant::now() + dial_timeout;
    let channel = connect(endpoint, deadline, dial_timeout).await?;

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
            // Seed-era agents have no health service: connected is ready.
            Ok(Err(status)) if status.code() == Code::Unimplemented => return Ok(channel),
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
) -> Result<Channel, SpawnError> {
    let mut backoff = Duration::from_micros(500);
    loop {
        let attempt = tokio::time::timeout_at(deadline, connect_once(endpoint)).await;
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

async fn connect_once(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    match endpoint {
        Endpoint::Tcp(addr) => {
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
        }
        Endpoint::Unix(path) => {
            let path = path.clone();
            tonic::transport::Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, io::Error>(TokioIo::new(stream))
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

/// Discards stdout after the handshake so a chatty agent never blocks on a full pipe.
async fn drain_stdout(mut stdout: ChildStdout) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Copies stderr into the ring (and the sink) until EOF, then drops the sink.
async fn drain_stderr(
    mut stderr: ChildStderr,
    ring: StderrRing,
    mut sink: Option<Box<dyn Write + Send>>,
    eof: watch::Sender<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        ring.push(&buf[..n]);
        if let Some(w) = sink.as_mut()
            && let Err(e) = w.write_all(&buf[..n])
        {
            tracing::warn!(error = %e, "stderr sink failed; no longer copying the agent's stderr");
            sink = None;
        }
    }
    if let Some(mut w) = sink {
        let _ = w.flush();
    }
    let _ = eof.send(true);
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

    #[test]
    fn defaults() {
        let o = SpawnOptions::default();
        assert_eq!(o.startup_timeout, Duration::from_secs(30));
        assert_eq!(o.dial_timeout, Duration::from_secs(10));
        assert_eq!(o.grace, Duration::from_secs(30));
        assert_eq!(o.accepted_versions, [1, 2]);
        assert!(!o.unix_socket && o.stderr_sink.is_none() && o.workdir.is_none());
    }
}
