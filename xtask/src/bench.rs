//! `cargo xtask bench`: every performance claim of the README, measured side
//! by side in one run, printed as a table and written to `target/bench/bench.json`.
//!
//! `bench` (run by `cargo xtask`, a dev build) builds the release binaries and
//! re-runs itself as `target/release/xtask bench-run`, so the figures are of
//! optimised code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use agent_manager::spawn::SpawnOptions;
use agent_manager::{AgentHome, AgentSource, AgentStore, LoadOptions, Manager};

use crate::bench_fleet::{fanout_section, phases_section, restart_section, scale_section};
use crate::bench_load::{load_section, portable_section, sandbox_section};
use crate::bench_store::{registry_sections, resolve_section};
use crate::measure::Summary;
use crate::{cargo, root};

pub(crate) struct Args {
    pub(crate) n: usize,
    pub(crate) agents: Vec<PathBuf>,
    pub(crate) pull_mib: u64,
    pub(crate) pull_runs: usize,
    pub(crate) fanout: usize,
    pub(crate) dedup: usize,
    pub(crate) versions: usize,
    pub(crate) scale: usize,
    /// Sections to run (`--only a,b`); empty = all.
    pub(crate) only: Vec<String>,
}

impl Args {
    /// Whether the section `name` runs (every one unless `--only` was given).
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// The sections `--only` accepts.
const SECTIONS: &[&str] = &[
    "load", "start", "portable", "sandbox", "phases", "fanout", "restart", "scale", "resolve",
    "dedup", "pull",
];

fn parse_args(args: &[String]) -> Result<Args> {
    let mut a = Args {
        n: 200,
        agents: Vec::new(),
        pull_mib: 256,
        pull_runs: 3,
        fanout: 32,
        dedup: 64,
        versions: 1000,
        scale: 200,
        only: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-n" => a.n = value()?.parse().context("-n")?,
            "--agent" => a.agents.push(PathBuf::from(value()?)),
            "--pull-mib" => a.pull_mib = value()?.parse().context("--pull-mib")?,
            "--scale" => a.scale = value()?.parse().context("--scale")?,
            "--only" => {
                for section in value()?.split(',') {
                    if !SECTIONS.contains(&section) {
                        bail!("unknown bench section {section:?} (one of {SECTIONS:?})");
                    }
                    a.only.push(section.to_owned());
                }
            }
            "--quick" => {
                a.n = 30;
                a.pull_mib = 32;
                a.pull_runs = 1;
            }
            other => bail!(
                "unknown bench argument {other:?} (use -n N, --agent PATH, --pull-mib M, --scale N, --only SECTION,…, --quick)"
            ),
        }
    }
    Ok(a)
}

/// `cargo xtask bench`: build release binaries, then measure with them.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    parse_args(args)?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-q",
        "-p",
        "agent-echo",
        "-p",
        "agent-manager-cli",
        "-p",
        "xtask",
    ]);
    crate::run("build release binaries", build)?;
    // The portable process backend's agentctl, for its load row beside the Linux one.
    let mut portable = cargo();
    portable
        .args(["build", "--release", "-q", "-p", "agent-manager-cli"])
        .env("RUSTFLAGS", "--cfg agent_portable")
        .env("CARGO_TARGET_DIR", root().join("target").join("portable"));
    crate::run("build the portable-backend agentctl", portable)?;
    crate::go::build_all();
    crate::bench_start::build_relr_agent();
    let mut run = Command::new(root().join("target/release/xtask"));
    run.arg("bench-run").args(args);
    crate::run("bench", run)
}

/// `xtask bench-run` (release): the measurements.
pub(crate) fn bench_run(args: &[String]) -> Result<()> {
    let args = parse_args(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run_all(&args))
}

async fn run_all(args: &Args) -> Result<()> {
    let release = root().join("target/release");
    let echo = release.join("agent-echo");
    let agentctl = release.join("agentctl");
    for p in [&echo, &agentctl] {
        if !p.is_file() {
            bail!(
                "{} is missing: run `cargo xtask bench`, which builds it",
                p.display()
            );
        }
    }
    let mut report = serde_json::Map::new();
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // load / close / floor, for agent-echo and any --agent.
    let mut agents = vec![("agent-echo".to_owned(), echo.clone())];
    agents.extend(
        args.agents
            .iter()
            .map(|p| (p.display().to_string(), p.clone())),
    );
    let go = crate::go::built();
    match &go {
        Ok(go) => agents.push(("grpc-go agent".to_owned(), go.agent.clone())),
        Err(why) => {
            eprintln!("bench: skipped: the Go loader and grpc-go agent ({why})");
            rows.push((
                "Go loader vs Rust loader".into(),
                format!("skipped: {why}"),
                String::new(),
            ));
        }
    }
    if args.wants("load") {
        load_section(args, &agents, &go, &mut rows, &mut report).await?;
    }
    if args.wants("start") {
        crate::bench_start::start_section(args, &echo, &mut rows, &mut report).await?;
    }
    if args.wants("portable") {
        portable_section(args, &agentctl, &echo, &mut rows, &mut report).await?;
    }
    if args.wants("sandbox") {
        sandbox_section(args, &echo, &mut rows, &mut report).await?;
    }
    if args.wants("phases") {
        phases_section(args, &echo, &mut rows, &mut report).await?;
    }
    if args.wants("fanout") {
        fanout_section(args, &echo, &mut rows, &mut report).await?;
    }
    if args.wants("restart") {
        restart_section(args, &echo, &mut rows, &mut report).await?;
    }
    if args.wants("scale") {
        scale_section(args, &echo, &mut rows, &mut report).await?;
    }
    if args.wants("resolve") {
        resolve_section(args, &mut rows, &mut report).await?;
    }
    if args.wants("dedup") || args.wants("pull") {
        registry_sections(args, &echo, &agentctl, &mut rows, &mut report).await?;
    }

    report.insert(
        "machine".into(),
        json!({ "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get), "n": args.n }),
    );
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("bench.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&Value::Object(report))? + "\n",
    )?;

    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!("{:<w0$}  {:<w1$}  target", "figure", "measured");
    for (a, b, c) in &rows {
        println!("{a:<w0$}  {b:<w1$}  {c}");
    }
    println!("\nwritten to {}", out.display());
    Ok(())
}

pub(crate) type Rows = Vec<(String, String, String)>;

pub(crate) fn ms(s: &Summary) -> String {
    format!("p50 {:.3} ms  p90 {:.3} ms", s.p50, s.p90)
}

pub(crate) fn bench_opts() -> SpawnOptions {
    SpawnOptions::new().grace(Duration::from_secs(5))
}

/// Spawn → health-checked channel, then graceful close, `n` times.
pub(crate) async fn load_close(path: &Path, n: usize) -> Result<(Summary, Summary)> {
    let mut load = Vec::with_capacity(n);
    let mut close = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let conn = agent_manager::spawn::spawn(path, bench_opts())
            .await
            .with_context(|| format!("loading {}", path.display()))?;
        load.push(t.elapsed());
        let t = Instant::now();
        conn.close().await;
        close.push(t.elapsed());
    }
    Ok((Summary::of(&load), Summary::of(&close)))
}

pub(crate) fn temp_home(tag: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("bench-{tag}-"))
        .tempdir()
        .map_err(Into::into)
}

pub(crate) fn local_manager(
    home: &Path,
    stores: Vec<Arc<dyn AgentStore>>,
    source: AgentSource,
) -> Result<Manager> {
    Manager::builder()
        .home(AgentHome::new(home))
        .source(source)
        .stores(stores)
        .load_defaults(LoadOptions::new().grace(Duration::from_secs(5)))
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// CPU time (user + system) of this process (`RUSAGE_SELF`) or of its
/// reaped children (`RUSAGE_CHILDREN`), in ms.
#[allow(unsafe_code, clippy::cast_precision_loss)]
pub(crate) fn cpu_ms(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e3 + v.tv_usec as f64 / 1e3;
    t(u.ru_utime) + t(u.ru_stime)
}
