//! Every kind through the real `nix` on a generated flake: attribute
//! `agents-{prefix}-{name}-{version}`, binary `bin/{prefix}-{name}`, and a
//! decoy binary of another kind in the same `bin/` is never the one installed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use agent_ref::{AgentKind, ErrorKind, Platform};
use agent_store::AgentStore;
use common::{Package, TestFlake, agent, read};

/// A directory output with `bin/{artifact}` and a decoy `bin/{decoy}`.
fn with_decoy(kind: AgentKind, decoy: &str) -> Package {
    let artifact = kind.artifact_name("echo");
    Package::new(
        &format!("agents-{artifact}-1.0.0"),
        &format!(
            "mkdir -p $out/bin; \
             printf '#!/bin/sh\\necho I am {artifact}\\n' > $out/bin/{artifact}; \
             printf '#!/bin/sh\\necho decoy\\n' > $out/bin/{decoy}; \
             chmod 755 $out/bin/{artifact} $out/bin/{decoy}"
        ),
    )
}

#[tokio::test]
async fn each_kind_is_its_prefixed_attribute_and_binary_never_the_decoy() {
    let kinds = [
        (AgentKind::ServiceBuilder, "services"),
        (AgentKind::Application, "applications"),
        (AgentKind::Module, "modules"),
        (AgentKind::Toolbox, "toolboxes"),
        (AgentKind::Runnable, "runnables"),
        (AgentKind::Provider, "providers"),
        (AgentKind::Solution, "solutions"),
    ];
    let packages: Vec<Package> = kinds
        .iter()
        .map(|(k, _)| {
            // The decoy sorts first and carries another kind's name.
            let decoy = if k.prefix() == "application" {
                "aaa-service-echo"
            } else {
                "application-echo"
            };
            with_decoy(*k, decoy)
        })
        .collect();
    let flake = TestFlake::new(&packages);
    let store = flake.store();
    let installer = flake.installer();
    for (kind, dir) in kinds {
        let versions = store
            .versions(&agent("echo").with_kind(kind), &Platform::current())
            .await
            .unwrap();
        assert_eq!(versions.len(), 1, "{kind}: {versions:?}");
        let a = agent("echo:1.0.0").with_kind(kind);
        let installed = store
            .pull(&a, &Platform::current(), &installer)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let artifact = kind.artifact_name("echo");
        assert_eq!(
            read(&installed.path),
            format!("#!/bin/sh\necho I am {artifact}\n").into_bytes(),
            "{kind}"
        );
        assert!(
            installed
                .path
                .ends_with(format!("agents/{dir}/codefly.dev/echo__1.0.0")),
            "{kind}: {}",
            installed.path.display()
        );
    }
}

#[tokio::test]
async fn a_lone_decoy_of_another_kind_is_not_taken() {
    let flake = TestFlake::new(&[Package::new(
        "agents-toolbox-grep-0.3.1",
        "mkdir -p $out/bin; \
         printf '#!/bin/sh\\necho decoy\\n' > $out/bin/service-grep; chmod 755 $out/bin/service-grep",
    )]);
    let a = agent("grep:0.3.1").with_kind(AgentKind::Toolbox);
    let e = flake
        .store()
        .pull(&a, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
    assert!(e.to_string().contains("bin/toolbox-grep"), "{e}");
    common::assert_nothing_cached(&flake, &a);
}

#[tokio::test]
async fn jobs_are_never_asked_of_nix() {
    let flake = TestFlake::new(&[Package::file("agents-job-echo-1.0.0")]);
    let job = agent("echo:1.0.0").with_kind(AgentKind::Job);
    let e = flake
        .store()
        .pull(&job, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
    assert!(e.to_string().contains("never loaded"), "{e}");
    assert!(
        !flake
            .store()
            .available(&job, &Platform::current())
            .await
            .unwrap()
    );
}
