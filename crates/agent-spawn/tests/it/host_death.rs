//! An agent does not outlive its host killed with SIGKILL.
//!
//! The test re-runs this test binary as the host (the ignored `host` test,
//! selected with `--exact --ignored`), which loads an agent from a tokio
//! worker thread, prints the agent's pid and waits to be killed.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use agent_spawn::{SpawnOptions, spawn};
use agent_testkit::{bin_path, pid_alive, printed_after, wait_group_gone, wait_pid_gone};

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
            let opts = SpawnOptions::new().arg("ignore-sigterm");
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
    let mut host = agent_testkit::rerun(&agent_testkit::test_name!("host"))
        .env(AGENT_ENV, &agent)
        .env("AGENT_TESTKIT_NO_BUILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The harness prints "test host ... " before our line: search, don't match.
    let Some(pid) = printed_after(&mut host, "AGENT_PID=", Duration::from_secs(60)) else {
        panic!("the host did not print the agent's pid");
    };
    let pid = pid.trim().parse::<u32>().unwrap();
    assert!(pid_alive(pid));
    host.kill().unwrap(); // SIGKILL: no destructor runs in the host
    host.wait().unwrap();
    assert!(
        wait_group_gone(pid, Duration::from_secs(10)),
        "agent {pid} outlived its host"
    );
}

const TREE_DIR_ENV: &str = "HOST_DEATH_TREE_DIR";

#[test]
#[ignore = "run by whole_agent_trees_die_with_their_host as the host process"]
fn tree_host() {
    let agent = std::env::var_os(AGENT_ENV).expect("run by whole_agent_trees_die_with_their_host");
    let dir = std::path::PathBuf::from(std::env::var_os(TREE_DIR_ENV).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conns = Vec::new();
        for i in 0..2 {
            let file = dir.join(format!("tree-{i}"));
            let opts = SpawnOptions::new().arg("fork-tree").arg(file);
            let agent = agent.clone();
            // From a short-lived task, as a host that does not care would.
            let conn = tokio::spawn(async move { spawn(agent.as_ref(), opts).await.unwrap() })
                .await
                .unwrap();
            println!("AGENT_PID={}", conn.pid());
            conns.push(conn);
        }
        println!("TREES_READY");
        std::future::pending::<()>().await;
    });
}

/// `kill -9` of a host: every agent, its children and grandchildren are gone.
#[test]
fn whole_agent_trees_die_with_their_host() {
    let agent = bin_path("test-agent");
    let dir = tempfile::tempdir().unwrap();
    let mut host = agent_testkit::rerun(&agent_testkit::test_name!("tree_host"))
        .env(AGENT_ENV, &agent)
        .env(TREE_DIR_ENV, dir.path())
        .env("AGENT_TESTKIT_NO_BUILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = host.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut agents = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, p)) = line.split_once("AGENT_PID=") {
                agents.push(p.trim().parse::<u32>().unwrap());
            }
            if line.contains("TREES_READY") {
                let _ = tx.send(agents);
                return;
            }
        }
    });
    let Ok(agents) = rx.recv_timeout(Duration::from_secs(120)) else {
        host.kill().unwrap();
        host.wait().unwrap();
        panic!("the host did not start its agents");
    };
    let mut tree: Vec<u32> = agents.clone();
    for i in 0..2 {
        // The agent's helpers append their pids as they start: wait for all
        // four complete lines rather than read a file still being written.
        let path = dir.path().join(format!("tree-{i}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let pids = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let pids: Vec<u32> = text
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect();
            if pids.len() >= 4 || std::time::Instant::now() > deadline {
                break pids;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        tree.extend(pids);
    }
    assert_eq!(tree.len(), 2 + 2 * 4, "{tree:?}");
    for &pid in &tree {
        assert!(pid_alive(pid), "{pid} not running before the kill");
    }
    host.kill().unwrap(); // SIGKILL: no destructor runs in the host
    host.wait().unwrap();
    let start = std::time::Instant::now();
    for &pid in &tree {
        assert!(
            wait_pid_gone(pid, Duration::from_secs(10)),
            "{pid} of an agent tree ({tree:?}) outlived its host"
        );
    }
    // Informational (no timing assertion): how long the trees outlived the host.
    eprintln!("agent trees gone {:?} after the host died", start.elapsed());
}
