//! The realized agent *loads*: a flake whose derivation copies the real
//! `agent-echo` binary into `$out` is pulled through the `Installer`, spawned
//! from the cache, answers Echo, and closes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_ref::Platform;
use agent_spawn::{SpawnOptions, spawn};
use agent_store::AgentStore;
use common::{Package, TestFlake, agent};

/// The workspace's `agent-echo` binary, built if needed.
/// (Ready to be replaced by `agent_testkit::bin_path("agent-echo")`.)
fn agent_echo_bin() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "agent-echo",
            "--bin",
            "agent-echo",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running cargo build");
    assert!(out.status.success(), "cargo build -p agent-echo failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "agent-echo")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo did not report the agent-echo executable")
}

#[tokio::test]
async fn the_realized_agent_loads() {
    let bin = agent_echo_bin();
    let flake = TestFlake::new(&[Package::new(
        "agents-service-echo-1.0.0",
        &format!(
            "mkdir -p $out/bin; cp {} $out/bin/service-echo; chmod 755 $out/bin/service-echo",
            bin.display()
        ),
    )]);
    let echo = agent("codefly.dev/echo:1.0.0");
    let installed = flake
        .store()
        .pull(&echo, &Platform::current(), &flake.installer())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&installed.path).unwrap(),
        std::fs::read(&bin).unwrap()
    );
    assert!(installed.source.starts_with("nix:/nix/store/"));

    let conn = spawn(
        &installed.path,
        SpawnOptions {
            grace: Duration::from_secs(10),
            ..SpawnOptions::default()
        },
    )
    .await
    .unwrap();
    let mut client = EchoClient::new(conn.channel());
    let reply = client
        .echo(EchoRequest {
            message: "from nix".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "from nix");
    let pid = i32::try_from(conn.pid()).unwrap();
    let exit = conn.close().await;
    assert!(exit.success(), "{exit:?}");
    assert!(common::wait_gone(pid, Duration::from_secs(10)));
}
