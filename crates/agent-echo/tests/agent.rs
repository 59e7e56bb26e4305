//! The `agent-echo` binary as a host sees it: flags, the Echo service over a
//! real connection, the token, the work dir, shutdown with a call in flight.
#![allow(clippy::unwrap_used)]

use agent_testkit::agent as support;

use std::path::Path;

use agent_echo::pb::echo_client::EchoClient;
use agent_echo::pb::{EchoRequest, InfoRequest, SleepRequest};
use support::{TOKEN, start};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_agent-echo"))
}

/// Sends the token (if any) as `x-codefly-token`, as the host does.
#[derive(Clone)]
struct Token(Option<&'static str>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = self.0 {
            req.metadata_mut()
                .insert("x-codefly-token", t.parse().unwrap());
        }
        Ok(req)
    }
}

fn client(
    channel: Channel,
    token: Option<&'static str>,
) -> EchoClient<InterceptedService<Channel, Token>> {
    EchoClient::with_interceptor(channel, Token(token))
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
    }
}

#[tokio::test]
async fn version_flag_prints_the_crate_version() {
    let (status, stdout, _) = support::run_to_exit(bin(), &["--version"], &[]).await;
    assert!(status.success());
    assert_eq!(stdout, format!("{}\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn unknown_arguments_are_a_usage_error() {
    for args in [&["--frobnicate"][..], &["--protocol", "3"], &["--protocol"]] {
        let (status, stdout, stderr) = support::run_to_exit(bin(), args, &[]).await;
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert_eq!(stdout, "", "{args:?}: no handshake");
        assert!(stderr.contains("agent-echo:"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn echo_with_the_token_works_and_without_it_is_unauthenticated() {
    let mut agent = start(bin(), &[], &[("CODEFLY_AGENT_TOKEN", TOKEN)]).await;
    let ch = agent.channel().await;

    let reply = client(ch.clone(), Some(TOKEN))
        .echo(echo("hello, agent"))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "hello, agent");

    let err = client(ch.clone(), None).echo(echo("x")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    let wrong: &'static str = Box::leak(TOKEN.replace('f', "e").into_boxed_str());
    let err = client(ch.clone(), Some(wrong))
        .echo(echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    let info = client(ch, Some(TOKEN))
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.token_required);

    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

/// Run by hand without a token, the agent serves nothing but health: a local
/// user who finds its port cannot call it.
#[tokio::test]
async fn started_by_hand_without_a_token_echo_is_refused() {
    let mut agent = start(bin(), &[], &[]).await;
    let ch = agent.channel().await;
    for token in [None, Some(TOKEN)] {
        let err = client(ch.clone(), token).echo(echo("x")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
        assert!(err.message().contains("CODEFLY_AGENT_INSECURE=1"), "{err}");
    }
    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers without a token")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn insecure_1_serves_echo_without_a_token_and_warns_on_stderr() {
    let mut agent = start(bin(), &[], &[("CODEFLY_AGENT_INSECURE", "1")]).await;
    let reply = client(agent.channel().await, None)
        .echo(echo("open"))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "open");
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
    let stderr = agent.stderr().await;
    assert!(
        stderr.contains("WARN")
            && stderr.contains("CODEFLY_AGENT_INSECURE=1")
            && stderr.contains("without a token"),
        "stderr: {stderr}"
    );
}

/// Asked for JSON logs (`CODEFLY_AGENT_LOG=json`, as a host does), each
/// stderr line is one JSON object with the level and the message.
#[tokio::test]
async fn log_json_hint_gives_json_lines_on_stderr() {
    let mut agent = start(
        bin(),
        &[],
        &[
            ("CODEFLY_AGENT_INSECURE", "1"),
            ("CODEFLY_AGENT_LOG", "json"),
        ],
    )
    .await;
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
    let stderr = agent.stderr().await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 2, "the warning and the shutdown: {stderr}");
    for line in &lines {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":"),
            "not a JSON log line: {line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("CODEFLY_AGENT_INSECURE=1")),
        "{stderr}"
    );
}

#[tokio::test]
async fn info_reports_the_process_and_the_work_dir_it_was_given() {
    let workdir = tempfile::tempdir().unwrap();
    let mut agent = start(
        bin(),
        &[],
        &[
            ("CODEFLY_AGENT_WORKDIR", workdir.path().to_str().unwrap()),
            ("CODEFLY_AGENT_INSECURE", "1"),
        ],
    )
    .await;
    let info = client(agent.channel().await, None)
        .info(InfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(i32::try_from(info.pid).unwrap(), agent.pid);
    assert_eq!(info.ppid, std::process::id());
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(Path::new(&info.workdir), workdir.path());
    assert!(!info.token_required);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit().await.success());
}

#[tokio::test]
async fn echo_over_protocol_1_and_over_a_unix_socket() {
    let dir = support::socket_dir();
    let path = support::socket_path(&dir);
    let path_env = path.to_str().unwrap().to_owned();
    for (args, env) in [
        (
            &["--protocol", "1"][..],
            vec![("CODEFLY_AGENT_TOKEN", TOKEN)],
        ),
        (
            &[][..],
            vec![
                ("CODEFLY_AGENT_TOKEN", TOKEN),
                ("CODEFLY_AGENT_UDS_PATH", path_env.as_str()),
            ],
        ),
    ] {
        let mut agent = start(bin(), args, &env).await;
        let reply = client(agent.channel().await, Some(TOKEN))
            .echo(echo(&agent.handshake))
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, agent.handshake);
        agent.signal(libc::SIGTERM);
        assert!(agent.wait_exit().await.success(), "{}", agent.handshake);
    }
    assert!(!path.exists());
}

#[tokio::test]
async fn a_call_in_flight_completes_across_sigterm() {
    let mut agent = start(bin(), &[], &[("CODEFLY_AGENT_TOKEN", TOKEN)]).await;
    let mut c = client(agent.channel().await, Some(TOKEN));
    // Make sure the connection is up before the slow call is sent.
    c.echo(echo("warm")).await.unwrap();
    let slow = tokio::spawn(async move { c.sleep(SleepRequest { millis: 800 }).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    agent.signal(libc::SIGTERM);
    let reply = slow
        .await
        .unwrap()
        .expect("the call in flight is drained, not cut");
    assert_eq!(reply.into_inner().slept_millis, 800);
    assert_eq!(agent.wait_exit().await.code(), Some(0));
}
