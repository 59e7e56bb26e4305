//! Supervised restart with real agent processes, killed from the test: the
//! handle (and a client built on its channel before the crash) works on the
//! restarted agent, an in-flight call fails with UNAVAILABLE, on-failure
//! leaves a clean exit alone, and giving up ends the handle with agent-exited
//! and the stderr tail.

use std::path::PathBuf;
use std::time::Duration;

use agent_echo::pb::echo_client::EchoClient;
use agent_echo::pb::{EchoRequest, InfoRequest, SleepRequest};
use agent_ref::ErrorKind;
use agent_spawn::{
    AgentEvent, Endpoint, RestartPolicy, SpawnOptions, SupervisedChannel, SupervisedConn, supervise,
};
use agent_testkit::{bin_path, group_alive, wait_group_gone};

use crate::support::next_event;

/// Generous hang guard for things that take milliseconds.
const GUARD: Duration = Duration::from_secs(60);

fn opts(args: &[&str]) -> SpawnOptions {
    SpawnOptions::new()
        .args(args.iter().copied())
        .startup_timeout(Duration::from_secs(20))
        .dial_timeout(Duration::from_secs(20))
        .grace(Duration::from_secs(5))
}

fn echo_agent() -> PathBuf {
    bin_path("agent-echo")
}

#[allow(unsafe_code)]
fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(i32::try_from(pid).unwrap(), signal) };
    assert_eq!(rc, 0, "kill {pid}");
}

async fn info_pid(client: &mut EchoClient<SupervisedChannel>) -> Result<u32, tonic::Status> {
    Ok(client.info(InfoRequest {}).await?.into_inner().pid)
}

async fn start(policy: RestartPolicy, unix_socket: bool) -> SupervisedConn {
    let o = opts(&[]).unix_socket(unix_socket);
    supervise(&echo_agent(), o, policy).await.unwrap()
}

async fn crash_and_call_again(unix_socket: bool) {
    let conn = start(RestartPolicy::on_failure(), unix_socket).await;
    let mut events = conn.events();
    let mut client = EchoClient::new(conn.channel());
    let first = info_pid(&mut client).await.unwrap();
    assert_eq!(first, conn.pid());
    let first_endpoint = conn.endpoint();
    assert_eq!(matches!(first_endpoint, Endpoint::Unix(_)), unix_socket);

    kill(first, libc::SIGKILL);
    let exited = next_event(&mut events, "exited", |e| {
        matches!(e, AgentEvent::Exited { .. })
    })
    .await;
    let AgentEvent::Exited { pid, status, .. } = exited else {
        unreachable!()
    };
    assert_eq!(pid, first);
    assert_eq!(status.signal, Some(libc::SIGKILL), "{status}");
    next_event(&mut events, "restarting", |e| {
        matches!(e, AgentEvent::Restarting { attempt: 1, .. })
    })
    .await;
    let started = next_event(&mut events, "started", |e| {
        matches!(e, AgentEvent::Started { .. })
    })
    .await;
    let AgentEvent::Started {
        pid: second,
        restarts,
        ..
    } = started
    else {
        unreachable!()
    };
    assert_ne!(second, first);
    assert_eq!(restarts, 1);

    // The client built before the crash reaches the new agent.
    assert_eq!(info_pid(&mut client).await.unwrap(), second);
    let reply = client
        .echo(EchoRequest {
            message: "again".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "again");
    assert_eq!(conn.pid(), second);
    assert_eq!(conn.restarts(), 1);
    assert!(!group_alive(first), "the crashed agent's group is gone");

    let status = tokio::time::timeout(GUARD, conn.close()).await.unwrap();
    assert_eq!(status.code, Some(0), "{status}");
    assert!(wait_group_gone(second, GUARD), "closed agent still alive");
    assert!(conn.has_ended());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_the_crash_reaches_the_restarted_agent() {
    crash_and_call_again(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_agents_restart_too() {
    crash_and_call_again(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_call_fails_with_unavailable() {
    let conn = start(RestartPolicy::on_failure(), false).await;
    let mut events = conn.events();
    let mut client = EchoClient::new(conn.channel());
    let pid = info_pid(&mut client).await.unwrap();
    let mut sleeper = client.clone();
    let call = tokio::spawn(async move { sleeper.sleep(SleepRequest { millis: 30_000 }).await });
    // Let the call reach the agent (if it has not yet, it still must not hang).
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(pid, libc::SIGKILL);
    let status = tokio::time::timeout(GUARD, call)
        .await
        .expect("the in-flight call hangs")
        .unwrap()
        .expect_err("the call survived its agent");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    next_event(&mut events, "started", |e| {
        matches!(e, AgentEvent::Started { .. })
    })
    .await;
    assert_ne!(info_pid(&mut client).await.unwrap(), pid);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_leaves_a_clean_exit_alone() {
    let conn = start(RestartPolicy::on_failure(), false).await;
    let mut events = conn.events();
    let mut client = EchoClient::new(conn.channel());
    let pid = conn.pid();
    // agent-serve exits 0 on SIGTERM.
    kill(pid, libc::SIGTERM);
    let status = tokio::time::timeout(GUARD, conn.exited()).await.unwrap();
    assert_eq!(status.code, Some(0), "{status}");
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert!(
        matches!(
            seen.as_slice(),
            [AgentEvent::Exited { .. }, AgentEvent::Stopped { .. }]
        ),
        "{seen:?}"
    );
    assert!(conn.has_ended() && conn.failure().is_none());
    // Calls fail at once, naming the exit.
    let err = tokio::time::timeout(Duration::from_secs(5), info_pid(&mut client))
        .await
        .expect("a call after the end must fail fast")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("exit status 0"), "{}", err.message());
    assert!(wait_group_gone(pid, GUARD));
    assert_eq!(conn.close().await.code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_restarts_a_clean_exit() {
    let conn = start(RestartPolicy::always(), false).await;
    let mut events = conn.events();
    let pid = conn.pid();
    kill(pid, libc::SIGTERM);
    let started = next_event(&mut events, "started", |e| {
        matches!(e, AgentEvent::Started { .. })
    })
    .await;
    let AgentEvent::Started { pid: next, .. } = started else {
        unreachable!()
    };
    assert_ne!(next, pid);
    conn.close().await;
    assert!(wait_group_gone(next, GUARD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_ends_the_handle_with_agent_exited_and_the_tail() {
    // Serves, then exits 1 a second after each start, saying why on stderr.
    let policy = RestartPolicy::on_failure()
        .with_max_restarts(2)
        .with_backoff(Duration::from_millis(50), Duration::from_millis(200));
    let conn = supervise(&bin_path("test-agent"), opts(&["die-after-load"]), policy)
        .await
        .unwrap();
    let mut events = conn.events();
    let mut client = EchoClient::new(conn.channel());
    let status = tokio::time::timeout(GUARD, conn.exited()).await.unwrap();
    assert_eq!(status.code, Some(1), "{status}");

    let gave_up = conn.failure().expect("gave up");
    assert_eq!(gave_up.kind(), ErrorKind::AgentExited);
    assert_eq!(gave_up.restarts, 2);
    assert!(
        gave_up.stderr_tail().contains("dying on purpose"),
        "{:?}",
        gave_up.tail
    );
    assert!(gave_up.to_string().contains("exit status 1"), "{gave_up}");

    let mut restarting = 0;
    let mut exits = 0;
    loop {
        match events.try_recv() {
            Ok(AgentEvent::Restarting { .. }) => restarting += 1,
            Ok(AgentEvent::Exited { status, tail, .. }) => {
                assert_eq!(status.code, Some(1));
                assert!(tail.contains("dying on purpose"), "{tail:?}");
                exits += 1;
            }
            Ok(AgentEvent::GaveUp { error }) => {
                assert_eq!(error.kind(), ErrorKind::AgentExited);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no GaveUp event: {e}"),
        }
    }
    assert_eq!((restarting, exits), (2, 3));

    let err = tokio::time::timeout(Duration::from_secs(5), info_pid(&mut client))
        .await
        .expect("a call after giving up must fail fast")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("agent-exited"), "{}", err.message());
    assert!(
        err.message().contains("dying on purpose"),
        "{}",
        err.message()
    );
    assert!(!group_alive(conn.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_supervision_and_dropping_kills() {
    let conn = start(RestartPolicy::always(), false).await;
    let mut events = conn.events();
    let pid = conn.pid();
    let status = tokio::time::timeout(GUARD, conn.close()).await.unwrap();
    assert_eq!(status.code, Some(0), "SIGTERM, clean exit: {status}");
    assert!(wait_group_gone(pid, GUARD));
    let e = next_event(&mut events, "stopped", |_| true).await;
    assert!(matches!(e, AgentEvent::Stopped { .. }), "{e:?}");
    assert!(events.try_recv().is_err(), "nothing restarts after close");

    let conn = start(RestartPolicy::always(), false).await;
    let pid = conn.pid();
    drop(conn);
    assert!(
        wait_group_gone(pid, GUARD),
        "dropping the handle kills the agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_agent_conn_follows_restarts_too() {
    // What Manager::load(.., LoadOptions::restart(..)) returns: an AgentConn.
    let conn =
        agent_spawn::spawn_with_restart(&echo_agent(), opts(&[]), RestartPolicy::on_failure())
            .await
            .unwrap();
    assert!(conn.supervised().is_some());
    let mut events = conn.events();
    let mut client = EchoClient::new(conn.channel());
    let first = conn.pid();
    kill(first, libc::SIGKILL);
    next_event(&mut events, "started", |e| {
        matches!(e, AgentEvent::Started { .. })
    })
    .await;
    let reply = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_ne!(reply.pid, first);
    assert_eq!(reply.pid, conn.pid());
    assert_eq!(conn.attach_info().pid, Some(reply.pid));
    assert!(!conn.has_exited());
    conn.close().await;
    assert!(conn.has_exited() && conn.failure().is_none());
    assert!(wait_group_gone(reply.pid, GUARD));
}
