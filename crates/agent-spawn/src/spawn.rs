//! The pipeline of one spawn: start, handshake, connect, health, hand over.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_process::AgentProcess;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use crate::confine::{ConfineChild, Paths};
use crate::conn::{Parts, wait_exit};
use crate::env::{build_env, set_env};
use crate::error::{SpawnError, SpawnFailure};
use crate::exec::Executable;
use crate::handshake::handshake;
use crate::logs::{AgentLogger, AgentLogs};
use crate::options::SpawnOptions;
use crate::process::{Exec, Spawned, lifeline_read_end, spawn_in_group};
use crate::ready::ready;
use crate::stdio::AgentIo;
use crate::token::fresh_token;
use crate::transport::Transport;
use crate::{AgentConn, ExitInfo, Network, StderrRing, TokenInterceptor};
use agent_protocol::{LIFELINE_ENV, LOG_ENV, LOG_JSON, TOKEN_ENV, UDS_PATH_ENV, WORKDIR_ENV};

/// How long a failed spawn waits for the agent's stderr to reach EOF after
/// killing it, so the error carries everything the agent said.
const STDERR_SETTLE: Duration = Duration::from_secs(2);

/// Receives a live copy of the agent's stderr, chunk by chunk. Called from the
/// host's one agent I/O thread (a plain OS thread that serves every agent),
/// never on an async worker; keep it quick (it delays every agent's output,
/// handshake lines included).
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
        eof: eof_tx,
    };
    let registration = crate::stdio::register(io)
        .map_err(io_err("cannot hand the agent's output to the I/O thread"))?;
    // After exit, its pipes are drained a little longer, then given up on.
    process.on_exit(move |_| registration.exited());

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
