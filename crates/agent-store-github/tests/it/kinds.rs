//! Every kind through `GithubStore` against `FakeGitHub` (the stand-in for
//! api.github.com): repository, asset and executable are `{prefix}-{name}`, a
//! goreleaser `{prefix}-{name}_{version}_checksums.txt` verifies the asset, and
//! provider/solution agents are never asked of GitHub.

use crate::support;

use std::time::Duration;

use agent_ref::{AgentHome, AgentKind, AgentRef, ErrorKind, Platform};
use agent_store::{AgentStore, Installer};
use agent_store_github::GithubStore;
use agent_testkit::github::{AssetSpec, FakeGitHub};
use sha2::{Digest, Sha256};
use support::archives::{Entry, tgz};

fn agent(kind: AgentKind, version: &str) -> AgentRef {
    AgentRef::parse_as(kind, &format!("codefly.dev/echo:{version}")).unwrap()
}

fn linux_amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

#[tokio::test]
async fn each_loadable_kind_is_pulled_from_its_prefixed_repo_asset_and_executable() {
    let gh = FakeGitHub::start().await;
    let home = tempfile::tempdir().unwrap();
    let store = GithubStore::builder()
        .api_url(gh.url())
        .cache_dir(home.path().join("cache").join("github"))
        .timeout(Duration::from_secs(20))
        .require_checksum(true)
        .build()
        .unwrap();
    let installer = Installer::new(AgentHome::new(home.path()));
    let kinds = [
        (AgentKind::ServiceRuntime, "service-echo", "services"),
        (AgentKind::Application, "application-echo", "applications"),
        (AgentKind::Module, "module-echo", "modules"),
        (AgentKind::Toolbox, "toolbox-echo", "toolboxes"),
        (AgentKind::Runnable, "runnable-echo", "runnables"),
    ];
    for (kind, artifact, dir) in kinds {
        let bin = format!("#!/bin/sh\necho 'I am {artifact}'\n").into_bytes();
        // A decoy with another kind's name and the usual extra files: only
        // `{prefix}-{name}` may be taken.
        let decoy: &[u8] = b"#!/bin/sh\necho decoy\n";
        let other = if kind.prefix() == "service" {
            "toolbox-echo"
        } else {
            "service-echo"
        };
        let archive = tgz(&[
            Entry::File("README.md", b"docs"),
            Entry::File("LICENSE", b"Apache-2.0"),
            Entry::File(other, decoy),
            Entry::File(artifact, &bin),
        ]);
        let asset = format!("{artifact}_1.4.0_linux_amd64.tar.gz");
        let sums = format!(
            "{}  {artifact}_1.4.0_darwin_arm64.tar.gz\n{}  {asset}\n",
            hex::encode(Sha256::digest(b"other")),
            hex::encode(Sha256::digest(&archive)),
        );
        gh.release(
            "codefly-dev",
            artifact,
            "v1.4.0",
            false,
            vec![
                AssetSpec::without_digest(&asset, archive),
                AssetSpec::without_digest(
                    &format!("{artifact}_1.4.0_checksums.txt"),
                    sums.into_bytes(),
                ),
            ],
        );

        let versions = store
            .versions(&agent(kind, "latest"), &linux_amd64())
            .await
            .unwrap();
        assert_eq!(
            versions,
            [agent_ref::parse_version("1.4.0").unwrap()],
            "{kind}"
        );
        let got = store
            .pull(&agent(kind, "1.4.0"), &linux_amd64(), &installer)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(std::fs::read(&got.path).unwrap(), bin, "{kind}");
        assert_eq!(
            got.path,
            home.path()
                .join(format!("agents/{dir}/codefly.dev/echo__1.4.0")),
            "{kind}"
        );
        assert_eq!(
            got.source,
            format!("github:codefly-dev/{artifact}@v1.4.0"),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn provider_and_solution_are_artifact_missing_without_asking_github() {
    let gh = FakeGitHub::start().await;
    let home = tempfile::tempdir().unwrap();
    let store = GithubStore::builder()
        .api_url(gh.url())
        .cache_dir(home.path().join("cache").join("github"))
        .build()
        .unwrap();
    let installer = Installer::new(AgentHome::new(home.path()));
    for kind in [AgentKind::Provider, AgentKind::Solution] {
        let artifact = kind.artifact_name("echo");
        gh.release("codefly-dev", &artifact, "v1.0.0", false, vec![]);
        let e = store
            .versions(&agent(kind, "latest"), &linux_amd64())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
        assert!(e.to_string().contains("cache and Nix only"), "{e}");
        let e = store
            .pull(&agent(kind, "1.0.0"), &linux_amd64(), &installer)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
        assert!(e.to_string().contains("cache and Nix only"), "{e}");
        assert!(
            !store
                .available(&agent(kind, "1.0.0"), &linux_amd64())
                .await
                .unwrap()
        );
    }
    assert_eq!(gh.count("/repos"), 0, "GitHub was asked: {:?}", gh.seen());
    assert!(!home.path().join("agents").exists());
}
