//! Signing end to end: `agentctl keygen` (interoperating with the real
//! `minisign` CLI), `agentctl push --sign` to a real registry, and `cargo
//! xtask release --sign` served by a plain static server, each loaded back
//! with the publisher's key in the config.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use agent_testkit::http::TestServer;
use agent_testkit::registry::LocalRegistry;
use common::{Home, ctl_env};

fn minisign(args: &[&str], cwd: &Path) -> std::process::Output {
    let out = Command::new("minisign")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("minisign (Debian package minisign)");
    assert!(
        out.status.success(),
        "minisign {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `agentctl keygen --out DIR/NAME.key`; returns (secret path, public base64).
fn keygen(home: &Home, dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let r = ctl_env(home, dir, &[], &["keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (key, r.stdout.trim().to_owned())
}

fn trust_config(home: &Home, publisher: &str, key: &str) {
    std::fs::write(
        home.path().join("config.toml"),
        format!("[publishers.\"{publisher}\"]\nkeys = [\"{key}\"]\n"),
    )
    .unwrap();
}

#[test]
fn keygen_pairs_interoperate_with_the_minisign_cli() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&home, dir.path(), "agent");
    assert!(public.starts_with("RW"), "{public}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret key is private");
    let pubfile = dir.path().join("agent.pub");
    assert!(std::fs::read_to_string(&pubfile).unwrap().contains(&public));
    // No silent overwrite.
    let r = ctl_env(
        &home,
        dir.path(),
        &[],
        &["keygen", "--out", key.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    // minisign signs with our secret key and verifies with our public key.
    let msg = dir.path().join("msg");
    std::fs::write(&msg, b"hello").unwrap();
    minisign(
        &[
            "-S",
            "-s",
            key.to_str().unwrap(),
            "-m",
            "msg",
            "-t",
            "codefly-agent a/b:1.0.0 linux/amd64",
        ],
        dir.path(),
    );
    minisign(
        &["-V", "-p", pubfile.to_str().unwrap(), "-m", "msg"],
        dir.path(),
    );
}

#[test]
fn push_sign_then_only_what_the_publisher_signed_loads() {
    let reg = LocalRegistry::start().expect("starting docker-registry");
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&home, dir.path(), "acme");
    // A key made by the reference tool signs through agentctl too.
    minisign(
        &["-G", "-W", "-p", "other.pub", "-s", "other.key"],
        dir.path(),
    );
    let other_key = dir.path().join("other.key");
    let addr = reg.addr().to_string();
    let env = [
        ("CODEFLY_AGENT_STORES", "oci"),
        ("AGENT_REGISTRY", addr.as_str()),
    ];
    let echo = common::echo();
    let echo = echo.to_str().unwrap();
    let push = |r: &str, sign: Option<&Path>| {
        let mut args = vec!["push", r, echo];
        if let Some(k) = sign {
            args.extend(["--sign", k.to_str().unwrap()]);
        }
        let out = ctl_env(&home, dir.path(), &env, &args);
        assert_eq!(out.code, 0, "push {r}: {}", out.stderr);
    };
    push("acme/echo:1.0.0", Some(&key));
    push("acme/echo:1.1.0", None);
    push("acme/echo:1.2.0", Some(&other_key));
    trust_config(&home, "acme", &public);

    let r = ctl_env(
        &home,
        dir.path(),
        &env,
        &["pull", "acme/echo:1.0.0", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ls = ctl_env(&home, dir.path(), &env, &["ls", "acme/echo", "--json"]).json();
    let signer = ls[0]["signer"].as_str().expect("signed").to_owned();
    assert_eq!(signer.len(), 16, "{ls}");
    assert_eq!(
        ls[0]["signed_as"],
        format!("codefly-agent acme/echo:1.0.0 {}", common_platform())
    );
    let text = ctl_env(&home, dir.path(), &env, &["ls", "acme/echo"]).stdout;
    assert!(text.contains(&format!("signed {signer}")), "{text}");
    // It loads.
    let r = ctl_env(
        &home,
        dir.path(),
        &env,
        &["load", "acme/echo:1.0.0", "--json"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    for (v, why) in [("1.1.0", "unsigned"), ("1.2.0", "another key")] {
        let r = ctl_env(
            &home,
            dir.path(),
            &env,
            &["pull", &format!("acme/echo:{v}"), "--json"],
        );
        r.assert_json_kind("untrusted");
        assert!(
            !home.binary("services", "acme", "echo", v).exists(),
            "{why}: nothing cached"
        );
    }
}

fn common_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

#[test]
fn release_sign_round_trips_through_a_static_http_server() {
    let home = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(&home, dir.path(), "acme");
    let out = dir.path().join("release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "-p",
            "xtask",
            "--",
            "release",
            "--debug",
            "--publisher",
            "acme",
        ])
        .arg("--sign")
        .arg(&key)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "cargo xtask release failed");
    let p = common_platform();
    let suffix = p.replace('/', "_");
    let asset = out.join(format!("service-echo_0.1.0_{suffix}.tar.gz"));
    for f in [
        asset.clone(),
        PathBuf::from(format!("{}.minisig", asset.display())),
        out.join("SHA256SUMS"),
        out.join("SHA256SUMS.minisig"),
        out.join("man/agentctl.1"),
        out.join("man/agentctl-load.1"),
        out.join(format!("http/acme/echo/0.1.0/service-echo_{suffix}.sha256")),
        out.join(format!(
            "http/acme/echo/0.1.0/service-echo_{suffix}.minisig"
        )),
    ] {
        assert!(f.is_file(), "{} missing", f.display());
    }
    assert_eq!(
        std::fs::read_to_string(out.join("http/acme/echo/versions")).unwrap(),
        "0.1.0\n"
    );
    // The reference tool verifies what the release signed.
    let pubfile = dir.path().join("acme.pub");
    minisign(
        &["-V", "-p", pubfile.to_str().unwrap(), "-m", "SHA256SUMS"],
        &out,
    );
    let verified = minisign(
        &[
            "-V",
            "-p",
            pubfile.to_str().unwrap(),
            "-m",
            asset.file_name().unwrap().to_str().unwrap(),
        ],
        &out,
    );
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(
        said.contains(&format!("codefly-agent acme/echo:0.1.0 {p}")),
        "{said}"
    );

    // Serve the HTTP layout as plain files; load through the HTTP store with the key.
    let web = TestServer::builder().files_from(&out.join("http")).start();
    trust_config(&home, "acme", &public);
    let url = web.url();
    let env = [
        ("CODEFLY_AGENT_STORES", "http"),
        ("AGENT_HTTP_STORE", url.as_str()),
    ];
    let r = ctl_env(&home, dir.path(), &env, &["load", "acme/echo", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["version"], "0.1.0");
    let ls = ctl_env(&home, dir.path(), &env, &["ls", "acme/echo", "--json"]).json();
    assert!(ls[0]["signer"].is_string(), "{ls}");

    // Another key in the config: the same release is refused, nothing cached.
    let other = Home::new();
    let (_, other_public) = keygen(&other, dir.path(), "other");
    trust_config(&other, "acme", &other_public);
    let r = ctl_env(&other, dir.path(), &env, &["pull", "acme/echo", "--json"]);
    r.assert_json_kind("untrusted");
    assert!(!other.binary("services", "acme", "echo", "0.1.0").exists());
}
