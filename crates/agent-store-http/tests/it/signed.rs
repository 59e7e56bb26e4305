//! Signed agents through the HTTP store, against a real hyper server on
//! 127.0.0.1, signed with the reference `minisign` CLI (and, for "another
//! key", with this project's own signing): a signed binary installs; a
//! tampered one with a recomputed digest, an unsigned one, one signed by
//! another key and a replayed signature (valid, for another version) are each
//! refused as `untrusted`, with nothing cached.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use agent_store::{
    AgentHome, AgentRef, ErrorKind, Installer, Platform, PublisherTrust, RetryPolicy, StoreChain,
    TrustPolicy, TrustedKey, keygen, sign_file, trusted_comment,
};
use agent_store_http::HttpStore;
use common::{TestServer, payload, publish};

/// A minisign key pair made by the reference CLI (`minisign -G -W`).
struct CliKey {
    dir: tempfile::TempDir,
}

impl CliKey {
    fn new() -> CliKey {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(dir.path().join("k.pub"))
            .arg("-s")
            .arg(dir.path().join("k.sec"))
            .output()
            .expect("the minisign CLI (Debian package minisign) is needed");
        assert!(out.status.success(), "{out:?}");
        CliKey { dir }
    }

    fn public(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("k.pub")).unwrap()
    }

    /// `minisign -S -t COMMENT` over `bytes`: the `.minisig` text.
    fn sign(&self, bytes: &[u8], comment: &str) -> String {
        let f = self.dir.path().join("payload");
        std::fs::write(&f, bytes).unwrap();
        let sig = self.dir.path().join("payload.minisig");
        let out = Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(self.dir.path().join("k.sec"))
            .arg("-m")
            .arg(&f)
            .args(["-t", comment])
            .arg("-x")
            .arg(&sig)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::read_to_string(sig).unwrap()
    }
}

fn echo(version: &str) -> AgentRef {
    format!("codefly.dev/echo:{version}").parse().unwrap()
}

fn comment(version: &str) -> String {
    trusted_comment(&echo(version), &Platform::current())
}

fn installer(dir: &Path, key: &str) -> Installer {
    let policy = TrustPolicy::new().publisher(
        "codefly.dev",
        PublisherTrust::keys(vec![TrustedKey::parse(key).unwrap()]),
    );
    Installer::new(AgentHome::new(dir.join("home"))).with_trust(policy)
}

fn chain(server: &TestServer) -> StoreChain {
    let store = HttpStore::builder(common::base(server))
        .stall_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    StoreChain::new(vec![Arc::new(store)]).with_retry(RetryPolicy::none())
}

async fn refused(server: &TestServer, dir: &Path, key: &str, version: &str, why: &str) {
    let agent = echo(version);
    let installer = installer(dir, key);
    let err = chain(server)
        .pull(&agent, &Platform::current(), &installer)
        .await
        .expect_err(why);
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{why}: {err}");
    let path = installer.home().binary_path(&agent).unwrap();
    assert!(!path.exists(), "{why}: {} must not exist", path.display());
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    let mine = format!("echo__{version}");
    assert!(
        leftovers.iter().all(|n| {
            let n = n.to_string_lossy();
            !n.contains(&mine) || n.ends_with(".lock")
        }),
        "{why}: nothing of {version} but its lock may be left: {leftovers:?}"
    );
}

#[tokio::test]
async fn signed_by_the_publisher_installs_and_everything_else_is_refused() {
    let server = TestServer::start();
    let key = CliKey::new();
    let bytes = payload(100_000);
    let dir = tempfile::tempdir().unwrap();

    // Signed with the publisher's key and the right comment: installs.
    let path = publish(&server, "echo", "1.0.0", &bytes);
    server.put(
        &format!("{path}.minisig"),
        key.sign(&bytes, &comment("1.0.0")),
    );
    let installer = installer(dir.path(), &key.public());
    let got = chain(&server)
        .pull(&echo("1.0.0"), &Platform::current(), &installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    let record = std::fs::read_to_string(format!("{}.json", got.path.display())).unwrap();
    assert!(
        record.contains(&comment("1.0.0")),
        "the record keeps the signer: {record}"
    );

    // Tampered, with the sidecar digest recomputed: the signature does not match.
    let evil = payload(100_001);
    let path = publish(&server, "echo", "1.1.0", &evil);
    server.put(
        &format!("{path}.minisig"),
        key.sign(&bytes, &comment("1.1.0")),
    );
    refused(
        &server,
        dir.path(),
        &key.public(),
        "1.1.0",
        "tampered with a recomputed digest",
    )
    .await;

    // Unsigned, while the publisher's policy requires a signature.
    publish(&server, "echo", "1.2.0", &bytes);
    refused(&server, dir.path(), &key.public(), "1.2.0", "unsigned").await;

    // Signed by another key (this project's own signing).
    let other = keygen().unwrap();
    let path = publish(&server, "echo", "1.3.0", &bytes);
    let f = dir.path().join("to-sign");
    std::fs::write(&f, &bytes).unwrap();
    let sig = sign_file(&other.secret, None, &f, &comment("1.3.0")).unwrap();
    server.put(&format!("{path}.minisig"), sig);
    refused(&server, dir.path(), &key.public(), "1.3.0", "another key").await;

    // Replayed: a valid signature of these very bytes, for another version.
    let path = publish(&server, "echo", "1.4.0", &bytes);
    server.put(
        &format!("{path}.minisig"),
        key.sign(&bytes, &comment("1.0.0")),
    );
    refused(
        &server,
        dir.path(),
        &key.public(),
        "1.4.0",
        "replayed for another version",
    )
    .await;

    // A server that errors on the signature is not "unsigned".
    let path = publish(&server, "echo", "1.5.0", &bytes);
    server.fault(
        &format!("{path}.minisig"),
        &[common::Fault::Status(503, None)],
    );
    let err = chain(&server)
        .pull(&echo("1.5.0"), &Platform::current(), &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
}

#[tokio::test]
async fn without_a_policy_a_signature_is_not_required() {
    let server = TestServer::start();
    let bytes = payload(10_000);
    publish(&server, "echo", "1.0.0", &bytes);
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path().join("home")));
    let got = chain(&server)
        .pull(&echo("1.0.0"), &Platform::current(), &installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), bytes);
}
