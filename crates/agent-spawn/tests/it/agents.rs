//! Real agent processes, one per misbehaviour: each test asserts the error
//! kind a user sees, the stderr tail where it matters, and that no process of
//! the agent's group is left.

use std::path::PathBuf;
use std::time::Duration;

use agent_echo::pb::echo_client::EchoClient;
use agent_echo::pb::{EchoRequest, InfoRequest};
use agent_ref::ErrorKind;
use agent_spawn::{AgentConn, Endpoint, SpawnError, SpawnOptions, spawn};
use agent_testkit::{bin_path, group_alive, wait_group_gone, wait_pid_gone};

/// Generous upper bound for things that take milliseconds.
const GONE: Duration = Duration::from_secs(10);

fn test_agent() -> PathBuf {
    bin_path("test-agent")
}

fn opts(mode: &str) -> SpawnOptions {
    timeouts().arg(mode)
}

fn timeouts() -> SpawnOptions {
    SpawnOptions::new()
        .startup_timeout(Duration::from_secs(20))
        .dial_timeout(Duration::from_secs(20))
        .grace(Duration::from_millis(300))
}

async fn load(mode: &str) -> AgentConn {
    spawn(&test_agent(), opts(mode))
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e} (stderr: {:?})", e.stderr_tail()))
}

async fn fail(mode: &str, o: SpawnOptions) -> SpawnError {
    match spawn(&test_agent(), o).await {
        Ok(conn) => {
            conn.close().await;
            panic!("{mode} loaded");
        }
        Err(e) => {
            let pid = e.pid().expect("the agent had started");
            assert!(
                !group_alive(pid),
                "{mode}: group {pid} left after the error"
            );
            e
        }
    }
}

fn assert_gone(pid: u32) {
    assert!(wait_group_gone(pid, GONE), "group {pid} still alive");
}

async fn echo(conn: &AgentConn, message: &str) -> String {
    let mut client = EchoClient::new(conn.channel());
    let reply = client
        .echo(EchoRequest {
            message: message.into(),
        })
        .await
        .unwrap();
    reply.into_inner().message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_early_reports_status_and_stderr() {
    let e = fail("exit-early", opts("exit-early")).await;
    assert_eq!(e.kind(), ErrorKind::AgentExited);
    assert!(e.to_string().contains("exit status 3"), "{e}");
    let tail = e.stderr_tail().expect("stderr tail");
    assert!(tail.contains("missing configuration"), "{tail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_is_a_handshake_timeout() {
    let o = opts("hang").startup_timeout(Duration::from_millis(300));
    let e = fail("hang", o).await;
    assert_eq!(e.kind(), ErrorKind::HandshakeTimeout);
    assert!(e.to_string().contains("300ms"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_malformed_and_quoted() {
    let e = fail("garbage", opts("garbage")).await;
    assert_eq!(e.kind(), ErrorKind::HandshakeMalformed);
    assert!(e.to_string().contains("hello world"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_names_the_accepted_ones() {
    let e = fail("wrong-version", opts("wrong-version")).await;
    assert_eq!(e.kind(), ErrorKind::VersionMismatch);
    let msg = e.to_string();
    assert!(msg.contains("version 9") && msg.contains("1, 2"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_is_refused() {
    let e = fail("non-loopback", opts("non-loopback")).await;
    assert_eq!(e.kind(), ErrorKind::HandshakeMalformed);
    assert!(e.to_string().contains("10.1.2.3"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_unix_path_is_refused() {
    let e = fail("relative-unix", opts("relative-unix")).await;
    assert_eq!(e.kind(), ErrorKind::HandshakeMalformed);
    assert!(e.to_string().contains("rel.sock"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_line_is_refused_and_truncated() {
    let e = fail("overlong-line", opts("overlong-line")).await;
    assert_eq!(e.kind(), ErrorKind::HandshakeMalformed);
    let msg = e.to_string();
    assert!(
        msg.contains("xxxx") && msg.len() < 600,
        "{} bytes",
        msg.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_dial_timeout() {
    let o = opts("no-listener").dial_timeout(Duration::from_millis(500));
    let e = fail("no-listener", o).await;
    assert_eq!(e.kind(), ErrorKind::DialTimeout);
    assert!(e.to_string().contains("127.0.0.1:"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_is_reported() {
    let o = opts("not-serving").dial_timeout(Duration::from_millis(500));
    let e = fail("not-serving", o).await;
    assert_eq!(e.kind(), ErrorKind::NotServing);
    assert!(e.to_string().contains("NOT_SERVING"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_is_a_spawn_error() {
    let e = spawn(
        std::path::Path::new("/nonexistent/agent"),
        SpawnOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spawn);
    assert!(e.to_string().contains("/nonexistent/agent"), "{e}");
    assert_eq!(e.pid(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_health_is_not_serving() {
    // Only SERVING is ready: a server without grpc.health.v1 fails at once,
    // not after the dial timeout, and says why.
    let started = std::time::Instant::now();
    let e = fail("no-health", opts("no-health")).await;
    assert_eq!(e.kind(), ErrorKind::NotServing, "{e}");
    assert!(e.to_string().contains("no grpc.health.v1 service"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_flood_does_not_block() {
    // The agent writes 8 MiB to stdout before it serves: it only becomes
    // ready because the host drains stdout, and it keeps flooding afterwards.
    let conn = load("stdout-flood").await;
    for i in 0..20 {
        assert_eq!(echo(&conn, &format!("m{i}")).await, format!("m{i}"));
    }
    conn.close().await;
    assert_gone(conn.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_sigterm_is_killed_after_grace() {
    let conn = load("ignore-sigterm").await;
    let exit = conn.close().await;
    assert_eq!(exit.signal, Some(libc_sigkill()), "{exit}");
    assert_gone(conn.pid());
}

/// A helper that called `setsid` left the group; on the pidfd backend `close`
/// still stops it (the portable backend cannot reach it: documented).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(unsafe_code)]
async fn a_setsid_helper_is_gone_after_close() {
    let conn = load("setsid-helper").await;
    let mut helper = None;
    for _ in 0..500 {
        helper = conn
            .stderr_tail()
            .lines()
            .find_map(|l| l.strip_prefix("helper pid ")?.parse::<i32>().ok());
        // SAFETY: getsid only reads.
        if helper.is_some_and(|h| unsafe { libc::getsid(h) } == h) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let helper = helper.expect("the helper's pid on stderr");
    // SAFETY: getsid only reads.
    assert_eq!(
        // SAFETY: getsid only reads.
        unsafe { libc::getsid(helper) },
        helper,
        "not in its own session"
    );
    conn.close().await;
    let pid = helper.unsigned_abs();
    if agent_process::backend() == "pidfd" {
        assert!(
            wait_pid_gone(pid, GONE),
            "the setsid helper {pid} survived close"
        );
    } else {
        // SAFETY: our test's own helper, still alive on this backend.
        unsafe { libc::kill(helper, libc::SIGKILL) };
    }
}

fn libc_sigkill() -> i32 {
    9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_ignoring_sigterm_are_gone_after_close() {
    let conn = load("fork-grandchildren").await;
    // The children's pids are on stderr before the handshake; the stderr
    // reader may still be catching up.
    let mut pids = Vec::new();
    for _ in 0..500 {
        pids = conn
            .stderr_tail()
            .lines()
            .filter_map(|l| l.strip_prefix("child pid ")?.parse::<u32>().ok())
            .collect();
        if pids.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pids.len(), 3, "{}", conn.stderr_tail());
    for &pid in &pids {
        assert!(agent_testkit::pid_alive(pid));
        assert!(agent_testkit::group_members(conn.pid()).any(|p| p == pid));
    }
    let exit = conn.close().await;
    assert_eq!(exit.signal, Some(15), "the leader obeys SIGTERM: {exit}");
    for pid in pids {
        assert!(wait_pid_gone(pid, GONE), "grandchild {pid} survived close");
    }
    assert_gone(conn.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exited_fires_when_the_agent_dies() {
    let conn = load("die-after-load").await;
    assert!(!conn.has_exited());
    let exit = tokio::time::timeout(GONE, conn.exited()).await.unwrap();
    assert_eq!(exit.code, Some(1));
    assert!(conn.has_exited());
    assert!(conn.stderr_tail().contains("dying on purpose"));
    // close after death is fine and answers the same.
    assert_eq!(conn.close().await, exit);
    assert_gone(conn.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_closes_agree() {
    let conn = load("serve").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = conn.clone();
        tasks.push(tokio::spawn(async move { c.close().await }));
    }
    let mut exits = Vec::new();
    for t in tasks {
        exits.push(t.await.unwrap());
    }
    assert!(exits.windows(2).all(|w| w[0] == w[1]), "{exits:?}");
    assert_eq!(exits[0].signal, Some(15));
    assert_eq!(conn.close().await, exits[0]);
    assert_gone(conn.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_without_close_kills_the_group() {
    let conn = load("serve").await;
    let clone = conn.clone();
    let pid = conn.pid();
    let exited = conn.exited();
    drop(conn);
    assert!(group_alive(pid), "a clone is still held");
    assert_eq!(echo(&clone, "still here").await, "still here");
    drop(clone);
    assert_gone(pid);
    let exit = tokio::time::timeout(GONE, exited).await.unwrap();
    assert_eq!(exit.signal, Some(9), "{exit}");
}

// Finds the agent by its command line in `/proc`.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_spawn_future_kills_the_agent() {
    let marker = format!("cancel-marker-{}", std::process::id());
    let o = opts("hang").arg(marker.clone());
    let r = tokio::time::timeout(Duration::from_millis(500), spawn(&test_agent(), o)).await;
    assert!(r.is_err(), "hang must not load");
    let mine = |_: ()| {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains(&marker)
                    && e.file_name()
                        .to_str()
                        .and_then(|p| p.parse().ok())
                        .is_some_and(agent_testkit::pid_alive)
            })
        })
    };
    assert!(agent_testkit::wait_until_gone(GONE, || mine(())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_mode_works_and_is_cleaned_up() {
    use std::os::unix::fs::PermissionsExt;
    for program in [test_agent(), bin_path("agent-echo")] {
        let o = if program.ends_with("agent-echo") {
            timeouts()
        } else {
            opts("serve")
        };
        let o = o.unix_socket(true);
        let conn = spawn(&program, o).await.unwrap();
        let Endpoint::Unix(path) = conn.endpoint().clone() else {
            panic!("expected a unix endpoint, got {}", conn.endpoint());
        };
        let dir = path.parent().unwrap().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        assert!(conn.endpoint().to_string().starts_with("unix:/"));
        assert_eq!(echo(&conn, "over uds").await, "over uds");
        conn.close().await;
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert_gone(conn.pid());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_and_sent() {
    let conn = load("token").await;
    assert_eq!(conn.token().len(), 64);
    let mut raw = EchoClient::new(conn.raw_channel());
    let denied = raw
        .echo(EchoRequest {
            message: "no token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    assert_eq!(echo(&conn, "with token").await, "with token");
    let info = EchoClient::new(conn.channel())
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.token_required);
    assert_eq!(info.pid, conn.pid());
    conn.close().await;
    assert_gone(conn.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_echo_loads_with_both_protocols_and_a_workdir() {
    let workdir = tempfile::tempdir().unwrap();
    for (args, version) in [(vec![], 2), (vec!["--protocol", "1"], 1)] {
        let o = SpawnOptions::new()
            .args(args)
            .workdir(workdir.path().to_path_buf());
        let conn = spawn(&bin_path("agent-echo"), o).await.unwrap();
        assert_eq!(conn.protocol_version(), version);
        assert!(matches!(conn.endpoint(), Endpoint::Tcp(a) if a.ip().is_loopback()));
        let info = EchoClient::new(conn.channel())
            .info(InfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.workdir, workdir.path().to_str().unwrap());
        assert_eq!(info.ppid, std::process::id());
        let exit = conn.close().await;
        assert!(exit.success(), "graceful stop: {exit}");
        assert_gone(conn.pid());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_sink_receives_a_copy() {
    let copy = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = copy.clone();
    let o = opts("exit-early").stderr_sink(move |b: &[u8]| {
        // Never called on an async worker thread.
        assert!(tokio::runtime::Handle::try_current().is_err());
        into.lock().unwrap().extend_from_slice(b);
    });
    let e = fail("exit-early", o).await;
    let copied = String::from_utf8(copy.lock().unwrap().clone()).unwrap();
    assert_eq!(Some(copied.as_str()), e.stderr_tail());
}

/// `close()` escalates to SIGKILL even when the runtime that spawned the agent
/// has shut down (the grace deadline is kept by the reaper thread, not a timer
/// of that runtime).
#[test]
fn close_after_the_spawning_runtime_shut_down_still_escalates() {
    let rt1 = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let conn = rt1.block_on(load("ignore-sigterm"));
    drop(rt1);
    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exit = rt2.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), conn.close())
            .await
            .expect("close returns")
    });
    assert_eq!(exit.signal, Some(libc_sigkill()), "{exit}");
    assert_gone(conn.pid());
}
