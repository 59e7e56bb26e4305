//! The sandbox from outside: a real agent (`probe-agent`) tries each way out before it
//! serves. Unconfined it gets through (the control); confined every probe fails, the
//! listeners see nothing, its granted path is writable, its child is as confined as it
//! is, and it still serves and closes, taking its private `TMPDIR` with it.
#![cfg(target_os = "linux")]

use agent_testkit::sandbox::Listeners;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_ref::ErrorKind;
use agent_spawn::{AgentConn, Endpoint, Network, Sandbox, SandboxPolicy, SpawnOptions, spawn};
use agent_testkit::bin_path;
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// In the test process's own initial environment, like a host's `GITHUB_TOKEN`; the
/// agent looks for its value in every other process's `/proc/<pid>/environ`.
const MARKER_VAR: &str = "AGENT_SPAWN_SANDBOX_MARKER";

/// The marker in the test's own initial environment (see
/// [`agent_testkit::sandbox::with_marker`]).
fn with_marker(test: &str) -> Option<String> {
    agent_testkit::sandbox::with_marker(MARKER_VAR, &agent_testkit::test_name!(test))
}

/// Whether this machine can confine; when it cannot, says why (the test then checks
/// nothing, and says so: it is not a pass of the sandbox).
fn can_enforce() -> bool {
    if agent_spawn::process_backend() != "pidfd" {
        eprintln!(
            "SKIPPED: the {} process backend cannot confine (a_confined_spawn_on_the_portable_backend_is_admission covers it)",
            agent_spawn::process_backend()
        );
        return false;
    }
    let support = agent_sandbox::probe();
    match support.admit(&SandboxPolicy::default()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED: this machine cannot enforce a sandbox: {e}");
            false
        }
    }
}

struct World {
    root: tempfile::TempDir,
    net: Listeners,
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        for d in ["home/.ssh", "work", "outside", "granted"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("home/.ssh/id_test"), "SECRET KEY").unwrap();
        let net = Listeners::new();
        World { root, net }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn options(&self, marker: &str, sandbox: Sandbox) -> SpawnOptions {
        let env = [
            ("HOME", self.p("home").into_os_string()),
            ("PROBE_MARKER", marker.into()),
            ("PROBE_OUTSIDE", self.p("outside/file").into_os_string()),
            ("PROBE_GRANTED", self.p("granted/file").into_os_string()),
            ("PROBE_REPORT", self.p("work/report.json").into_os_string()),
            ("PROBE_TCP_PORT", self.net.tcp_port().to_string().into()),
            ("PROBE_UDP_PORT", self.net.udp_port().to_string().into()),
        ];
        SpawnOptions::new()
            .workdir(self.p("work"))
            .envs(env)
            // The host's own copy stays in the host: the agent must find it elsewhere.
            .env_remove(MARKER_VAR)
            .startup_timeout(Duration::from_secs(20))
            .dial_timeout(Duration::from_secs(20))
            .grace(Duration::from_secs(5))
            .sandbox(sandbox)
    }

    fn policy(&self) -> Sandbox {
        Sandbox::policy(SandboxPolicy {
            network: Network::None,
            read: Vec::new(),
            write: vec![self.p("granted").display().to_string()],
        })
    }

    fn report(&self) -> Value {
        let text = std::fs::read_to_string(self.p("work/report.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

async fn serving(conn: &AgentConn) -> bool {
    let mut health = HealthClient::new(conn.channel());
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    answer.into_inner().status() == ServingStatus::Serving
}

fn probe(report: &Value, name: &str) -> bool {
    report[name]
        .as_bool()
        .unwrap_or_else(|| panic!("{name} missing from {report}"))
}

#[tokio::test]
async fn unconfined_control_gets_through_every_probe() {
    let Some(marker) = with_marker("unconfined_control_gets_through_every_probe") else {
        return;
    };
    let w = World::new();
    let conn = spawn(
        &bin_path("probe-agent"),
        w.options(&marker, Sandbox::unconfined()),
    )
    .await
    .unwrap();
    let r = w.report();
    for name in [
        "secret_read",
        "outside_write",
        "granted_write",
        "tcp_connect",
        "udp_send",
        "environ_marker",
        "child_secret_read",
    ] {
        assert!(probe(&r, name), "the control could not {name}: {r}");
    }
    assert!(
        w.net.tcp_seen() && w.net.udp_seen(),
        "the listeners saw the control"
    );
    assert!(w.p("outside/file").exists());
    conn.close().await;
}

#[tokio::test]
async fn confined_agent_gets_through_nothing_but_its_grants_and_still_serves() {
    let Some(marker) =
        with_marker("confined_agent_gets_through_nothing_but_its_grants_and_still_serves")
    else {
        return;
    };
    if !can_enforce() {
        return;
    }
    let w = World::new();
    let conn = spawn(&bin_path("probe-agent"), w.options(&marker, w.policy()))
        .await
        .unwrap();
    let r = w.report();
    eprintln!("confined probe report: {r}");
    for name in [
        "secret_read",
        "outside_write",
        "tcp_connect",
        "udp_send",
        "environ_marker",
        "child_secret_read",
    ] {
        assert!(!probe(&r, name), "the confined agent could {name}: {r}");
    }
    assert!(!w.net.tcp_seen(), "the TCP listener was reached");
    assert!(!w.net.udp_seen(), "the UDP listener received a datagram");
    assert!(!w.p("outside/file").exists(), "a file outside the grants");
    // The grants work.
    assert!(
        probe(&r, "granted_write") && probe(&r, "tmpdir_write"),
        "{r}"
    );
    assert_eq!(
        std::fs::read(w.p("granted/file")).unwrap(),
        b"written by probe-agent"
    );
    // The agent has no network: the host reached it over its unix socket.
    assert!(
        matches!(conn.endpoint(), Endpoint::Unix(_)),
        "{}",
        conn.endpoint()
    );
    assert!(serving(&conn).await);
    let tmpdir = PathBuf::from(r["tmpdir"].as_str().unwrap());
    assert!(tmpdir.join("probe").exists(), "{}", tmpdir.display());
    let exit = conn.close().await;
    assert!(exit.success(), "{exit}");
    assert!(!tmpdir.exists(), "the private TMPDIR outlived the agent");
}

#[tokio::test]
async fn a_policy_path_that_does_not_expand_starts_nothing() {
    let w = World::new();
    let sandbox = Sandbox::policy(SandboxPolicy {
        network: Network::Any,
        read: vec!["${NOPE}/x".into()],
        write: Vec::new(),
    });
    let err = spawn(&bin_path("probe-agent"), w.options("unused", sandbox))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    // What failed ("cannot confine …"), then why: the policy path.
    let shown = agent_ref::error_chain(&err).to_string();
    assert!(shown.contains("${NOPE}"), "{shown}");
    assert!(err.pid().is_none(), "a process was started");
    assert!(!Path::new(&w.p("work/report.json")).exists());
}

#[tokio::test]
async fn a_confined_spawn_on_the_portable_backend_is_admission() {
    if agent_spawn::process_backend() == "pidfd" {
        eprintln!("SKIPPED: the pidfd backend confines (the other tests cover it)");
        return;
    }
    let w = World::new();
    let sandbox = Sandbox::policy(SandboxPolicy {
        network: Network::Any,
        ..SandboxPolicy::default()
    });
    let err = spawn(&bin_path("probe-agent"), w.options("unused", sandbox))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Admission, "{err}");
    assert!(err.to_string().contains("portable"), "{err}");
    assert!(err.pid().is_none(), "a process was started");
    assert!(!w.p("work/report.json").exists());
}
