//! `agentctl` end to end: real binaries, temp homes, no store (CODEFLY_AGENT_STORES=none).

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Home, ctl, run};

const GONE: Duration = Duration::from_secs(20);

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

// ---------------------------------------------------------------- resolve

#[test]
fn resolve_prints_one_line_with_the_highest_installed_version() {
    let home = Home::new();
    for v in ["1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1"] {
        home.install_mode("echo", v, "serve");
    }
    let r = ctl(&home, &["resolve", "echo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "codefly.dev/echo:1.10.0\n");
    let r = ctl(&home, &["resolve", "codefly.dev/echo:~1.2"]);
    assert_eq!(r.stdout, "codefly.dev/echo:1.2.0\n");
    let r = ctl(&home, &["--local", "resolve", "echo:>=2.0.0-rc.0"]);
    assert_eq!(r.stdout, "codefly.dev/echo:2.0.0-rc.1\n");
}

#[test]
fn resolve_exact_passes_through_and_json_shape() {
    let home = Home::new();
    let r = ctl(&home, &["resolve", "acme/tool:v3.1.4"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "acme/tool:3.1.4\n");
    let r = ctl(&home, &["resolve", "acme/tool:3.1.4", "--json"]);
    let j = r.json();
    assert_eq!(keys(&j), ["kind", "name", "publisher", "ref", "version"]);
    assert_eq!(j["ref"], "acme/tool:3.1.4");
    assert_eq!(j["version"], "3.1.4");
    assert_eq!(j["kind"], "service");
}

#[test]
fn resolve_respects_kind() {
    let home = Home::new();
    let p = home.binary("modules", "codefly.dev", "m", "0.4.0");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"x").unwrap();
    ctl(&home, &["resolve", "m"]).assert_kind("binary-not-found");
    let r = ctl(&home, &["--kind", "module", "resolve", "m", "--json"]);
    assert_eq!(r.json()["kind"], "module");
    assert_eq!(r.json()["version"], "0.4.0");
}

#[test]
fn resolve_nothing_is_binary_not_found_with_every_answer() {
    let home = Home::new();
    let r = ctl(&home, &["resolve", "ghost", "--json"]);
    r.assert_json_kind("binary-not-found");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("codefly.dev/ghost:latest"), "{msg}");
    assert!(msg.contains("local:"), "{msg}");
    assert!(msg.contains("none enabled"), "{msg}");
    assert!(msg.contains("AGENT_REGISTRY"), "remedy: {msg}");
}

// ---------------------------------------------------------------- pull

#[test]
fn pull_of_a_cached_agent_prints_its_absolute_path_last() {
    let home = Home::new();
    let installed = home.install_echo("0.3.0");
    let r = ctl(&home, &["pull", "echo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last = r.stdout.lines().last().unwrap();
    assert_eq!(std::path::Path::new(last), installed);
    assert!(std::path::Path::new(last).is_absolute());
    let j = ctl(&home, &["pull", "echo:0.3.0", "--json"]).json();
    assert_eq!(
        keys(&j),
        ["path", "ref", "sha256", "size", "source", "version"]
    );
    assert_eq!(j["ref"], "codefly.dev/echo:0.3.0");
    assert_eq!(j["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(j["size"], std::fs::metadata(&installed).unwrap().len());
    assert_eq!(j["source"], "local");
}

#[test]
fn pull_missing_is_binary_not_found_and_json_error_on_stdout() {
    let home = Home::new();
    let r = ctl(&home, &["pull", "echo:1.0.0", "--json"]);
    r.assert_json_kind("binary-not-found");
    assert!(r.stderr.contains("echo__1.0.0"), "{}", r.stderr);
    // Progress bars only on a terminal: nothing but the error on stderr here.
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

// ---------------------------------------------------------------- load

#[test]
fn load_json_contract_and_the_agent_is_gone_afterwards() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let r = ctl(&home, &["load", "echo", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(keys(&j), ["endpoint", "load_ms", "pid", "ref", "version"]);
    assert_eq!(j["ref"], "codefly.dev/echo:0.1.0");
    assert_eq!(j["version"], "0.1.0");
    assert!(
        j["endpoint"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{j}"
    );
    assert!(j["load_ms"].as_f64().unwrap() > 0.0);
    let pid = u32::try_from(j["pid"].as_u64().unwrap()).unwrap();
    assert!(
        agent_testkit::wait_pid_gone(pid, GONE),
        "agent {pid} left running"
    );
}

#[test]
fn load_text_summary_uds_env_workdir_and_for() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let work = tempfile::tempdir().unwrap();
    let r = ctl(
        &home,
        &[
            "load",
            "echo:0.1.0",
            "--uds",
            "--for",
            "200ms",
            "--env",
            "A=1",
            "--workdir",
            work.path().to_str().unwrap(),
            "--grace",
            "5s",
            "--startup-timeout",
            "20s",
            "--dial-timeout",
            "20s",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("loaded   codefly.dev/echo:0.1.0"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("endpoint unix:/"), "{}", r.stdout);
    assert!(r.stdout.contains("pid      "), "{}", r.stdout);
    assert!(r.stderr.contains("closed ("), "{}", r.stderr);
}

#[test]
fn load_a_path_as_is() {
    let home = Home::new();
    let echo = common::echo();
    let r = ctl(&home, &["load", echo.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["ref"], echo.to_str().unwrap());
    assert!(j["version"].is_null());
    // A relative path too, from the binary's directory.
    let mut c = common::agentctl(&home);
    c.current_dir(echo.parent().unwrap())
        .args(["load", "./agent-echo", "--json"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["ref"], echo.to_str().unwrap());
}

#[test]
fn load_hold_ends_on_sigterm_and_the_agent_is_gone() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let mut c = common::agentctl(&home);
    c.args(["load", "echo", "--hold", "--json", "--grace", "10s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    let pid = u32::try_from(j["pid"].as_u64().unwrap()).unwrap();
    assert!(agent_testkit::pid_alive(pid), "held agent is running");
    // What another process needs to attach: pid, endpoint, token.
    let token = j["token"].as_str().unwrap();
    assert_eq!(token.len(), 64, "{j}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{j}");
    assert!(
        j["endpoint"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{j}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent_testkit::pid_alive(pid), "still held");
    let ctl_pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on our own child.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(ctl_pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "agentctl exits 0 after closing");
    assert!(
        agent_testkit::wait_pid_gone(pid, GONE),
        "agent {pid} left running"
    );
}

#[test]
fn load_hold_restart_on_failure_reports_each_restart_then_gives_up() {
    let home = Home::new();
    home.install_mode("crashy", "1.0.0", "die-after-load");
    let r = ctl(
        &home,
        &[
            "load",
            "crashy:1.0.0",
            "--hold",
            "--restart",
            "on-failure",
            "--max-restarts",
            "2",
            "--json",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let exits = r
        .stderr
        .lines()
        .filter(|l| l.contains("exited (exit status 1)"))
        .count();
    assert!(exits >= 2, "each exit with its status: {}", r.stderr);
    assert!(r.stderr.contains("restarting in"), "{}", r.stderr);
    assert!(r.stderr.contains("restarted: pid"), "{}", r.stderr);
    let gave_up = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error[agent-exited]"))
        .unwrap();
    assert!(gave_up.contains("giving up"), "{}", r.stderr);
    // The first JSON line is the load; the last the error document.
    let last = r.stdout.lines().last().unwrap();
    let j: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(j["error"]["kind"], "agent-exited");
    // --restart without a hold is a usage mistake, not a silent no-op.
    ctl(&home, &["load", "crashy:1.0.0", "--restart", "always"]).assert_kind("invalid-ref");
}

#[test]
fn agent_logs_become_host_events_with_their_level() {
    let home = Home::new();
    let dst = home.binary("services", "codefly.dev", "slogger", "1.0.0");
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    // A Go slog JSON handler line, then a healthy agent.
    common::write_script(
        &dst,
        &format!(
            "echo '{{\"time\":\"2026-12-01T00:00:00Z\",\"level\":\"WARN\",\"msg\":\"disk almost full\",\"free_mb\":3}}' >&2\nexec '{}' serve\n",
            common::test_agent().display()
        ),
    );
    let load = |extra: &[&str]| {
        let mut args = vec!["load", "slogger:1.0.0", "--for", "300ms"];
        args.extend_from_slice(extra);
        let r = ctl(&home, &args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stderr
    };
    let parsed = load(&["-v"]);
    let line = parsed
        .lines()
        .find(|l| l.contains("disk almost full"))
        .unwrap_or_else(|| panic!("no host event: {parsed}"));
    assert!(line.contains("WARN"), "the agent's level: {line}");
    assert!(line.contains("free_mb"), "its fields: {line}");
    assert!(
        !line.contains("\"msg\""),
        "parsed, not the raw JSON: {line}"
    );
    let raw = load(&["-v", "--agent-logs", "raw"]);
    let line = raw
        .lines()
        .find(|l| l.contains("disk almost full"))
        .unwrap_or_else(|| panic!("no raw event: {raw}"));
    assert!(
        line.contains("INFO") && line.contains("\"level\":\"WARN\""),
        "{line}"
    );
    let off = load(&["-v", "--agent-logs", "off"]);
    assert!(!off.contains("disk almost full"), "{off}");
}

// ---------------------------------------------------------------- error kinds

fn load_mode(mode: &str, extra: &[&str]) -> common::Run {
    let home = Home::new();
    home.install_mode("bad", "1.0.0", mode);
    let mut args = vec!["load", "bad:1.0.0", "--json"];
    args.extend_from_slice(extra);
    ctl(&home, &args)
}

#[test]
fn invalid_ref() {
    let home = Home::new();
    for bad in ["a/b/c", "../x:1", "echo:not a version", ".hidden"] {
        let r = ctl(&home, &["load", bad, "--json"]);
        if bad.starts_with("../") {
            // A path: not there.
            r.assert_json_kind("binary-not-found");
        } else {
            r.assert_json_kind("invalid-ref");
        }
    }
}

#[test]
fn binary_not_found_without_stores() {
    let home = Home::new();
    let r = ctl(&home, &["load", "echo", "--json"]);
    r.assert_json_kind("binary-not-found");
    let r = ctl(&home, &["load", "/nonexistent/agent"]);
    r.assert_kind("binary-not-found");
    assert!(r.stderr.contains("/nonexistent/agent"), "{}", r.stderr);
}

#[test]
fn spawn_error_for_a_file_that_is_not_executable() {
    let home = Home::new();
    let p = home.binary("services", "codefly.dev", "plain", "1.0.0");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"not a program").unwrap();
    ctl(&home, &["load", "plain", "--json"]).assert_json_kind("spawn");
}

#[test]
fn agent_exited_carries_the_stderr_tail() {
    let r = load_mode("exit-early", &[]);
    r.assert_json_kind("agent-exited");
    assert!(r.stderr.contains("missing configuration"), "{}", r.stderr);
    assert!(r.stderr.contains("agent stderr"), "{}", r.stderr);
    assert!(
        r.json()["error"]["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("missing configuration")
    );
}

#[test]
fn handshake_timeout() {
    load_mode("hang", &["--startup-timeout", "500ms"]).assert_json_kind("handshake-timeout");
}

#[test]
fn handshake_malformed_quotes_the_line() {
    let r = load_mode("garbage", &[]);
    r.assert_json_kind("handshake-malformed");
    assert!(r.stderr.contains("hello world"), "{}", r.stderr);
}

#[test]
fn version_mismatch() {
    load_mode("wrong-version", &[]).assert_json_kind("version-mismatch");
}

#[test]
fn dial_timeout() {
    load_mode("no-listener", &["--dial-timeout", "500ms"]).assert_json_kind("dial-timeout");
}

#[test]
fn not_serving() {
    load_mode("not-serving", &["--dial-timeout", "1s"]).assert_json_kind("not-serving");
}

#[test]
fn store_unavailable_for_push_to_a_dead_registry() {
    let home = Home::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let echo = common::echo();
    let r = ctl(
        &home,
        &[
            "push",
            "echo:1.0.0",
            echo.to_str().unwrap(),
            "--registry",
            &addr,
            "--json",
        ],
    );
    r.assert_json_kind("store-unavailable");
}

#[test]
fn push_needs_a_concrete_version_and_existing_files() {
    let home = Home::new();
    let echo = common::echo();
    ctl(
        &home,
        &[
            "push",
            "echo",
            echo.to_str().unwrap(),
            "--registry",
            "127.0.0.1:1",
        ],
    )
    .assert_kind("invalid-ref");
    ctl(
        &home,
        &[
            "push",
            "echo:1.0.0",
            "/nonexistent",
            "--registry",
            "127.0.0.1:1",
        ],
    )
    .assert_kind("binary-not-found");
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    for args in [
        &["frobnicate"][..],
        &["load"],
        &["load", "echo", "--for", "soon"],
        &["load", "echo", "--hold", "--for", "1s"],
        &["load", "echo", "--env", "NOEQUALS"],
        &["bench", "echo", "-n", "0"],
        &["prune", "--keep", "0"],
        &["--kind", "robot", "ls"],
        &["push", "echo:1.0.0", "f"],
    ] {
        let r = ctl(&home, args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty());
    }
    let r = ctl(&home, &["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("resolve") && r.stdout.contains("prune"));
}

// ---------------------------------------------------------------- bench

#[test]
fn bench_json_shape() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let r = ctl(&home, &["bench", "echo", "-n", "3", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(keys(&j), ["close_ms", "load_ms", "n"]);
    assert_eq!(j["n"], 3);
    for k in ["load_ms", "close_ms"] {
        assert_eq!(keys(&j[k]), ["max", "p50", "p90"]);
        let (p50, max) = (j[k]["p50"].as_f64().unwrap(), j[k]["max"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= max, "{j}");
    }
    let r = ctl(&home, &["bench", "echo", "-n", "2"]);
    assert!(r.stdout.contains("load   p50"), "{}", r.stdout);
}

// ---------------------------------------------------------------- ls / rm / prune

fn prepared() -> Home {
    let home = Home::new();
    for v in ["1.0.0", "1.2.0", "1.10.0"] {
        home.install_echo(v);
    }
    home.install_copy("acme", "tool", "0.1.0", &common::echo());
    let rec = home.binary("services", "acme", "tool", "0.1.0.json");
    std::fs::write(
        &rec,
        r#"{"sha256":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","size":1,"source":"oci:127.0.0.1:5000/agents/acme/tool:0.1.0","installed_at":1}"#,
    )
    .unwrap();
    // Not agents: temp, lock, non-semver.
    let dir = home
        .binary("services", "codefly.dev", "echo", "x")
        .parent()
        .unwrap()
        .to_path_buf();
    std::fs::write(dir.join(".echo__2.0.0.tmp.1.1"), b"partial").unwrap();
    std::fs::write(dir.join("echo__2.0.0.lock"), b"").unwrap();
    std::fs::write(dir.join("echo__v3"), b"").unwrap();
    home
}

#[test]
fn ls_names_each_kind_by_its_cache_directory() {
    let home = Home::new();
    for (dir, kind) in [
        ("services", "service"),
        ("applications", "application"),
        ("modules", "module"),
        ("toolboxes", "toolbox"),
        ("runnables", "runnable"),
    ] {
        let bin = home.binary(dir, "acme", &format!("in-{dir}"), "1.0.0");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(common::echo(), &bin).unwrap();
        let j = ctl(&home, &["ls", "--json"]).json();
        let listed: Vec<(&str, &str)> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
            .collect();
        assert!(
            listed.contains(&(format!("in-{dir}").as_str(), kind)),
            "{dir}: {listed:?}"
        );
    }
}

#[test]
fn ls_lists_installed_agents() {
    let home = prepared();
    let j = ctl(&home, &["ls", "--json"]).json();
    let refs: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ref"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs,
        [
            "acme/tool:0.1.0",
            "codefly.dev/echo:1.10.0",
            "codefly.dev/echo:1.2.0",
            "codefly.dev/echo:1.0.0"
        ]
    );
    let tool = &j[0];
    assert_eq!(
        keys(tool),
        [
            "kind",
            "last_used",
            "name",
            "path",
            "publisher",
            "ref",
            "sha256",
            "signed_as",
            "signer",
            "size",
            "source",
            "store",
            "version"
        ]
    );
    assert!(tool["signer"].is_null(), "unsigned: {tool}");
    assert_eq!(tool["source"], "oci:127.0.0.1:5000/agents/acme/tool:0.1.0");
    assert!(tool["sha256"].as_str().unwrap().starts_with("0011"));
    let echo = &j[1];
    assert_eq!(echo["source"], "local");
    assert_eq!(echo["version"], "1.10.0");
    assert_eq!(
        echo["size"],
        std::fs::metadata(common::echo()).unwrap().len()
    );
    let r = ctl(&home, &["ls", "echo:^1.2"]);
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert!(
        r.stdout.contains("unsigned"),
        "ls shows the signer: {}",
        r.stdout
    );
    assert!(r.stdout.contains("codefly.dev/echo:1.10.0"));
    let r = ctl(&Home::new(), &["ls", "--json"]);
    assert_eq!(r.json(), serde_json::json!([]));
}

#[test]
fn rm_removes_what_it_is_asked_to() {
    let home = prepared();
    let r = ctl(&home, &["rm", "echo:1.2.0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("removed codefly.dev/echo:1.2.0 "),
        "{}",
        r.stdout
    );
    assert!(
        !home
            .binary("services", "codefly.dev", "echo", "1.2.0")
            .exists()
    );
    assert!(
        home.binary("services", "codefly.dev", "echo", "1.0.0")
            .exists()
    );
    ctl(&home, &["rm", "echo:1.2.0"]).assert_kind("binary-not-found");
    ctl(&home, &["rm", "echo"]).assert_kind("invalid-ref");
    let j = ctl(&home, &["rm", "echo", "--all", "--json"]).json();
    assert_eq!(j["removed"].as_array().unwrap().len(), 2);
    assert!(
        !home
            .binary("services", "codefly.dev", "echo", "1.10.0")
            .exists()
    );
    assert!(home.binary("services", "acme", "tool", "0.1.0").exists());
    // The record goes with the binary.
    ctl(&home, &["rm", "acme/tool:0.1.0"]);
    assert!(
        !home
            .binary("services", "acme", "tool", "0.1.0.json")
            .exists()
    );
}

#[test]
fn prune_keeps_the_highest() {
    let home = prepared();
    let j = ctl(&home, &["prune", "--keep", "2", "--json"]).json();
    let removed: Vec<&str> = j["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ref"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["codefly.dev/echo:1.0.0"]);
    assert_eq!(j["kept"].as_array().unwrap().len(), 3);
    let r = ctl(&home, &["prune"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            "removed codefly.dev/echo:1.2.0 {}\n",
            home.binary("services", "codefly.dev", "echo", "1.2.0")
                .display()
        )
    );
    assert!(
        home.binary("services", "codefly.dev", "echo", "1.10.0")
            .exists()
    );
    // Temp and lock files are not agents; prune leaves them to the installer.
    let dir = home
        .binary("services", "codefly.dev", "echo", "x")
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(dir.join("echo__2.0.0.lock").exists());
}

#[test]
fn prune_by_last_use_and_by_size() {
    let home = Home::new();
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        home.install_echo(v);
    }
    // 1.0.0 was last used 40 days ago (no record: the binary's mtime counts).
    let old = home.binary("services", "codefly.dev", "echo", "1.0.0");
    let st = std::process::Command::new("touch")
        .args(["-d", "40 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(st.success());
    let j = ctl(
        &home,
        &["prune", "--unused-for", "30d", "--dry-run", "--json"],
    )
    .json();
    assert_eq!(j["removed"][0]["ref"], "codefly.dev/echo:1.0.0", "{j}");
    assert!(old.exists(), "--dry-run removes nothing");
    let r = ctl(&home, &["prune", "--unused-for", "30d"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!old.exists());
    assert!(
        home.binary("services", "codefly.dev", "echo", "2.0.0")
            .exists()
    );
    // The cache must fit in one binary's size: the least recently used goes.
    let two = home.binary("services", "codefly.dev", "echo", "2.0.0");
    let size = std::fs::metadata(&two).unwrap().len();
    let st = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&two)
        .status()
        .unwrap();
    assert!(st.success());
    let r = ctl(&home, &["prune", "--max-size", &size.to_string(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["removed"][0]["ref"], "codefly.dev/echo:2.0.0");
    assert!(
        home.binary("services", "codefly.dev", "echo", "3.0.0")
            .exists()
    );
}

#[test]
fn quiet_prints_only_results() {
    let home = Home::new();
    home.install_echo("0.1.0");
    let r = ctl(&home, &["-q", "load", "echo"]);
    assert_eq!(r.code, 0);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert!(r.stdout.contains("loaded"));
}

// ---------------------------------------------------------------- stdout

/// `agentctl ls | head -0`: the reader is gone before the first line. The
/// command ends quietly with 0 (it panicked with 101 before).
#[test]
fn a_closed_stdout_pipe_ends_the_command_quietly() {
    let home = Home::new();
    for v in ["1.0.0", "1.1.0"] {
        home.install_mode("echo", v, "serve");
    }
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = common::agentctl(&home);
    c.args(["ls"]).stdout(writer).stderr(Stdio::piped());
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// Any other stdout failure is an `io` error naming stdout, exit 1.
#[test]
fn a_full_stdout_is_an_io_error() {
    let home = Home::new();
    home.install_mode("echo", "1.0.0", "serve");
    let mut c = common::agentctl(&home);
    c.args(["ls"])
        .stdout(std::fs::File::create("/dev/full").unwrap());
    let r = run(c);
    r.assert_kind("io");
    assert!(r.stderr.contains("cannot write to stdout"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}
