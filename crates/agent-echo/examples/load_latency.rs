//! Measures what a host pays to load and close `agent-echo`, without agent-spawn:
//! spawn → handshake line → connect → `Health/Check` SERVING (load), then
//! SIGTERM → exit (close), with the host's connection still open.
//!
//! ```text
//! cargo build --release -p agent-echo
//! cargo run --release -p agent-echo --example load_latency -- target/release/agent-echo 200
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().expect("usage: load_latency AGENT_BIN [N]");
    let n: usize = args.next().map_or(200, |n| n.parse().unwrap());
    let (mut load, mut close) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut phases = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new(&bin)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next_line().await.unwrap().unwrap();
        let t_line = t0.elapsed();
        let hostport = line.strip_prefix("2|dns:///").unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{hostport}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let t_conn = t0.elapsed();
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 1, "SERVING");
        load.push(t0.elapsed());
        phases.push((t_line, t_conn));

        let t1 = Instant::now();
        let pid = i32::try_from(child.id().unwrap()).unwrap();
        // SAFETY: kill(2) on our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        assert!(child.wait().await.unwrap().success());
        close.push(t1.elapsed());
        drop(channel);
    }
    let mut line: Vec<_> = phases.iter().map(|p| p.0).collect();
    let mut conn: Vec<_> = phases.iter().map(|p| p.1).collect();
    line.sort();
    conn.sort();
    println!(
        "handshake line at p50={:.3} ms, connected at p50={:.3} ms",
        percentile(&line, 0.5),
        percentile(&conn, 0.5)
    );
    load.sort();
    close.sort();
    println!(
        "n={n} load_ms p50={:.3} p90={:.3} max={:.3} | close_ms p50={:.3} p90={:.3} max={:.3}",
        percentile(&load, 0.5),
        percentile(&load, 0.9),
        percentile(&load, 1.0),
        percentile(&close, 0.5),
        percentile(&close, 0.9),
        percentile(&close, 1.0),
    );
}
