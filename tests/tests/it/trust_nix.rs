//! The Nix store and publisher trust, through `agentctl` with the real
//! `nix`: a flake attribute names no publisher, so a publisher that requires
//! signatures is served by Nix only when its own `stores` lists `nix`.

use crate::common;

use agent_testkit::nix::{NIX_CONFIG, system};
use common::{Home, run};

/// A flake whose `agents-service-echo-1.0.0` is a script that leaves
/// `marker` behind when it runs, then becomes the real echo agent.
fn flake(dir: &std::path::Path, marker: &std::path::Path) -> String {
    let flake_dir = dir.join("flake");
    std::fs::create_dir_all(&flake_dir).unwrap();
    let script = format!(
        "printf '#!/bin/sh\\ntouch {}\\nexec {} \"$@\"\\n' > $out; chmod 755 $out",
        marker.display(),
        common::echo().display()
    );
    let nonce = dir.file_name().unwrap().to_string_lossy().into_owned();
    let flake = format!(
        "{{\n  outputs = {{ self }}: {{\n    packages.\"{sys}\" = {{\n      \"agents-service-echo-1.0.0\" = builtins.derivation {{\n        name = \"echo\";\n        system = \"{sys}\";\n        builder = \"/bin/sh\";\n        PATH = \"/usr/local/bin:/usr/bin:/bin\";\n        nonce = \"{nonce}\";\n        args = [ \"-c\" ''{script}'' ];\n      }};\n    }};\n  }};\n}}\n",
        sys = system()
    );
    std::fs::write(flake_dir.join("flake.nix"), flake).unwrap();
    format!("path:{}", flake_dir.display())
}

fn public_key() -> String {
    let kp = agent_manager::store::keygen().unwrap();
    kp.public
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn ctl_nix(home: &Home, flake_ref: &str, args: &[&str]) -> common::Run {
    let mut c = common::agentctl(home);
    c.env("CODEFLY_AGENT_STORES", "nix")
        .env("AGENT_NIX_FLAKE", flake_ref)
        .env("NIX_CONFIG", NIX_CONFIG)
        .args(args);
    run(c)
}

/// `[publishers."acme.corp"] keys = [K]` and a flake that builds
/// `agents-service-echo-1.0.0`: `load acme.corp/echo:1.0.0` does not run the
/// flake's unsigned binary (Nix is not asked for a keyed publisher), and
/// nothing is cached. Once acme.corp's own `stores` lists `nix`, it loads,
/// and `agentctl info` says the publisher is trusted via Nix.
#[test]
fn nix_serves_a_keyed_publisher_only_when_its_stores_list_nix() {
    let home = Home::new();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("flake-binary-ran");
    let flake_ref = flake(work.path(), &marker);
    let key = public_key();
    let config = home.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[publishers.\"acme.corp\"]\nkeys = [\"{key}\"]\n"),
    )
    .unwrap();
    let r = ctl_nix(&home, &flake_ref, &["load", "acme.corp/echo:1.0.0"]);
    assert_ne!(r.code, 0, "loaded: {} {}", r.stdout, r.stderr);
    assert!(
        !marker.exists(),
        "the flake's unsigned binary ran: {}",
        r.stderr
    );
    assert!(
        !home
            .binary("services", "acme.corp", "echo", "1.0.0")
            .exists(),
        "{}",
        r.stderr
    );

    // Another publisher, no keys: Nix serves it as before.
    let r = ctl_nix(&home, &flake_ref, &["load", "other/echo:1.0.0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();

    std::fs::write(
        &config,
        format!("[publishers.\"acme.corp\"]\nkeys = [\"{key}\"]\nstores = [\"nix\"]\n"),
    )
    .unwrap();
    let r = ctl_nix(&home, &flake_ref, &["load", "acme.corp/echo:1.0.0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(marker.exists());
    let r = ctl_nix(&home, &flake_ref, &["info", "acme.corp/echo"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("trusted via nix"), "{}", r.stdout);

    // The keys back without `nix` in stores: the cached Nix output no longer loads.
    std::fs::write(
        &config,
        format!("[publishers.\"acme.corp\"]\nkeys = [\"{key}\"]\n"),
    )
    .unwrap();
    std::fs::remove_file(&marker).unwrap();
    let r = ctl_nix(&home, &flake_ref, &["load", "acme.corp/echo:1.0.0"]);
    assert_ne!(r.code, 0, "loaded: {}", r.stdout);
    assert!(!marker.exists(), "the cached unsigned Nix output ran");
}
