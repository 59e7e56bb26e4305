//! Signed agents through the OCI store on the REAL registry (Debian's
//! `docker-registry`, started by `agent_testkit`), pushed as `oras push`
//! would push `service-echo service-echo.minisig`, signed with the reference
//! `minisign` CLI (and, for "another key", with this project's own signing).

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_ref::{AgentHome, AgentRef, ErrorKind, Platform};
use agent_store::{
    AgentStore, Installer, PublisherTrust, TrustPolicy, TrustedKey, keygen, sign_file,
    trusted_comment,
};
use agent_store_oci::{OciStore, PushFile, RegistryConfig, push_files, signature_title};
use agent_testkit::registry::LocalRegistry;

fn agent(v: &str) -> AgentRef {
    AgentRef::parse(&format!("codefly.dev/echo:{v}")).unwrap()
}

fn linux() -> Platform {
    "linux/amd64".parse().unwrap()
}

/// `minisign -G -W` in `dir`; returns the public key file's text.
fn cli_keygen(dir: &Path) -> String {
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join("k.pub"))
        .arg("-s")
        .arg(dir.join("k.sec"))
        .output()
        .expect("the minisign CLI (Debian package minisign) is needed");
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(dir.join("k.pub")).unwrap()
}

/// `minisign -S -t COMMENT -m FILE -x SIG` with the key made by [`cli_keygen`].
fn cli_sign(dir: &Path, file: &Path, comment: &str, sig: &Path) {
    let out = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(dir.join("k.sec"))
        .arg("-m")
        .arg(file)
        .args(["-t", comment])
        .arg("-x")
        .arg(sig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

struct Case {
    version: &'static str,
    binary: PathBuf,
    signature: Option<PathBuf>,
    platform: Option<Platform>,
}

async fn publish(reg: &RegistryConfig, c: &Case) {
    push_files(
        reg,
        &agent(c.version),
        &[PushFile {
            path: c.binary.clone(),
            platform: c.platform.clone(),
            signature: c.signature.clone(),
        }],
    )
    .await
    .unwrap();
}

fn trusting(home: &Path, key: &str) -> Installer {
    Installer::new(AgentHome::new(home)).with_trust(TrustPolicy::new().publisher(
        "codefly.dev",
        PublisherTrust::keys(vec![TrustedKey::parse(key).unwrap()]),
    ))
}

#[tokio::test]
async fn signed_installs_and_tampered_unsigned_foreign_or_replayed_are_refused() {
    let reg = LocalRegistry::start().expect("starting docker-registry");
    let cfg = RegistryConfig::parse(&reg.addr().to_string()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let public = cli_keygen(&keys);
    let good: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let evil: Vec<u8> = (0..200_001u32).map(|i| (i * 11 % 251) as u8).collect();
    let good_path = write(tmp.path(), "good", &good);
    let evil_path = write(tmp.path(), "evil", &evil);
    let sig = |name: &str, file: &Path, version: &str| {
        let p = tmp.path().join(name);
        cli_sign(&keys, file, &trusted_comment(&agent(version), &linux()), &p);
        p
    };

    // 1.0.0: signed, in an image index (the signature in the platform's manifest).
    publish(
        &cfg,
        &Case {
            version: "1.0.0",
            binary: good_path.clone(),
            signature: Some(sig("good-1.0.0.minisig", &good_path, "1.0.0")),
            platform: Some(linux()),
        },
    )
    .await;
    let store = OciStore::new(cfg.clone()).unwrap();
    let installer = trusting(&tmp.path().join("home"), &public);
    let got = store
        .pull(&agent("1.0.0"), &linux(), &installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), good);
    let record = std::fs::read_to_string(format!("{}.json", got.path.display())).unwrap();
    assert!(
        record.contains(&trusted_comment(&agent("1.0.0"), &linux())),
        "{record}"
    );

    // 1.1.0: another binary (its digest in the manifest is its own, so the
    // registry's digests all check out) with the good binary's signature.
    let other = keygen().unwrap();
    let other_sig = tmp.path().join("other.minisig");
    std::fs::write(
        &other_sig,
        sign_file(
            &other.secret,
            None,
            &good_path,
            &trusted_comment(&agent("1.3.0"), &linux()),
        )
        .unwrap(),
    )
    .unwrap();
    let cases = [
        (
            Case {
                version: "1.1.0",
                binary: evil_path.clone(),
                signature: Some(sig("good-1.1.0.minisig", &good_path, "1.1.0")),
                platform: None,
            },
            "tampered binary, recomputed digest",
        ),
        (
            Case {
                version: "1.2.0",
                binary: good_path.clone(),
                signature: None,
                platform: None,
            },
            "unsigned",
        ),
        (
            Case {
                version: "1.3.0",
                binary: good_path.clone(),
                signature: Some(other_sig),
                platform: None,
            },
            "signed by another key",
        ),
        (
            Case {
                version: "1.4.0",
                binary: good_path.clone(),
                signature: Some(sig("good-replay.minisig", &good_path, "1.0.0")),
                platform: None,
            },
            "a valid signature for another version",
        ),
    ];
    for (case, why) in &cases {
        publish(&cfg, case).await;
        let a = agent(case.version);
        let err = store.pull(&a, &linux(), &installer).await.expect_err(why);
        assert_eq!(err.kind(), ErrorKind::Untrusted, "{why}: {err}");
        let path = installer.home().binary_path(&a).unwrap();
        assert!(!path.exists(), "{why}: nothing cached");
        assert!(
            !Path::new(&format!("{}.json", path.display())).exists(),
            "{why}: no record"
        );
    }
    assert_eq!(
        signature_title(agent_ref::AgentKind::Service, "echo"),
        "service-echo.minisig"
    );
}
