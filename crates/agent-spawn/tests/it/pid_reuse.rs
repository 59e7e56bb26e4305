//! Signals only ever reach our own processes: an agent's pid recycled on
//! purpose (in a fresh pid namespace, `ns_last_pid`) for an unrelated process
//! group, which must survive `close()` of the old agent's handle.
//!
//! The test re-runs this binary as pid 1 of a new pid namespace
//! (`unshare --pid --fork --mount-proc`, root only; skipped otherwise), where
//! writing `/proc/sys/kernel/ns_last_pid` picks the next pid.
// Pid namespaces and `/proc`: Linux only by nature.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_spawn::{SpawnOptions, spawn};
use agent_testkit::bin_path;

const MARK: &str = "UNRELATED-GROUP-SURVIVED";

#[test]
#[ignore = "run by an_unrelated_group_with_a_recycled_id_survives inside a pid namespace"]
fn recycled_host() {
    // 1. An agent, spawned on a runtime that then shuts down (its timers and
    //    tasks are gone: whatever still has to happen must not depend on them).
    let rt1 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let opts = SpawnOptions::new()
        .arg("serve")
        .grace(Duration::from_secs(5));
    let conn = rt1.block_on(spawn(&bin_path("test-agent"), opts)).unwrap();
    drop(rt1);
    let pid = conn.pid();
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // 2. It dies and is reaped: its pid is free again.
    // SAFETY: kill of our own agent, alive until this signal (its pid is ours).
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    rt2.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "agent {pid} was never reaped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // 3. An unrelated process group gets the same id.
    let mut unrelated = None;
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = Command::new("/bin/sleep")
            .arg("1000")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        if child.id() == pid {
            unrelated = Some(child);
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut unrelated = unrelated.expect("could not recycle the pid");

    // 4. The old handle is closed and dropped: nothing may reach the new group.
    let exit = rt2.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), conn.close())
            .await
            .expect("close returns")
    });
    drop(conn);
    std::thread::sleep(Duration::from_millis(200));
    let status = unrelated.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the unrelated group {pid} was signalled: {status:?} (agent exit: {exit})"
    );
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
    println!("{MARK}");
}

#[test]
fn an_unrelated_group_with_a_recycled_id_survives() {
    // SAFETY: geteuid only reads.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (a pid namespace and ns_last_pid)");
        return;
    }
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `unshare --pid --fork --mount-proc` is not available");
        return;
    }
    let _built = bin_path("test-agent");
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .env("AGENT_TESTKIT_NO_BUILD", "1")
        .arg(std::env::current_exe().unwrap())
        .args(agent_testkit::rerun_args(&agent_testkit::test_name!(
            "recycled_host"
        )))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(MARK),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}
