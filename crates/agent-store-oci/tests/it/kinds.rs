//! Every kind through `OciStore` on the REAL registry (Debian's
//! `docker-registry`, started by `agent_testkit`): codefly v0.3.x's
//! `agents/{publisher}/{prefix}-{name}`, the Go loader's `agents/{publisher}/{name}`,
//! and one authority between them. `oras` is not packaged by Debian, so the
//! Go-loader-layout artifacts are PUT by hand in the exact shape `oras push` 1.0
//! writes (unknown config type, title annotations, a README beside the binary).

use std::path::Path;

use agent_ref::{AgentHome, AgentKind, AgentRef, ErrorKind, Platform, VersionSpec};
use agent_store::{AgentStore, Installer};
use agent_store_oci::{OciStore, RegistryConfig, push};
use agent_testkit::registry::LocalRegistry;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use sha2::Digest as _;

fn registry() -> LocalRegistry {
    LocalRegistry::start().expect("starting docker-registry")
}

fn config(reg: &LocalRegistry) -> RegistryConfig {
    RegistryConfig::parse(&reg.addr().to_string()).unwrap()
}

fn agent(kind: AgentKind, v: &str) -> AgentRef {
    AgentRef::parse_as(kind, &format!("codefly.dev/echo:{v}")).unwrap()
}

fn linux() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn installer(dir: &Path) -> Installer {
    Installer::new(AgentHome::new(dir.join("home")))
}

/// `oras push {repo}:{tag} README.md {title}` as oras 1.0 writes it.
async fn oras_push(reg: &LocalRegistry, repo: &str, tag: &str, title: &str, data: &[u8]) {
    let client = crate::oras_client();
    let r = Reference::with_tag(reg.addr().to_string(), repo.into(), tag.into());
    client
        .store_auth_if_needed(r.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    let d = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    let readme = b"# echo\n";
    for blob in [data, &readme[..], b"{}"] {
        client.push_blob(&r, blob.to_vec(), &d(blob)).await.unwrap();
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.unknown.config.v1+json", "digest": d(b"{}"), "size": 2},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(readme), "size": readme.len(),
             "annotations": {"org.opencontainers.image.title": "README.md"}},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(data), "size": data.len(),
             "annotations": {"org.opencontainers.image.title": title}},
        ],
    });
    client
        .push_manifest_raw(
            &r,
            serde_json::to_vec(&manifest).unwrap(),
            http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .unwrap();
}

/// The title of the single binary layer at `repo:tag`.
async fn layer_title_at(reg: &LocalRegistry, repo: &str, tag: &str) -> String {
    let r = Reference::with_tag(reg.addr().to_string(), repo.into(), tag.into());
    let (raw, _) = crate::oras_client()
        .pull_manifest_raw(
            &r,
            &RegistryAuth::Anonymous,
            &[agent_store_oci::MANIFEST_MEDIA_TYPE],
        )
        .await
        .unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    doc["layers"][0]["annotations"]["org.opencontainers.image.title"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn each_kind_is_pushed_and_pulled_at_its_prefixed_repository() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let store = OciStore::new(config(&reg)).unwrap();
    let inst = installer(tmp.path());
    let kinds = [
        (AgentKind::ServiceRuntime, "services"),
        (AgentKind::Application, "applications"),
        (AgentKind::Module, "modules"),
        (AgentKind::Toolbox, "toolboxes"),
        (AgentKind::Runnable, "runnables"),
    ];
    for (i, (kind, dir)) in kinds.into_iter().enumerate() {
        let data = format!("#!/bin/sh\necho {kind} {i}\n").into_bytes();
        let file = tmp.path().join(format!("bin-{i}"));
        std::fs::write(&file, &data).unwrap();
        push(&config(&reg), &agent(kind, "1.0.0"), &[(file, None)])
            .await
            .unwrap();
        let artifact = kind.artifact_name("echo");
        assert_eq!(
            layer_title_at(&reg, &format!("agents/codefly.dev/{artifact}"), "1.0.0").await,
            artifact
        );
        let versions = store
            .versions(&agent(kind, "latest"), &linux())
            .await
            .unwrap();
        assert_eq!(versions, ["1.0.0".parse().unwrap()], "{kind}");
        let got = store
            .pull(&agent(kind, "1.0.0"), &linux(), &inst)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(std::fs::read(&got.path).unwrap(), data, "{kind}");
        assert!(
            got.path
                .ends_with(format!("agents/{dir}/codefly.dev/echo__1.0.0")),
            "{kind}: {}",
            got.path.display()
        );
    }
    // Nothing was written to the Go loader's layout.
    let legacy = Reference::with_tag(
        reg.addr().to_string(),
        "agents/codefly.dev/echo".into(),
        "1.0.0".into(),
    );
    assert!(
        crate::oras_client()
            .pull_manifest_raw(
                &legacy,
                &RegistryAuth::Anonymous,
                &[agent_store_oci::MANIFEST_MEDIA_TYPE]
            )
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_go_loader_repository_answers_when_the_current_one_does_not_exist() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    oras_push(
        &reg,
        "agents/codefly.dev/echo",
        "0.9.0",
        "toolbox-echo",
        b"seed 0.9",
    )
    .await;
    oras_push(
        &reg,
        "agents/codefly.dev/echo",
        "1.1.0",
        "toolbox-echo",
        b"seed 1.1",
    )
    .await;
    let store = OciStore::new(config(&reg)).unwrap();
    let toolbox = |v| agent(AgentKind::Toolbox, v);
    let versions = store.versions(&toolbox("latest"), &linux()).await.unwrap();
    assert_eq!(
        VersionSpec::Latest.pick(versions.iter()),
        Some("1.1.0".parse().unwrap())
    );
    let got = store
        .pull(&toolbox("1.1.0"), &linux(), &installer(tmp.path()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b"seed 1.1");
    assert!(store.available(&toolbox("0.9.0"), &linux()).await.unwrap());
    // A version neither has names both repositories.
    let e = store
        .pull(&toolbox("7.0.0"), &linux(), &installer(tmp.path()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
    assert!(e.to_string().contains("agents/codefly.dev/echo"), "{e}");
    assert!(e.to_string().contains("toolbox-echo"), "{e}");
}

#[tokio::test]
async fn when_both_exist_only_the_current_repository_answers() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    // The current layout, written by `push`, has 1.0.0 only.
    let file = tmp.path().join("current");
    std::fs::write(&file, b"current 1.0").unwrap();
    push(
        &config(&reg),
        &agent(AgentKind::Service, "1.0.0"),
        &[(file, None)],
    )
    .await
    .unwrap();
    // A stale Go loader repository has a higher version and other bytes for 1.0.0.
    oras_push(
        &reg,
        "agents/codefly.dev/echo",
        "1.0.0",
        "service-echo",
        b"seed 1.0",
    )
    .await;
    oras_push(
        &reg,
        "agents/codefly.dev/echo",
        "2.0.0",
        "service-echo",
        b"seed 2.0",
    )
    .await;

    let store = OciStore::new(config(&reg)).unwrap();
    let service = |v| agent(AgentKind::Service, v);
    let versions = store.versions(&service("latest"), &linux()).await.unwrap();
    assert_eq!(versions, ["1.0.0".parse().unwrap()], "tags were merged");
    let got = store
        .pull(&service("1.0.0"), &linux(), &installer(tmp.path()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b"current 1.0");
    let e = store
        .pull(&service("2.0.0"), &linux(), &installer(tmp.path()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
    assert!(e.to_string().contains("service-echo:2.0.0"), "{e}");
    assert!(!store.available(&service("2.0.0"), &linux()).await.unwrap());
}

#[tokio::test]
async fn provider_and_solution_are_never_asked_of_the_registry() {
    let reg = registry();
    let tmp = tempfile::tempdir().unwrap();
    let store = OciStore::new(config(&reg)).unwrap();
    for kind in [AgentKind::Provider, AgentKind::Solution] {
        let artifact = kind.artifact_name("echo");
        oras_push(
            &reg,
            &format!("agents/codefly.dev/{artifact}"),
            "1.0.0",
            &artifact,
            b"x",
        )
        .await;
        for e in [
            store
                .versions(&agent(kind, "latest"), &linux())
                .await
                .unwrap_err(),
            store
                .pull(&agent(kind, "1.0.0"), &linux(), &installer(tmp.path()))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
            assert!(e.to_string().contains("cache and Nix only"), "{e}");
        }
        let file = tmp.path().join("p");
        std::fs::write(&file, b"p").unwrap();
        let e = push(&config(&reg), &agent(kind, "1.1.0"), &[(file, None)])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cache and Nix only"), "{e}");
    }
    assert!(!tmp.path().join("home/agents").exists());
}
