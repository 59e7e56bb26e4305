//! The sandbox from outside: a real agent (`probe-agent`) tries each way out before it
//! serves. Unconfined it gets through (the control); confined every probe fails, the
//! listeners see nothing, its granted path is writable, its child is as confined as it
//! is, and it still serves and closes, taking its private `TMPDIR` with it.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::ErrorKind as IoKind;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
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

/// `/proc/<pid>/environ` shows the environment a process started with, not later
/// `setenv`s: a test that needs the marker runs itself again with it. Returns the
/// marker in the inner run, `None` in the outer one (which checked the inner passed).
fn with_marker(test: &str) -> Option<String> {
    if let Ok(m) = std::env::var(MARKER_VAR) {
        return Some(m);
    }
    let marker = format!("sandbox-marker-{}-{test}", std::process::id());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(MARKER_VAR, &marker)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} with the marker:\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
    eprint!("{stderr}");
    None
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
    tcp: TcpListener,
    udp: UdpSocket,
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        for d in ["home/.ssh", "work", "outside", "granted"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("home/.ssh/id_test"), "SECRET KEY").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        World { root, tcp, udp }
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
            (
                "PROBE_TCP_PORT",
                self.tcp.local_addr().unwrap().port().to_string().into(),
            ),
            (
                "PROBE_UDP_PORT",
                self.udp.local_addr().unwrap().port().to_string().into(),
            ),
        ];
        SpawnOptions {
            workdir: Some(self.p("work")),
            env: env.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            // The host's own copy stays in the host: the agent must find it elsewhere.
            env_remove: vec![MARKER_VAR.into()],
            startup_timeout: Duration::from_secs(20),
            dial_timeout: Duration::from_secs(20),
            grace: Duration::from_secs(5),
            sandbox,
            ..SpawnOptions::default()
        }
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

    /// Whether the TCP listener was connected to.
    fn tcp_seen(&self) -> bool {
        match self.tcp.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == IoKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    /// Whether the UDP listener received a datagram.
    fn udp_seen(&self) -> bool {
        let mut buf = [0u8; 64];
        self.udp.recv_from(&mut buf).is_ok()
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
        w.tcp_seen() && w.udp_seen(),
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
    assert!(!w.tcp_seen(), "the TCP listener was reached");
    assert!(!w.udp_seen(), "the UDP listener received a datagram");
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
    assert!(err.to_string().contains("${NOPE}"), "{err}");
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
