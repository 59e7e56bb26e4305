//! Every kind through `HttpStore` against a real hyper server on 127.0.0.1:
//! the binary is `{base}/{publisher}/{name}/{version}/{prefix}-{name}_{os}_{arch}`,
//! and provider/solution agents are never asked of HTTP.

use crate::common;

use agent_ref::AgentKind;
use agent_store::{AgentHome, AgentRef, AgentStore, ErrorKind, Installer, Platform};
use common::{TestServer, payload, sha256_hex, store};

fn agent(kind: AgentKind, version: &str) -> AgentRef {
    AgentRef::parse_as(kind, &format!("codefly.dev/echo:{version}")).unwrap()
}

#[tokio::test]
async fn each_loadable_kind_is_served_under_its_prefixed_name() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path()));
    let suffix = Platform::current().suffix();
    server.put("/store/codefly.dev/echo/versions", "1.0.0\n");
    let kinds = [
        (AgentKind::ServiceCode, "services"),
        (AgentKind::Application, "applications"),
        (AgentKind::Module, "modules"),
        (AgentKind::Toolbox, "toolboxes"),
        (AgentKind::Runnable, "runnables"),
    ];
    for (i, (kind, _)) in kinds.iter().enumerate() {
        let bytes = payload(1000 + i);
        let path = format!(
            "/store/codefly.dev/echo/1.0.0/{}_{suffix}",
            kind.artifact_name("echo")
        );
        server.put(&path, bytes.clone());
        server.put(&format!("{path}.sha256"), sha256_hex(&bytes));
    }
    let store = store(&server);
    for (i, (kind, dir_name)) in kinds.into_iter().enumerate() {
        let versions = store
            .versions(&agent(kind, "latest"), &Platform::current())
            .await
            .unwrap();
        assert_eq!(versions.len(), 1, "{kind}");
        let got = store
            .pull(&agent(kind, "1.0.0"), &Platform::current(), &installer)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            std::fs::read(&got.path).unwrap(),
            payload(1000 + i),
            "{kind}"
        );
        assert_eq!(
            got.path,
            dir.path()
                .join(format!("agents/{dir_name}/codefly.dev/echo__1.0.0")),
            "{kind}"
        );
        let url = format!(
            "/store/codefly.dev/echo/1.0.0/{}_{suffix}",
            kind.artifact_name("echo")
        );
        assert!(server.hits(&url) >= 1, "{kind}: {url} never asked");
    }
}

#[tokio::test]
async fn provider_and_solution_are_artifact_missing_without_a_request() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path()));
    let suffix = Platform::current().suffix();
    server.put("/store/codefly.dev/echo/versions", "1.0.0\n");
    let store = store(&server);
    for kind in [AgentKind::Provider, AgentKind::Solution] {
        let path = format!(
            "/store/codefly.dev/echo/1.0.0/{}_{suffix}",
            kind.artifact_name("echo")
        );
        server.put(&path, b"#!/bin/sh\n".to_vec());
        server.put(&format!("{path}.sha256"), sha256_hex(b"#!/bin/sh\n"));
        for e in [
            store
                .versions(&agent(kind, "latest"), &Platform::current())
                .await
                .unwrap_err(),
            store
                .pull(&agent(kind, "1.0.0"), &Platform::current(), &installer)
                .await
                .unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
            assert!(e.to_string().contains("cache and Nix only"), "{e}");
        }
        assert_eq!(server.hits(&path), 0, "{kind}");
    }
    assert_eq!(server.hits("/store/codefly.dev/echo/versions"), 0);
    assert!(!dir.path().join("agents").exists());
}
