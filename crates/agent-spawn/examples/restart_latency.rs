//! Restart latency of a supervised agent, p50/p90 over N crashes (a measurement, not a test).
//!
//! Each round SIGKILLs the current agent and times, from the kill:
//! `serving` = the `Started` event (the new agent's handshake read and health
//! SERVING), and `first call` = the first `Echo` that succeeds through the
//! channel taken before the first crash. Backoff is set to 0 so the numbers are
//! the machinery's own; the default policy adds its delay (200 ms ±20 % for the
//! first restart of a window) on top.
//!
//! ```text
//! cargo build --release -p agent-echo
//! cargo run --release -p agent-spawn --example restart_latency -- "$PWD/target/release/agent-echo" [N] [--uds]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_spawn::{AgentEvent, RestartPolicy, SpawnOptions, supervise};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[allow(unsafe_code)]
fn sigkill(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program = PathBuf::from(
        args.first()
            .expect("usage: restart_latency AGENT [N] [--uds]"),
    );
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let uds = args.iter().any(|a| a == "--uds");
    let policy = RestartPolicy::always()
        .with_max_restarts(u32::MAX)
        .with_backoff(Duration::ZERO, Duration::ZERO);
    let opts = SpawnOptions::new().unix_socket(uds);
    let conn = supervise(&program, opts, policy).await.unwrap();
    let mut client = EchoClient::new(conn.channel());
    let mut events = conn.events();
    let (mut serving, mut first_call) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let pid = conn.pid();
        let t0 = Instant::now();
        sigkill(pid);
        loop {
            if let AgentEvent::Started { .. } = events.recv().await.unwrap() {
                break;
            }
        }
        serving.push(t0.elapsed());
        loop {
            let r = client
                .echo(EchoRequest {
                    message: "x".into(),
                })
                .await;
            if r.is_ok() {
                break;
            }
        }
        first_call.push(t0.elapsed());
    }
    conn.close().await;
    serving.sort();
    first_call.sort();
    println!(
        "restart latency over {n} SIGKILLs ({}, backoff 0): crash→serving p50 {:.2} ms p90 {:.2} ms; crash→first call p50 {:.2} ms p90 {:.2} ms",
        if uds { "unix socket" } else { "tcp" },
        percentile(&serving, 0.5),
        percentile(&serving, 0.9),
        percentile(&first_call, 0.5),
        percentile(&first_call, 0.9),
    );
}
