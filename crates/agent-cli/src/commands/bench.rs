//! `agentctl bench REF -n N`: load and close N times; latency percentiles.

use std::io::IsTerminal as _;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::commands::load::{SpawnArgs, load_options, load_target};
use crate::ctx::{Ctx, Target};
use crate::report::{Failure, Percentiles, ms};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The agent.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// How many load/close rounds.
    #[arg(short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) n: u32,
    #[command(flatten)]
    pub(crate) spawn: SpawnArgs,
}

pub(crate) async fn exec(ctx: &Ctx, args: &BenchArgs) -> Result<(), Failure> {
    let (n, spawn) = (args.n, &args.spawn);
    let t = match ctx.target(&args.reference)? {
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
