//! A host killed with SIGKILL leaves its agents' socket directory behind; the
//! next host's first unix-socket load removes it, and leaves alone a live
//! host's directory, another user's, and anything not named as ours.
//!
//! The test re-runs this test binary as the host (the ignored `host` test),
//! which loads an agent in unix-socket mode, prints its socket directory and
//! waits to be killed.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_spawn::{Endpoint, SpawnOptions, spawn};
use agent_testkit::{bin_path, printed_after, wait_group_gone};

const AGENT_ENV: &str = "STALE_SOCKETS_TEST_AGENT";

fn opts() -> SpawnOptions {
    SpawnOptions::new()
        .arg("serve")
        .unix_socket(true)
        .startup_timeout(Duration::from_secs(20))
        .dial_timeout(Duration::from_secs(20))
}

#[test]
#[ignore = "run by a_killed_hosts_socket_directory_is_swept as the host process"]
fn host() {
    let agent = std::env::var_os(AGENT_ENV).expect("run by the sweep test");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = spawn(Path::new(&agent), opts()).await.unwrap();
        let Endpoint::Unix(socket) = conn.endpoint() else {
            panic!("not a unix socket")
        };
        println!(
            "SOCKET_DIR={} AGENT_PID={}",
            socket.parent().unwrap().display(),
            conn.pid()
        );
        std::future::pending::<()>().await;
    });
}

fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn fake_dir(tmp: &Path, name: &str, host: &str) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("host"), host).unwrap();
    dir
}

#[tokio::test]
async fn a_killed_hosts_socket_directory_is_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = bin_path("test-agent");
    let mut host = agent_testkit::rerun(&agent_testkit::test_name!("host"))
        .env(AGENT_ENV, &agent)
        .env("TMPDIR", tmp.path())
        .env("AGENT_TESTKIT_NO_BUILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let Some(rest) = printed_after(&mut host, "SOCKET_DIR=", Duration::from_secs(60)) else {
        panic!("the host did not print its socket directory");
    };
    let (dir, pid) = rest.split_once(" AGENT_PID=").unwrap();
    let (killed_dir, agent_pid) = (PathBuf::from(dir), pid.trim().parse::<u32>().unwrap());
    let host_pid = host.id();
    host.kill().unwrap(); // SIGKILL: no destructor runs in the host
    host.wait().unwrap();
    assert!(wait_group_gone(agent_pid, Duration::from_secs(10)));
    assert_eq!(killed_dir.parent().unwrap(), tmp.path());
    assert!(
        killed_dir.join("agent.sock").exists(),
        "left behind by the killed host"
    );

    // A live host's directory (a real process, its real start time).
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    let live_pid = live.id();
    let live_dir = fake_dir(
        tmp.path(),
        &format!("agent-h{live_pid}-aaaaaa"),
        &format!("{live_pid} {}\n", start_time(live_pid)),
    );
    // The same pid, but another process than the one that made the directory.
    let recycled_dir = fake_dir(
        tmp.path(),
        &format!("agent-h{live_pid}-bbbbbb"),
        &format!("{live_pid} 1\n"),
    );
    // A dead host's directory that belongs to another user.
    let foreign_dir = fake_dir(
        tmp.path(),
        &format!("agent-h{host_pid}-cccccc"),
        &format!("{host_pid} 1\n"),
    );
    let foreign_owned = std::os::unix::fs::chown(&foreign_dir, Some(65534), Some(65534)).is_ok();
    // Not a socket directory's name at all.
    let other = tmp.path().join("agent-hx");
    std::fs::create_dir(&other).unwrap();

    // This process becomes the next host: its first unix-socket load sweeps.
    // SAFETY: the only test of this binary that runs by default; nothing
    // else reads the environment concurrently.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("TMPDIR", tmp.path());
    }
    let conn = spawn(&agent, opts()).await.unwrap();
    let Endpoint::Unix(socket) = conn.endpoint() else {
        panic!("not a unix socket")
    };
    assert!(socket.starts_with(tmp.path()), "{}", socket.display());

    assert!(!killed_dir.exists(), "the killed host's directory was left");
    assert!(
        !recycled_dir.exists(),
        "a recycled pid kept a dead host's directory"
    );
    assert!(live_dir.exists(), "a live host's directory was removed");
    assert!(other.exists());
    if foreign_owned {
        assert_eq!(std::fs::metadata(&foreign_dir).unwrap().uid(), 65534);
        assert!(foreign_dir.exists(), "another user's directory was removed");
    }
    conn.close().await;
    live.kill().unwrap();
    live.wait().unwrap();
}
