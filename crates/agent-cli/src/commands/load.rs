//! `agentctl load REF`: resolve, pull, spawn, handshake, health; print where
//! it runs; hold it (restarting it as asked) or close it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_manager::{AgentConn, ErrorKind, LoadOptions, Manager};
use clap::Args;
use serde_json::json;

use crate::ctx::{Ctx, Target, absolute};
use crate::report::{Failure, ms};
use crate::values::{parse_duration, parse_key_value};

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// The agent.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    #[command(flatten)]
    pub(crate) spawn: SpawnArgs,
    /// Work directory for the agent (exported as CODEFLY_AGENT_WORKDIR).
    #[arg(long, value_name = "DIR")]
    pub(crate) workdir: Option<PathBuf>,
    /// Extra environment for the agent (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_key_value)]
    pub(crate) env: Vec<(String, String)>,
    /// Keep the agent running until SIGINT or SIGTERM, then close it.
    #[arg(long, conflicts_with = "for_")]
    pub(crate) hold: bool,
    /// Keep the agent running for this long (e.g. 500ms, 3s, 2m), then close it.
    #[arg(long = "for", id = "for_", value_name = "D", value_parser = parse_duration)]
    pub(crate) for_: Option<Duration>,
    /// Restart the agent when it exits (with --hold or --for): never, on-failure, always.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = RestartWhen::Never)]
    pub(crate) restart: RestartWhen,
    /// Give up after this many restarts (then exit 1 with error[agent-exited]).
    #[arg(long, value_name = "N")]
    pub(crate) max_restarts: Option<u32>,
}

/// `--restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RestartWhen {
    /// Never restart (default).
    Never,
    /// Restart when it exits with a failure (non-zero status or a signal).
    OnFailure,
    /// Restart whenever it exits.
    Always,
}

/// `--agent-logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AgentLogsMode {
    /// JSON log lines (tracing, slog, zap, hclog) become host log events with
    /// their level; other lines become info events (shown with -v).
    Parsed,
    /// Every line becomes an info event as written, JSON or not (shown with -v).
    Raw,
    /// The agent's stderr is only kept for error reports.
    Off,
}

/// Spawn settings shared by `load` and `bench`.
#[derive(Debug, Args)]
pub(crate) struct SpawnArgs {
    /// How long to wait for the handshake line (default 30s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) startup_timeout: Option<Duration>,
    /// How long to wait for the gRPC connection and health (default 10s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) dial_timeout: Option<Duration>,
    /// How long close waits after SIGTERM before SIGKILL (default 30s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(crate) grace: Option<Duration>,
    /// Serve on a unix socket in a private directory instead of loopback TCP.
    #[arg(long)]
    pub(crate) uds: bool,
    /// What becomes of the agent's stderr: parsed (host log events with their
    /// levels, shown with -v), raw (info events as written), off.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AgentLogsMode::Parsed)]
    pub(crate) agent_logs: AgentLogsMode,
    /// Sandbox network, over the configuration's policy: none (no TCP or UDP at
    /// all; the agent is reached over its unix socket) or any.
    #[arg(long, value_name = "NET", value_enum)]
    pub(crate) sandbox_network: Option<SandboxNetwork>,
    /// Sandbox: a read-only path (repeatable; replaces the configuration's list;
    /// ${HOME}, ${WORKDIR}, ${TMPDIR} expand).
    #[arg(long, value_name = "PATH")]
    pub(crate) sandbox_read: Vec<String>,
    /// Sandbox: a writable path (repeatable; replaces the configuration's list).
    #[arg(long, value_name = "PATH")]
    pub(crate) sandbox_write: Vec<String>,
    /// Run the agent unconfined, whatever the configuration says.
    #[arg(long, conflicts_with_all = ["sandbox_network", "sandbox_read", "sandbox_write"])]
    pub(crate) no_sandbox: bool,
}

/// `--sandbox-network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SandboxNetwork {
    /// No TCP or UDP to anything, the host's loopback included.
    None,
    /// The host's network.
    Any,
}

/// `--restart` and `--max-restarts` as a policy (`None` for never).
fn restart_policy(args: &LoadArgs) -> Option<agent_manager::spawn::RestartPolicy> {
    use agent_manager::spawn::RestartPolicy;
    let mut p = match args.restart {
        RestartWhen::Never => return None,
        RestartWhen::OnFailure => RestartPolicy::on_failure(),
        RestartWhen::Always => RestartPolicy::always(),
    };
    if let Some(n) = args.max_restarts {
        p.max_restarts = n;
    }
    Some(p)
}

/// The sandbox the `--sandbox-*` flags ask for over the configuration's
/// policy for `t`, or `None` when no flag is given (the configuration decides).
fn sandbox_from_flags(
    m: &Manager,
    t: &Target,
    spawn: &SpawnArgs,
) -> Option<agent_manager::sandbox::Sandbox> {
    use agent_manager::sandbox::{Network, Sandbox, SandboxPolicyPatch};
    if spawn.no_sandbox {
        return Some(Sandbox::unconfined());
    }
    let patch = SandboxPolicyPatch {
        network: spawn.sandbox_network.map(|n| match n {
            SandboxNetwork::None => Network::None,
            SandboxNetwork::Any => Network::Any,
        }),
        read: (!spawn.sandbox_read.is_empty()).then(|| spawn.sandbox_read.clone()),
        write: (!spawn.sandbox_write.is_empty()).then(|| spawn.sandbox_write.clone()),
    };
    if patch == SandboxPolicyPatch::default() {
        return None;
    }
    let effective = match t {
        Target::Agent(a) => m.effective_sandbox(a),
        Target::Path(_) => m.effective_path_sandbox(),
    };
    effective.over(&patch).sandbox()
}

/// The load options the spawn flags ask for.
pub(crate) fn load_options(m: &Manager, t: &Target, spawn: &SpawnArgs) -> LoadOptions {
    let mut o = LoadOptions::new().unix_socket(spawn.uds);
    if let Some(sandbox) = sandbox_from_flags(m, t, spawn) {
        o = o.sandbox(sandbox);
    }

    if let Some(d) = spawn.startup_timeout {
        o = o.startup_timeout(d);
    }
    if let Some(d) = spawn.dial_timeout {
        o = o.dial_timeout(d);
    }
    if let Some(d) = spawn.grace {
        o = o.grace(d);
    }
    o
}

/// Loads a target; returns the conn, the ref to report and its version.
pub(crate) async fn load_target(
    m: &Manager,
    t: &Target,
    opts: LoadOptions,
) -> Result<(AgentConn, String, Option<String>), Failure> {
    match t {
        Target::Path(p) => {
            let conn = m.load_path_with(p, opts).await?;
            Ok((conn, p.display().to_string(), None))
        }
        Target::Agent(a) => {
            let resolved = m.resolve(a).await?;
            let conn = m.load_with(&resolved, opts).await?;
            Ok((
                conn,
                resolved.identifier(),
                Some(resolved.version_spec().to_string()),
            ))
        }
    }
}

pub(crate) async fn exec(ctx: &Ctx, args: LoadArgs) -> Result<(), Failure> {
    let t = ctx.target(&args.reference)?;
    let m = ctx.manager_for_load(&args.spawn)?;
    let mut opts = load_options(&m, &t, &args.spawn);
    if let Some(w) = &args.workdir {
        opts = opts.workdir(absolute(w)?);
    }
    for (k, v) in &args.env {
        opts = opts.env(k, v);
    }
    let held = args.hold || args.for_.is_some();
    if let Some(policy) = restart_policy(&args) {
        if !held {
            return Err(Failure::new(
                ErrorKind::InvalidRef,
                "--restart needs --hold or --for (a load that closes at once has nothing to restart)",
            ));
        }
        opts = opts.restart(policy);
    }
    let started = Instant::now();
    let (conn, reference, version) = load_target(&m, &t, opts).await?;
    let load_ms = ms(started.elapsed());
    if ctx.json {
        let mut doc = json!({
            "ref": reference,
            "version": version,
            "pid": conn.pid(),
            "endpoint": conn.endpoint().to_string(),
            "load_ms": load_ms,
        });
        // Held: what another process needs to attach (CODEFLY_AGENT_ATTACH).
        if held {
            doc["token"] = json!(conn.token());
        }
        outln!("{doc}");
    } else {
        outln!("loaded   {reference}");
        outln!("pid      {}", conn.pid());
        outln!("endpoint {}", conn.endpoint());
        outln!("load     {load_ms:.3} ms");
    }
    if args.hold || args.for_.is_some() {
        hold(ctx, &conn, args.for_).await?;
    }
    let started = Instant::now();
    let status = conn.close().await;
    if ctx.chatty() {
        eprintln!("closed ({status}) in {:.3} ms", ms(started.elapsed()));
    }
    m.cleanup_all().await;
    Ok(())
}

/// Waits for SIGINT/SIGTERM (or `for_`); an agent that exits meanwhile is a failure.
async fn hold(ctx: &Ctx, conn: &AgentConn, for_: Option<Duration>) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::io("installing the SIGTERM handler", &e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::io("installing the SIGINT handler", &e))?;
    if ctx.chatty() {
        match for_ {
            Some(d) => eprintln!("holding for {}", humantime::format_duration(d)),
            None => eprintln!("holding; SIGINT (Ctrl-C) or SIGTERM closes it"),
        }
    }
    let timer = async {
        match for_ {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timer);
    let mut events = conn.events();
    // Exits and restarts go to stderr (also with --json: stdout stays one document per line).
    let mut listening = !ctx.quiet;
    let exited = conn.exited();
    tokio::pin!(exited);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            () = &mut timer => return Ok(()),
            ev = events.recv(), if listening => match ev {
                Ok(ev) => print_event(&ev),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                // No more events (an unsupervised agent, or supervision over).
                Err(tokio::sync::broadcast::error::RecvError::Closed) => listening = false,
            },
            status = &mut exited => {
                if let Some(gave_up) = conn.failure() {
                    let mut f = Failure::from_error(gave_up.kind(), &gave_up);
                    f.stderr_tail = Some(gave_up.stderr_tail().to_owned()).filter(|t| !t.is_empty());
                    return Err(f);
                }
                let mut f = Failure::new(
                    ErrorKind::AgentExited,
                    format!("the agent exited while held ({status})"),
                );
                f.stderr_tail = Some(conn.stderr_tail()).filter(|t| !t.is_empty());
                return Err(f);
            }
        }
    }
}

/// A supervision event on stderr: each exit with its status, each restart.
fn print_event(ev: &agent_manager::spawn::AgentEvent) {
    use agent_manager::spawn::AgentEvent;
    match ev {
        AgentEvent::Started {
            pid,
            endpoint,
            restarts,
        } if *restarts > 0 => {
            eprintln!("restarted: pid {pid} on {endpoint} (restart {restarts})");
        }
        AgentEvent::Exited { pid, status, .. } => eprintln!("agent {pid} exited ({status})"),
        AgentEvent::Restarting { attempt, delay } => {
            eprintln!("restarting in {}ms (attempt {attempt})", delay.as_millis());
        }
        AgentEvent::RestartFailed { attempt, error, .. } => {
            eprintln!(
                "restart {attempt} failed: {}",
                crate::escape::terminal_safe(error)
            );
        }
        _ => {}
    }
}
