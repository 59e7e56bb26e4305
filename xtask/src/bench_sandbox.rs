//! Load latency of an agent confined beside the same agent unconfined, in one run.
//!
//! Rounds alternate (unconfined TCP, unconfined unix socket, confined), so all three
//! see the same machine state. The confined agent has the default policy
//! (`network = "none"`, no extra paths): Landlock plus a user and network namespace,
//! reached over its unix socket; the unconfined unix-socket column separates the cost
//! of the sandbox from that of the transport.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_manager::sandbox::{Sandbox, SandboxPolicy};
use agent_manager::spawn::SpawnOptions;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::measure::{Summary, round3};

/// One run: load (spawn → handshake → health SERVING) of each variant, and the ratio
/// the target is about (confined p50 over unconfined p50; target ≤ 1.3).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SandboxLoad {
    /// Unconfined, over loopback TCP (the default load).
    pub(crate) unconfined: Summary,
    /// Unconfined, over a unix socket (the confined agent's transport).
    pub(crate) unconfined_uds: Summary,
    /// Confined by the default policy.
    pub(crate) confined: Summary,
}

impl SandboxLoad {
    /// Confined p50 over unconfined (TCP) p50.
    pub(crate) fn ratio(&self) -> f64 {
        self.confined.p50 / self.unconfined.p50
    }

    /// Confined p50 over unconfined unix-socket p50: the sandbox alone.
    pub(crate) fn ratio_same_transport(&self) -> f64 {
        self.confined.p50 / self.unconfined_uds.p50
    }

    /// The figures for `bench.json`.
    pub(crate) fn json(&self) -> Value {
        json!({
            "unconfined_load_ms": self.unconfined.json(),
            "unconfined_uds_load_ms": self.unconfined_uds.json(),
            "confined_load_ms": self.confined.json(),
            "confined_over_unconfined_p50": round3(self.ratio()),
            "confined_over_unconfined_uds_p50": round3(self.ratio_same_transport()),
        })
    }
}

fn options(sandbox: Sandbox, uds: bool) -> SpawnOptions {
    SpawnOptions::new()
        .grace(Duration::from_secs(5))
        .unix_socket(uds)
        .sandbox(sandbox)
}

async fn load_once(agent: &Path, opts: SpawnOptions) -> Result<Duration> {
    let t = Instant::now();
    let conn = agent_manager::spawn::spawn(agent, opts)
        .await
        .with_context(|| format!("loading {}", agent.display()))?;
    let took = t.elapsed();
    conn.close().await;
    Ok(took)
}

/// `n` loads (each closed before the next) of `agent` (agent-echo) per variant,
/// alternating; fails when this machine cannot confine (`admission`), rather than
/// measuring an unconfined agent twice.
pub(crate) async fn sandbox_load(agent: &Path, n: usize) -> Result<SandboxLoad> {
    if let Err(e) = agent_manager::sandbox::probe().admit(&SandboxPolicy::default()) {
        bail!("this machine cannot confine an agent: {e}");
    }
    let confined = Sandbox::policy(SandboxPolicy::default());
    // One of each first, unmeasured: page cache, the spawner thread, the probe.
    load_once(agent, options(Sandbox::unconfined(), false)).await?;
    load_once(agent, options(confined.clone(), false)).await?;
    let (mut tcp, mut uds, mut sandboxed) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        tcp.push(load_once(agent, options(Sandbox::unconfined(), false)).await?);
        uds.push(load_once(agent, options(Sandbox::unconfined(), true)).await?);
        sandboxed.push(load_once(agent, options(confined.clone(), false)).await?);
    }
    Ok(SandboxLoad {
        unconfined: Summary::of(&tcp),
        unconfined_uds: Summary::of(&uds),
        confined: Summary::of(&sandboxed),
    })
}

/// `cargo xtask bench-sandbox [-n N] [--agent PATH]`: runs [`sandbox_load`] alone and
/// prints its figures (the release agent-echo by default, else the debug one).
pub(crate) fn bench_sandbox(args: &[String]) -> Result<()> {
    let mut n = 100;
    let mut agent = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-n" => n = it.next().context("-n N")?.parse().context("-n N")?,
            "--agent" => agent = Some(std::path::PathBuf::from(it.next().context("--agent PATH")?)),
            other => {
                bail!("unknown argument {other:?}; usage: bench-sandbox [-n N] [--agent PATH]")
            }
        }
    }
    let agent = match agent {
        Some(a) => a,
        None => ["release", "debug"]
            .iter()
            .map(|p| crate::root().join("target").join(p).join("agent-echo"))
            .find(|p| p.is_file())
            .context(
                "no agent-echo in target/release or target/debug: build it, or pass --agent",
            )?,
    };
    let agent = std::path::absolute(&agent).context("the agent's path")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let r = rt.block_on(sandbox_load(&agent, n))?;
    let row = |name: &str, s: &Summary| {
        println!(
            "{name:<26} p50 {:>8.3} ms  p90 {:>8.3} ms  max {:>8.3} ms  (n {})",
            s.p50, s.p90, s.max, s.n
        );
    };
    println!("agent {}", agent.display());
    row("load unconfined (tcp)", &r.unconfined);
    row("load unconfined (uds)", &r.unconfined_uds);
    row("load confined", &r.confined);
    println!(
        "confined / unconfined p50 {:.2}× (target ≤ 1.3×); over the same transport {:.2}×",
        r.ratio(),
        r.ratio_same_transport()
    );
    println!("{}", r.json());
    Ok(())
}
