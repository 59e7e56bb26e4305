//! The sandbox through `Manager::load`: a real agent (`probe-agent`, installed in the
//! cache) confined by the configuration's policy, confined again after a restart,
//! refused when a policy is required and none is set, and unconfined when the load
//! says so explicitly.
#![cfg(target_os = "linux")]

use crate::common;

use agent_testkit::sandbox::Listeners;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_manager::sandbox::{Network, Sandbox};
use agent_manager::spawn::{RestartMode, RestartPolicy};
use agent_manager::{AgentHome, AgentRef, Config, ErrorKind, LoadOptions, Manager, PolicySource};
use common::Home;
use serde_json::Value;

fn can_enforce() -> bool {
    if agent_manager::spawn::process_backend() != "pidfd" {
        eprintln!(
            "SKIPPED: the {} process backend cannot confine",
            agent_manager::spawn::process_backend()
        );
        return false;
    }
    match agent_manager::sandbox::probe().admit(&agent_manager::sandbox::SandboxPolicy::default()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED: this machine cannot enforce a sandbox: {e}");
            false
        }
    }
}

struct World {
    home: Home,
    root: tempfile::TempDir,
    net: Listeners,
}

impl World {
    fn new() -> World {
        let home = Home::new();
        home.install_copy(
            "codefly.dev",
            "probe",
            "1.0.0",
            &agent_testkit::bin_path("probe-agent"),
        );
        let root = tempfile::tempdir().unwrap();
        for d in ["home/.ssh", "work", "outside", "granted"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("home/.ssh/id_test"), "SECRET KEY").unwrap();
        let net = Listeners::new();
        World { home, root, net }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// `[publishers."*".sandbox]` sets the network, `codefly.dev`'s the write grant.
    fn config(&self, require: bool, tables: bool) -> Config {
        let mut text = format!("[sandbox]\nrequire = {require}\n");
        if tables {
            text.push_str(&format!(
                "\n[publishers.\"*\".sandbox]\nnetwork = \"none\"\n\n[publishers.\"codefly.dev\".sandbox]\nwrite = [\"{}\"]\n",
                self.p("granted").display()
            ));
        }
        Config::parse(&text, None).unwrap()
    }

    fn manager(&self, config: Config) -> Manager {
        Manager::builder()
            .home(AgentHome::new(self.home.path()))
            .stores(Vec::new())
            .config(config)
            .build()
            .unwrap()
    }

    fn options(&self) -> LoadOptions {
        LoadOptions::new()
            .workdir(self.p("work"))
            .env("HOME", self.p("home"))
            .env("PROBE_OUTSIDE", self.p("outside/file"))
            .env("PROBE_GRANTED", self.p("granted/file"))
            .env("PROBE_REPORT", self.p("work/report.json"))
            .env("PROBE_TCP_PORT", self.net.tcp_port().to_string())
            .env("PROBE_UDP_PORT", self.net.udp_port().to_string())
            .startup_timeout(Duration::from_secs(20))
            .dial_timeout(Duration::from_secs(20))
            .grace(Duration::from_secs(5))
    }

    fn report(&self) -> Value {
        let text = std::fs::read_to_string(self.p("work/report.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Every probe but the granted write failed, and the listeners saw nothing.
    fn assert_confined(&self, r: &Value) {
        for name in [
            "secret_read",
            "outside_write",
            "tcp_connect",
            "udp_send",
            "child_secret_read",
        ] {
            assert_eq!(r[name], false, "the confined agent could {name}: {r}");
        }
        assert_eq!(r["granted_write"], true, "{r}");
        assert!(!self.net.tcp_seen(), "the TCP listener was reached");
        assert!(!self.net.udp_seen(), "the UDP listener received a datagram");
        assert!(!self.p("outside/file").exists());
    }
}

fn probe_ref() -> AgentRef {
    "probe:1.0.0".parse().unwrap()
}

#[tokio::test]
async fn the_configured_policy_confines_the_agent_and_each_restart() {
    if !can_enforce() {
        return;
    }
    let w = World::new();
    let m = w.manager(w.config(true, true));
    let effective = m.effective_sandbox(&probe_ref());
    let policy = effective.policy.clone().unwrap();
    assert_eq!(policy.network, Network::None);
    assert_eq!(policy.write, [w.p("granted").display().to_string()]);
    assert!(
        matches!(&effective.network_from, PolicySource::Table { publisher, .. } if publisher == "*"),
        "{effective:?}"
    );
    assert!(
        matches!(&effective.write_from, PolicySource::Table { publisher, .. } if publisher == "codefly.dev"),
        "{effective:?}"
    );
    assert_eq!(effective.read_from, PolicySource::Default);

    let restart = RestartPolicy {
        mode: RestartMode::Always,
        max_restarts: 3,
        initial_backoff: Duration::from_millis(10),
        ..RestartPolicy::default()
    };
    let conn = m
        .load_with(&probe_ref(), w.options().restart(restart))
        .await
        .unwrap();
    let first = w.report();
    w.assert_confined(&first);
    let first_tmp = PathBuf::from(first["tmpdir"].as_str().unwrap());

    // Killed from outside: the supervisor starts it again, confined again.
    std::fs::remove_file(w.p("work/report.json")).unwrap();
    let pid = conn.pid();
    #[allow(unsafe_code)]
    // SAFETY: the test's own agent.
    unsafe {
        libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(w.p("work/report.json").exists() && conn.pid() != pid) {
        assert!(Instant::now() < deadline, "no restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The report is written before the agent serves: wait for the new one to be whole.
    let second = loop {
        if let Ok(v) = serde_json::from_str::<Value>(
            &std::fs::read_to_string(w.p("work/report.json")).unwrap(),
        ) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no whole report after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    w.assert_confined(&second);
    let second_tmp = PathBuf::from(second["tmpdir"].as_str().unwrap());
    assert_ne!(first_tmp, second_tmp, "each start has its own TMPDIR");
    assert!(!first_tmp.exists(), "the killed agent's TMPDIR is left");
    conn.close().await;
    assert!(!second_tmp.exists(), "the TMPDIR outlived the agent");
}

#[tokio::test]
async fn require_without_a_policy_is_admission_and_starts_nothing() {
    let w = World::new();
    let m = w.manager(w.config(true, false));
    assert!(m.effective_sandbox(&probe_ref()).policy.is_none());
    let err = m.load_with(&probe_ref(), w.options()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Admission, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("require = true") && msg.contains("[publishers.\"codefly.dev\".sandbox]"),
        "{msg}"
    );
    assert!(!w.p("work/report.json").exists(), "the agent ran");
    assert!(m.active().is_empty());
    // The explicit opt-out loads it.
    let conn = m
        .load_with(&probe_ref(), w.options().sandbox(Sandbox::unconfined()))
        .await
        .unwrap();
    assert_eq!(w.report()["secret_read"], true);
    conn.close().await;
}

#[tokio::test]
async fn load_options_unconfined_overrides_the_configured_policy() {
    let w = World::new();
    let m = w.manager(w.config(false, true));
    let conn = m
        .load_with(&probe_ref(), w.options().sandbox(Sandbox::unconfined()))
        .await
        .unwrap();
    let r = w.report();
    for name in ["secret_read", "outside_write", "tcp_connect", "udp_send"] {
        assert_eq!(r[name], true, "unconfined, the agent could not {name}: {r}");
    }
    assert!(w.net.tcp_seen() && w.net.udp_seen());
    conn.close().await;
}

/// `agentctl load` and `agentctl info` of the probe agent, with `config` as the
/// configuration file.
struct Ctl {
    w: World,
}

impl Ctl {
    fn new(config: &str) -> Ctl {
        let w = World::new();
        std::fs::write(w.home.path().join("config.toml"), config).unwrap();
        Ctl { w }
    }

    fn run(&self, args: &[&str]) -> common::Run {
        common::ctl_env(&self.w.home, self.w.root.path(), &[], args)
    }

    /// `agentctl load probe:1.0.0` with the probe's environment, then `extra` flags.
    fn load(&self, extra: &[&str]) -> common::Run {
        let w = &self.w;
        let env = [
            format!("HOME={}", w.p("home").display()),
            format!("PROBE_OUTSIDE={}", w.p("outside/file").display()),
            format!("PROBE_GRANTED={}", w.p("granted/file").display()),
            format!("PROBE_REPORT={}", w.p("work/report.json").display()),
            format!("PROBE_TCP_PORT={}", w.net.tcp_port()),
            format!("PROBE_UDP_PORT={}", w.net.udp_port()),
        ];
        let workdir = w.p("work").display().to_string();
        let mut args = vec!["load", "probe:1.0.0", "--workdir", &workdir];
        for e in &env {
            args.extend(["--env", e.as_str()]);
        }
        args.extend(extra);
        let _ = std::fs::remove_file(w.p("work/report.json"));
        self.run(&args)
    }
}

fn star_none_and_acme_write(w: &World) -> String {
    format!(
        "[publishers.\"*\".sandbox]\nnetwork = \"none\"\n\n[publishers.\"codefly.dev\".sandbox]\nwrite = [\"{}\"]\n",
        w.p("granted").display()
    )
}

#[test]
fn agentctl_info_shows_the_policy_and_load_flags_go_over_it() {
    let c = Ctl::new("");
    std::fs::write(
        c.w.home.path().join("config.toml"),
        star_none_and_acme_write(&c.w),
    )
    .unwrap();

    let info = c.run(&["--json", "info", "probe:1.0.0"]);
    assert_eq!(info.code, 0, "{}", info.stderr);
    let j = info.json();
    let s = &j["sandbox"];
    assert_eq!(s["policy"]["network"], "none", "{s}");
    assert_eq!(
        s["policy"]["write"][0],
        c.w.p("granted").display().to_string()
    );
    assert!(
        s["network_from"]
            .as_str()
            .unwrap()
            .starts_with("[publishers.\"*\".sandbox]"),
        "{s}"
    );
    assert!(
        s["write_from"]
            .as_str()
            .unwrap()
            .starts_with("[publishers.\"codefly.dev\".sandbox]"),
        "{s}"
    );
    assert_eq!(s["read_from"], "default");
    assert_eq!(s["require"], false);
    let text = c.run(&["info", "probe:1.0.0"]);
    assert!(
        text.stdout
            .contains("sandbox      network none  from [publishers.\"*\".sandbox]"),
        "{}",
        text.stdout
    );

    if !can_enforce() {
        return;
    }
    // The configuration's policy.
    let r = c.load(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    c.w.assert_confined(&c.w.report());
    // --sandbox-network any over it: the network is open, the files still closed.
    let r = c.load(&["--sandbox-network", "any"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = c.w.report();
    assert_eq!(rep["tcp_connect"], true, "{rep}");
    assert_eq!(rep["secret_read"], false, "{rep}");
    assert_eq!(rep["granted_write"], true, "{rep}");
    assert!(c.w.net.tcp_seen());
    // --no-sandbox: the explicit opt-out.
    let r = c.load(&["--no-sandbox"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(c.w.report()["secret_read"], true);
}

#[test]
fn agentctl_load_with_require_and_no_policy_is_admission() {
    let c = Ctl::new("[sandbox]\nrequire = true\n");
    let r = c.load(&["--json"]);
    r.assert_json_kind("admission");
    assert!(!c.w.p("work/report.json").exists(), "the agent ran");
    let info = c.run(&["info", "probe:1.0.0"]);
    assert!(
        info.stdout.contains("sandbox      refused: no policy"),
        "{}",
        info.stdout
    );
    // --no-sandbox is the way through.
    let r = c.load(&["--no-sandbox"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}
