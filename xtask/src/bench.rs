//! `cargo xtask bench`: every performance claim of the README, measured side
//! by side in one run, printed as a table and written to `target/bench/bench.json`.
//!
//! `bench` (run by `cargo xtask`, a dev build) builds the release binaries and
//! re-runs itself as `target/release/xtask bench-run`, so the figures are of
//! optimised code.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use agent_manager::spawn::{Handshake, SpawnOptions};
use agent_manager::store::Expected;
use agent_manager::{AgentHome, AgentRef, AgentSource, AgentStore, LoadOptions, Manager};
use agent_store_oci::{OciStore, RegistryConfig};

use crate::measure::{ChildRun, Summary, median, round3, run_child};
use crate::measure::{fd_count, rss_kib, write_noise};
use crate::{cargo, root};

struct Args {
    n: usize,
    agents: Vec<PathBuf>,
    pull_mib: u64,
    pull_runs: usize,
    fanout: usize,
    dedup: usize,
    versions: usize,
    scale: usize,
    /// Sections to run (`--only a,b`); empty = all.
    only: Vec<String>,
}

impl Args {
    /// Whether the section `name` runs (every one unless `--only` was given).
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// The sections `--only` accepts.
const SECTIONS: &[&str] = &[
    "load", "portable", "sandbox", "phases", "fanout", "restart", "scale", "resolve", "dedup",
    "pull",
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
        "agent-cli",
        "-p",
        "xtask",
    ]);
    crate::run("build release binaries", build)?;
    // The portable process backend's agentctl, for its load row beside the Linux one.
    let mut portable = cargo();
    portable
        .args(["build", "--release", "-q", "-p", "agent-cli"])
        .env("RUSTFLAGS", "--cfg agent_portable")
        .env("CARGO_TARGET_DIR", root().join("target").join("portable"));
    crate::run("build the portable-backend agentctl", portable)?;
    crate::go::build_all();
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

    if args.wants("portable") {
        portable_section(args, &agentctl, &echo, &mut rows, &mut report).await?;
    }

    if args.wants("sandbox") {
        sandbox_section(args, &echo, &mut rows, &mut report).await?;
    }

    if args.wants("phases") {
        let mut subjects = vec![("agent-echo", echo.clone())];
        if let Ok(go) = crate::go::built() {
            subjects.push(("grpc-go agent", go.agent.clone()));
        }
        let mut all = serde_json::Map::new();
        for (label, path) in &subjects {
            eprintln!("bench: one load in phases ({label}) × {}", args.n);
            let phases = crate::phases::breakdown(path, args.n).await?;
            for (name, p50) in &phases.steps {
                rows.push((
                    format!("  phase {name}"),
                    format!("p50 {p50:.3} ms"),
                    format!("{label}, stepwise"),
                ));
            }
            for (name, p50) in &phases.spawn_events {
                rows.push((
                    format!("  agent-spawn {name}"),
                    format!("p50 {p50:.3} ms"),
                    format!("{label}, from its phase events"),
                ));
            }
            all.insert((*label).to_owned(), phases.json());
        }
        report.insert("phases".into(), Value::Object(all));
    }

    if args.wants("fanout") {
        // As many samples as the load rows: with 20, the denominator alone
        // swung 2.1–3.3 ms between runs.
        let single = load_close(&echo, args.n).await?.0;
        eprintln!("bench: fan-out {} distinct agents", args.fanout);
        let fan = fan_out(&echo, args.fanout).await?;
        let fan_ratio = fan.total_ms / single.p50;
        rows.push((
            format!("fan-out {} agents", args.fanout),
            format!("{:.2} ms ({fan_ratio:.1}× one load)", fan.total_ms),
            "≤ 16× one load".into(),
        ));
        rows.push((
            format!("  fan-out {} agents: CPU", args.fanout),
            format!(
                "host {:.3} ms/load, agent {:.3} ms/agent, CPUs idle {}",
                fan.host_cpu_ms,
                fan.agent_cpu_ms,
                fan.idle_pct
                    .map_or_else(|| "n/a".to_owned(), |p| format!("{p:.0}%"))
            ),
            "agent: its whole life; on 2 cores the fan-out is CPU-bound".into(),
        ));
        report.insert(
            "fan_out".into(),
            json!({ "agents": args.fanout, "total_ms": round3(fan.total_ms), "one_load_p50_ms": round3(single.p50), "ratio": round3(fan_ratio),
                    "host_cpu_ms_per_load": round3(fan.host_cpu_ms), "agent_cpu_ms_per_agent": round3(fan.agent_cpu_ms),
                    "idle_pct": fan.idle_pct.map(round3) }),
        );
    }

    if args.wants("restart") {
        eprintln!("bench: restart latency (SIGKILL → new agent serving) × 30");
        let (serving, first_call) = restart_latency(&echo, 30).await?;
        rows.push((
            "restart crash → serving".into(),
            format!("p50 {:.3} ms  p90 {:.3} ms", serving.p50, serving.p90),
            "backoff 0 (the default policy adds 200 ms ±20 %)".into(),
        ));
        rows.push((
            "restart crash → first call".into(),
            format!("p50 {:.3} ms  p90 {:.3} ms", first_call.p50, first_call.p90),
            "through the channel taken before the crash".into(),
        ));
        report.insert(
            "restart".into(),
            json!({ "serving_p50_ms": round3(serving.p50), "serving_p90_ms": round3(serving.p90), "first_call_p50_ms": round3(first_call.p50) }),
        );
    }

    if args.wants("scale") {
        eprintln!("bench: scale, {} agents held by one host", args.scale);
        let sc = scale(&echo, args.scale, args.n.min(30)).await?;
        rows.push((
            format!("scale {} held: host RSS/agent", args.scale),
            format!("{:.0} KiB", sc.rss_kib_per_agent),
            "≤ 256 KiB".into(),
        ));
        rows.push((
            format!("scale {} held: host fds/agent", args.scale),
            format!("{:.2}", sc.fds_per_agent),
            "≤ 4".into(),
        ));
        rows.push((
            format!("scale load #{} vs #1", args.scale + 1),
            format!(
                "p50 {:.3} vs {:.3} ms ({:.2}×)",
                sc.nth.p50,
                sc.first.p50,
                sc.nth.p50 / sc.first.p50
            ),
            "≈ 1×".into(),
        ));
        report.insert("scale".into(), sc.json(args.scale));
    }

    if args.wants("resolve") {
        eprintln!(
            "bench: resolve latest over {} installed versions",
            args.versions
        );
        let resolve = resolve_many(args.versions, args.n).await?;
        rows.push((
            format!("resolve latest /{}", args.versions),
            ms(&resolve),
            "p50 ≤ 1 ms".into(),
        ));
        report.insert(
            "resolve".into(),
            json!({ "installed_versions": args.versions, "ms": resolve.json() }),
        );
    }

    if args.wants("dedup") || args.wants("pull") {
        let registry = agent_testkit::registry::LocalRegistry::start()?;
        eprintln!("bench: registry at {}", registry.addr());
        let config = RegistryConfig::parse(&registry.addr().to_string())
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        if args.wants("dedup") {
            eprintln!(
                "bench: dedup, {} concurrent loads of one uncached ref",
                args.dedup
            );
            let downloads = dedup(&registry, &config, &echo, args.dedup).await?;
            rows.push((
                format!("dedup {} loads", args.dedup),
                format!("{downloads} blob download(s)"),
                "= 1".into(),
            ));
            report.insert(
                "dedup".into(),
                json!({ "loads": args.dedup, "blob_downloads": downloads }),
            );
        }

        if args.wants("pull") {
            eprintln!(
                "bench: pull {} MiB, agentctl vs curl × {}",
                args.pull_mib, args.pull_runs
            );
            let pull =
                pull_vs_curl(&registry, &config, &agentctl, args.pull_mib, args.pull_runs).await?;
            rows.push((
                format!("pull {} MiB agentctl", args.pull_mib),
                format!(
                    "{:.0} ms, {:.0} MiB/s, RSS {} MiB, CPU {:.0} ms",
                    pull.ours_ms, pull.ours_mibps, pull.ours_rss_mib, pull.ours_cpu_ms
                ),
                "≤ 1.15× curl, RSS ≤ 32 MiB".into(),
            ));
            rows.push((
                format!("pull {} MiB agentctl, signed", args.pull_mib),
                format!(
                    "{:.0} ms, RSS {} MiB, CPU {:.0} ms (minisign verified while streaming)",
                    pull.signed_ms, pull.signed_rss_mib, pull.signed_cpu_ms
                ),
                format!(
                    "signed/curl = {:.2}× (≤ 1.15×), signed/unsigned = {:.2}× (≤ 1.05×)",
                    pull.signed_ms / pull.curl_ms,
                    pull.signed_ms / pull.ours_ms
                ),
            ));
            rows.push((
                format!("pull {} MiB curl", args.pull_mib),
                format!(
                    "{:.0} ms, {:.0} MiB/s, RSS {} MiB, CPU {:.0} ms",
                    pull.curl_ms, pull.curl_mibps, pull.curl_rss_mib, pull.curl_cpu_ms
                ),
                format!("ours/curl = {:.2}×", pull.ours_ms / pull.curl_ms),
            ));
            rows.push((
                format!("pull {} MiB curl + fsync", args.pull_mib),
                format!("{:.0} ms", pull.curl_sync_ms),
                format!(
                    "ours/(curl+fsync) = {:.2}×",
                    pull.ours_ms / pull.curl_sync_ms
                ),
            ));
            // The pull must hash every byte (SHA-256 for the digest, and
            // BLAKE2b-512 for a prehashed signature): what that alone costs here.
            let (sha, blake) = hash_floor(usize::try_from(args.pull_mib)?);
            rows.push((
                format!("  hash {} MiB in memory", args.pull_mib),
                format!("SHA-256 {sha:.0} ms, BLAKE2b-512 {blake:.0} ms (one core each)"),
                format!("SHA-256 alone = {:.2}× curl", sha / pull.curl_ms),
            ));
            report.insert(
                "hash_floor_ms".into(),
                json!({ "sha256": round3(sha), "blake2b512": round3(blake) }),
            );
            report.insert("pull".into(), pull.json(args.pull_mib));
        }
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

type Rows = Vec<(String, String, String)>;

/// The load rows of every agent: by ref through the cache (the headline, as
/// users load), by path beside it, the floors, the overhead above the
/// `posix_spawn` floor and the host's CPU per load; then the Go loader's
/// anchor on the grpc-go agent.
async fn load_section(
    args: &Args,
    agents: &[(String, PathBuf)],
    go: &Result<crate::go::GoPrograms, String>,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let mut loads = Vec::new();
    let mut rust_on_go: Option<(LoadFigures, Summary)> = None;
    for (label, path) in agents {
        eprintln!("bench: load by ref / by path, close {label} × {}", args.n);
        let f = load_figures(path, args.n).await?;
        eprintln!(
            "bench: floor (spawn + handshake + TCP connect) {label} × {}",
            args.n
        );
        let os_floor = floor(path, args.n, false).await?;
        let floor = floor(path, args.n, true).await?;
        let is_echo = label == "agent-echo";
        let over = f.by_ref.p50 - os_floor.p50;
        rows.push((
            format!("load by ref {label}"),
            ms(&f.by_ref),
            format!(
                "through the cache; by path + {:.3} ms (≤ + 0.05 ms)",
                f.by_ref.p50 - f.by_path.p50
            ),
        ));
        rows.push((
            format!("load by path {label}"),
            ms(&f.by_path),
            "the same binary, no cache".into(),
        ));
        rows.push((
            format!("os floor {label}"),
            ms(&os_floor),
            "posix_spawn + handshake + TCP connect, no gRPC".into(),
        ));
        rows.push((
            format!("floor {label}"),
            ms(&floor),
            "fork+pdeathsig, no gRPC".into(),
        ));
        rows.push((
            format!("  overhead above the os floor {label}"),
            format!("{over:.3} ms (by ref, p50)"),
            format!("load by ref = {:.2}× os floor", f.by_ref.p50 / os_floor.p50),
        ));
        rows.push((
            format!("  host CPU per load {label}"),
            format!("{:.3} ms", f.host_cpu_ms),
            if is_echo {
                "≤ 0.3 ms (getrusage of the host around each load by ref)".into()
            } else {
                "getrusage of the host around each load by ref".into()
            },
        ));
        rows.push((format!("close {label}"), ms(&f.close), String::new()));
        // The same loads from a current-thread runtime (as agentctl runs):
        // no second worker to wake on the way.
        let ct = load_by_ref_current_thread(path, args.n)?;
        rows.push((
            format!("load by ref {label}, current-thread host"),
            ms(&ct),
            format!("{:.2}× os floor", ct.p50 / os_floor.p50),
        ));
        loads.push(json!({
            "agent": label, "load_by_ref_ms": f.by_ref.json(), "load_by_path_ms": f.by_path.json(),
            "floor_ms": floor.json(), "os_floor_ms": os_floor.json(), "close_ms": f.close.json(),
            "overhead_above_os_floor_p50_ms": round3(over),
            "host_cpu_ms_per_load": round3(f.host_cpu_ms),
            "load_by_ref_current_thread_ms": ct.json(),
        }));
        if label == "grpc-go agent" {
            rust_on_go = Some((f, os_floor));
        }
    }
    report.insert("load".into(), Value::Array(loads));

    let (Ok(go), Some((rust, os_floor))) = (go, rust_on_go) else {
        return Ok(());
    };
    eprintln!(
        "bench: Go loader (seed-faithful) on the grpc-go agent × {}",
        args.n
    );
    let g = crate::go::run_loader(go, args.n)?;
    let (gl, gc) = (Summary::of_ms(&g.load_ms), Summary::of_ms(&g.close_ms));
    let (ours_over, go_over) = (rust.by_ref.p50 - os_floor.p50, gl.p50 - os_floor.p50);
    rows.push((
        "load grpc-go agent, Go loader".into(),
        ms(&gl),
        "seed's Load (anchor)".into(),
    ));
    rows.push((
        "load Rust by ref/Go loader".into(),
        format!(
            "{:.2}× (by path {:.2}×)",
            rust.by_ref.p50 / gl.p50,
            rust.by_path.p50 / gl.p50
        ),
        String::new(),
    ));
    rows.push((
        "  overhead above the os floor, Rust by ref/Go loader".into(),
        format!(
            "{:.2}× ({ours_over:.3} ms vs {go_over:.3} ms)",
            ours_over / go_over
        ),
        "≤ 0.5×".into(),
    ));
    rows.push((
        "close grpc-go agent, Go loader".into(),
        ms(&gc),
        String::new(),
    ));
    rows.push((
        "close Rust/Go loader".into(),
        format!("{:.2}×", rust.close.p50 / gc.p50),
        "≤ 1.0×".into(),
    ));
    match &go.goplugin {
        Ok((host, plugin)) => {
            eprintln!("bench: go-plugin 1.x host on its own plugin × {}", args.n);
            let gp = crate::go::run_goplugin(host, plugin, args.n)?;
            let (pl, pc) = (Summary::of_ms(&gp.load_ms), Summary::of_ms(&gp.close_ms));
            rows.push((
                "load go-plugin (own plugin)".into(),
                ms(&pl),
                "anchor".into(),
            ));
            rows.push((
                "close go-plugin (own plugin)".into(),
                ms(&pc),
                "anchor".into(),
            ));
            report.insert(
                "go_plugin".into(),
                json!({ "load_ms": pl.json(), "close_ms": pc.json() }),
            );
        }
        Err(why) => {
            rows.push(("go-plugin".into(), format!("skipped: {why}"), String::new()));
        }
    }
    report.insert(
        "go_loader".into(),
        json!({
            "load_ms": gl.json(), "close_ms": gc.json(), "phases_p50_ms": g.phases,
            "overhead_above_os_floor_p50_ms": round3(go_over),
            "rust_by_ref_over_go_load_p50": round3(rust.by_ref.p50 / gl.p50),
            "rust_by_path_over_go_load_p50": round3(rust.by_path.p50 / gl.p50),
            "rust_over_go_overhead_p50": round3(ours_over / go_over),
            "rust_over_go_close_p50": round3(rust.close.p50 / gc.p50),
        }),
    );
    Ok(())
}

/// Loads by ref and by path, alternating, through one manager.
struct LoadFigures {
    by_ref: Summary,
    by_path: Summary,
    close: Summary,
    /// Host CPU (user + system, every thread) per load by ref, in ms.
    host_cpu_ms: f64,
}

/// The ref `path` is installed under in a bench home.
const BENCH_REF: &str = "codefly.dev/bench-agent:1.0.0";

/// A fresh home with `path` installed (and recorded) as [`BENCH_REF`].
async fn home_with(path: &Path, tag: &str) -> Result<(tempfile::TempDir, Manager, AgentRef)> {
    let home = temp_home(tag)?;
    let manager = local_manager(home.path(), Vec::new(), AgentSource::Local)?;
    let r: AgentRef = BENCH_REF.parse()?;
    manager
        .installer()
        .install_file(&r, "local", &Expected::default(), path)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((home, manager, r))
}

/// `n` rounds of: load by ref (through the cache and its checks, timed and
/// its host CPU taken), close, load by path, close.
async fn load_figures(path: &Path, n: usize) -> Result<LoadFigures> {
    let (_home, manager, r) = home_with(path, "load").await?;
    let (mut by_ref, mut by_path, mut close, mut cpu) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        let c0 = cpu_ms(libc::RUSAGE_SELF);
        let t = Instant::now();
        let conn = manager
            .load(&r)
            .await
            .map_err(|e| anyhow::anyhow!("loading {r}: {e}"))?;
        by_ref.push(t.elapsed());
        cpu.push(cpu_ms(libc::RUSAGE_SELF) - c0);
        let t = Instant::now();
        conn.close().await;
        close.push(t.elapsed());
        let t = Instant::now();
        let conn = manager
            .load_path(path)
            .await
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", path.display()))?;
        by_path.push(t.elapsed());
        conn.close().await;
    }
    #[allow(clippy::cast_precision_loss)]
    let host_cpu_ms = cpu.iter().sum::<f64>() / n.max(1) as f64;
    Ok(LoadFigures {
        by_ref: Summary::of(&by_ref),
        by_path: Summary::of(&by_path),
        close: Summary::of(&close),
        host_cpu_ms,
    })
}

/// Loads by ref (then close), `n` times, on a current-thread runtime of its own thread.
fn load_by_ref_current_thread(path: &Path, n: usize) -> Result<Summary> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("tokio runtime")?
                    .block_on(async {
                        let (_home, manager, r) = home_with(path, "load-ct").await?;
                        let mut samples = Vec::with_capacity(n);
                        for _ in 0..n {
                            let t = Instant::now();
                            let conn = manager
                                .load(&r)
                                .await
                                .map_err(|e| anyhow::anyhow!("loading {r}: {e}"))?;
                            samples.push(t.elapsed());
                            conn.close().await;
                        }
                        Ok(Summary::of(&samples))
                    })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the current-thread load bench panicked"))?
    })
}

/// `agentctl bench` by ref and by path with the Linux (pidfd) build and the
/// portable-backend build (`--cfg agent_portable`, `target/portable`), on
/// one home, alternating: the portable backend's load beside the Linux one.
async fn portable_section(
    args: &Args,
    agentctl: &Path,
    echo: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let portable = portable_agentctl();
    if !portable.is_file() {
        rows.push((
            "load, portable backend".into(),
            format!("skipped: {} is missing", portable.display()),
            String::new(),
        ));
        return Ok(());
    }
    let (home, manager, r) = home_with(echo, "portable").await?;
    let by_path = manager
        .installer()
        .cached_path(&r)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("the bench agent is not cached")?;
    let n = args.n.to_string();
    let mut out = serde_json::Map::new();
    let backends = [("pidfd", agentctl), ("portable", portable.as_path())];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); 4];
    // Two alternating rounds of each; the better p50 of the two is kept.
    for _ in 0..2 {
        for (i, (_, bin)) in backends.iter().enumerate() {
            for (j, target) in [r.to_string(), by_path.display().to_string()]
                .iter()
                .enumerate()
            {
                let output = tokio::task::block_in_place(|| {
                    Command::new(bin)
                        .arg("--home")
                        .arg(home.path())
                        .args(["--local", "--json", "-q", "bench", target, "-n", &n])
                        .stdin(Stdio::null())
                        .output()
                })
                .with_context(|| format!("running {}", bin.display()))?;
                if !output.status.success() {
                    bail!(
                        "{} bench {target}: {}",
                        bin.display(),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                let v: Value = serde_json::from_slice(&output.stdout)
                    .with_context(|| format!("{} bench --json output", bin.display()))?;
                let p50 = v["load_ms"]["p50"]
                    .as_f64()
                    .context("no load_ms.p50 in agentctl bench --json")?;
                samples[i * 2 + j].push(p50);
            }
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for (i, (name, _)) in backends.iter().enumerate() {
        let (by_ref, by_path) = (best(&samples[i * 2]), best(&samples[i * 2 + 1]));
        rows.push((
            format!("agentctl load by ref, {name} backend"),
            format!("p50 {by_ref:.3} ms"),
            format!("by path p50 {by_path:.3} ms"),
        ));
        out.insert(
            (*name).to_owned(),
            json!({ "load_by_ref_p50_ms": round3(by_ref), "load_by_path_p50_ms": round3(by_path) }),
        );
    }
    report.insert("backends".into(), Value::Object(out));
    Ok(())
}

/// agent-echo confined by the default policy beside the same agent
/// unconfined, alternating in one run; a machine that cannot confine gets a
/// `skipped` row naming why.
async fn sandbox_section(
    args: &Args,
    echo: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let support = agent_manager::sandbox::probe();
    if let Err(why) = support.admit(&agent_manager::sandbox::SandboxPolicy::default()) {
        rows.push((
            "load, confined".into(),
            format!("skipped: {why}"),
            String::new(),
        ));
        return Ok(());
    }
    eprintln!("bench: confined beside unconfined load × {}", args.n);
    let s = crate::bench_sandbox::sandbox_load(echo, args.n).await?;
    rows.push((
        "load, confined (network none)".into(),
        format!(
            "p50 {:.3} ms ({:.2}× unconfined)",
            s.confined.p50,
            s.ratio()
        ),
        format!(
            "unconfined p50 {:.3} ms, over a unix socket {:.3} ms ({:.2}×); ≤ 1.3×",
            s.unconfined.p50,
            s.unconfined_uds.p50,
            s.ratio_same_transport()
        ),
    ));
    report.insert("sandbox".into(), s.json());
    Ok(())
}

/// `agentctl` built with the portable process backend by `cargo xtask bench`.
fn portable_agentctl() -> PathBuf {
    root().join("target/portable/release/agentctl")
}

fn ms(s: &Summary) -> String {
    format!("p50 {:.3} ms  p90 {:.3} ms", s.p50, s.p90)
}

fn bench_opts() -> SpawnOptions {
    SpawnOptions::new().grace(Duration::from_secs(5))
}

/// Spawn → health-checked channel, then graceful close, `n` times.
/// A supervised agent (restart always, backoff 0) SIGKILLed `n` times: from
/// each kill to the `Started` event of its successor, and to the first call
/// that succeeds through the channel taken before the first crash.
async fn restart_latency(path: &Path, n: usize) -> Result<(Summary, Summary)> {
    use agent_echo::pb::{EchoRequest, echo_client::EchoClient};
    use agent_manager::spawn::{AgentEvent, RestartPolicy, supervise};
    let policy = RestartPolicy::always()
        .with_max_restarts(u32::MAX)
        .with_backoff(Duration::ZERO, Duration::ZERO);
    let conn = supervise(path, bench_opts(), policy)
        .await
        .with_context(|| format!("supervising {}", path.display()))?;
    let mut client = EchoClient::new(conn.channel());
    let mut events = conn.events();
    let (mut serving, mut first_call) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let pid = i32::try_from(conn.pid()).context("pid")?;
        let t0 = Instant::now();
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our live child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(AgentEvent::Started { .. }) = events.recv().await {
                    return;
                }
            }
        })
        .await
        .context("no restart within 30 s")?;
        serving.push(t0.elapsed());
        tokio::time::timeout(Duration::from_secs(30), async {
            while client
                .echo(EchoRequest {
                    message: "x".into(),
                })
                .await
                .is_err()
            {}
        })
        .await
        .context("no successful call within 30 s of a restart")?;
        first_call.push(t0.elapsed());
    }
    conn.close().await;
    Ok((Summary::of(&serving), Summary::of(&first_call)))
}

async fn load_close(path: &Path, n: usize) -> Result<(Summary, Summary)> {
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

/// Milliseconds to SHA-256 and to BLAKE2b-512 `mib` MiB already in memory
/// (the faster of three), in 256 KiB updates as the installer does.
fn hash_floor(mib: usize) -> (f64, f64) {
    let data = vec![0x5a_u8; mib << 20];
    (
        hash_ms::<sha2::Sha256>(&data),
        hash_ms::<blake2::Blake2b512>(&data),
    )
}

/// The fastest of three runs of hasher `D` over `data`, in ms.
fn hash_ms<D: sha2::Digest>(data: &[u8]) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut h = D::new();
            data.chunks(256 << 10).for_each(|c| h.update(c));
            std::hint::black_box(h.finalize());
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// The floor: the same spawn and handshake read, then a bare TCP connect — no
/// gRPC, no health check. With `pdeathsig`, the child is forked with
/// `PR_SET_PDEATHSIG` as agent-spawn does (std then forks instead of using
/// posix_spawn); without, it is the OS's cheapest spawn.
async fn floor(path: &Path, n: usize, pdeathsig: bool) -> Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut cmd = tokio::process::Command::new(path);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        #[cfg(not(target_os = "linux"))]
        let _ = pdeathsig;
        #[cfg(target_os = "linux")]
        if pdeathsig {
            #[allow(unsafe_code)]
            // SAFETY: prctl is async-signal-safe and the closure allocates nothing.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    );
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", path.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await?;
        let hs = Handshake::parse(line.trim_end(), &[1, 2]).map_err(|e| anyhow::anyhow!("{e}"))?;
        match &hs.endpoint {
            agent_manager::Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                samples.push(t.elapsed());
                drop(s);
            }
            agent_manager::Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await?;
                samples.push(t.elapsed());
                drop(s);
            }
        }
        if let Some(pid) = child.id() {
            #[allow(unsafe_code, clippy::cast_possible_wrap)]
            // SAFETY: signalling our own child's process group.
            unsafe {
                libc::killpg(pid as i32, libc::SIGKILL);
            }
        }
        child.wait().await?;
    }
    Ok(Summary::of(&samples))
}

struct ScaleFigures {
    rss_kib_per_agent: f64,
    fds_per_agent: f64,
    first: Summary,
    nth: Summary,
}

impl ScaleFigures {
    fn json(&self, held: usize) -> Value {
        json!({
            "held": held,
            "host_rss_kib_per_agent": round3(self.rss_kib_per_agent),
            "host_fds_per_agent": round3(self.fds_per_agent),
            "load_first_ms": self.first.json(),
            "load_with_held_ms": self.nth.json(),
        })
    }
}

/// `held` agents loaded and kept by this process: what each costs the host
/// (RSS, descriptors), and whether the next load is slower than the first.
async fn scale(echo: &Path, held: usize, probes: usize) -> Result<ScaleFigures> {
    let probe = async |n: usize| -> Result<Summary> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let c = agent_manager::spawn::spawn(echo, bench_opts()).await?;
            samples.push(t.elapsed());
            c.close().await;
        }
        Ok(Summary::of(&samples))
    };
    let first = probe(probes).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss0, fds0) = (rss_kib()?, fd_count()?);
    let mut conns = Vec::with_capacity(held);
    for _ in 0..held {
        conns.push(agent_manager::spawn::spawn(echo, bench_opts()).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss1, fds1) = (rss_kib()?, fd_count()?);
    let nth = probe(probes).await?;
    futures_util::future::join_all(conns.iter().map(agent_manager::spawn::AgentConn::close)).await;
    drop(conns);
    #[allow(clippy::cast_precision_loss)]
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / held.max(1) as f64;
    Ok(ScaleFigures {
        rss_kib_per_agent: per(rss0, rss1),
        fds_per_agent: per(fds0, fds1),
        first,
        nth,
    })
}

fn temp_home(tag: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("bench-{tag}-"))
        .tempdir()
        .map_err(Into::into)
}

fn local_manager(
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

/// `count` distinct agents (copies of echo under distinct refs) loaded at once
/// through the manager; the median total over 5 rounds, in ms.
/// CPU time (user + system) of this process (`RUSAGE_SELF`) or of its
/// reaped children (`RUSAGE_CHILDREN`), in ms.
#[allow(unsafe_code, clippy::cast_precision_loss)]
fn cpu_ms(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e3 + v.tv_usec as f64 / 1e3;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The fan-out's wall time and where its CPU went (medians over 5 rounds).
struct FanOut {
    total_ms: f64,
    /// Host CPU per load, during the loads.
    host_cpu_ms: f64,
    /// Each agent's CPU over its whole life (start, one health call, close).
    agent_cpu_ms: f64,
    /// How much of the machine's CPU time (all CPUs) was idle during the
    /// loads, from cpuidle; `None` where the kernel has no cpuidle.
    idle_pct: Option<f64>,
}

/// Idle time of every CPU so far (µs), from `/sys/devices/system/cpu/cpu*/cpuidle`.
fn idle_us() -> Option<u64> {
    let mut total = 0;
    let mut seen = false;
    for cpu in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
        let Ok(states) = std::fs::read_dir(cpu.path().join("cpuidle")) else {
            continue;
        };
        for state in states.flatten() {
            if let Some(t) = std::fs::read_to_string(state.path().join("time"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
            {
                total += t;
                seen = true;
            }
        }
    }
    seen.then_some(total)
}

async fn fan_out(echo: &Path, count: usize) -> Result<FanOut> {
    let home = temp_home("fanout")?;
    let manager = local_manager(home.path(), Vec::new(), AgentSource::Local)?;
    let mut refs = Vec::new();
    for i in 0..count {
        let r: AgentRef = format!("codefly.dev/echo-{i}:0.1.0").parse()?;
        manager
            .installer()
            .install_file(&r, "local", &Expected::default(), echo)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        refs.push(r);
    }
    #[allow(clippy::cast_precision_loss)]
    let n = count as f64;
    let (mut totals, mut host, mut agents, mut idle) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for _ in 0..5 {
        let (self0, children0) = (cpu_ms(libc::RUSAGE_SELF), cpu_ms(libc::RUSAGE_CHILDREN));
        let idle0 = idle_us();
        let t = Instant::now();
        let conns = futures_util::future::join_all(refs.iter().map(|r| manager.load(r))).await;
        let total = t.elapsed();
        if let (Some(a), Some(b)) = (idle0, idle_us()) {
            #[allow(clippy::cast_precision_loss)]
            idle.push((b - a) as f64 / (total.as_secs_f64() * 1e6 * cpus as f64) * 100.0);
        }
        host.push((cpu_ms(libc::RUSAGE_SELF) - self0) / n);
        for c in conns {
            c.map_err(|e| anyhow::anyhow!("fan-out load: {e}"))?;
        }
        // Every agent is reaped (so counted in RUSAGE_CHILDREN) once this returns.
        manager.cleanup_all().await;
        agents.push((cpu_ms(libc::RUSAGE_CHILDREN) - children0) / n);
        totals.push(total.as_secs_f64() * 1e3);
    }
    Ok(FanOut {
        total_ms: median(&totals),
        host_cpu_ms: median(&host),
        agent_cpu_ms: median(&agents),
        idle_pct: (!idle.is_empty()).then(|| median(&idle)),
    })
}

/// `latest` over `versions` installed versions, resolved `n` times.
async fn resolve_many(versions: usize, n: usize) -> Result<Summary> {
    let home = temp_home("resolve")?;
    let manager = local_manager(home.path(), Vec::new(), AgentSource::Local)?;
    let r: AgentRef = "codefly.dev/many:latest".parse()?;
    let dir = manager.home().publisher_dir(&r);
    std::fs::create_dir_all(&dir)?;
    for i in 0..versions {
        std::fs::write(dir.join(format!("many__1.{}.{}", i / 100, i % 100)), b"")?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let got = manager
            .resolve(&r)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        samples.push(t.elapsed());
        if got.concrete_version().is_none() {
            bail!("resolve gave no concrete version");
        }
    }
    Ok(Summary::of(&samples))
}

fn blob_gets(registry: &agent_testkit::registry::LocalRegistry, repo: &str) -> usize {
    let needle = format!("\"GET /v2/{repo}/blobs/sha256:");
    registry.log_text().matches(&needle).count()
}

/// `loads` concurrent loads of one ref that is not cached → blob downloads seen by the registry.
async fn dedup(
    registry: &agent_testkit::registry::LocalRegistry,
    config: &RegistryConfig,
    echo: &Path,
    loads: usize,
) -> Result<usize> {
    let r: AgentRef = "codefly.dev/echo-dedup:1.0.0".parse()?;
    agent_store_oci::push(config, &r, &[(echo.to_path_buf(), None)])
        .await
        .map_err(|e| anyhow::anyhow!("push: {e}"))?;
    let home = temp_home("dedup")?;
    let store: Arc<dyn AgentStore> =
        Arc::new(OciStore::new(config.clone()).map_err(|e| anyhow::anyhow!("{e}"))?);
    let manager = local_manager(home.path(), vec![store], AgentSource::Remote)?;
    let repo = config.repository(&r);
    let before = blob_gets(registry, &repo);
    let conns = futures_util::future::join_all((0..loads).map(|_| manager.load(&r))).await;
    for c in conns {
        c.map_err(|e| anyhow::anyhow!("dedup load: {e}"))?;
    }
    manager.cleanup_all().await;
    // The registry writes its access log asynchronously.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(blob_gets(registry, &repo) - before)
}

struct PullFigures {
    ours_ms: f64,
    ours_mibps: f64,
    ours_rss_mib: u64,
    signed_ms: f64,
    signed_rss_mib: u64,
    curl_ms: f64,
    curl_mibps: f64,
    curl_rss_mib: u64,
    curl_sync_ms: f64,
    ours_cpu_ms: f64,
    signed_cpu_ms: f64,
    curl_cpu_ms: f64,
}

impl PullFigures {
    fn json(&self, mib: u64) -> Value {
        json!({
            "mib": mib,
            "agentctl": { "ms": round3(self.ours_ms), "cpu_ms": round3(self.ours_cpu_ms), "mib_per_s": round3(self.ours_mibps), "max_rss_mib": self.ours_rss_mib },
            "agentctl_signed": { "ms": round3(self.signed_ms), "cpu_ms": round3(self.signed_cpu_ms), "max_rss_mib": self.signed_rss_mib, "ratio_vs_unsigned": round3(self.signed_ms / self.ours_ms) },
            "curl": { "ms": round3(self.curl_ms), "cpu_ms": round3(self.curl_cpu_ms), "mib_per_s": round3(self.curl_mibps), "max_rss_mib": self.curl_rss_mib },
            "curl_and_fsync": { "ms": round3(self.curl_sync_ms) },
            "ratio": round3(self.ours_ms / self.curl_ms),
            "ratio_vs_curl_and_fsync": round3(self.ours_ms / self.curl_sync_ms),
        })
    }
}

/// A `mib` MiB blob pushed once, then pulled by `agentctl pull` (fresh home
/// each run) and by `curl` from the same blob URL, alternating.
async fn pull_vs_curl(
    registry: &agent_testkit::registry::LocalRegistry,
    config: &RegistryConfig,
    agentctl: &Path,
    mib: u64,
    runs: usize,
) -> Result<PullFigures> {
    let work = temp_home("pull")?;
    let big = work.path().join("big.bin");
    write_noise(&big, mib)?;
    let r: AgentRef = "codefly.dev/big:1.0.0".parse()?;
    let pushed = agent_store_oci::push(config, &r, &[(big.clone(), None)])
        .await
        .map_err(|e| anyhow::anyhow!("push: {e}"))?;
    // The same bytes, signed (minisign, prehashed) and pulled under a policy
    // that requires the signature: the cost of verification while streaming.
    let signed: AgentRef = "codefly.dev/bigsigned:1.0.0".parse()?;
    let keys = agent_manager::store::trust::keygen().map_err(|e| anyhow::anyhow!("keygen: {e}"))?;
    let comment =
        agent_manager::store::trust::trusted_comment(&signed, &agent_manager::Platform::current());
    let minisig = work.path().join("big.bin.minisig");
    std::fs::write(
        &minisig,
        agent_manager::store::trust::sign_file(&keys.secret, None, &big, &comment)
            .map_err(|e| anyhow::anyhow!("sign: {e}"))?,
    )?;
    agent_store_oci::push_files(
        config,
        &signed,
        &[agent_store_oci::PushFile {
            path: big.clone(),
            platform: None,
            signature: Some(minisig),
        }],
    )
    .await
    .map_err(|e| anyhow::anyhow!("push signed: {e}"))?;
    let public = keys
        .public
        .lines()
        .last()
        .context("an empty public key")?
        .trim()
        .to_owned();
    let signed_config = work.path().join("config.toml");
    std::fs::write(
        &signed_config,
        format!("[publishers.\"codefly.dev\"]\nkeys = [\"{public}\"]\n"),
    )?;
    std::fs::remove_file(&big)?;
    let digest = &pushed.layers.first().context("no layer pushed")?.digest;
    let url = format!(
        "http://{}/v2/{}/blobs/{digest}",
        registry.addr(),
        config.repository(&r)
    );

    let mut ours: Vec<ChildRun> = Vec::new();
    let mut signed_runs: Vec<ChildRun> = Vec::new();
    let mut curl: Vec<ChildRun> = Vec::new();
    let mut curl_sync: Vec<ChildRun> = Vec::new();
    for i in 0..runs {
        let home = work.path().join(format!("home-{i}"));
        let args: [&std::ffi::OsStr; 5] = [
            "--home".as_ref(),
            home.as_os_str(),
            "-q".as_ref(),
            "pull".as_ref(),
            "codefly.dev/big:1.0.0".as_ref(),
        ];
        let env = [
            ("CODEFLY_AGENT_STORES", "oci".to_owned()),
            ("AGENT_REGISTRY", registry.addr().to_string()),
        ];
        ours.push(tokio::task::block_in_place(|| {
            run_child(agentctl, &args, &env)
        })?);
        std::fs::remove_dir_all(&home)?;

        let signed_args: [&std::ffi::OsStr; 5] = [
            "--home".as_ref(),
            home.as_os_str(),
            "-q".as_ref(),
            "pull".as_ref(),
            "codefly.dev/bigsigned:1.0.0".as_ref(),
        ];
        let signed_env = [
            env[0].clone(),
            env[1].clone(),
            ("CODEFLY_CONFIG", signed_config.display().to_string()),
        ];
        let run = tokio::task::block_in_place(|| run_child(agentctl, &signed_args, &signed_env))?;
        let record =
            std::fs::read_to_string(home.join("agents/services/codefly.dev/bigsigned__1.0.0.json"))
                .context("the signed pull installed nothing")?;
        if !record.contains(&comment) {
            bail!("the signed pull's record names no signer: {record}");
        }
        signed_runs.push(run);
        std::fs::remove_dir_all(&home)?;

        let out = work.path().join("curl.out");
        let args: [&std::ffi::OsStr; 6] = [
            "-sS".as_ref(),
            "-f".as_ref(),
            "-L".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            url.as_ref(),
        ];
        let curl_bin = Path::new("/usr/bin/curl");
        curl.push(tokio::task::block_in_place(|| {
            run_child(curl_bin, &args, &[])
        })?);
        std::fs::remove_file(&out)?;

        // What we promise (durable bytes) costs curl an fsync too.
        let script = format!(
            "/usr/bin/curl -sS -f -L -o '{}' '{url}' && sync '{}'",
            out.display(),
            out.display()
        );
        let args: [&std::ffi::OsStr; 2] = ["-c".as_ref(), script.as_ref()];
        curl_sync.push(tokio::task::block_in_place(|| {
            run_child(Path::new("/bin/sh"), &args, &[])
        })?);
        std::fs::remove_file(&out)?;
    }
    let wall = |v: &[ChildRun]| {
        median(
            &v.iter()
                .map(|r| r.wall.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    };
    let rss = |v: &[ChildRun]| v.iter().map(|r| r.max_rss_kib).max().unwrap_or(0) / 1024;
    let cpu = |v: &[ChildRun]| {
        median(
            &v.iter()
                .map(|r| r.cpu.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    };
    #[allow(clippy::cast_precision_loss)]
    let mibf = mib as f64;
    let (ours_ms, curl_ms, curl_sync_ms) = (wall(&ours), wall(&curl), wall(&curl_sync));
    Ok(PullFigures {
        ours_ms,
        ours_mibps: mibf / (ours_ms / 1e3),
        ours_rss_mib: rss(&ours),
        ours_cpu_ms: cpu(&ours),
        signed_cpu_ms: cpu(&signed_runs),
        curl_cpu_ms: cpu(&curl),
        signed_ms: wall(&signed_runs),
        signed_rss_mib: rss(&signed_runs),
        curl_ms,
        curl_mibps: mibf / (curl_ms / 1e3),
        curl_rss_mib: rss(&curl),
        curl_sync_ms,
    })
}
