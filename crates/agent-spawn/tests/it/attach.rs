//! Attach to running agents (real processes): RPCs carry the given token,
//! closing or dropping the attached handle leaves the process running, a
//! health failure is not-serving, and nothing is ever spawned or signalled.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_echo::pb::echo_client::EchoClient;
use agent_echo::pb::{EchoRequest, InfoRequest};
use agent_ref::ErrorKind;
use agent_spawn::{AgentConn, AttachInfo, Handshake, SpawnOptions, TOKEN_ENV, attach, spawn};
use agent_testkit::{bin_path, pid_alive, wait_pid_gone};

const DIAL: Duration = Duration::from_secs(20);
const GUARD: Duration = Duration::from_secs(30);

async fn echo(conn: &AgentConn, message: &str) -> Result<String, tonic::Status> {
    let mut client = EchoClient::new(conn.channel());
    Ok(client
        .echo(EchoRequest {
            message: message.into(),
        })
        .await?
        .into_inner()
        .message)
}

/// Starts `program args` by hand (as a developer under a debugger would),
/// returns the child and its handshake.
fn start_by_hand(program: &str, args: &[&str], token: Option<&str>) -> (Child, Handshake) {
    let mut cmd = Command::new(bin_path(program));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove(TOKEN_ENV);
    if let Some(t) = token {
        cmd.env(TOKEN_ENV, t);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let handshake = Handshake::parse(line.trim_end(), &[1, 2]).unwrap();
    (child, handshake)
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_a_spawned_agent_and_leave_it_running() {
    let owner = spawn(&bin_path("agent-echo"), SpawnOptions::default())
        .await
        .unwrap();
    let pid = owner.pid();
    let info = owner.attach_info();
    assert_eq!(info.pid, Some(pid));
    assert!(
        !format!("{info:?}").contains(&info.token),
        "Debug shows the token"
    );

    let attached = attach(info.clone(), DIAL).await.unwrap();
    assert!(attached.is_attached());
    assert_eq!(attached.pid(), pid);
    assert_eq!(attached.endpoint(), owner.endpoint());
    assert_eq!(echo(&attached, "hi").await.unwrap(), "hi");
    let mut client = EchoClient::new(attached.channel());
    let reply = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(reply.pid, pid);
    assert!(reply.token_required, "the agent enforces its token");

    // The token is what gets the call through: another one is refused.
    let wrong = attach(
        AttachInfo {
            token: "0".repeat(64),
            ..info
        },
        DIAL,
    )
    .await
    .unwrap();
    let err = echo(&wrong, "hi").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // Closing and dropping the attached handles signal nothing.
    attached.close().await;
    drop(attached);
    drop(wrong);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        pid_alive(pid),
        "closing an attached handle killed the agent"
    );
    assert_eq!(echo(&owner, "still here").await.unwrap(), "still here");

    owner.close().await;
    assert!(wait_pid_gone(pid, GUARD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_an_agent_started_by_hand() {
    let token = "ab".repeat(32);
    let (child, handshake) = start_by_hand("agent-echo", &[], Some(&token));
    let pid = child.id();
    let conn = attach(
        AttachInfo {
            pid: Some(pid),
            endpoint: handshake.endpoint.clone(),
            token: token.clone(),
        },
        DIAL,
    )
    .await
    .unwrap();
    assert_eq!(echo(&conn, "by hand").await.unwrap(), "by hand");
    assert!(!conn.has_exited());
    let exited = conn.exited();
    conn.close().await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pid_alive(pid), "the attached agent was signalled");

    // With a pid, the handle notices when the agent ends (we never signal it).
    stop(child);
    tokio::time::timeout(GUARD, exited)
        .await
        .expect("exited() resolves when the attached pid is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_failure_is_not_serving_and_leaves_the_agent_alone() {
    let (child, handshake) = start_by_hand("test-agent", &["not-serving"], None);
    let pid = child.id();
    let err = attach(
        AttachInfo {
            pid: Some(pid),
            endpoint: handshake.endpoint,
            token: String::new(),
        },
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotServing, "{err}");
    assert!(err.to_string().contains("NOT_SERVING"), "{err}");
    assert!(pid_alive(pid), "a failed attach signalled the agent");
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_refuses_a_pid_that_is_gone_and_an_endpoint_nobody_serves() {
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let info = AttachInfo {
        pid: Some(gone.id()),
        endpoint: agent_spawn::Endpoint::Tcp(unused),
        token: "t".into(),
    };
    let err = attach(info.clone(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AgentExited, "{err}");

    let err = attach(AttachInfo { pid: None, ..info }, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DialTimeout, "{err}");
}
