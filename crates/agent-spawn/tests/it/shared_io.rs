//! One I/O thread drains every agent of the host: an agent flooding stderr
//! does not hold up another agent's start, and a stderr sink that panics
//! loses its own agent's output only.

use std::time::Duration;

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_ref::ErrorKind;
use agent_spawn::logs::AgentLogs;
use agent_spawn::{SpawnOptions, spawn};
use agent_testkit::{bin_path, wait_group_gone};

fn opts(args: &[&str]) -> SpawnOptions {
    SpawnOptions::new()
        .args(args)
        .grace(Duration::from_millis(300))
        .startup_timeout(Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_does_not_hold_up_another_start() {
    let agent = bin_path("test-agent");
    let flood = spawn(
        &agent,
        opts(&["stderr-flood", "100000"]).agent_logs(AgentLogs::Off),
    )
    .await
    .unwrap();

    // While it floods: another agent's early exit carries its stderr...
    let e = spawn(&agent, opts(&["exit-early"])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AgentExited);
    let tail = e.stderr_tail().expect("stderr tail");
    assert!(tail.contains("missing configuration"), "{tail:?}");

    // ...and a third one starts and answers.
    let echo = spawn(&agent, opts(&[])).await.unwrap();
    let reply = EchoClient::new(echo.channel())
        .echo(EchoRequest {
            message: "beside a flood".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "beside a flood");
    // The flood is still being read.
    assert!(flood.stderr_tail().ends_with('e'), "no flood in the ring");

    echo.close().await;
    flood.close().await;
    assert!(wait_group_gone(flood.pid(), Duration::from_secs(10)));
    assert!(wait_group_gone(echo.pid(), Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sink_loses_only_its_own_agents_output() {
    let agent = bin_path("test-agent");
    let e = spawn(
        &agent,
        opts(&["exit-early"]).stderr_sink(|_| panic!("a sink that panics")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AgentExited);

    // The next agents' output is still read: the I/O thread lives on.
    for _ in 0..2 {
        let e = spawn(&agent, opts(&["exit-early"])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AgentExited);
        let tail = e.stderr_tail().expect("stderr tail");
        assert!(tail.contains("missing configuration"), "{tail:?}");
    }
    let echo = spawn(&agent, opts(&[])).await.unwrap();
    echo.close().await;
}
