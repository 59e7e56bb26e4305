//! The `Manager` across crates: real agents, real cache, the registry of active agents.

use crate::common;

use std::time::{Duration, Instant};

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_manager::{AgentHome, AgentRef, ErrorKind, LoadOptions, Manager};
use common::{Home, manager};

const GONE: Duration = Duration::from_secs(20);

fn r(s: &str) -> AgentRef {
    s.parse().unwrap()
}

/// Restart on every exit, quickly, up to five times.
fn always_restart() -> agent_manager::spawn::RestartPolicy {
    agent_manager::spawn::RestartPolicy {
        mode: agent_manager::spawn::RestartMode::Always,
        max_restarts: 5,
        initial_backoff: Duration::from_millis(10),
        ..agent_manager::spawn::RestartPolicy::default()
    }
}

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + GONE;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test]
async fn load_from_the_cache_call_echo_and_cleanup_all_leaves_nothing() {
    let home = Home::new();
    home.install_echo("0.2.0");
    home.install_echo("0.10.0");
    let m = manager(&home);
    let conn = m.load(&r("echo")).await.unwrap();
    let reply = EchoClient::new(conn.channel())
        .echo(EchoRequest {
            message: "hi".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "hi");
    let active = m.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].unique, "service::codefly.dev/echo:0.10.0");
    assert_eq!(active[0].pid, conn.pid());
    let pid = conn.pid();
    drop(active);
    assert_eq!(
        m.cleanup_all().await,
        1,
        "cleanup closes what the app still holds"
    );
    assert!(conn.has_exited() || agent_testkit::wait_pid_gone(pid, GONE));
    assert!(m.active().is_empty());
    assert!(agent_testkit::wait_group_gone(pid, GONE));
}

#[tokio::test]
async fn cleanup_closes_every_conn_of_one_key_only() {
    let home = Home::new();
    home.install_echo("1.0.0");
    home.install_mode("other", "1.0.0", "serve");
    let m = manager(&home);
    let a = m.load(&r("echo:1.0.0")).await.unwrap();
    let b = m
        .load_with(&r("echo:1.0.0"), LoadOptions::new().unix_socket(true))
        .await
        .unwrap();
    let c = m.load(&r("other")).await.unwrap();
    assert_eq!(m.active().len(), 3);
    let closed = m.cleanup("service::codefly.dev/echo:1.0.0").await;
    assert_eq!(closed, 2);
    assert!(agent_testkit::wait_group_gone(a.pid(), GONE));
    assert!(agent_testkit::wait_group_gone(b.pid(), GONE));
    assert!(agent_testkit::pid_alive(c.pid()));
    let left: Vec<String> = m.active().into_iter().map(|x| x.unique).collect();
    assert_eq!(left, ["service::codefly.dev/other:1.0.0"]);
    assert_eq!(m.cleanup("service::codefly.dev/echo:1.0.0").await, 0);
    m.cleanup_all().await;
    assert!(agent_testkit::wait_group_gone(c.pid(), GONE));
}

#[tokio::test]
async fn a_conn_that_exits_unregisters_itself() {
    let home = Home::new();
    home.install_mode("mortal", "1.0.0", "die-after-load");
    let m = manager(&home);
    let conn = m.load(&r("mortal")).await.unwrap();
    assert_eq!(m.active().len(), 1);
    let info = tokio::time::timeout(GONE, conn.exited()).await.unwrap();
    assert_eq!(info.code, Some(1));
    assert!(wait_for(|| m.active().is_empty()).await, "still registered");
}

#[tokio::test]
async fn load_path_registers_under_the_path() {
    let home = Home::new();
    let echo = common::echo();
    let m = manager(&home);
    let conn = m.load_path(&echo).await.unwrap();
    assert_eq!(m.active()[0].unique, format!("path::{}", echo.display()));
    conn.close().await;
    assert!(wait_for(|| m.active().is_empty()).await);
    let e = m.load_path(&home.path().join("nope")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryNotFound);
}

#[tokio::test]
async fn spawn_failures_keep_their_kind_and_stderr_tail() {
    let home = Home::new();
    home.install_mode("early", "1.0.0", "exit-early");
    let m = manager(&home);
    let e = m.load(&r("early")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AgentExited);
    assert!(e.stderr_tail().unwrap().contains("missing configuration"));
    assert!(m.active().is_empty());
}

#[tokio::test]
async fn pull_reports_the_cached_binary() {
    let home = Home::new();
    let p = home.install_echo("0.5.0");
    let m = manager(&home);
    let got = m.pull(&r("echo")).await.unwrap();
    assert_eq!(got.path, p);
    assert_eq!(got.size, std::fs::metadata(&p).unwrap().len());
    let e = m.pull(&r("echo:9.9.9")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryNotFound);
}

#[tokio::test]
async fn dropping_the_manager_kills_what_it_holds() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let m = manager(&home);
    let pid = m.load(&r("echo")).await.unwrap().pid();
    drop(m);
    assert!(agent_testkit::wait_group_gone(pid, GONE));
}

#[tokio::test]
async fn the_installer_path_is_what_load_uses() {
    let home = Home::new();
    let m = manager(&home);
    let agent = r("codefly.dev/echo:0.7.0");
    let installed = m
        .installer()
        .install_file(&agent, "test", &Default::default(), &common::echo())
        .await
        .unwrap();
    assert_eq!(
        installed.path,
        home.binary("services", "codefly.dev", "echo", "0.7.0")
    );
    let conn = m.load(&r("echo")).await.unwrap();
    assert_eq!(m.active()[0].unique, "service::codefly.dev/echo:0.7.0");
    conn.close().await;
}

/// A cached binary that no longer matches its install record (truncated or
/// swapped behind our back) is never run: with no store to fetch it again,
/// `load` says the binary is not found; the Go loader's unrecorded binaries
/// still load.
#[tokio::test]
async fn a_binary_that_disagrees_with_its_record_is_not_run() {
    let home = Home::new();
    let m = manager(&home);
    let agent = r("codefly.dev/echo:0.8.0");
    let installed = m
        .installer()
        .install_file(&agent, "test", &Default::default(), &common::echo())
        .await
        .unwrap();
    // Replace it with a different, smaller executable that would "load" as an
    // agent-exited failure if it were run.
    common::write_script(&installed.path, "echo tampered >&2\nexit 3\n");
    let err = m.load(&agent).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BinaryNotFound, "{err}");
    assert!(m.active().is_empty());

    // Without a record (as the Go loader installs), the file is taken as is.
    std::fs::remove_file(m.installer().record_path(&agent).unwrap()).unwrap();
    let err = m.load(&agent).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AgentExited, "{err}");
    assert!(err.stderr_tail().unwrap_or_default().contains("tampered"));
}

/// A cached binary rewritten in place between two loads, keeping its size
/// and putting its mtime back, is caught (its ctime moved, so it is hashed)
/// and never run.
#[tokio::test]
async fn a_binary_rewritten_in_place_between_loads_is_not_run() {
    let home = Home::new();
    let cached = home.install_echo("0.9.0");
    let m = manager(&home);
    let agent = r("codefly.dev/echo:0.9.0");
    m.load(&agent).await.unwrap().close().await;

    let marker = home.path().join("rewritten-ran");
    let head = format!("#!/bin/sh\ntouch '{}'\nexit 3\n", marker.display());
    let size = std::fs::metadata(&cached).unwrap().len();
    let mtime = std::fs::metadata(&cached).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&cached)
        .unwrap();
    std::io::Write::write_all(&mut f, head.as_bytes()).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(mtime))
        .unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(&cached).unwrap().len(), size);

    let err = m.load(&agent).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BinaryNotFound, "{err}");
    assert!(!marker.exists(), "the rewritten binary ran");
    assert!(m.active().is_empty());
}

/// A restart after the cached binary was touched but not changed (a chmod
/// moves its ctime) hashes it, finds the recorded bytes, and restarts.
#[tokio::test]
async fn a_restart_after_a_harmless_touch_hashes_and_runs() {
    let home = Home::new();
    let cached = home.install_echo("1.1.0");
    let m = manager(&home);
    let conn = m
        .load_with(
            &r("echo:1.1.0"),
            LoadOptions::new().restart(always_restart()),
        )
        .await
        .unwrap();
    std::fs::set_permissions(&cached, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let first = conn.pid();
    // SAFETY: the test's own agent.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(i32::try_from(first).unwrap(), libc::SIGKILL);
    }
    assert!(
        wait_for(|| conn.pid() != first || conn.failure().is_some()).await,
        "no restart"
    );
    assert!(conn.failure().is_none(), "{:?}", conn.failure());
    let reply = EchoClient::new(conn.channel())
        .echo(EchoRequest {
            message: "again".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "again");
    conn.close().await;
}

/// Drop semantics: by default the registry lists an agent but
/// does not keep it alive; dropping the app's last handle stops it.
#[tokio::test]
async fn an_agent_dies_with_the_apps_last_handle_even_while_listed() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let m = manager(&home);
    let conn = m.load(&r("echo")).await.unwrap();
    let pid = conn.pid();
    let copy = conn.clone();
    drop(conn);
    assert!(agent_testkit::pid_alive(pid), "a clone still holds it");
    drop(copy);
    assert!(
        agent_testkit::wait_group_gone(pid, GONE),
        "the registry kept it alive"
    );
    assert!(wait_for(|| m.active().is_empty()).await);
    assert_eq!(m.cleanup_all().await, 0);
}

/// `LoadOptions::managed(true)` (go-plugin's `Managed`): the registry owns
/// the agent until `cleanup`, and the Go loader's `Cleanup(unique)` still works.
#[tokio::test]
async fn a_managed_agent_lives_until_cleanup() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let m = manager(&home);
    let pid = m
        .load_with(&r("echo"), LoadOptions::new().managed(true))
        .await
        .unwrap()
        .pid();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(agent_testkit::pid_alive(pid), "the registry owns it");
    assert_eq!(m.active()[0].pid, pid);
    assert_eq!(m.cleanup("service::codefly.dev/echo:0.1.0").await, 1);
    assert!(agent_testkit::wait_group_gone(pid, GONE));
    assert!(m.active().is_empty());
}

/// A stderr sink in the builder's defaults reaches every load,
/// and a per-load sink replaces it.
#[tokio::test]
async fn the_default_stderr_sink_applies_to_every_load() {
    let home = Home::new();
    home.install_mode("early", "1.0.0", "exit-early");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let s = seen.clone();
    let m = Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(Vec::new())
        .load_defaults(
            LoadOptions::new().stderr_sink(move |b| s.lock().unwrap().extend_from_slice(b)),
        )
        .build()
        .unwrap();
    let e = m.load(&r("early")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AgentExited);
    assert!(
        wait_for(
            || String::from_utf8_lossy(&seen.lock().unwrap()).contains("missing configuration")
        )
        .await,
        "the default sink saw nothing"
    );
    let own = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let o = own.clone();
    seen.lock().unwrap().clear();
    let _ = m
        .load_with(
            &r("early"),
            LoadOptions::new().stderr_sink(move |b| o.lock().unwrap().extend_from_slice(b)),
        )
        .await
        .unwrap_err();
    assert!(
        wait_for(|| String::from_utf8_lossy(&own.lock().unwrap()).contains("missing configuration"))
            .await
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the per-load sink replaces the default"
    );
}

/// The agent's own environment, as the kernel gave it at exec.
fn agent_environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

const SECRETS: [&str; 4] = [
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "AGENT_REGISTRY_USERNAME",
    "AGENT_REGISTRY_PASSWORD",
];

/// Credentials never reach agents: with the store credentials
/// set in the manager's own environment, a loaded agent-echo's environment
/// has none of them; an allowlist clears the rest too. Runs in a child
/// process (the `#[ignore]`d helper below) so that setting the variables
/// races no other test.
#[test]
fn store_credentials_in_the_hosts_environment_never_reach_an_agent() {
    let mut c = agent_testkit::rerun(&agent_testkit::test_name!("credentials_child"));
    for v in SECRETS {
        c.env(v, format!("secret-{v}"));
    }
    c.env("EXTRA_UNLISTED_VAR", "kept-unless-allowlisted");
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the helper did not run:\n{text}");
}

/// The child of the test above (not a test by itself: it needs the variables).
#[tokio::test]
#[ignore = "helper: run by store_credentials_in_the_hosts_environment_never_reach_an_agent"]
async fn credentials_child() {
    for v in SECRETS {
        assert!(std::env::var_os(v).is_some(), "{v} not set for the child");
    }
    let home = Home::new();
    home.install_echo("0.1.0");
    let m = manager(&home);
    let conn = m.load(&r("echo")).await.unwrap();
    let env = agent_environ(conn.pid());
    for v in SECRETS {
        assert!(
            !env.iter().any(|e| e.starts_with(&format!("{v}="))),
            "{v} reached the agent: {env:?}"
        );
    }
    assert!(
        env.iter()
            .any(|e| e == "EXTRA_UNLISTED_VAR=kept-unless-allowlisted")
    );
    assert!(env.iter().any(|e| e.starts_with("CODEFLY_AGENT_TOKEN=")));
    conn.close().await;

    // With an allowlist, only the listed variables (and the agent's own) remain.
    let conn = m
        .load_with(
            &r("echo"),
            LoadOptions::new()
                .env_allowlist(["MY_APP_*"])
                .env("MY_APP_MODE", "test"),
        )
        .await
        .unwrap();
    let env = agent_environ(conn.pid());
    assert!(
        !env.iter().any(|e| e.starts_with("EXTRA_UNLISTED_VAR=")),
        "{env:?}"
    );
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert!(env.iter().any(|e| e == "MY_APP_MODE=test"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("CODEFLY_AGENT_TOKEN=")));
    for v in SECRETS {
        assert!(
            !env.iter().any(|e| e.starts_with(&format!("{v}="))),
            "{env:?}"
        );
    }
    conn.close().await;
}

/// A supervised agent's restart runs only what the cache still vouches for:
/// a binary replaced behind the host's back while the agent ran is refused
/// (`integrity`), and the replacement never runs.
#[tokio::test]
async fn a_restart_never_runs_a_cached_binary_that_changed() {
    let home = Home::new();
    let cached = home.install_echo("1.0.0");
    let m = manager(&home);
    let conn = m
        .load_with(
            &r("echo:1.0.0"),
            LoadOptions::new().restart(always_restart()),
        )
        .await
        .unwrap();
    let marker = home.path().join("replacement-ran");
    let fake = home.path().join("fake");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch '{}'\nexec sleep 30\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&fake, &cached).unwrap();
    let pid = i32::try_from(conn.pid()).unwrap();
    // SAFETY: the test's own agent.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert!(
        wait_for(|| conn.failure().is_some()).await,
        "supervision went on"
    );
    let gave_up = conn.failure().unwrap();
    assert_eq!(gave_up.kind(), ErrorKind::Integrity, "{gave_up:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "the replaced binary ran");
}

/// On a multi-thread runtime a load runs as a task of the runtime. Awaited
/// from the thread that runs `block_on` (as a `#[tokio::main]` function
/// does), its events still reach that thread's own subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_awaited_off_the_workers_logs_to_the_callers_subscriber() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let logs = agent_testkit::logs::LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let m = manager(&home);
    let conn = m.load(&r("echo")).await.unwrap();
    let text = logs.text();
    assert!(
        text.contains("agent ready") && text.contains("load{agent=codefly.dev/echo:latest}"),
        "the load's events, in its span, on the caller's subscriber:\n{text}"
    );
    conn.close().await;
}

/// Options that start the test agent in `pid-then-hang` mode (it writes its
/// pid to `pid_file` and never says its handshake) with a startup timeout
/// no test waits for: only the load's own end can stop it.
fn pid_then_hang(pid_file: &std::path::Path) -> LoadOptions {
    LoadOptions::new()
        .arg("pid-then-hang")
        .arg(pid_file.as_os_str())
        .startup_timeout(Duration::from_secs(600))
}

/// A load dropped before the agent is ready (a timeout around it) on a
/// multi-thread runtime kills and reaps the agent it started, long before the
/// load's own startup timeout, and lists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_dropped_mid_start_on_a_multi_thread_runtime_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let home = Home::new();
    let m = manager(&home);
    let opts = pid_then_hang(&pid_file);
    let agent = common::test_agent();
    let load = m.load_path_with(&agent, opts);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), load)
            .await
            .is_err(),
        "the agent never says its handshake: the load must still be waiting"
    );
    let mut pid = None;
    assert!(
        wait_for(|| {
            pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            pid.is_some()
        })
        .await,
        "the agent wrote no pid"
    );
    let pid = pid.unwrap();
    assert!(
        agent_testkit::agent::wait_gone(pid).await,
        "agent {pid} still runs after its load was dropped"
    );
    assert!(m.active().is_empty(), "{:?}", m.active());
}

/// A load whose runtime shuts down under it (awaited through `Handle::block_on`
/// from a thread of the caller's own) ends with an `io` error that says so,
/// instead of waiting for ever, and the agent it started is killed.
#[test]
fn a_load_whose_runtime_shuts_down_ends_with_an_error_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let home = Home::new();
    let m = manager(&home);
    let opts = pid_then_hang(&pid_file);
    let handle = rt.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let agent = common::test_agent();
        let _ = tx.send(
            handle
                .block_on(m.load_path_with(&agent, opts))
                .map(|c| c.pid()),
        );
    });
    let deadline = Instant::now() + GONE;
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the agent wrote no pid");
        std::thread::sleep(Duration::from_millis(20));
    };
    rt.shutdown_background();
    let result = rx
        .recv_timeout(GONE)
        .expect("the load still waits after its runtime shut down");
    let err = result.expect_err("the agent never says its handshake");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let chain = agent_manager::reference::error_chain(&err).to_string();
    assert!(chain.contains("shutting down"), "{chain}");
    let deadline = Instant::now() + GONE;
    while !agent_testkit::agent::exited(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        agent_testkit::agent::exited(pid),
        "agent {pid} outlived its load's runtime"
    );
}
