//! agent-serve's contract, checked on a real agent process: the `agent-echo`
//! binary (built on demand with the cargo running these tests).
#![allow(clippy::unwrap_used)]

use agent_testkit::agent as support;

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
    BIN.get_or_init(|| agent_testkit::bin_path("agent-echo"))
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
async fn without_a_token_only_health_is_served() {
    let mut agent = start(agent_echo(), &[], &[]).await;
    let ch = agent.channel().await;
    assert_eq!(
        call_unknown_service(ch.clone(), None).await,
        tonic::Code::Unauthenticated
    );
    // No token to compare with: whatever a caller sends is refused.
    assert_eq!(
        call_unknown_service(ch.clone(), Some(TOKEN)).await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(health(ch).await, ServingStatus::Serving);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn insecure_1_without_a_token_serves_everything_and_says_so() {
    let mut agent = start(agent_echo(), &[], &[("CODEFLY_AGENT_INSECURE", "1")]).await;
    let ch = agent.channel().await;
    assert_eq!(
        call_unknown_service(ch, None).await,
        tonic::Code::Unimplemented
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
    let stderr = agent.stderr().await;
    assert!(
        stderr.contains("WARN") && stderr.contains("CODEFLY_AGENT_INSECURE=1"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn insecure_does_not_open_an_agent_that_has_a_token() {
    let mut agent = start(
        agent_echo(),
        &[],
        &[
            ("CODEFLY_AGENT_TOKEN", TOKEN),
            ("CODEFLY_AGENT_INSECURE", "1"),
        ],
    )
    .await;
    let ch = agent.channel().await;
    assert_eq!(
        call_unknown_service(ch, None).await,
        tonic::Code::Unauthenticated
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

async fn open_watch(
    channel: Channel,
    token: Option<&str>,
) -> Result<tonic::Streaming<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("x-codefly-token", t.parse().unwrap());
    }
    let mut stream = HealthClient::new(channel).watch(req).await?.into_inner();
    let first = tokio::time::timeout(support::WAIT, stream.message())
        .await
        .expect("first watch message within the wait")?
        .expect("a first message");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    Ok(stream)
}

#[tokio::test]
async fn health_watches_without_the_token_are_capped() {
    let cap = agent_serve::MAX_UNAUTHENTICATED_WATCHES;
    let mut agent = start(agent_echo(), &[], &[("CODEFLY_AGENT_TOKEN", TOKEN)]).await;
    let ch = agent.channel().await;
    let mut open = Vec::new();
    for i in 0..cap {
        open.push(
            open_watch(ch.clone(), None)
                .await
                .unwrap_or_else(|e| panic!("watch {i}: {e}")),
        );
    }
    let refused = open_watch(ch.clone(), None).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    // A wrong token counts as none.
    let refused = open_watch(ch.clone(), Some("nope")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    // The host's own watch is not counted.
    let _host = open_watch(ch.clone(), Some(TOKEN)).await.unwrap();
    // Check is unary and stays available.
    assert_eq!(health(ch.clone()).await, ServingStatus::Serving);
    // A watcher that leaves frees its slot.
    drop(open.pop());
    let mut again = None;
    for _ in 0..100 {
        match open_watch(ch.clone(), None).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            // The server notices the cancelled stream asynchronously.
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        again.is_some(),
        "the slot of a closed watch was never freed"
    );
    drop(open);
    drop(again);
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

/// An agent started from a thread of a host that lives on (Python here; Go
/// hosts do the same from goroutines' threads) must not die with that thread.
#[tokio::test]
async fn agent_started_from_a_python_thread_that_ends_lives_on() {
    const SCRIPT: &str = r#"
import subprocess, sys, threading, time
def start():
    p = subprocess.Popen([sys.argv[1]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    line = p.stdout.readline().decode().strip()
    print(f"pid={p.pid} {line}", flush=True)
t = threading.Thread(target=start)
t.start()
t.join()
print("thread ended", flush=True)
time.sleep(3600)
"#;
    let mut python = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(agent_echo())
        .env("CODEFLY_AGENT_TOKEN", TOKEN)
        .env_remove("CODEFLY_AGENT_LIFELINE")
        .env_remove("CODEFLY_AGENT_UDS_PATH")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(python.stdout.take().unwrap()));
    let mut next = async || {
        tokio::time::timeout(support::WAIT, lines.next_line())
            .await
            .expect("python prints within the wait")
            .unwrap()
            .expect("a line")
    };
    let first = next().await;
    let (pid, handshake) = first
        .strip_prefix("pid=")
        .and_then(|r| r.split_once(' '))
        .unwrap_or_else(|| panic!("{first:?}"));
    let pid: i32 = pid.parse().unwrap();
    let _cleanup = KillOnDrop(pid);
    assert!(handshake.starts_with("2|dns:///"), "{handshake:?}");
    assert_eq!(next().await, "thread ended");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        !support::exited(pid),
        "the agent died with the thread that started it"
    );
    // The host itself dying still takes the agent down (getppid changes).
    python.start_kill().unwrap();
    python.wait().await.unwrap();
    assert!(wait_gone(pid).await, "agent {pid} outlived its host");
}

/// Starts agent-echo with `args` in its own process group (as agent-spawn
/// starts agents) holding the read end of `lifeline`.
async fn start_with_lifeline(
    args: &[&str],
    lifeline: &support::Lifeline,
    own_group: bool,
) -> support::Running {
    let mut cmd = support::agent_command(agent_echo(), args, &[("CODEFLY_AGENT_TOKEN", TOKEN)]);
    lifeline.pass_to(&mut cmd);
    if own_group {
        cmd.process_group(0);
    }
    support::start_command(cmd).await
}

#[tokio::test]
async fn lifeline_eof_stops_an_agent_leading_its_group() {
    let mut lifeline = support::Lifeline::new();
    let mut agent = start_with_lifeline(&[], &lifeline, true).await;
    let _cleanup = KillOnDrop(agent.pid);
    assert_eq!(health(agent.channel().await).await, ServingStatus::Serving);
    lifeline.cut();
    // Exits (killed with its group: SIGKILL) well within the wait.
    let status = agent.wait_exit().await;
    assert!(!status.success(), "{status:?}");
}

#[tokio::test]
async fn lifeline_eof_in_the_hosts_group_stops_only_the_agent() {
    // The agent shares this test process's group: the group is not the
    // agent's to kill, and this test surviving is the proof it was not.
    let mut lifeline = support::Lifeline::new();
    let mut agent = start_with_lifeline(&[], &lifeline, false).await;
    let _cleanup = KillOnDrop(agent.pid);
    lifeline.cut();
    let status = agent.wait_exit().await;
    assert_eq!(status.code(), Some(0), "graceful stop: {status:?}");
}

#[tokio::test]
async fn a_wedged_agent_still_exits_when_its_lifeline_closes() {
    let mut lifeline = support::Lifeline::new();
    let mut agent = start_with_lifeline(&["--test-wedge"], &lifeline, true).await;
    let _cleanup = KillOnDrop(agent.pid);
    // Wedged: the runtime answers nothing (not even a TCP-level HTTP/2 handshake).
    let endpoint = tonic::transport::Endpoint::from_shared(support::endpoint_uri(&agent.handshake))
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(1));
    let answered = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let ch = endpoint.connect().await.ok()?;
        HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()
    })
    .await;
    assert!(
        matches!(answered, Err(_) | Ok(None)),
        "the agent is not wedged"
    );
    // SIGTERM cannot be handled either: the runtime never runs the handler.
    agent.signal(libc::SIGTERM);
    lifeline.cut();
    let status = agent.wait_exit().await;
    assert!(!status.success(), "{status:?}");
}

#[tokio::test]
async fn lifeline_eof_takes_the_agents_children_with_it() {
    let mut lifeline = support::Lifeline::new();
    let mut agent = start_with_lifeline(&["--test-child"], &lifeline, true).await;
    let _cleanup = KillOnDrop(agent.pid);
    let line = agent.stderr_line_containing("test child pid ").await;
    let child: i32 = line
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line:?}"));
    let _child_cleanup = KillOnDrop(child);
    assert!(!support::exited(child));
    assert_eq!(health(agent.channel().await).await, ServingStatus::Serving);
    lifeline.cut();
    agent.wait_exit().await;
    assert!(
        wait_gone(child).await,
        "child {child} (ignores SIGTERM) outlived the agent's lifeline"
    );
}

#[tokio::test]
async fn a_lifeline_that_is_not_an_open_pipe_is_ignored_with_a_warning() {
    // What a program started by an agent sees: the variable is inherited, the
    // descriptor (close-on-exec) is not.
    let mut agent = start(
        agent_echo(),
        &[],
        &[
            ("CODEFLY_AGENT_TOKEN", TOKEN),
            ("CODEFLY_AGENT_LIFELINE", "987"),
        ],
    )
    .await;
    assert_eq!(health(agent.channel().await).await, ServingStatus::Serving);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
    let stderr = agent.stderr().await;
    assert!(
        stderr.contains("CODEFLY_AGENT_LIFELINE ignored") && stderr.contains("987"),
        "stderr: {stderr}"
    );
}
