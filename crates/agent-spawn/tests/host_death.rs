//! An agent does not outlive its host killed with SIGKILL.
//!
//! The test re-runs this test binary as the host (the ignored `host` test,
//! selected with `--exact --ignored`), which loads an agent from a tokio
//! worker thread, prints the agent's pid and waits to be killed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_spawn::{SpawnOptions, spawn};
use agent_testkit::{bin_path, pid_alive, wait_group_gone};

const AGENT_ENV: &str = "HOST_DEATH_TEST_AGENT";

#[test]
#[ignore = "run by agents_die_with_their_host as the host process"]
fn host() {
    let agent = std::env::var_os(AGENT_ENV).expect("run by agents_die_with_their_host");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Spawn from a short-lived task on some worker thread.
        let conn = tokio::spawn(async move {
            let opts = SpawnOptions {
                args: vec!["ignore-sigterm".into()],
                ..SpawnOptions::default()
            };
            spawn(agent.as_ref(), opts).await.unwrap()
        })
        .await
        .unwrap();
        println!("AGENT_PID={}", conn.pid());
        std::future::pending::<()>().await;
    });
}

#[test]
fn agents_die_with_their_host() {
    let agent = bin_path("test-agent");
    let mut host = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "host",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(AGENT_ENV, &agent)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The harness prints "test host ... " before our line: search, don't match.
    let stdout = host.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, p)) = line.split_once("AGENT_PID=") {
                let _ = tx.send(p.trim().parse::<u32>().unwrap());
                return;
            }
        }
    });
    let pid = rx.recv_timeout(Duration::from_secs(60));
    let Ok(pid) = pid else {
        host.kill().unwrap();
        host.wait().unwrap();
        panic!("the host did not print the agent's pid");
    };
    assert!(pid_alive(pid));
    host.kill().unwrap(); // SIGKILL: no destructor runs in the host
    host.wait().unwrap();
    assert!(
        wait_group_gone(pid, Duration::from_secs(10)),
        "agent {pid} outlived its host"
    );
}
