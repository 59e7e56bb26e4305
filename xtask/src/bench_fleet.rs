//! `cargo xtask bench`'s sections about many loads: phases of one load,
//! fan-out, restart latency, many agents held.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use agent_manager::store::Expected;
use agent_manager::{AgentRef, AgentSource};

use crate::bench::{Args, Rows, bench_opts, cpu_ms, load_close, local_manager, temp_home};
use crate::measure::{Summary, median, round3};
use crate::measure::{fd_count, rss_kib};

/// Where the time of one load goes, stepwise and from agent-spawn's phase events.
pub(crate) async fn phases_section(
    args: &Args,
    echo: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let mut subjects = vec![("agent-echo", echo.to_path_buf())];
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
    Ok(())
}

/// `args.fanout` distinct agents loaded at once, against one load.
pub(crate) async fn fanout_section(
    args: &Args,
    echo: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    // As many samples as the load rows: with 20, the denominator alone
    // swung 2.1–3.3 ms between runs.
    let single = load_close(echo, args.n).await?.0;
    eprintln!("bench: fan-out {} distinct agents", args.fanout);
    let fan = fan_out(echo, args.fanout).await?;
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
    Ok(())
}

/// A supervised agent's restart latency.
pub(crate) async fn restart_section(
    _args: &Args,
    echo: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    eprintln!("bench: restart latency (SIGKILL → new agent serving) × 30");
    let (serving, first_call) = restart_latency(echo, 30).await?;
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
    Ok(())
}

/// Many agents held by one host: what each costs, and the next load.
pub(crate) async fn scale_section(
    args: &Args,
    echo: &Path,
    rows: &mut Rows,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    eprintln!("bench: scale, {} agents held by one host", args.scale);
    let sc = scale(echo, args.scale, args.n.min(30)).await?;
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
    Ok(())
}

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

/// `count` distinct agents (copies of echo under distinct refs) loaded at once
/// through the manager; the median total over 5 rounds, in ms.
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
