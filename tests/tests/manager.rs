//! The `Manager` across crates: real agents, real cache, the registry of active agents.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_manager::{AgentHome, AgentRef, ErrorKind, LoadOptions, Manager};
use common::Home;

const GONE: Duration = Duration::from_secs(20);

fn manager(home: &Home) -> Manager {
    Manager::builder()
        .home(AgentHome::new(home.path()))
        .stores(Vec::new())
        .build()
        .unwrap()
}

fn r(s: &str) -> AgentRef {
    s.parse().unwrap()
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
    let conn = m.load(&r("echo"), LoadOptions::new()).await.unwrap();
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
    drop(conn);
    assert!(agent_testkit::pid_alive(pid), "the registry keeps it alive");
    assert_eq!(m.cleanup_all().await, 1);
    assert!(m.active().is_empty());
    assert!(agent_testkit::wait_group_gone(pid, GONE));
}

#[tokio::test]
async fn cleanup_closes_every_conn_of_one_key_only() {
    let home = Home::new();
    home.install_echo("1.0.0");
    home.install_mode("other", "1.0.0", "serve");
    let m = manager(&home);
    let a = m.load(&r("echo:1.0.0"), LoadOptions::new()).await.unwrap();
    let b = m
        .load(&r("echo:1.0.0"), LoadOptions::new().unix_socket(true))
        .await
        .unwrap();
    let c = m.load(&r("other"), LoadOptions::new()).await.unwrap();
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
    let conn = m.load(&r("mortal"), LoadOptions::new()).await.unwrap();
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
    let conn = m.load_path(&echo, LoadOptions::new()).await.unwrap();
    assert_eq!(m.active()[0].unique, format!("path::{}", echo.display()));
    conn.close().await;
    assert!(wait_for(|| m.active().is_empty()).await);
    let e = m
        .load_path(&home.path().join("nope"), LoadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BinaryNotFound);
}

#[tokio::test]
async fn spawn_failures_keep_their_kind_and_stderr_tail() {
    let home = Home::new();
    home.install_mode("early", "1.0.0", "exit-early");
    let m = manager(&home);
    let e = m.load(&r("early"), LoadOptions::new()).await.unwrap_err();
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
    let pid = m.load(&r("echo"), LoadOptions::new()).await.unwrap().pid();
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
    let conn = m.load(&r("echo"), LoadOptions::new()).await.unwrap();
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
    let err = m.load(&agent, LoadOptions::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BinaryNotFound, "{err}");
    assert!(m.active().is_empty());

    // Without a record (as the Go loader installs), the file is taken as is.
    std::fs::remove_file(m.installer().record_path(&agent).unwrap()).unwrap();
    let err = m.load(&agent, LoadOptions::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AgentExited, "{err}");
    assert!(err.stderr_tail().unwrap_or_default().contains("tampered"));
}
