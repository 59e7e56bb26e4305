//! `cargo xtask bench`'s load sections: by ref and by path against the
//! floors, the portable process backend, the confined load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use agent_manager::spawn::Handshake;
use agent_manager::store::Expected;
use agent_manager::{AgentRef, AgentSource, Manager};

use crate::bench::{Args, Rows, cpu_ms, local_manager, ms, temp_home};
use crate::measure::{Summary, ThreadCpu, round3};
use crate::root;

/// The load rows of every agent: by ref through the cache (the headline, as
/// users load), by path beside it, the floors, the overhead above the
/// `posix_spawn` floor and the host's CPU per load; then the Go loader's
/// anchor on the grpc-go agent.
pub(crate) async fn load_section(
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
        let (os_floor, os_floor_cpu) = floor(path, args.n, false).await?;
        let (floor, _) = floor(path, args.n, true).await?;
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
            "the same cached file, by its path: no cache check".into(),
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
        rows.push((
            format!("  host CPU per os floor start {label}"),
            format!("{os_floor_cpu:.3} ms"),
            "the same getrusage around posix_spawn + handshake + TCP connect".into(),
        ));
        let threads: Vec<String> = f
            .by_thread
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.3}"))
            .collect();
        rows.push((
            format!("  host CPU per load by thread {label}"),
            threads.join(", "),
            "ms per load by ref, from each thread's scheduler account".into(),
        ));
        rows.push((format!("close {label}"), ms(&f.close), String::new()));
        // The same loads from a current-thread runtime (as agentctl runs):
        // no second worker to wake on the way.
        let (ct, ct_cpu) = load_by_ref_current_thread(path, args.n)?;
        let (worker, worker_cpu) = load_by_ref_on_worker(path, args.n).await?;
        rows.push((
            format!("load by ref {label}, from a runtime worker"),
            ms(&worker),
            format!("host CPU {worker_cpu:.3} ms per load; the caller is a spawned task"),
        ));
        rows.push((
            format!("load by ref {label}, current-thread host"),
            ms(&ct),
            format!(
                "{:.2}× os floor; host CPU {ct_cpu:.3} ms per load",
                ct.p50 / os_floor.p50
            ),
        ));
        loads.push(json!({
            "agent": label, "load_by_ref_ms": f.by_ref.json(), "load_by_path_ms": f.by_path.json(),
            "floor_ms": floor.json(), "os_floor_ms": os_floor.json(), "close_ms": f.close.json(),
            "overhead_above_os_floor_p50_ms": round3(over),
            "host_cpu_ms_per_load": round3(f.host_cpu_ms),
            "host_cpu_ms_per_os_floor_start": round3(os_floor_cpu),
            "host_cpu_ms_per_load_by_thread": f.by_thread.iter().map(|(name, ms)| (name.clone(), json!(round3(*ms)))).collect::<serde_json::Map<_, _>>(),
            "load_by_ref_current_thread_ms": ct.json(),
            "host_cpu_ms_per_load_current_thread": round3(ct_cpu),
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
    if let Some(cpu) = g.host_cpu_ms {
        rows.push((
            "  host CPU per load, Go loader".into(),
            format!("{cpu:.3} ms"),
            format!(
                "getrusage of the Go loader around each load (anchor; Rust by ref {:.3} ms)",
                rust.host_cpu_ms
            ),
        ));
    }
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
            "host_cpu_ms_per_load": g.host_cpu_ms.map(round3),
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
    /// The same per thread name (a second, shorter pass), in ms per load.
    by_thread: Vec<(String, f64)>,
}

/// The ref `path` is installed under in a bench home.
const BENCH_REF: &str = "codefly.dev/bench-agent:1.0.0";

/// A fresh home with `path` installed (and recorded) as [`BENCH_REF`].
pub(crate) async fn home_with(
    path: &Path,
    tag: &str,
) -> Result<(tempfile::TempDir, Manager, AgentRef)> {
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

/// One load by ref: the connection, its latency and the host's CPU (ms) it took.
pub(crate) async fn timed_load(
    manager: &Manager,
    r: &AgentRef,
) -> Result<(agent_manager::AgentConn, std::time::Duration, f64)> {
    let c0 = cpu_ms(libc::RUSAGE_SELF);
    let t = Instant::now();
    let conn = manager
        .load(r)
        .await
        .map_err(|e| anyhow::anyhow!("loading {r}: {e}"))?;
    Ok((conn, t.elapsed(), cpu_ms(libc::RUSAGE_SELF) - c0))
}

/// `n` rounds of: load by ref (through the cache and its checks, timed and
/// its host CPU taken), close, load by path, close. The load by path runs the
/// cached file itself, so the two differ only in the loader's code: one
/// inode, the same page cache.
async fn load_figures(path: &Path, n: usize) -> Result<LoadFigures> {
    let (_home, manager, r) = home_with(path, "load").await?;
    let path = &manager.home().binary_path(&r)?;
    let (mut by_ref, mut by_path, mut close, mut cpu) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        let (conn, took, spent) = timed_load(&manager, &r).await?;
        by_ref.push(took);
        cpu.push(spent);
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
    // Where that CPU goes, by thread: a pass of its own, so that reading
    // `/proc` stays out of the figure above.
    let passes = (n / 4).max(10);
    let mut spent: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for _ in 0..passes {
        let before = ThreadCpu::before();
        let conn = manager
            .load(&r)
            .await
            .map_err(|e| anyhow::anyhow!("loading {r}: {e}"))?;
        let after = ThreadCpu::after();
        for (name, ns) in after.since(&before) {
            *spent.entry(name.to_owned()).or_insert(0) += ns;
        }
        conn.close().await;
    }
    #[allow(clippy::cast_precision_loss)]
    let mut by_thread: Vec<(String, f64)> = spent
        .into_iter()
        .map(|(name, ns)| (name, ns as f64 / 1e6 / passes as f64))
        .filter(|(_, ms)| *ms >= 0.005)
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(LoadFigures {
        by_ref: Summary::of(&by_ref),
        by_path: Summary::of(&by_path),
        close: Summary::of(&close),
        host_cpu_ms,
        by_thread,
    })
}

/// Loads by ref (then close), `n` times, from a task spawned on the
/// multi-thread runtime (the headline rows load from `block_on`'s thread, as
/// a `#[tokio::main]` function does): latency, and host CPU per load.
async fn load_by_ref_on_worker(path: &Path, n: usize) -> Result<(Summary, f64)> {
    let (home, manager, r) = home_with(path, "load-worker").await?;
    let figures = tokio::spawn(async move { load_close_loop(&manager, &r, n).await }).await??;
    drop(home);
    Ok(figures)
}

/// `n` rounds of load by ref then close: latency, and host CPU per load.
async fn load_close_loop(manager: &Manager, r: &AgentRef, n: usize) -> Result<(Summary, f64)> {
    let mut samples = Vec::with_capacity(n);
    let mut cpu = 0.0;
    for _ in 0..n {
        let (conn, took, spent) = timed_load(manager, r).await?;
        samples.push(took);
        cpu += spent;
        conn.close().await;
    }
    #[allow(clippy::cast_precision_loss)]
    Ok((Summary::of(&samples), cpu / n.max(1) as f64))
}

/// Loads by ref (then close), `n` times, on a current-thread runtime of its
/// own thread: latency, and host CPU per load.
fn load_by_ref_current_thread(path: &Path, n: usize) -> Result<(Summary, f64)> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("tokio runtime")?
                    .block_on(async {
                        let (_home, manager, r) = home_with(path, "load-ct").await?;
                        load_close_loop(&manager, &r, n).await
                    })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the current-thread load bench panicked"))?
    })
}

/// `agentctl bench` by ref and by path with the Linux (pidfd) build and the
/// portable-backend build (`--cfg agent_portable`, `target/portable`), on
/// one home, alternating: the portable backend's load beside the Linux one.
pub(crate) async fn portable_section(
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
pub(crate) async fn sandbox_section(
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

/// The floor: the same spawn and handshake read, then a bare TCP connect — no
/// gRPC, no health check. With `pdeathsig`, the child is forked with
/// `PR_SET_PDEATHSIG` as agent-spawn does (std then forks instead of using
/// posix_spawn); without, it is the OS's cheapest spawn.
/// The floor's latency, and its host CPU per start (spawn to connected), in ms.
async fn floor(path: &Path, n: usize, pdeathsig: bool) -> Result<(Summary, f64)> {
    let mut samples = Vec::with_capacity(n);
    let mut cpu = 0.0;
    for _ in 0..n {
        let c0 = cpu_ms(libc::RUSAGE_SELF);
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
                cpu += cpu_ms(libc::RUSAGE_SELF) - c0;
                drop(s);
            }
            agent_manager::Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await?;
                samples.push(t.elapsed());
                cpu += cpu_ms(libc::RUSAGE_SELF) - c0;
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
    #[allow(clippy::cast_precision_loss)]
    Ok((Summary::of(&samples), cpu / n.max(1) as f64))
}
