//! The subcommands.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_manager::reference::{AgentHome, AgentKind, AgentRef, AgentSource};
use agent_manager::{AgentConn, ErrorKind, LoadOptions, Manager, ManagerBuilder};
use serde_json::json;

use crate::cache;
use crate::cli::{
    AgentLogsMode, Cli, Command, LoadArgs, PruneArgs, RestartWhen, SandboxNetwork, SpawnArgs,
};
use crate::report::{Failure, Percentiles, human_size, ms};

/// Global settings every command sees.
pub(crate) struct Ctx {
    pub(crate) home: Option<PathBuf>,
    pub(crate) kind: Option<AgentKind>,
    pub(crate) local: bool,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    pub(crate) lockfile: Option<PathBuf>,
    pub(crate) locked: bool,
    #[allow(dead_code)]
    pub(crate) verbose: u8,
}

impl Ctx {
    /// Progress and summaries on stderr only for a person watching.
    pub(crate) fn chatty(&self) -> bool {
        !self.json && !self.quiet
    }

    pub(crate) fn home(&self) -> Result<AgentHome, Failure> {
        match &self.home {
            Some(h) => Ok(AgentHome::new(absolute(h)?)),
            None => Ok(agent_manager::EnvConfig::from_env()?.home),
        }
    }

    /// The builder every command starts from: environment, config file,
    /// `--home`, `--local`.
    fn builder(&self, refresh: bool) -> Result<ManagerBuilder, Failure> {
        let mut b = Manager::builder()
            .env_config(agent_manager::EnvConfig::from_env()?)
            .refresh(refresh);
        if self.home.is_some() {
            b = b.home(self.home()?);
        }
        if self.local {
            b = b.source(AgentSource::Local);
        }
        Ok(b)
    }

    /// The manager, honouring the lock file (`--lockfile`, the variable, or
    /// `./agents.lock`) and `--locked`.
    pub(crate) fn manager(&self, refresh: bool) -> Result<Manager, Failure> {
        self.manager_with_progress(refresh, None)
    }

    /// [`Ctx::manager`] whose installer reports each pull's bytes to `progress`.
    pub(crate) fn manager_with_progress(
        &self,
        refresh: bool,
        progress: Option<agent_manager::store::ProgressFn>,
    ) -> Result<Manager, Failure> {
        let mut b = self.builder(refresh)?.locked(self.locked);
        if let Some(p) = agent_manager::lockfile::discover(self.lockfile.as_deref()) {
            b = b.lockfile(p);
        }
        if let Some(progress) = progress {
            b = b.progress(progress);
        }
        Ok(b.build()?)
    }

    /// The manager for `load` and `bench`: agent stderr handled as `--agent-logs` says.
    pub(crate) fn manager_for_load(&self, spawn: &SpawnArgs) -> Result<Manager, Failure> {
        use agent_manager::spawn::AgentLogs;
        let mut b = self.builder(false)?.locked(self.locked);
        if let Some(p) = agent_manager::lockfile::discover(self.lockfile.as_deref()) {
            b = b.lockfile(p);
        }
        let logs = match spawn.agent_logs {
            AgentLogsMode::Parsed => AgentLogs::Parsed,
            AgentLogsMode::Raw => AgentLogs::Raw,
            AgentLogsMode::Off => AgentLogs::Off,
        };
        Ok(b.load_defaults(LoadOptions::new().agent_logs(logs))
            .build()?)
    }

    /// The manager with no lock file at all (for `agentctl lock` itself).
    pub(crate) fn manager_without_lock(&self, refresh: bool) -> Result<Manager, Failure> {
        let mut env = agent_manager::EnvConfig::from_env()?;
        env.lockfile = None;
        let mut b = Manager::builder().env_config(env).refresh(refresh);
        if self.home.is_some() {
            b = b.home(self.home()?);
        }
        if self.local {
            b = b.source(AgentSource::Local);
        }
        Ok(b.build()?)
    }

    /// A lock-free manager fetching for `platform` into the home `home`.
    pub(crate) fn manager_for_platform(
        &self,
        platform: &agent_manager::Platform,
        home: &Path,
    ) -> Result<Manager, Failure> {
        let mut env = agent_manager::EnvConfig::from_env()?;
        env.lockfile = None;
        Ok(Manager::builder()
            .env_config(env)
            .home(AgentHome::new(home))
            .platform(platform.clone())
            .build()?)
    }

    pub(crate) fn parse_ref(&self, s: &str) -> Result<AgentRef, Failure> {
        let r = AgentRef::parse(s)?;
        Ok(match self.kind {
            Some(k) => r.with_kind(k),
            None => r,
        })
    }
}

/// What a REF names.
enum Target {
    Agent(AgentRef),
    /// An executable used as is.
    Path(PathBuf),
}

fn is_path(s: &str) -> bool {
    s.starts_with("./") || s.starts_with("../") || s.starts_with('/') || s == "." || s == ".."
}

fn target(ctx: &Ctx, s: &str) -> Result<Target, Failure> {
    if is_path(s) {
        Ok(Target::Path(absolute(Path::new(s))?))
    } else {
        ctx.parse_ref(s).map(Target::Agent)
    }
}

fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure::io(p.display(), &e))
}

pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    let ctx = Ctx {
        home: cli.home,
        kind: cli.kind,
        local: cli.local,
        json: cli.json,
        quiet: cli.quiet,
        lockfile: cli.lockfile,
        locked: cli.locked,
        verbose: cli.verbose,
    };
    match cli.command {
        Command::Resolve {
            reference,
            release,
            refresh,
        } => resolve(&ctx, &reference, release, refresh).await,
        Command::Pull {
            reference,
            release,
            refresh,
        } => pull(&ctx, &reference, release, refresh).await,
        Command::Load(args) => load(&ctx, args).await,
        Command::Bench {
            reference,
            n,
            spawn,
        } => bench(&ctx, &reference, n, &spawn).await,
        Command::Ls { reference } => ls(&ctx, reference.as_deref()),
        Command::Rm { reference, all } => rm(&ctx, &reference, all),
        Command::Prune(args) => prune(&ctx, &args),
        Command::Push {
            reference,
            files,
            platform,
            registry,
            sign,
        } => {
            push(
                &ctx,
                &reference,
                files,
                platform,
                &registry,
                sign.as_deref(),
            )
            .await
        }
        Command::Lock {
            references,
            platform,
            update,
        } => crate::lockcmd::lock(&ctx, &references, &platform, &update).await,
        Command::Config => config(&ctx),
        Command::Doctor => crate::doctor::doctor(&ctx).await,
        Command::Info { reference } => crate::info::info(&ctx, &reference).await,
        Command::Keygen { out, force } => crate::sign::keygen(&ctx, &out, force),
        Command::Completions { shell } => {
            crate::docs::completions(shell);
            Ok(())
        }
        Command::Man { dir } => crate::docs::man(&dir),
    }
}

/// `--release` pins to the newest release (never below what is installed);
/// otherwise the Go loader's `latest` resolution.
async fn resolve_or_pin(m: &Manager, agent: &AgentRef, release: bool) -> Result<AgentRef, Failure> {
    Ok(if release {
        m.pin_to_latest_release(agent).await?
    } else {
        m.resolve(agent).await?
    })
}

async fn resolve(ctx: &Ctx, reference: &str, release: bool, refresh: bool) -> Result<(), Failure> {
    let agent = match target(ctx, reference)? {
        Target::Path(p) => {
            if ctx.json {
                outln!("{}", json!({ "ref": p, "path": p }));
            } else {
                outln!("{}", p.display());
            }
            return Ok(());
        }
        Target::Agent(a) => a,
    };
    let m = ctx.manager(refresh)?;
    let resolved = resolve_or_pin(&m, &agent, release).await?;
    if ctx.json {
        outln!(
            "{}",
            json!({
                "ref": resolved.identifier(),
                "kind": resolved.kind().as_str(),
                "publisher": resolved.publisher(),
                "name": resolved.name(),
                "version": resolved.version_spec().to_string(),
            })
        );
    } else {
        outln!("{}", resolved.identifier());
    }
    Ok(())
}

async fn pull(ctx: &Ctx, reference: &str, release: bool, refresh: bool) -> Result<(), Failure> {
    let agent = match target(ctx, reference)? {
        Target::Path(p) => {
            let meta = std::fs::metadata(&p).map_err(|e| not_found_path(&p, &e))?;
            if ctx.json {
                outln!(
                    "{}",
                    json!({ "ref": p, "path": p, "size": meta.len(), "source": "path" })
                );
            } else {
                outln!("{}", p.display());
            }
            return Ok(());
        }
        Target::Agent(a) => a,
    };
    let bar = (ctx.chatty() && std::io::stderr().is_terminal()).then(PullBar::new);
    let m = ctx.manager_with_progress(refresh, bar.as_ref().map(PullBar::callback))?;
    let resolved = resolve_or_pin(&m, &agent, release).await?;
    let result = m.pull(&resolved).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    let installed = result?;
    if ctx.json {
        outln!(
            "{}",
            json!({
                "ref": resolved.identifier(),
                "version": resolved.version_spec().to_string(),
                "path": installed.path,
                "sha256": installed.sha256,
                "size": installed.size,
                "source": installed.source,
            })
        );
    } else {
        if ctx.chatty() {
            eprintln!(
                "{} ({}, sha256 {}, from {})",
                resolved.identifier(),
                human_size(installed.size),
                installed.sha256,
                crate::escape::terminal_safe(&installed.source)
            );
        }
        outln!("{}", installed.path.display());
    }
    Ok(())
}

fn not_found_path(p: &Path, e: &std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::NotFound {
        Failure::new(
            ErrorKind::BinaryNotFound,
            format!("no executable at {}", p.display()),
        )
    } else {
        Failure::io(p.display(), e)
    }
}

/// A progress bar on stderr fed by the installer's progress callback: a
/// spinner until the store announces a size, then a bar with an ETA. Nothing
/// is drawn for a pull served from the cache (the installer never reports).
struct PullBar {
    bar: indicatif::ProgressBar,
}

impl PullBar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} pulling {msg} {bytes} ({bytes_per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        PullBar { bar }
    }

    fn callback(&self) -> agent_manager::store::ProgressFn {
        let bar = self.bar.clone();
        std::sync::Arc::new(move |p: agent_manager::store::Progress| {
            if bar.is_hidden() && !p.done {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_message(p.agent.identifier());
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            if let Some(total) = p.total
                && bar.length() != Some(total)
            {
                bar.set_length(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} pulling {msg} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
            }
            bar.set_position(p.bytes);
        })
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
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

fn load_options(m: &Manager, t: &Target, spawn: &SpawnArgs) -> LoadOptions {
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
async fn load_target(
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

async fn load(ctx: &Ctx, args: LoadArgs) -> Result<(), Failure> {
    let t = target(ctx, &args.reference)?;
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

async fn bench(ctx: &Ctx, reference: &str, n: u32, spawn: &SpawnArgs) -> Result<(), Failure> {
    let t = match target(ctx, reference)? {
        Target::Agent(a) => {
            let m = ctx.manager(false)?;
            // Resolve and fetch once: the rounds measure load and close only.
            let resolved = m.resolve(&a).await?;
            m.pull(&resolved).await?;
            Target::Agent(resolved)
        }
        p @ Target::Path(_) => p,
    };
    let m = ctx.manager_for_load(spawn)?;
    let (mut loads, mut closes) = (Vec::new(), Vec::new());
    for i in 0..n {
        let started = Instant::now();
        let (conn, _, _) = load_target(&m, &t, load_options(&m, &t, spawn)).await?;
        loads.push(ms(started.elapsed()));
        let started = Instant::now();
        conn.close().await;
        closes.push(ms(started.elapsed()));
        if ctx.chatty() && std::io::stderr().is_terminal() {
            eprint!("\r{}/{n}", i + 1);
        }
    }
    if ctx.chatty() && std::io::stderr().is_terminal() {
        eprintln!();
    }
    m.cleanup_all().await;
    let (Some(l), Some(c)) = (Percentiles::of(&loads), Percentiles::of(&closes)) else {
        return Ok(());
    };
    if ctx.json {
        outln!("{}", json!({ "n": n, "load_ms": l, "close_ms": c }));
    } else {
        outln!("{n} rounds");
        outln!(
            "load   p50 {:>9.3} ms  p90 {:>9.3} ms  max {:>9.3} ms",
            l.p50,
            l.p90,
            l.max
        );
        outln!(
            "close  p50 {:>9.3} ms  p90 {:>9.3} ms  max {:>9.3} ms",
            c.p50,
            c.p90,
            c.max
        );
    }
    Ok(())
}

fn ls(ctx: &Ctx, reference: Option<&str>) -> Result<(), Failure> {
    let home = ctx.home()?;
    let only = reference.map(|r| ctx.parse_ref(r)).transpose()?;
    let entries = cache::list(&home, ctx.kind, only.as_ref(), true)?;
    if ctx.json {
        outln!("{}", json!(entries));
        return Ok(());
    }
    if entries.is_empty() {
        if ctx.chatty() {
            eprintln!("no agents installed in {}", home.agents_dir().display());
        }
        return Ok(());
    }
    let width = entries.iter().map(|e| e.reference.len()).max().unwrap_or(0);
    for e in &entries {
        let kind = if e.kind == "service" {
            String::new()
        } else {
            format!(" [{}]", e.kind)
        };
        outln!(
            "{:<width$}  {:>10}  {:<12}  {:<23}  {:<9}  {}  {}{kind}",
            e.reference,
            human_size(e.size),
            e.sha256.get(..12).unwrap_or(&e.sha256),
            e.signer_text(),
            e.last_used_text(),
            e.source,
            e.path.display(),
        );
    }
    Ok(())
}

fn rm(ctx: &Ctx, reference: &str, all: bool) -> Result<(), Failure> {
    if is_path(reference) {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "rm takes an agent reference, not a path ({reference}); remove files with rm(1)"
            ),
        ));
    }
    let home = ctx.home()?;
    let agent = ctx.parse_ref(reference)?;
    let removed = cache::rm(&home, &agent, all)?;
    print_removed(ctx, &removed, None);
    Ok(())
}

/// `agentctl config`: the effective settings and their origins.
fn config(ctx: &Ctx) -> Result<(), Failure> {
    let m = ctx.manager(false)?;
    let effective = m.effective_config();
    if ctx.json {
        outln!("{}", json!(effective));
    } else {
        out!("{effective}");
    }
    Ok(())
}

fn prune(ctx: &Ctx, args: &PruneArgs) -> Result<(), Failure> {
    let home = ctx.home()?;
    let nothing_asked = args.keep.is_none() && args.unused_for.is_none() && args.max_size.is_none();
    let policy = agent_manager::store::PrunePolicy {
        // No flag: keep the highest version of each agent.
        keep: args.keep.map(|k| k as usize).or(nothing_asked.then_some(1)),
        unused_for: args.unused_for,
        max_size: args.max_size,
        dry_run: args.dry_run,
    };
    let (removed, kept) = cache::prune(&home, ctx.kind, &policy)?;
    if args.dry_run && !ctx.json {
        for e in &removed {
            outln!("would remove {} {}", e.reference, e.path.display());
        }
        return Ok(());
    }
    print_removed(ctx, &removed, Some(&kept));
    Ok(())
}

fn print_removed(ctx: &Ctx, removed: &[cache::Entry], kept: Option<&[cache::Entry]>) {
    if ctx.json {
        let mut doc = json!({ "removed": removed });
        if let Some(k) = kept {
            doc["kept"] = json!(k);
        }
        outln!("{doc}");
        return;
    }
    for e in removed {
        outln!("removed {} {}", e.reference, e.path.display());
    }
    if ctx.chatty() && removed.is_empty() {
        eprintln!("nothing to remove");
    }
}

async fn push(
    ctx: &Ctx,
    reference: &str,
    files: Vec<PathBuf>,
    platforms: Vec<agent_manager::Platform>,
    registry: &str,
    sign: Option<&Path>,
) -> Result<(), Failure> {
    let agent = ctx.parse_ref(reference)?;
    if agent.concrete_version().is_none() {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "push needs a concrete version (the tag), e.g. {}/{}:1.2.3",
                agent.publisher(),
                agent.name()
            ),
        ));
    }
    if !platforms.is_empty() && platforms.len() != files.len() {
        return Err(Failure::new(
            ErrorKind::InvalidRef,
            format!(
                "{} file(s) but {} --platform(s): give one platform per file, in order",
                files.len(),
                platforms.len()
            ),
        ));
    }
    for f in &files {
        std::fs::metadata(f).map_err(|e| not_found_path(f, &e))?;
    }
    let mut config = agent_manager::stores::oci::RegistryConfig::parse(registry)?;
    if let Ok(s) = std::env::var("AGENT_REGISTRY_SCHEME") {
        use agent_manager::stores::oci::Scheme;
        match s.trim().to_ascii_lowercase().as_str() {
            "" => {}
            "http" => config = config.with_scheme(Scheme::Http),
            "https" => config = config.with_scheme(Scheme::Https),
            _ => {
                return Err(Failure::new(
                    ErrorKind::InvalidRef,
                    format!("AGENT_REGISTRY_SCHEME={s:?} is neither http nor https"),
                ));
            }
        }
    }
    let config = config.with_env_credentials();
    let key = sign.map(crate::sign::SigningKey::read).transpose()?;
    let sig_dir = match &key {
        Some(_) => Some(crate::lockcmd::private_temp_dir("agentctl-push")?),
        None => None,
    };
    let mut push_files = Vec::with_capacity(files.len());
    for (i, f) in files.into_iter().enumerate() {
        let platform = platforms.get(i).cloned();
        let signature = match (&key, &sig_dir) {
            (Some(k), Some(dir)) => {
                let signed_for = platform
                    .clone()
                    .unwrap_or_else(agent_manager::Platform::current);
                let text = k.sign(&f, &agent, &signed_for)?;
                let p = dir.path().join(format!("{i}.minisig"));
                std::fs::write(&p, text)
                    .map_err(|e| Failure::io(format!("writing {}", p.display()), &e))?;
                Some(p)
            }
            _ => None,
        };
        push_files.push(agent_manager::stores::oci::PushFile {
            path: f,
            platform,
            signature,
        });
    }
    let result = agent_manager::stores::oci::push_files(&config, &agent, &push_files).await?;
    drop(sig_dir);
    if ctx.json {
        outln!("{}", json!(result));
    } else {
        for l in &result.layers {
            let platform = l
                .platform
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            if ctx.chatty() {
                eprintln!(
                    "{}{platform}: {} {}{}",
                    l.path.display(),
                    l.digest,
                    human_size(l.size),
                    if l.reused { ", already there" } else { "" }
                );
            }
        }
        outln!("{}@{}", result.reference, result.digest);
    }
    Ok(())
}
