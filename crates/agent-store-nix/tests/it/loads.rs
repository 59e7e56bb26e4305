//! The realized agent *loads*: a flake whose derivation copies the real
//! `agent-echo` binary into `$out` is pulled through the `Installer`, spawned
//! from the cache, answers Echo, and closes.

use crate::common;

use std::time::Duration;

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_ref::Platform;
use agent_spawn::{SpawnOptions, spawn};
use agent_store::AgentStore;
use common::{Package, TestFlake, agent};

#[tokio::test]
async fn the_realized_agent_loads() {
    let bin = agent_testkit::bin_path("agent-echo");
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
        SpawnOptions::new().grace(Duration::from_secs(10)),
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
