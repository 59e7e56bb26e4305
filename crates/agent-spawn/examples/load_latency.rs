//! Load and close latency of an agent, p50/p90 over N runs (a measurement, not a test).
//!
//! ```text
//! cargo build --release -p agent-echo
//! cargo run --release -p agent-spawn --example load_latency -- target/release/agent-echo [N] [--uds] [--host-mib=M]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_spawn::{SpawnOptions, spawn};
use tokio::io::AsyncBufReadExt;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program = PathBuf::from(args.first().expect("usage: load_latency AGENT [N] [--uds]"));
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let uds = args.iter().any(|a| a == "--uds");
    // A bigger host (touched heap), to see what the spawn costs as the host grows.
    let host_mib: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("--host-mib="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ballast = vec![1u8; host_mib << 20];
    std::hint::black_box(&ballast);
    if std::env::var_os("LOAD_LATENCY_TRACE").is_some() {
        // Span timings (spawn, handshake, ready, close) on stderr.
        tracing_subscriber::fmt()
            .with_env_filter("agent_spawn=debug")
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .init();
    }

    let (mut loads, mut closes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let opts = SpawnOptions::new().unix_socket(uds);
        let t = Instant::now();
        let conn = spawn(&program, opts).await.expect("load");
        loads.push(t.elapsed());
        let t = Instant::now();
        let exit = conn.close().await;
        closes.push(t.elapsed());
        assert!(exit.success(), "{exit}");
    }
    loads.sort();
    closes.sort();

    // The floor: spawn, read the handshake line, TCP connect; no gRPC.
    let mut floor = Vec::with_capacity(n);
    if !uds {
        for _ in 0..n {
            let t = Instant::now();
            let mut child = tokio::process::Command::new(&program)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let line = lines.next_line().await.unwrap().unwrap();
            let h = agent_spawn::Handshake::parse(&line, &[1, 2]).unwrap();
            let agent_spawn::Endpoint::Tcp(addr) = h.endpoint else {
                panic!()
            };
            let _s = tokio::net::TcpStream::connect(addr).await.unwrap();
            floor.push(t.elapsed());
            child.kill().await.unwrap();
        }
        floor.sort();
        println!(
            "floor (spawn + handshake + TCP connect, no gRPC): p50 {:.3} ms p90 {:.3} ms",
            percentile(&floor, 0.5),
            percentile(&floor, 0.9)
        );
    }
    println!(
        "{} x{n}{}: load p50 {:.3} ms p90 {:.3} ms max {:.3} ms | close p50 {:.3} ms p90 {:.3} ms max {:.3} ms",
        program.display(),
        if uds { " (unix socket)" } else { "" },
        percentile(&loads, 0.5),
        percentile(&loads, 0.9),
        percentile(&loads, 1.0),
        percentile(&closes, 0.5),
        percentile(&closes, 0.9),
        percentile(&closes, 1.0),
    );
}
