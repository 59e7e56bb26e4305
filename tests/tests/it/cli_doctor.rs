//! `agentctl doctor` and `agentctl info` end to end: a real registry, a plain
//! static HTTP server, temp homes.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;

use agent_testkit::http::TestServer;
use agent_testkit::registry::LocalRegistry;
use common::{Home, ctl_env};

fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}

fn check<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {j}"))
}

// ---------------------------------------------------------------- doctor

#[test]
fn doctor_is_happy_with_a_private_home_and_no_store() {
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    home.install_echo("0.1.0");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let r = ctl_env(&home, project.path(), &[], &["doctor"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("CHECK"), "{}", r.stdout);
    assert!(r.stdout.contains("home"), "{}", r.stdout);
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
    let j = ctl_env(&home, project.path(), &[], &["doctor", "--json"]).json();
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(check(&j, "home")["status"], "ok");
    assert_eq!(
        check(&j, "process")["detail"],
        agent_manager::spawn::process_backend()
    );
    // This kernel offers Landlock: the sandbox row names its ABI.
    let sandbox = check(&j, "sandbox");
    assert!(
        sandbox["detail"].as_str().unwrap().contains("Landlock ABI"),
        "{sandbox}"
    );
}

#[test]
fn doctor_reports_a_dead_registry_with_its_fix() {
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    let dead = closed_port();
    let env = [
        ("CODEFLY_AGENT_STORES", "oci"),
        ("AGENT_REGISTRY", dead.as_str()),
    ];
    let r = ctl_env(&home, project.path(), &env, &["doctor"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .starts_with("error[store-unavailable]: doctor: 1 problem (store oci)"),
        "{}",
        r.stderr
    );
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("store oci"))
        .unwrap();
    assert!(
        line.contains("FAIL") && line.contains(&dead) && line.contains("unreachable"),
        "{line}"
    );
    assert!(
        r.stdout
            .contains(&format!("fix: start the registry at {dead}")),
        "{}",
        r.stdout
    );
    let r = ctl_env(&home, project.path(), &env, &["doctor", "--json"]);
    assert_eq!(r.code, 1);
    let j = r.json(); // one document: the report, no error document on top
    assert_eq!(j["ok"], false);
    let oci = check(&j, "store oci");
    assert_eq!(oci["status"], "fail");
    assert!(
        oci["fix"].as_str().unwrap().contains("AGENT_REGISTRY"),
        "{oci}"
    );
    assert!(oci["latency_ms"].as_f64().is_some(), "{oci}");
}

#[test]
fn doctor_reports_a_live_registry_and_http_store_with_their_answers() {
    let reg = LocalRegistry::start().expect("starting docker-registry");
    let root = tempfile::tempdir().unwrap();
    let web = TestServer::builder().files_from(root.path()).start();
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    let addr = reg.addr().to_string();
    let url = web.url();
    let env = [
        ("CODEFLY_AGENT_STORES", "oci,http"),
        ("AGENT_REGISTRY", addr.as_str()),
        ("AGENT_HTTP_STORE", url.as_str()),
        ("GITHUB_TOKEN", "ghp_never_printed_0123"),
    ];
    let r = ctl_env(&home, project.path(), &env, &["doctor", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("ghp_never_printed"), "{}", r.stdout);
    let j = r.json();
    let oci = check(&j, "store oci");
    assert_eq!(oci["status"], "ok", "{oci}");
    assert!(
        oci["detail"].as_str().unwrap().contains("registry/2.0"),
        "{oci}"
    );
    let http = check(&j, "store http");
    assert_eq!(http["status"], "ok", "{http}");
    assert!(
        http["detail"].as_str().unwrap().contains("HTTP 404"),
        "{http}"
    );
}

#[test]
fn doctor_reports_a_world_writable_home_with_its_fix() {
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    home.install_echo("0.1.0");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = ctl_env(&home, project.path(), &[], &["doctor"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.starts_with("error[untrusted]: "), "{}", r.stderr);
    assert!(
        r.stdout.contains("writable by everyone (mode 0777)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("fix: chmod go-w {}", home.path().display())),
        "{}",
        r.stdout
    );
    // The fix works.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = ctl_env(&home, project.path(), &[], &["doctor"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn doctor_reports_a_bad_config_file_and_the_lock_entries() {
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    home.install_echo("0.1.0");
    let r = ctl_env(&home, project.path(), &[], &["lock", "echo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = ctl_env(&home, project.path(), &[], &["doctor", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(
        check(&j, "lock codefly.dev/echo:0.1.0")["status"],
        "ok",
        "{j}"
    );
    std::fs::remove_file(home.binary("services", "codefly.dev", "echo", "0.1.0")).unwrap();
    let j = ctl_env(&home, project.path(), &[], &["doctor", "--json"]).json();
    let e = check(&j, "lock codefly.dev/echo:0.1.0");
    assert_eq!(e["status"], "warn", "{j}");
    assert_eq!(e["fix"], "agentctl pull codefly.dev/echo:0.1.0");

    std::fs::write(home.path().join("config.toml"), "[stores]\nfallback = 3\n").unwrap();
    let r = ctl_env(&home, project.path(), &[], &["doctor"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.starts_with("error[config]: "), "{}", r.stderr);
    let line = r.stdout.lines().find(|l| l.starts_with("config")).unwrap();
    assert!(
        line.contains("FAIL") && line.contains("config.toml"),
        "{line}"
    );
}

// ---------------------------------------------------------------- info

#[test]
fn info_shows_each_store_and_the_authoritative_one() {
    let reg = LocalRegistry::start().expect("starting docker-registry");
    let root = tempfile::tempdir().unwrap();
    // The HTTP store lists higher versions; it is second in order, so never consulted.
    let dir = root.path().join("codefly.dev/echo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("versions"), "2.0.0\n9.9.9\n").unwrap();
    let web = TestServer::builder().files_from(root.path()).start();
    let home = Home::new();
    let project = tempfile::tempdir().unwrap();
    let addr = reg.addr().to_string();
    let url = web.url();
    let env = [
        ("CODEFLY_AGENT_STORES", "oci,http"),
        ("AGENT_REGISTRY", addr.as_str()),
        ("AGENT_HTTP_STORE", url.as_str()),
    ];
    let echo = common::echo();
    for v in ["1.0.0", "1.1.0"] {
        let r = ctl_env(
            &home,
            project.path(),
            &env,
            &["push", &format!("echo:{v}"), echo.to_str().unwrap()],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let r = ctl_env(&home, project.path(), &env, &["info", "echo", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["authoritative"]["store"], "oci", "{j}");
    assert_eq!(
        j["authoritative"]["versions"],
        serde_json::json!(["1.0.0", "1.1.0"])
    );
    let stores = j["stores"].as_array().unwrap();
    assert_eq!(stores[0]["store"], "oci");
    assert_eq!(stores[1]["store"], "http");
    assert_eq!(
        stores[1]["versions"],
        serde_json::json!(["2.0.0", "9.9.9"]),
        "{j}"
    );
    assert_eq!(j["resolves_to"], "codefly.dev/echo:1.1.0");
    assert!(
        j["why"]
            .as_str()
            .unwrap()
            .contains("authoritative store oci"),
        "{j}"
    );
    assert_eq!(j["installed"], serde_json::json!([]));
    assert!(j["lock"].is_null());

    // Installed and locked: the answer says so.
    assert_eq!(
        ctl_env(&home, project.path(), &env, &["lock", "echo:1.0.0"]).code,
        0
    );
    let r = ctl_env(&home, project.path(), &env, &["info", "echo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("authority    oci"), "{}", r.stdout);
    assert!(
        r.stdout.contains("store oci    1.0.0, 1.1.0 *"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("store http   2.0.0, 9.9.9"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("installed    1.0.0"), "{}", r.stdout);
    assert!(
        r.stdout.contains("pins 1.0.0 (requested 1.0.0)"),
        "{}",
        r.stdout
    );
}
