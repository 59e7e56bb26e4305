//! `OciStore` and `push` against a real registry (Debian's `docker-registry`,
//! started per test on a free loopback port by `agent_testkit`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_ref::semver::Version;
use agent_ref::{AgentHome, AgentRef, ErrorKind, Platform, VersionSpec};
use agent_store::{AgentStore, Installer, StoreChain};
use agent_store_oci::{OciStore, RegistryConfig, push};
use agent_testkit::registry::LocalRegistry;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use sha2::Digest as _;

fn registry() -> LocalRegistry {
    // Fails loudly (never skips) when docker-registry is not installed.
    LocalRegistry::start().expect("starting docker-registry")
}

fn config(reg: &LocalRegistry) -> RegistryConfig {
    RegistryConfig::parse(&reg.addr().to_string()).unwrap()
}

fn agent(v: &str) -> AgentRef {
    AgentRef::parse(&format!("codefly.dev/echo:{v}")).unwrap()
}

/// `len` bytes that differ per `seed`, written to `dir/name`.
fn binary(dir: &Path, name: &str, seed: u8, len: usize) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

fn installer(dir: &Path) -> Installer {
    Installer::new(AgentHome::new(dir.join("home")))
}

fn linux() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn assert_installed(installed: &agent_store::Installed, want: &[u8]) {
    agent_testkit::assert_file_bytes(&installed.path, want);
    let mode = std::fs::metadata(&installed.path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o755, "mode of {}", installed.path.display());
    assert_eq!(installed.sha256, hex::encode(sha2::Sha256::digest(want)));
    assert_eq!(installed.size, want.len() as u64);
}

#[tokio::test]
async fn push_then_pull_is_byte_exact_and_oras_shaped() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = binary(tmp.path(), "agent-echo", 1, 3 * 1024 * 1024 + 17);
    let a = agent("1.0.0");
    let pushed = push(&config(&reg), &a, &[(file, None)]).await.unwrap();
    assert_eq!(pushed.media_type, agent_store_oci::MANIFEST_MEDIA_TYPE);
    assert_eq!(pushed.layers.len(), 1);

    // The manifest is what `oras` would read: one titled layer, empty config, artifactType.
    let client = crate::oras_client();
    let r = Reference::with_tag(
        reg.addr().to_string(),
        "agents/codefly.dev/service-echo".into(),
        "1.0.0".into(),
    );
    let (raw, digest) = client
        .pull_manifest_raw(
            &r,
            &RegistryAuth::Anonymous,
            &[agent_store_oci::MANIFEST_MEDIA_TYPE],
        )
        .await
        .unwrap();
    assert_eq!(digest, pushed.digest);
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.codefly.agent.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        m["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "service-echo"
    );

    let store = OciStore::new(config(&reg)).unwrap();
    assert!(store.available(&a, &linux()).await.unwrap());
    let inst = installer(tmp.path());
    let installed = store.pull(&a, &linux(), &inst).await.unwrap();
    assert_installed(&installed, &data);
    assert_eq!(installed.path, inst.home().binary_path(&a).unwrap());
    assert!(installed.source.starts_with("oci:"), "{}", installed.source);

    // Pushing the same bytes again reuses the blob.
    let (file2, _) = binary(tmp.path(), "again", 1, 3 * 1024 * 1024 + 17);
    let again = push(&config(&reg), &agent("1.0.1"), &[(file2, None)])
        .await
        .unwrap();
    assert!(again.layers[0].reused);
}

/// A manifest built by hand the way `oras push` 1.0 writes one (config
/// `application/vnd.unknown.config.v1+json`, no artifactType) at the Go
/// loader's repository `agents/{publisher}/{name}` (no current repository exists),
/// titled file next to the agent, PUT with oci-client's low-level calls.
#[tokio::test]
async fn pulls_a_hand_built_oras_manifest() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (_, data) = binary(tmp.path(), "service-echo", 7, 200_000);
    let readme = b"# echo\n".to_vec();
    let client = crate::oras_client();
    let r = Reference::with_tag(
        reg.addr().to_string(),
        "agents/codefly.dev/echo".into(),
        "2.0.0".into(),
    );
    client
        .store_auth_if_needed(r.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    let d = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    for blob in [&data[..], &readme[..], b"{}"] {
        client.push_blob(&r, blob.to_vec(), &d(blob)).await.unwrap();
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.unknown.config.v1+json", "digest": d(b"{}"), "size": 2},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(&readme), "size": readme.len(),
             "annotations": {"org.opencontainers.image.title": "README.md"}},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(&data), "size": data.len(),
             "annotations": {"org.opencontainers.image.title": "service-echo"}},
        ],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    });
    client
        .push_manifest_raw(
            &r,
            serde_json::to_vec(&manifest).unwrap(),
            http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .unwrap();

    let store = OciStore::new(config(&reg)).unwrap();
    let installed = store
        .pull(&agent("2.0.0"), &linux(), &installer(tmp.path()))
        .await
        .unwrap();
    assert_installed(&installed, &data);
}

#[tokio::test]
async fn latest_is_the_highest_semver_tag() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = binary(tmp.path(), "agent", 3, 1000);
    for v in ["1.0.0", "1.2.0", "1.10.0"] {
        push(&config(&reg), &agent(v), &[(file.clone(), None)])
            .await
            .unwrap();
    }
    // A tag that is not a version is left out.
    let client = crate::oras_client();
    let base = Reference::with_tag(
        reg.addr().to_string(),
        "agents/codefly.dev/service-echo".into(),
        "1.0.0".into(),
    );
    let (raw, _) = client
        .pull_manifest_raw(
            &base,
            &RegistryAuth::Anonymous,
            &[agent_store_oci::MANIFEST_MEDIA_TYPE],
        )
        .await
        .unwrap();
    let stable = Reference::with_tag(
        reg.addr().to_string(),
        "agents/codefly.dev/service-echo".into(),
        "stable".into(),
    );
    client
        .push_manifest_raw(
            &stable,
            raw.to_vec(),
            http::HeaderValue::from_static(agent_store_oci::MANIFEST_MEDIA_TYPE),
        )
        .await
        .unwrap();

    let store = OciStore::new(config(&reg)).unwrap();
    let latest = agent("latest");
    let versions = store.versions(&latest, &linux()).await.unwrap();
    let want: Vec<Version> = ["1.0.0", "1.2.0", "1.10.0"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(versions, want);
    assert_eq!(
        VersionSpec::Latest.pick(versions.iter()),
        Some("1.10.0".parse().unwrap())
    );
    // Through the chain too.
    let chain = StoreChain::new(vec![Arc::new(store) as Arc<dyn AgentStore>]);
    let v = chain
        .authoritative_versions(&latest, &linux())
        .await
        .unwrap();
    assert_eq!(v.store, "oci");
    assert_eq!(
        VersionSpec::Latest.pick(v.versions.iter()),
        Some("1.10.0".parse().unwrap())
    );

    // A repository the registry does not know has no versions.
    let other = AgentRef::parse("codefly.dev/nothing-here:latest").unwrap();
    let s = OciStore::new(config(&reg)).unwrap();
    assert!(s.versions(&other, &linux()).await.unwrap().is_empty());
}

#[tokio::test]
async fn corrupted_blob_is_integrity_and_nothing_is_cached() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = binary(tmp.path(), "agent", 9, 500_000);
    let a = agent("1.0.0");
    let pushed = push(&config(&reg), &a, &[(file, None)]).await.unwrap();
    let blob = reg.blob_path(&pushed.layers[0].digest);
    let mut bad = std::fs::read(&blob).unwrap();
    assert_eq!(bad, data);
    bad[data.len() / 2] ^= 0xff;
    std::fs::write(&blob, &bad).unwrap();

    let store = OciStore::new(config(&reg)).unwrap();
    let inst = installer(tmp.path());
    let err = store.pull(&a, &linux(), &inst).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(!inst.home().binary_path(&a).unwrap().exists());
    assert!(inst.cached(&a).unwrap().is_none());
    // Nor through the chain.
    let chain = StoreChain::new(vec![Arc::new(store) as Arc<dyn AgentStore>]);
    let err = chain.pull(&a, &linux(), &inst).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(inst.cached(&a).unwrap().is_none());
}

#[tokio::test]
async fn missing_tag_or_repository_is_artifact_missing() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (file, _) = binary(tmp.path(), "agent", 2, 1000);
    push(&config(&reg), &agent("1.0.0"), &[(file, None)])
        .await
        .unwrap();
    let store = OciStore::new(config(&reg)).unwrap();
    let inst = installer(tmp.path());
    for a in [
        agent("9.9.9"),
        AgentRef::parse("codefly.dev/ghost:1.0.0").unwrap(),
    ] {
        let err = store.pull(&a, &linux(), &inst).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArtifactMissing, "{a}: {err}");
        assert!(!store.available(&a, &linux()).await.unwrap());
    }
}

#[tokio::test]
async fn registry_down_is_store_unavailable() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = RegistryConfig::parse(&format!("127.0.0.1:{port}")).unwrap();
    let store = OciStore::new(cfg.clone()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let a = agent("1.0.0");
    let err = store
        .pull(&a, &linux(), &installer(tmp.path()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.is_retryable());
    let err = store.versions(&a, &linux()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    let err = store.available(&a, &linux()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    let (file, _) = binary(tmp.path(), "agent", 2, 10);
    let err = push(&cfg, &a, &[(file, None)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
}

#[tokio::test]
async fn image_index_picks_the_platform() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (lin, lin_data) = binary(tmp.path(), "linux", 11, 300_000);
    let (mac, mac_data) = binary(tmp.path(), "darwin", 12, 310_000);
    let darwin: Platform = "darwin/arm64".parse().unwrap();
    let a = agent("3.0.0");
    let pushed = push(
        &config(&reg),
        &a,
        &[(lin, Some(linux())), (mac, Some(darwin.clone()))],
    )
    .await
    .unwrap();
    assert_eq!(pushed.media_type, agent_store_oci::INDEX_MEDIA_TYPE);

    let store = OciStore::new(config(&reg)).unwrap();
    let got = store
        .pull(&a, &linux(), &installer(&tmp.path().join("l")))
        .await
        .unwrap();
    assert_installed(&got, &lin_data);
    let got = store
        .pull(&a, &darwin, &installer(&tmp.path().join("d")))
        .await
        .unwrap();
    assert_installed(&got, &mac_data);

    let windows: Platform = "windows/amd64".parse().unwrap();
    let inst = installer(&tmp.path().join("w"));
    let err = store.pull(&a, &windows, &inst).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing, "{err}");
    assert!(err.to_string().contains("windows/amd64"), "{err}");
    assert!(!store.available(&a, &windows).await.unwrap());
    assert!(inst.cached(&a).unwrap().is_none());
}

#[tokio::test]
async fn push_rejects_unusable_arguments() {
    let cfg = RegistryConfig::parse("127.0.0.1:1").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (f, _) = binary(tmp.path(), "a", 1, 10);
    let latest = agent("latest");
    assert_eq!(
        push(&cfg, &latest, &[(f.clone(), None)])
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidRef
    );
    let a = agent("1.0.0");
    for files in [
        vec![],
        vec![(f.clone(), Some(linux())), (f.clone(), None)],
        vec![(f.clone(), Some(linux())), (f.clone(), Some(linux()))],
    ] {
        assert_eq!(
            push(&cfg, &a, &files).await.unwrap_err().kind(),
            ErrorKind::Io
        );
    }
}

const CHILD_ENV: &str = "AGENT_STORE_OCI_TEST_CHILD";

/// Not a test on its own: the body each of the 8 processes of
/// `eight_processes_download_once` runs (does nothing without the env var).
#[tokio::test]
async fn child_pull_through_chain() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (addr, home) = spec.split_once('|').unwrap();
    let store = OciStore::new(RegistryConfig::parse(addr).unwrap()).unwrap();
    let chain = StoreChain::new(vec![Arc::new(store) as Arc<dyn AgentStore>]);
    let inst = Installer::new(AgentHome::new(home));
    let got = chain.pull(&agent("1.0.0"), &linux(), &inst).await.unwrap();
    println!("INSTALLED {}", got.sha256);
}

#[tokio::test]
async fn eight_processes_download_once() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = binary(tmp.path(), "agent", 5, 4 * 1024 * 1024);
    let pushed = push(&config(&reg), &agent("1.0.0"), &[(file, None)])
        .await
        .unwrap();
    let home = tmp.path().join("home");
    let child = agent_testkit::test_name!("child_pull_through_chain");
    let children: Vec<_> = (0..8)
        .map(|_| {
            agent_testkit::rerun(&child)
                .env(CHILD_ENV, format!("{}|{}", reg.addr(), home.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let want = hex::encode(sha2::Sha256::digest(&data));
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&format!("INSTALLED {want}")), "{stdout}");
    }
    let inst = Installer::new(AgentHome::new(&home));
    assert_installed(&inst.cached(&agent("1.0.0")).unwrap().unwrap(), &data);
    let gets = reg.blob_gets(&pushed.layers[0].digest);
    assert_eq!(
        gets,
        1,
        "blob GETs in the registry log:\n{}",
        reg.log_text()
    );
}

/// `tester` / `s3cret-pw`, bcrypt cost 4.
const HTPASSWD: &str = "tester:$2b$04$xfYQvYOQbtFBsSgG4mPyz.NTxlPGQ1ZFVE1tcts/s5DYaQIGE4VSS\n";

#[tokio::test]
async fn refused_credentials_are_store_unavailable_and_named() {
    let reg = LocalRegistry::start_with_htpasswd(HTPASSWD).expect("starting docker-registry");
    let tmp = tempfile::tempdir().unwrap();
    let (file, data) = binary(tmp.path(), "agent", 4, 50_000);
    let a = agent("1.0.0");
    let basic = |password: &str| agent_store_oci::Credentials::Basic {
        username: "tester".into(),
        password: password.into(),
        origin: "explicit".into(),
    };
    let good = config(&reg).with_credentials(basic("s3cret-pw"));
    push(&good, &a, &[(file, None)]).await.unwrap();
    let got = OciStore::new(good)
        .unwrap()
        .pull(&a, &linux(), &installer(tmp.path()))
        .await
        .unwrap();
    assert_installed(&got, &data);

    let anonymous = OciStore::new(config(&reg)).unwrap();
    let err = anonymous
        .pull(&a, &linux(), &installer(&tmp.path().join("anon")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("anonymous"), "{err}");

    let wrong = OciStore::new(config(&reg).with_credentials(basic("nope"))).unwrap();
    let err = wrong.versions(&a, &linux()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("\"tester\"") && !msg.contains("nope"), "{msg}");
}
