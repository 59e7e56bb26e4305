//! agent-serve's contract, checked on a real agent process: the `agent-echo`
//! binary (built on demand with the cargo running these tests).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use support::{KillOnDrop, TOKEN, start, start_under_shell, wait_gone};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The `agent-echo` binary beside this test's target directory, built (or
/// found up to date) once per test run by the cargo that runs the tests.
fn agent_echo() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // …/target/<profile>/deps/serve-HASH
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "agent-echo",
            "--bin",
            "agent-echo",
        ])
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p agent-echo");
        assert!(status.success(), "cargo build -p agent-echo failed");
        let bin = profile_dir.join("agent-echo");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
}

/// A call to a service the router does not have: `Unauthenticated` when the
/// token layer stops it, `Unimplemented` when it reaches the router.
async fn call_unknown_service(channel: Channel, token: Option<&str>) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(());
    if let Some(t) = token {
        req.metadata_mut()
            .insert("x-codefly-token", t.parse().unwrap());
    }
    let path = http::uri::PathAndQuery::from_static("/codefly.test.v1.Nothing/Call");
    grpc.unary::<(), (), _>(req, path, tonic_prost::ProstCodec::default())
        .await
        .unwrap_err()
        .code()
}

async fn health(channel: Channel) -> ServingStatus {
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check without a token")
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test]
async fn protocol_2_handshake_names_a_loopback_port_that_serves_health() {
    let mut agent = start(agent_echo(), &[], &[]).await;
    let port = agent
        .handshake
        .strip_prefix("2|dns:///127.0.0.1:")
        .unwrap_or_else(|| panic!("protocol-2 TCP form, got {:?}", agent.handshake));
    let port: u16 = port.parse().expect("only a port after the address");
    assert_ne!(port, 0);
    assert_eq!(health(agent.channel().await).await, ServingStatus::Serving);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
    assert_eq!(
        agent.rest_of_stdout().await,
        Vec::<String>::new(),
        "one handshake line only"
    );
}

#[tokio::test]
async fn protocol_1_handshake_is_the_bare_port() {
    let mut agent = start(agent_echo(), &["--protocol", "1"], &[]).await;
    let port: u16 = agent
        .handshake
        .strip_prefix("1|")
        .unwrap_or_else(|| panic!("protocol-1 form, got {:?}", agent.handshake))
        .parse()
        .expect("1|PORT");
    assert_ne!(port, 0);
    assert_eq!(health(agent.channel().await).await, ServingStatus::Serving);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn token_layer_covers_every_service_but_health() {
    let mut agent = start(agent_echo(), &[], &[("CODEFLY_AGENT_TOKEN", TOKEN)]).await;
    let ch = agent.channel().await;
    assert_eq!(
        call_unknown_service(ch.clone(), None).await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        call_unknown_service(ch.clone(), Some(&TOKEN.replace('8', "9"))).await,
        tonic::Code::Unauthenticated
    );
    // With the token the call passes the layer and reaches the router.
    assert_eq!(
        call_unknown_service(ch.clone(), Some(TOKEN)).await,
        tonic::Code::Unimplemented
    );
    assert_eq!(health(ch).await, ServingStatus::Serving);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn without_a_token_nothing_is_enforced() {
    let mut agent = start(agent_echo(), &[], &[]).await;
    let ch = agent.channel().await;
    assert_eq!(
        call_unknown_service(ch, None).await,
        tonic::Code::Unimplemented
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn unix_socket_mode_binds_the_given_path_0600_and_removes_it() {
    let dir = support::socket_dir();
    let path = support::socket_path(&dir);
    let mut agent = start(
        agent_echo(),
        &[],
        &[("CODEFLY_AGENT_UDS_PATH", path.to_str().unwrap())],
    )
    .await;
    assert_eq!(agent.handshake, format!("2|unix:{}", path.display()));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(health(agent.channel().await).await, ServingStatus::Serving);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
    assert!(!path.exists(), "the agent removes the socket it created");
}

#[tokio::test]
async fn unix_socket_with_protocol_1() {
    let dir = support::socket_dir();
    let path = support::socket_path(&dir);
    let mut agent = start(
        agent_echo(),
        &["--protocol=1"],
        &[("CODEFLY_AGENT_UDS_PATH", path.to_str().unwrap())],
    )
    .await;
    assert_eq!(agent.handshake, format!("1|unix:{}", path.display()));
    assert_eq!(health(agent.channel().await).await, ServingStatus::Serving);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn an_existing_file_at_the_socket_path_is_left_alone() {
    let dir = support::socket_dir();
    let path = support::socket_path(&dir);
    std::fs::write(&path, b"not ours").unwrap();
    let (status, stdout, stderr) = support::run_to_exit(
        agent_echo(),
        &[],
        &[("CODEFLY_AGENT_UDS_PATH", path.to_str().unwrap())],
    )
    .await;
    assert!(!status.success());
    assert_eq!(stdout, "", "no handshake when nothing listens");
    assert!(
        stderr.contains("cannot listen on unix:"),
        "stderr: {stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"not ours");
}

#[tokio::test]
async fn a_relative_socket_path_is_refused() {
    let (status, stdout, stderr) = support::run_to_exit(
        agent_echo(),
        &[],
        &[("CODEFLY_AGENT_UDS_PATH", "agent.sock")],
    )
    .await;
    assert!(!status.success());
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("CODEFLY_AGENT_UDS_PATH"),
        "stderr: {stderr}"
    );
    assert!(!Path::new("agent.sock").exists());
}

#[tokio::test]
async fn sigterm_and_sigint_exit_0_with_an_idle_host_connection_open() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut agent = start(agent_echo(), &[], &[]).await;
        // The host keeps its channel open while it closes the agent.
        let ch = agent.channel().await;
        assert_eq!(health(ch.clone()).await, ServingStatus::Serving);
        agent.signal(sig);
        let status = agent.wait_exit().await;
        assert_eq!(status.code(), Some(0), "signal {sig}: {status:?}");
        drop(ch);
    }
}

#[tokio::test]
async fn health_turns_not_serving_when_shutdown_starts() {
    let mut agent = start(agent_echo(), &[], &[]).await;
    let mut watch = HealthClient::new(agent.channel().await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    agent.signal(libc::SIGTERM);
    let next = tokio::time::timeout(support::WAIT, watch.message())
        .await
        .expect("an update within the wait")
        .expect("stream still open")
        .expect("an update before the stream ends");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn agent_exits_when_its_parent_is_killed() {
    let (mut shell, agent_pid, handshake) = start_under_shell(agent_echo(), &[]).await;
    let _cleanup = KillOnDrop(agent_pid);
    assert!(
        handshake.starts_with("2|dns:///127.0.0.1:"),
        "{handshake:?}"
    );
    assert!(!support::exited(agent_pid));
    shell.start_kill().unwrap();
    shell.wait().await.unwrap();
    assert!(
        wait_gone(agent_pid).await,
        "agent {agent_pid} outlived its parent"
    );
}
