//! Every kind through the real `nix` on a generated flake: attribute
//! `agents-{prefix}-{name}-{version}`, binary `bin/{prefix}-{name}`, and a
//! decoy binary of another kind in the same `bin/` is never the one installed;
//! provider and solution outputs install only with a descriptor that verifies.

use crate::common;

use agent_ref::{AgentKind, ErrorKind, Platform};
use agent_store::AgentStore;
use agent_store::descriptor::{self, Descriptor};
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

const PROVIDER_BIN: &[u8] = b"#!/bin/sh\necho provider\n";
/// A provider manifest (`provider.codefly.yaml`) for `codefly.dev/echo:1.0.0`.
const MANIFEST: &[u8] = agent_testkit::PROVIDER_MANIFEST.as_bytes();

/// A provider-style output `$out/{artifact}` + `provider.codefly.yaml` +
/// `provider.artifact.json`, copied from files prepared here (the builds run
/// unsandboxed); `descriptor` is written as given.
fn provider_package(dir: &std::path::Path, kind: AgentKind, descriptor: Option<&[u8]>) -> Package {
    let artifact = kind.artifact_name("echo");
    let src = dir.join(&artifact);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(&artifact), PROVIDER_BIN).unwrap();
    std::fs::write(src.join("provider.codefly.yaml"), MANIFEST).unwrap();
    if let Some(d) = descriptor {
        std::fs::write(src.join("provider.artifact.json"), d).unwrap();
    }
    Package::new(
        &format!("agents-{artifact}-1.0.0"),
        &format!(
            "mkdir -p $out; cp {src}/* $out/; chmod 755 $out/{artifact}",
            src = src.display()
        ),
    )
}

#[tokio::test]
async fn provider_and_solution_install_with_their_verified_descriptor() {
    let prep = tempfile::tempdir().unwrap();
    let kinds = [
        (AgentKind::Provider, "providers"),
        (AgentKind::Solution, "solutions"),
    ];
    let packages: Vec<Package> = kinds
        .iter()
        .map(|(k, _)| {
            let a = agent("echo:1.0.0").with_kind(*k);
            let d =
                Descriptor::build(&a, &k.artifact_name("echo"), PROVIDER_BIN, MANIFEST).unwrap();
            provider_package(prep.path(), *k, Some(&d.to_json()))
        })
        .collect();
    let flake = TestFlake::new(&packages);
    for (kind, dir) in kinds {
        let a = agent("echo:1.0.0").with_kind(kind);
        let installed = flake
            .store()
            .pull(&a, &Platform::current(), &flake.installer())
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(read(&installed.path), PROVIDER_BIN, "{kind}");
        assert!(
            installed
                .path
                .ends_with(format!("agents/{dir}/codefly.dev/echo__1.0.0"))
        );
        // The cached binary carries its descriptor, and it verifies there.
        let v = descriptor::verify(&installed.path, &a).unwrap();
        assert_eq!(v.descriptor.name, "echo");
    }
}

#[tokio::test]
async fn a_provider_output_without_a_good_descriptor_is_untrusted_and_not_cached() {
    let prep = tempfile::tempdir().unwrap();
    let a = agent("echo:1.0.0").with_kind(AgentKind::Provider);
    // A descriptor for other bytes: wrong binary digest.
    let wrong = Descriptor::build(&a, "provider-echo", b"other bytes", MANIFEST).unwrap();
    let flake = TestFlake::new(&[provider_package(
        prep.path(),
        AgentKind::Provider,
        Some(&wrong.to_json()),
    )]);
    let e = flake
        .store()
        .pull(&a, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Untrusted, "{e}");
    assert!(e.to_string().contains("binary digest mismatch"), "{e}");
    common::assert_nothing_cached(&flake, &a);

    // No descriptor at all.
    let prep = tempfile::tempdir().unwrap();
    let flake = TestFlake::new(&[provider_package(prep.path(), AgentKind::Provider, None)]);
    let e = flake
        .store()
        .pull(&a, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Untrusted, "{e}");
    common::assert_nothing_cached(&flake, &a);
    let sidecar = flake.home().binary_path(&a).unwrap();
    let parent = sidecar.parent().unwrap();
    assert!(
        !parent.exists() || std::fs::read_dir(parent).unwrap().next().is_none(),
        "files left in {}",
        parent.display()
    );
}
