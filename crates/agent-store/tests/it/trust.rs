//! Signed agents, verified as they stream into the cache, interoperating with
//! the reference `minisign` tool both ways. Every refusal is kind
//! `untrusted` with nothing in the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_store::{
    AgentHome, AgentRef, ErrorKind, Expected, Installer, Platform, PublisherTrust, StoreError,
    TrustPolicy, TrustedKey, keygen, sign_file, trusted_comment,
};

struct Keys {
    public: String,
    secret: PathBuf,
    public_file: PathBuf,
}

fn minisign_keys(dir: &Path, name: &str) -> Keys {
    let pk = dir.join(format!("{name}.pub"));
    let sk = dir.join(format!("{name}.key"));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .output()
        .expect("minisign is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Keys {
        public: std::fs::read_to_string(&pk).unwrap(),
        secret: sk,
        public_file: pk,
    }
}

/// Signs `file` with the minisign CLI; `legacy` for the pre-0.10 format.
fn minisign_sign(keys: &Keys, file: &Path, comment: &str, legacy: bool) -> String {
    let mut cmd = Command::new("minisign");
    cmd.arg("-S");
    if legacy {
        cmd.arg("-l");
    }
    let out = cmd
        .arg("-s")
        .arg(&keys.secret)
        .arg("-m")
        .arg(file)
        .args(["-t", comment])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sig = file.as_os_str().to_owned();
    sig.push(".minisig");
    std::fs::read_to_string(PathBuf::from(sig)).unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    agent: AgentRef,
    platform: Platform,
    bin: PathBuf,
    bytes: Vec<u8>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let bin = dir.path().join("service-echo");
    std::fs::write(&bin, &bytes).unwrap();
    Setup {
        dir,
        agent: "acme/echo:1.2.0".parse().unwrap(),
        platform: Platform::new("linux", "amd64").unwrap(),
        bin,
        bytes,
    }
}

fn installer(s: &Setup, keys: &[&str]) -> Installer {
    let keys = keys.iter().map(|k| TrustedKey::parse(k).unwrap()).collect();
    Installer::new(AgentHome::new(s.dir.path().join("home")))
        .with_trust(TrustPolicy::new().publisher("acme", PublisherTrust::keys(keys)))
}

fn expected(s: &Setup, sig: Option<String>) -> Expected {
    Expected {
        signature: sig,
        platform: Some(s.platform.clone()),
        ..Expected::default()
    }
}

async fn install(
    i: &Installer,
    s: &Setup,
    bytes: &[u8],
    sig: Option<String>,
) -> Result<agent_store::Installed, StoreError> {
    i.install_reader(&s.agent, "http:test", &expected(s, sig), bytes)
        .await
}

fn assert_refused(i: &Installer, s: &Setup, err: &StoreError, says: &str) {
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    assert!(err.to_string().contains(says), "{err} should say {says:?}");
    let path = i.home().binary_path(&s.agent).unwrap();
    assert!(!path.exists(), "nothing may be cached");
    assert!(i.record(&s.agent).unwrap().is_none());
    if let Ok(rd) = std::fs::read_dir(path.parent().unwrap()) {
        let temps: Vec<_> = rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(temps.is_empty(), "{temps:?}");
    }
}

/// The key id as this project writes it: 16 hex digits. minisign's comment
/// (`untrusted comment: minisign public key 1DA499B3076A39F`) drops leading
/// zeros, so a key whose id starts with 0 (one in 16) reads shorter there.
fn key_id_of(public: &str) -> String {
    let shown = public.lines().next().unwrap().rsplit(' ').next().unwrap();
    format!("{shown:0>16}")
}

#[test]
fn the_trusted_comment_names_the_artifact() {
    let s = setup();
    assert_eq!(
        trusted_comment(&s.agent, &s.platform),
        "codefly-agent acme/echo:1.2.0 linux/amd64"
    );
}

#[tokio::test]
async fn signed_by_the_minisign_cli_installs_records_the_signer_and_loads() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let comment = trusted_comment(&s.agent, &s.platform);
    for legacy in [false, true] {
        let sig = minisign_sign(&keys, &s.bin, &comment, legacy);
        let i = installer(&s, &[&keys.public]);
        let got = install(&i, &s, &s.bytes, Some(sig)).await.unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), s.bytes);
        let signer = i.record(&s.agent).unwrap().unwrap().signer.unwrap();
        assert_eq!(signer.key_id, key_id_of(&keys.public));
        assert_eq!(signer.trusted_comment, comment);
        assert_eq!(i.cached_path(&s.agent).unwrap(), Some(got.path.clone()));
        std::fs::remove_file(&got.path).unwrap();
    }
}

#[tokio::test]
async fn our_own_signing_installs_and_the_minisign_cli_accepts_it() {
    let s = setup();
    let kp = keygen().unwrap();
    let comment = trusted_comment(&s.agent, &s.platform);
    let sig = sign_file(&kp.secret, None, &s.bin, &comment).unwrap();
    let i = installer(&s, &[&kp.public]);
    install(&i, &s, &s.bytes, Some(sig.clone())).await.unwrap();

    // The reference tool verifies what we signed.
    let pk = s.dir.path().join("own.pub");
    std::fs::write(&pk, &kp.public).unwrap();
    let sig_file = s.dir.path().join("own.minisig");
    std::fs::write(&sig_file, &sig).unwrap();
    let out = Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&pk)
        .arg("-x")
        .arg(&sig_file)
        .arg("-m")
        .arg(&s.bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&comment));

    // And a key made by `minisign -G` signs through our helper.
    let keys = minisign_keys(s.dir.path(), "cli");
    let secret = std::fs::read_to_string(&keys.secret).unwrap();
    let sig = sign_file(&secret, None, &s.bin, &comment).unwrap();
    let out = Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&keys.public_file)
        .arg("-x")
        .arg({
            std::fs::write(&sig_file, &sig).unwrap();
            &sig_file
        })
        .arg("-m")
        .arg(&s.bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn tampered_bytes_are_refused() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let comment = trusted_comment(&s.agent, &s.platform);
    for legacy in [false, true] {
        let sig = minisign_sign(&keys, &s.bin, &comment, legacy);
        let i = installer(&s, &[&keys.public]);
        let mut evil = s.bytes.clone();
        evil[1000] ^= 1;
        // The digest is "right" for the tampered bytes: only the signature can tell.
        let err = install(&i, &s, &evil, Some(sig)).await.unwrap_err();
        assert_refused(&i, &s, &err, "does not verify");
    }
}

#[tokio::test]
async fn unsigned_is_refused_when_the_publisher_has_keys() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let i = installer(&s, &[&keys.public]);
    let err = install(&i, &s, &s.bytes, None).await.unwrap_err();
    assert_refused(&i, &s, &err, "unsigned");
    // Another publisher without a policy installs unsigned.
    let other: AgentRef = "other/echo:1.0.0".parse().unwrap();
    i.install_reader(&other, "http:x", &Expected::default(), &b"x"[..])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_signature_by_another_key_is_refused() {
    let s = setup();
    let trusted = minisign_keys(s.dir.path(), "acme");
    let mallory = minisign_keys(s.dir.path(), "mallory");
    let sig = minisign_sign(
        &mallory,
        &s.bin,
        &trusted_comment(&s.agent, &s.platform),
        false,
    );
    let i = installer(&s, &[&trusted.public]);
    let err = install(&i, &s, &s.bytes, Some(sig)).await.unwrap_err();
    assert_refused(&i, &s, &err, &key_id_of(&mallory.public));
}

#[tokio::test]
async fn a_replayed_signature_of_another_version_or_platform_is_refused() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let i = installer(&s, &[&keys.public]);
    for comment in [
        "codefly-agent acme/echo:1.1.0 linux/amd64",
        "codefly-agent acme/echo:1.2.0 linux/arm64",
        "codefly-agent acme/other:1.2.0 linux/amd64",
    ] {
        // A valid signature of these very bytes, made for another artifact.
        let sig = minisign_sign(&keys, &s.bin, comment, false);
        let err = install(&i, &s, &s.bytes, Some(sig)).await.unwrap_err();
        assert_refused(&i, &s, &err, "another artifact");
    }
}

#[tokio::test]
async fn malformed_signatures_are_refused() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let good = minisign_sign(
        &keys,
        &s.bin,
        &trusted_comment(&s.agent, &s.platform),
        false,
    );
    let lines: Vec<&str> = good.lines().collect();
    let truncated = format!("{}\n{}\n", lines[0], &lines[1][..20]);
    let mut wrong_alg = lines.clone();
    let alt = {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::STANDARD;
        let mut b = e.decode(lines[1]).unwrap();
        b[0] = b'X';
        e.encode(b)
    };
    wrong_alg[1] = &alt;
    let wrong_alg = wrong_alg.join("\n");
    let i = installer(&s, &[&keys.public]);
    for bad in [
        String::new(),
        "untrusted comment: x\n".to_owned(),
        truncated,
        wrong_alg,
        good.replace("trusted comment: ", "trusted comment; "),
        "x".repeat(100_000),
    ] {
        let err = install(&i, &s, &s.bytes, Some(bad)).await.unwrap_err();
        assert_refused(&i, &s, &err, "malformed");
    }
}

#[test]
fn a_public_key_with_the_wrong_algorithm_id_is_a_clear_error() {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::STANDARD;
    let kp = keygen().unwrap();
    let line = kp.public.lines().nth(1).unwrap();
    let mut b = e.decode(line).unwrap();
    b[1] = b'X';
    let err = TrustedKey::parse(&e.encode(&b)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("algorithm"), "{err}");
    for bad in ["", "not base64!", "RWQ=", &e.encode([0u8; 41])] {
        assert!(TrustedKey::parse(bad).is_err(), "{bad}");
    }
    // Both forms of a good key parse to the same id.
    let a = TrustedKey::parse(&kp.public).unwrap();
    let b = TrustedKey::parse(line).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    assert_eq!(a.key_id(), key_id_of(&kp.public));
}

#[tokio::test]
async fn removing_a_key_from_the_policy_stops_its_binaries_loading() {
    let s = setup();
    let old = minisign_keys(s.dir.path(), "old");
    let new = minisign_keys(s.dir.path(), "new");
    let comment = trusted_comment(&s.agent, &s.platform);
    let sig = minisign_sign(&old, &s.bin, &comment, false);
    let i = installer(&s, &[&old.public, &new.public]);
    let got = install(&i, &s, &s.bytes, Some(sig.clone())).await.unwrap();
    assert_eq!(i.cached_path(&s.agent).unwrap(), Some(got.path.clone()));

    // The old key is dropped from the config.
    let i = installer(&s, &[&new.public]);
    assert!(
        matches!(
            i.cached_path_fingerprint(&s.agent).unwrap(),
            agent_store::Fingerprint::Missing
        ),
        "the load's fingerprint check must send it to be fetched again"
    );
    assert_eq!(
        i.cached_path(&s.agent).unwrap(),
        None,
        "must not load any more"
    );
    assert_eq!(i.cached(&s.agent).unwrap(), None);
    // Fetching it again with the same signature is refused.
    let err = install(&i, &s, &s.bytes, Some(sig)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    // Re-signed by the new key, it installs and loads again.
    let sig = minisign_sign(&new, &s.bin, &comment, false);
    install(&i, &s, &s.bytes, Some(sig)).await.unwrap();
    assert!(i.cached_path(&s.agent).unwrap().is_some());

    // A Go-installed (unrecorded) binary of a publisher that requires
    // signatures is not run either.
    let path = i.home().binary_path(&s.agent).unwrap();
    std::fs::remove_file(i.record_path(&s.agent).unwrap()).unwrap();
    assert_eq!(i.cached_path(&s.agent).unwrap(), None);
    assert!(path.exists());
}

/// A Nix output names no publisher: it is trusted as Nix trusts it only for
/// a publisher that requires no signature, or that accepts Nix by name.
#[tokio::test]
async fn nix_outputs_are_trusted_only_for_publishers_that_accept_nix() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let key = TrustedKey::parse(&keys.public).unwrap();
    let open = Installer::new(AgentHome::new(s.dir.path().join("home")));
    let got = open
        .install_file(
            &s.agent,
            "nix:/nix/store/abc-echo/bin/echo",
            &expected(&s, None),
            &s.bin,
        )
        .await
        .unwrap();
    assert_eq!(open.cached_path(&s.agent).unwrap(), Some(got.path.clone()));
    assert_eq!(open.record(&s.agent).unwrap().unwrap().signer, None);

    // Keys required, Nix not accepted by name: the cached output stops loading.
    let keyed = open
        .clone()
        .with_trust(TrustPolicy::new().publisher("acme", PublisherTrust::keys(vec![key.clone()])));
    assert_eq!(keyed.cached_path(&s.agent).unwrap(), None);
    // Accepted by name: it loads.
    let vouched = open.clone().with_trust(TrustPolicy::new().publisher(
        "acme",
        PublisherTrust::keys(vec![key.clone()]).vouched_by("nix"),
    ));
    assert_eq!(
        vouched.cached_path(&s.agent).unwrap(),
        Some(got.path.clone())
    );
    // Not self-verifying at all: refused even when named.
    let strict = vouched.clone().with_trust(
        TrustPolicy::new()
            .publisher("acme", PublisherTrust::keys(vec![key]).vouched_by("nix"))
            .self_verifying_store("nix", false),
    );
    assert_eq!(strict.cached_path(&s.agent).unwrap(), None);

    std::fs::remove_file(&got.path).unwrap();
    std::fs::remove_file(open.record_path(&s.agent).unwrap()).unwrap();
    for refusing in [&keyed, &strict] {
        let err = refusing
            .install_file(
                &s.agent,
                "nix:/nix/store/abc-echo/bin/echo",
                &expected(&s, None),
                &s.bin,
            )
            .await
            .unwrap_err();
        assert_refused(refusing, &s, &err, "unsigned");
    }
}

/// Deterministic mutations of a real signature and key (every byte flipped,
/// every truncation): parsing never panics, and an install with a mutated
/// signature either verifies (a change in the untrusted comment, or in
/// base64 padding bits) or is refused as `untrusted` with nothing cached.
#[tokio::test]
async fn mutated_signatures_and_keys_never_panic_and_never_pass_unverified() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let i = installer(&s, &[&keys.public]);
    let small = b"tiny".to_vec();
    let tiny = s.dir.path().join("tiny");
    std::fs::write(&tiny, &small).unwrap();
    let good = minisign_sign(&keys, &tiny, &trusted_comment(&s.agent, &s.platform), false);
    let mut variants: Vec<Vec<u8>> = Vec::new();
    for pos in 0..good.len() {
        for bit in [0x01u8, 0x20] {
            let mut v = good.as_bytes().to_vec();
            v[pos] ^= bit;
            variants.push(v);
        }
        variants.push(good.as_bytes()[..pos].to_vec());
    }
    let path = i.home().binary_path(&s.agent).unwrap();
    for v in variants {
        let Ok(text) = String::from_utf8(v) else {
            continue;
        };
        let _ = agent_store::trust::fuzz_parse(&text);
        let _ = TrustedKey::parse(&text);
        match install(&i, &s, &small, Some(text.clone())).await {
            Ok(got) => {
                assert_eq!(std::fs::read(&got.path).unwrap(), small);
                std::fs::remove_file(&got.path).unwrap();
                std::fs::remove_file(i.record_path(&s.agent).unwrap()).unwrap();
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Untrusted, "{e} for {text:?}");
                assert!(!path.exists());
            }
        }
    }
    for pos in 0..keys.public.len() {
        let mut v = keys.public.as_bytes().to_vec();
        v[pos] ^= 0x01;
        if let Ok(t) = String::from_utf8(v) {
            let _ = TrustedKey::parse(&t);
        }
        let _ = TrustedKey::parse(&keys.public[..pos]);
    }
}

#[tokio::test]
async fn a_detached_tarball_signature_verifies_and_its_signer_is_recorded() {
    let s = setup();
    let keys = minisign_keys(s.dir.path(), "acme");
    let other = minisign_keys(s.dir.path(), "other");
    let comment = trusted_comment(&s.agent, &s.platform);
    let tarball = s.dir.path().join("service-echo_linux_amd64.tar.gz");
    std::fs::write(&tarball, b"pretend this is a tarball holding the binary").unwrap();
    let i = installer(&s, &[&keys.public]);
    for legacy in [false, true] {
        let sig = minisign_sign(&keys, &tarball, &comment, legacy);
        let signer =
            agent_store::verify_detached(i.trust(), &s.agent, &s.platform, &tarball, Some(&sig))
                .unwrap()
                .expect("a signer");
        assert_eq!(signer.key_id, key_id_of(&keys.public));
        let got = i
            .install_file(
                &s.agent,
                "github:acme-corp/service-echo",
                &Expected {
                    verified_signer: Some(signer.clone()),
                    platform: Some(s.platform.clone()),
                    ..Expected::default()
                },
                &s.bin,
            )
            .await
            .unwrap();
        assert_eq!(i.record(&s.agent).unwrap().unwrap().signer, Some(signer));
        assert_eq!(i.cached_path(&s.agent).unwrap(), Some(got.path.clone()));
        std::fs::remove_file(&got.path).unwrap();
        std::fs::remove_file(i.record_path(&s.agent).unwrap()).unwrap();
    }
    // A tampered tarball, another key, no signature at all.
    let sig = minisign_sign(&keys, &tarball, &comment, false);
    std::fs::write(&tarball, b"pretend this is a tarball holding malware!!").unwrap();
    let err = agent_store::verify_detached(i.trust(), &s.agent, &s.platform, &tarball, Some(&sig))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    let sig = minisign_sign(&other, &tarball, &comment, false);
    let err = agent_store::verify_detached(i.trust(), &s.agent, &s.platform, &tarball, Some(&sig))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    assert_eq!(
        agent_store::verify_detached(i.trust(), &s.agent, &s.platform, &tarball, None).unwrap(),
        None
    );
    // A claimed signer whose key the policy does not trust is refused.
    let err = i
        .install_file(
            &s.agent,
            "github:acme-corp/service-echo",
            &Expected {
                verified_signer: Some(agent_store::Signer {
                    key_id: key_id_of(&other.public),
                    trusted_comment: comment.clone(),
                }),
                ..Expected::default()
            },
            &s.bin,
        )
        .await
        .unwrap_err();
    assert_refused(&i, &s, &err, "no longer trusted");
}
