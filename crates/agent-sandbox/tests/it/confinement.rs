//! The sandbox from outside, on the real kernel: a probe program tries each way out,
//! unconfined (the control: everything gets through) and confined (nothing does).
#![cfg(target_os = "linux")]
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, ErrorKind as IoKind, Read as _};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agent_sandbox::{
    Network, PreparedSandbox, Sandbox, SandboxContext, SandboxPolicy, Support, probe,
};

const PROBE: &str = env!("CARGO_BIN_EXE_sandbox-probe");
/// Set in this test process's own initial environment (see [`with_marker`]), like a
/// host's `GITHUB_TOKEN`; the probe looks for it in `/proc/<our pid>/environ`.
const MARKER_VAR: &str = "AGENT_SANDBOX_TEST_MARKER";

/// The marker in the test's own initial environment (see
/// [`agent_testkit::sandbox::with_marker`]).
fn with_marker(test: &str) -> Option<String> {
    agent_testkit::sandbox::with_marker(MARKER_VAR, &agent_testkit::test_name!(test))
}

struct World {
    root: tempfile::TempDir,
    tcp: TcpListener,
    udp: UdpSocket,
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        for d in ["home/.ssh", "work", "sock", "outside", "granted", "tmp"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("home/.ssh/id_ed25519"), "SECRET KEY").unwrap();
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

    fn context(&self) -> SandboxContext {
        SandboxContext::new(PROBE, self.p("work"))
            .socket_dir(self.p("sock"))
            .home(self.p("home"))
            .temp_base(self.p("tmp"))
    }

    fn policy(&self, network: Network, read: &[&str]) -> SandboxPolicy {
        SandboxPolicy {
            network,
            read: read.iter().map(|s| (*s).to_owned()).collect(),
            write: vec![
                self.p("granted").display().to_string(),
                "${WORKDIR}".to_owned(),
            ],
        }
    }

    /// Runs the probe under `sandbox` and returns `probe name → ok?` and the raw output.
    fn run(
        &self,
        sandbox: &Arc<PreparedSandbox>,
        marker: &str,
    ) -> (BTreeMap<String, bool>, String) {
        let mut cmd = Command::new(PROBE);
        cmd.args([
            "--secret",
            &self.p("home/.ssh/id_ed25519").display().to_string(),
        ])
        .args(["--outside", &self.p("outside/x").display().to_string()])
        .args(["--granted", &self.p("granted/x").display().to_string()])
        .args(["--tcp", &self.tcp.local_addr().unwrap().to_string()])
        .args(["--udp", &self.udp.local_addr().unwrap().to_string()])
        .args([
            "--environ",
            &std::process::id().to_string(),
            "--marker",
            marker,
        ])
        .args(["--proc-self", "--tmpdir", "--child"])
        .args(["--unix", &self.p("sock/agent.sock").display().to_string()])
        .current_dir(self.p("work"))
        .env("HOME", self.p("home"))
        .env_remove(MARKER_VAR);
        if let Some(t) = sandbox.tmpdir() {
            cmd.env("TMPDIR", t);
        }
        let sandbox = Arc::clone(sandbox);
        // SAFETY: apply_in_child makes only raw system calls.
        unsafe {
            cmd.pre_exec(move || {
                sandbox
                    .apply_in_child()
                    .map_err(std::io::Error::from_raw_os_error)
            });
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut text = String::new();
        // The host's side of the agent's unix socket: the one way in when there is no
        // network.
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line == "unix-listen ok" {
                let mut s = UnixStream::connect(self.p("sock/agent.sock")).unwrap();
                let mut hello = String::new();
                s.read_to_string(&mut hello).unwrap();
                let ok = if hello == "hello\n" { "ok" } else { "fail" };
                text.push_str(&format!("host-unix-connect {ok}\n"));
            }
            text.push_str(&line);
            text.push('\n');
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "probe failed: {text}");
        let results = text
            .lines()
            .filter_map(|l| {
                let mut w = l.splitn(3, ' ');
                Some((w.next()?.to_owned(), w.next()? == "ok"))
            })
            .collect();
        (results, text)
    }

    fn tcp_saw_connection(&self) -> bool {
        match self.tcp.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == IoKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    fn udp_saw_datagram(&self) -> bool {
        let mut buf = [0u8; 64];
        self.udp.recv_from(&mut buf).is_ok()
    }
}

fn assert_probes(results: &BTreeMap<String, bool>, text: &str, expected: &[(&str, bool)]) {
    for (name, ok) in expected {
        assert_eq!(
            results.get(*name),
            Some(ok),
            "probe {name}: expected {}, output:\n{text}",
            if *ok { "ok" } else { "fail" }
        );
    }
}

#[test]
fn this_machine_can_enforce_landlock_and_user_namespaces() {
    let s = probe();
    assert!(s.landlock_abi.is_some_and(|v| v >= 1), "{s:?}");
    assert!(s.user_namespaces, "{s:?}");
}

#[test]
fn unconfined_every_probe_gets_through() {
    let Some(marker) = with_marker("unconfined_every_probe_gets_through") else {
        return;
    };
    let w = World::new();
    let prepared = Arc::new(Sandbox::unconfined().prepare(&w.context()).unwrap());
    assert!(!prepared.is_confined() && prepared.tmpdir().is_none());
    let (r, text) = w.run(&prepared, &marker);
    assert_probes(
        &r,
        &text,
        &[
            ("secret-read", true),
            ("outside-write", true),
            ("granted-write", true),
            ("tcp-connect", true),
            ("udp-send", true),
            ("environ-marker", true),
            ("proc-self-read", true),
            ("unix-serve", true),
            ("host-unix-connect", true),
            ("child-secret-read", true),
            ("child-outside-write", true),
            ("child-tcp-connect", true),
            ("child-environ-marker", true),
        ],
    );
    assert!(
        w.tcp_saw_connection(),
        "the control's TCP connection never arrived"
    );
    assert!(w.udp_saw_datagram(), "the control's datagram never arrived");
}

#[test]
fn confined_network_none_every_forbidden_probe_fails() {
    let Some(marker) = with_marker("confined_network_none_every_forbidden_probe_fails") else {
        return;
    };
    let w = World::new();
    let prepared = Sandbox::policy(w.policy(Network::None, &[]))
        .prepare(&w.context())
        .map(Arc::new)
        .unwrap();
    assert!(prepared.needs_unix_socket());
    let (r, text) = w.run(&prepared, &marker);
    assert_probes(
        &r,
        &text,
        &[
            ("secret-read", false),
            ("outside-write", false),
            ("granted-write", true),
            ("tmpdir-write", true),
            ("tcp-connect", false),
            ("udp-send", false),
            ("environ-marker", false),
            ("proc-self-read", true),
            ("unix-serve", true),
            ("host-unix-connect", true),
            ("child-spawn", true),
            ("child-secret-read", false),
            ("child-outside-write", false),
            ("child-granted-write", true),
            ("child-tcp-connect", false),
            ("child-udp-send", false),
            ("child-environ-marker", false),
        ],
    );
    assert!(
        !w.tcp_saw_connection(),
        "a confined probe reached the TCP listener"
    );
    assert!(
        !w.udp_saw_datagram(),
        "a confined probe reached the UDP listener"
    );
    assert!(
        !w.p("outside/x").exists(),
        "a confined probe wrote outside its grant"
    );
    assert_eq!(
        std::fs::read_to_string(w.p("granted/x")).unwrap(),
        "written by sandbox-probe"
    );
}

/// `network = "any"` reaches the listener, and the files stay confined.
#[test]
fn confined_network_any_reaches_the_network_but_not_the_files() {
    let Some(marker) = with_marker("confined_network_any_reaches_the_network_but_not_the_files")
    else {
        return;
    };
    let w = World::new();
    let prepared = Sandbox::policy(w.policy(Network::Any, &[]))
        .prepare(&w.context())
        .map(Arc::new)
        .unwrap();
    assert!(!prepared.needs_unix_socket());
    let (r, text) = w.run(&prepared, &marker);
    assert_probes(
        &r,
        &text,
        &[
            ("secret-read", false),
            ("outside-write", false),
            ("granted-write", true),
            ("tcp-connect", true),
            ("udp-send", true),
            ("environ-marker", false),
            ("proc-self-read", true),
            ("child-secret-read", false),
            ("child-environ-marker", false),
        ],
    );
    assert!(w.tcp_saw_connection());
    assert!(w.udp_saw_datagram());
}

/// Granting `/proc` would hand the agent the host's environment wherever Landlock's
/// ptrace scoping is bypassed (an agent with `CAP_SYS_ADMIN` in the host's user
/// namespace, as root with `network = "any"` here): refused before anything runs.
#[test]
fn a_grant_of_proc_is_refused() {
    let w = World::new();
    for grant in ["/proc", "/", "/proc/self"] {
        let e = Sandbox::policy(w.policy(Network::Any, &[grant]))
            .prepare(&w.context())
            .unwrap_err();
        assert_eq!(e.kind(), agent_ref::ErrorKind::Config, "{grant}");
        assert!(e.to_string().contains("other processes"), "{e}");
    }
    assert_eq!(std::fs::read_dir(w.p("tmp")).unwrap().count(), 0);
}

#[test]
fn private_tmpdir_is_0700_and_removed_with_the_prepared_sandbox() {
    let w = World::new();
    let prepared = Sandbox::policy(w.policy(Network::Any, &[]))
        .prepare(&w.context())
        .unwrap();
    let t = prepared.tmpdir().unwrap().to_owned();
    assert!(t.starts_with(w.p("tmp")));
    assert_eq!(
        std::fs::metadata(&t).unwrap().permissions().mode() & 0o777,
        0o700
    );
    drop(prepared);
    assert!(!t.exists());
}

#[test]
fn unsupported_policy_is_admission_and_leaves_nothing_behind() {
    let w = World::new();
    let no_landlock = Support::new("linux", None, true, false);
    let e = Sandbox::policy(w.policy(Network::Any, &[]))
        .prepare_with(&w.context(), &no_landlock)
        .unwrap_err();
    assert_eq!(e.kind(), agent_ref::ErrorKind::Admission);
    assert!(e.to_string().contains("Landlock"), "{e}");
    let no_userns = Support::new("linux", Some(7), false, false);
    let e = Sandbox::policy(w.policy(Network::None, &[]))
        .prepare_with(&w.context(), &no_userns)
        .unwrap_err();
    assert_eq!(e.kind(), agent_ref::ErrorKind::Admission);
    assert!(e.to_string().contains("user namespace"), "{e}");
    assert_eq!(std::fs::read_dir(w.p("tmp")).unwrap().count(), 0);
    // The explicit opt-out is always admitted.
    Sandbox::unconfined()
        .prepare_with(&w.context(), &no_landlock)
        .unwrap();
}

#[test]
fn a_policy_path_with_an_unknown_variable_is_config() {
    let w = World::new();
    let mut policy = w.policy(Network::Any, &[]);
    policy.read.push("${SECRETS}/x".into());
    let e = Sandbox::policy(policy).prepare(&w.context()).unwrap_err();
    assert_eq!(e.kind(), agent_ref::ErrorKind::Config);
    assert!(e.to_string().contains("${SECRETS}"), "{e}");
}
