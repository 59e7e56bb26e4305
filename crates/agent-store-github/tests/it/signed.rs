//! Signed agents through the GitHub store, against `FakeGitHub` (the
//! stand-in for api.github.com, `agent_testkit::github`). The release
//! asset `{asset}.minisig` signs the TARBALL; it is verified before anything
//! is extracted. Signed with the reference `minisign` CLI (and, for "another
//! key", with this project's own signing).

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent_ref::{AgentHome, AgentRef, ErrorKind, Platform};
use agent_store::{
    AgentStore, Installer, PublisherTrust, TrustPolicy, TrustedKey, keygen, sign_file,
    trusted_comment,
};
use agent_store_github::GithubStore;
use agent_testkit::github::{AssetSpec, FakeGitHub};
use support::archives::{Entry, tgz};

const BIN: &[u8] = b"#!/bin/sh\necho 'I am service-echo'\n";
const EVIL: &[u8] = b"#!/bin/sh\necho 'I am not who you think'\n";

fn agent(version: &str) -> AgentRef {
    format!("codefly.dev/echo:{version}").parse().unwrap()
}

fn linux() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn asset(version: &str) -> String {
    format!("service-echo_{version}_linux_amd64.tar.gz")
}

fn cli(args: &[&std::ffi::OsStr]) {
    let out = Command::new("minisign")
        .args(args)
        .output()
        .expect("the minisign CLI (Debian package minisign) is needed");
    assert!(out.status.success(), "{out:?}");
}

/// `minisign -S -t COMMENT` over `bytes` with the key in `dir`.
fn cli_sign(dir: &Path, bytes: &[u8], comment: &str) -> Vec<u8> {
    let f = dir.join("payload");
    std::fs::write(&f, bytes).unwrap();
    let sig = dir.join("payload.minisig");
    let sk = dir.join("k.sec");
    cli(&[
        "-S".as_ref(),
        "-s".as_ref(),
        sk.as_os_str(),
        "-m".as_ref(),
        f.as_os_str(),
        "-t".as_ref(),
        comment.as_ref(),
        "-x".as_ref(),
        sig.as_os_str(),
    ]);
    std::fs::read(sig).unwrap()
}

fn comment(version: &str) -> String {
    trusted_comment(&agent(version), &linux())
}

#[tokio::test]
async fn signed_tarballs_install_and_everything_else_is_refused() {
    let gh = FakeGitHub::start().await;
    let home = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (pk, sk) = (keys.path().join("k.pub"), keys.path().join("k.sec"));
    cli(&[
        "-G".as_ref(),
        "-W".as_ref(),
        "-p".as_ref(),
        pk.as_os_str(),
        "-s".as_ref(),
        sk.as_os_str(),
    ]);
    let public = std::fs::read_to_string(&pk).unwrap();
    let good = tgz(&[Entry::File("service-echo", BIN)]);
    let evil = tgz(&[Entry::File("service-echo", EVIL)]);

    let publish = |version: &str, tarball: &[u8], sig: Option<Vec<u8>>| {
        let mut assets = vec![AssetSpec::with_digest(&asset(version), tarball.to_vec())];
        if let Some(sig) = sig {
            assets.push(AssetSpec::with_digest(
                &format!("{}.minisig", asset(version)),
                sig,
            ));
        }
        gh.release(
            "codefly-dev",
            "service-echo",
            &format!("v{version}"),
            false,
            assets,
        );
    };
    publish(
        "1.0.0",
        &good,
        Some(cli_sign(keys.path(), &good, &comment("1.0.0"))),
    );
    // Another binary; its asset digest is its own (recomputed), the signature is the good one's.
    publish(
        "1.1.0",
        &evil,
        Some(cli_sign(keys.path(), &good, &comment("1.1.0"))),
    );
    publish("1.2.0", &good, None);
    let other = keygen().unwrap();
    let f = keys.path().join("good.tgz");
    std::fs::write(&f, &good).unwrap();
    let foreign = sign_file(&other.secret, None, &f, &comment("1.3.0")).unwrap();
    publish("1.3.0", &good, Some(foreign.into_bytes()));
    publish(
        "1.4.0",
        &good,
        Some(cli_sign(keys.path(), &good, &comment("1.0.0"))),
    );

    let store = GithubStore::builder()
        .api_url(gh.url())
        .cache_dir(home.path().join("cache").join("github"))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let installer =
        Installer::new(AgentHome::new(home.path())).with_trust(TrustPolicy::new().publisher(
            "codefly.dev",
            PublisherTrust::keys(vec![TrustedKey::parse(&public).unwrap()]),
        ));

    let got = store
        .pull(&agent("1.0.0"), &linux(), &installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), BIN);
    let record = std::fs::read_to_string(format!("{}.json", got.path.display())).unwrap();
    assert!(
        record.contains(&comment("1.0.0")),
        "the record keeps the signer: {record}"
    );

    for (version, why) in [
        ("1.1.0", "tampered tarball with a recomputed digest"),
        ("1.2.0", "unsigned"),
        ("1.3.0", "signed by another key"),
        ("1.4.0", "a valid signature for another version"),
    ] {
        let err = store
            .pull(&agent(version), &linux(), &installer)
            .await
            .expect_err(why);
        assert_eq!(err.kind(), ErrorKind::Untrusted, "{why}: {err}");
        let path = installer.home().binary_path(&agent(version)).unwrap();
        assert!(
            !path.exists(),
            "{why}: nothing cached at {}",
            path.display()
        );
        let tmp = home.path().join("cache/github/tmp");
        assert_eq!(
            std::fs::read_dir(&tmp).map_or(0, Iterator::count),
            0,
            "{why}: no temp dir left"
        );
    }
}
