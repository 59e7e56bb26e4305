//! Once a TCP agent has exited, its address is never dialled again: a
//! process that binds the freed port receives no connection (and no token),
//! and calls fail at once with `agent-exited`.

use std::net::TcpListener;
use std::time::Duration;

use agent_echo::pb::InfoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_spawn::{Endpoint, SpawnOptions, TokenInterceptor, spawn};
use agent_testkit::bin_path;
use tonic::service::interceptor::InterceptedService;

#[allow(unsafe_code)]
fn kill9(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    assert_eq!(rc, 0);
}

#[tokio::test]
async fn a_dead_agents_port_is_not_dialled_again() {
    let opts = SpawnOptions::new()
        .startup_timeout(Duration::from_secs(20))
        .dial_timeout(Duration::from_secs(20));
    let conn = spawn(&bin_path("agent-echo"), opts).await.unwrap();
    let Endpoint::Tcp(addr) = conn.endpoint() else {
        panic!("not TCP: {}", conn.endpoint())
    };
    let mut client = EchoClient::new(conn.channel());
    client.info(InfoRequest {}).await.unwrap();
    let raw = InterceptedService::new(
        conn.raw_channel(),
        TokenInterceptor::new(&conn.token()).unwrap(),
    );
    let mut raw_client = EchoClient::new(raw);

    kill9(conn.pid());
    tokio::time::timeout(Duration::from_secs(20), conn.exited())
        .await
        .unwrap();

    // Someone else takes the port the agent listened on.
    let squatter = TcpListener::bind(addr).expect("the agent's port is free again");
    squatter.set_nonblocking(true).unwrap();

    // A redial would wait on the squatter, which never answers: a call that
    // does not fail within the bound has dialled it (or hangs).
    let bound = Duration::from_secs(20);
    let status = tokio::time::timeout(bound, client.info(InfoRequest {}))
        .await
        .expect("the call waited on the dead agent's port")
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("agent-exited"), "{status:?}");
    // The raw channel (tonic reconnects by itself) is held back too. Its
    // status is tonic's: `Unavailable`, or, when the call met the dead
    // connection as it closed, `Cancelled` or `Unknown` (a broken pipe).
    let raw_status = tokio::time::timeout(bound, raw_client.info(InfoRequest {}))
        .await
        .expect("the raw call waited on the dead agent's port")
        .unwrap_err();
    assert!(
        matches!(
            raw_status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        "{raw_status:?}"
    );
    // Give a stray reconnect time to arrive before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match squatter.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host dialled the dead agent's port: {other:?}"),
    }
    conn.close().await;
}
