//! `NixStore` against the real `nix` (Debian's `nix-bin`) on a generated flake.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use agent_ref::{AgentKind, ErrorKind, Platform, VersionSpec};
use agent_store::AgentStore;
use agent_store_nix::NixStore;
use common::{Package, TestFlake, agent, assert_nothing_cached, read};

fn echo_flake() -> TestFlake {
    TestFlake::new(&[
        Package::file("agents-service-echo-1.0.0"),
        Package::file("agents-service-echo-1.2.0"),
        // A directory output: bin/service-echo beside another tool.
        Package::new(
            "agents-service-echo-1.10.0",
            "mkdir -p $out/bin; \
             printf '#!/bin/sh\\necho echo 1.10.0 from dir\\n' > $out/bin/service-echo; \
             printf '#!/bin/sh\\necho helper\\n' > $out/bin/helper; \
             chmod 755 $out/bin/service-echo $out/bin/helper",
        ),
        // Names contain '-': these are not versions of `echo`.
        Package::file("agents-service-echo-extra-9.0.0"),
        Package::file("agents-service-echoes-8.0.0"),
        Package::file("agents-module-echo-7.0.0"),
    ])
}

#[tokio::test]
async fn versions_and_latest_over_dotted_versions() {
    let flake = echo_flake();
    let store = flake.store();
    let versions = store
        .versions(&agent("codefly.dev/echo"), &Platform::current())
        .await
        .unwrap();
    let shown: Vec<String> = versions.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["1.0.0", "1.2.0", "1.10.0"]);
    let latest = VersionSpec::Latest.pick(&versions).unwrap();
    assert_eq!(latest.to_string(), "1.10.0");

    // The kind is part of the attribute.
    let module = store
        .versions(
            &agent("echo").with_kind(AgentKind::Module),
            &Platform::current(),
        )
        .await
        .unwrap();
    assert_eq!(module.len(), 1);
    assert_eq!(module[0].to_string(), "7.0.0");
}

#[tokio::test]
async fn versions_of_an_unknown_agent_or_platform_are_empty() {
    let flake = echo_flake();
    let store = flake.store();
    assert!(
        store
            .versions(&agent("nobody"), &Platform::current())
            .await
            .unwrap()
            .is_empty()
    );
    let elsewhere: Platform = if Platform::current().os == "linux" {
        "darwin/arm64".parse().unwrap()
    } else {
        "linux/amd64".parse().unwrap()
    };
    assert!(
        store
            .versions(&agent("echo"), &elsewhere)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn available_evaluates_without_building() {
    let flake = echo_flake();
    let store = flake.store();
    let p = Platform::current();
    assert!(store.available(&agent("echo:1.2.0"), &p).await.unwrap());
    assert!(store.available(&agent("echo:1.10.0"), &p).await.unwrap());
    assert!(!store.available(&agent("echo:3.0.0"), &p).await.unwrap());
    assert!(!store.available(&agent("nobody:1.0.0"), &p).await.unwrap());
}

#[tokio::test]
async fn pull_a_file_output() {
    let flake = echo_flake();
    let store = flake.store();
    let installer = flake.installer();
    let echo = agent("codefly.dev/echo:1.2.0");
    let installed = store
        .pull(&echo, &Platform::current(), &installer)
        .await
        .unwrap();

    // The cache holds a verified copy at the fixed layout path…
    let cache_path = flake.home().binary_path(&echo).unwrap();
    assert_eq!(installed.path, cache_path);
    let bytes = read(&cache_path);
    assert_eq!(bytes, b"#!/bin/sh\necho agents-service-echo-1.2.0\n");
    assert_eq!(installed.size, bytes.len() as u64);
    let mode = std::fs::metadata(&cache_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "not executable: {mode:o}");

    // …whose record names the store path, kept alive by a GC root.
    let store_path = installed.source.strip_prefix("nix:").unwrap();
    assert!(
        store_path.starts_with("/nix/store/"),
        "{}",
        installed.source
    );
    assert_eq!(read(std::path::Path::new(store_path)), bytes);
    let root = flake.gc_root(&echo);
    assert_eq!(
        std::fs::read_link(&root).unwrap(),
        std::path::Path::new(store_path)
    );
    // nix knows the out-link as a root.
    let roots = std::process::Command::new("nix-store")
        .args(["--gc", "--print-roots"])
        .env("NIX_CONFIG", common::NIX_CONFIG)
        .output()
        .unwrap();
    let roots = String::from_utf8_lossy(&roots.stdout);
    assert!(
        roots.contains(&root.display().to_string()),
        "{} is not a GC root:\n{roots}",
        root.display()
    );

    // And the cache sees it.
    assert_eq!(
        installer.cached(&echo).unwrap().map(|i| i.path),
        Some(cache_path)
    );
}

#[tokio::test]
async fn pull_a_dir_output_takes_bin_service_name() {
    let flake = echo_flake();
    let installer = flake.installer();
    let echo = agent("echo:1.10.0");
    let installed = flake
        .store()
        .pull(&echo, &Platform::current(), &installer)
        .await
        .unwrap();
    assert_eq!(
        read(&installed.path),
        b"#!/bin/sh\necho echo 1.10.0 from dir\n"
    );
    let store_path = installed.source.strip_prefix("nix:").unwrap();
    assert!(
        std::path::Path::new(store_path)
            .join("bin/service-echo")
            .is_file()
    );
}

#[tokio::test]
async fn pull_a_dir_output_with_a_single_executable() {
    let flake = TestFlake::new(&[Package::new(
        "agents-service-go-2.0.0",
        "mkdir -p $out/bin $out/share; \
         printf '#!/bin/sh\\necho go runtime\\n' > $out/bin/go-agent; chmod 755 $out/bin/go-agent; \
         echo docs > $out/share/README; echo notes > $out/bin/NOTES",
    )]);
    let go = agent("go:2.0.0").with_kind(AgentKind::ServiceRuntime);
    let installed = flake
        .store()
        .pull(&go, &Platform::current(), &flake.installer())
        .await
        .unwrap();
    assert_eq!(read(&installed.path), b"#!/bin/sh\necho go runtime\n");
    assert!(
        installed
            .path
            .ends_with("agents/services/codefly.dev/go__2.0.0")
    );
}

#[tokio::test]
async fn an_output_without_an_agent_is_a_clear_error() {
    let flake = TestFlake::new(&[Package::new(
        "agents-service-messy-1.0.0",
        "mkdir -p $out/bin; for f in alpha beta; do printf '#!/bin/sh\\n' > $out/bin/$f; chmod 755 $out/bin/$f; done",
    )]);
    let messy = agent("messy:1.0.0");
    let err = flake
        .store()
        .pull(&messy, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("bin/service-messy"), "{msg}");
    assert!(msg.contains("2 executables: alpha, beta"), "{msg}");
    assert_nothing_cached(&flake, &messy);
}

#[tokio::test]
async fn a_missing_attribute_is_artifact_missing() {
    let flake = echo_flake();
    let missing = agent("echo:3.0.0");
    let err = flake
        .store()
        .pull(&missing, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing, "{err}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("agents-service-echo-3.0.0"),
        "{err}"
    );
    assert_nothing_cached(&flake, &missing);
}

#[tokio::test]
async fn a_failing_build_is_store_unavailable_with_nix_output() {
    let flake = TestFlake::new(&[Package::new(
        "agents-service-broken-1.0.0",
        "echo 'boom: the agent failed to compile' >&2; exit 1",
    )]);
    let broken = agent("broken:1.0.0");
    let err = flake
        .store()
        .pull(&broken, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("boom: the agent failed to compile"),
        "nix's stderr is missing from: {msg}"
    );
    assert!(
        msg.len() < 6 * 1024,
        "unbounded message: {} bytes",
        msg.len()
    );
    assert_nothing_cached(&flake, &broken);
}

#[tokio::test]
async fn a_broken_flake_is_store_unavailable() {
    let flake = echo_flake();
    std::fs::write(
        flake.dir.path().join("flake/flake.nix"),
        "{ outputs = { self }: { packages = ; }; }",
    )
    .unwrap();
    let store = flake.store();
    let p = Platform::current();
    let err = store.versions(&agent("echo"), &p).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("syntax error"), "{err}");
    let err = store.available(&agent("echo:1.0.0"), &p).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");

    let gone = NixStore::new("path:/nonexistent/flake").with_nix_config(common::NIX_CONFIG);
    let err = gone
        .pull(&agent("echo:1.0.0"), &p, &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
}

#[tokio::test]
async fn nix_not_installed_is_store_unavailable() {
    let flake = echo_flake();
    let store = flake.store().with_program("/nonexistent/bin/nix");
    let err = store
        .pull(
            &agent("echo:1.0.0"),
            &Platform::current(),
            &flake.installer(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("not found"), "{err}");
    let err = store
        .versions(&agent("echo"), &Platform::current())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
}

#[tokio::test]
async fn a_timed_out_build_leaves_nothing_behind() {
    // The builder starts a child that records its pid outside the flake, and
    // hangs waiting for it. (A child, not `exec`: nix gives the builder itself
    // a parent-death signal, which a forked child does not inherit; only
    // stopping nix properly takes the child down too.)
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("builder-child.pid");
    let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let flake = TestFlake::new(&[Package::new("agents-service-slow-1.0.0", &script)]);

    let slow = agent("slow:1.0.0");
    let store = flake
        .store()
        .with_timeout(Duration::from_secs(5))
        .with_kill_grace(Duration::from_secs(5));
    let err = store
        .pull(&slow, &Platform::current(), &flake.installer())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("did not finish within"), "{err}");

    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("the builder never started within the timeout")
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::wait_gone(pid, Duration::from_secs(10)),
        "builder child {pid} survived the timeout"
    );
    assert_nothing_cached(&flake, &slow);
}

/// `from_env` reads the process environment, so each case runs in a child
/// copy of this test binary with its own environment.
#[test]
fn from_env_reads_agent_nix_flake() {
    const CHILD: &str = "NIX_STORE_TEST_EXPECT";
    if let Some(expect) = std::env::var_os(CHILD) {
        let got = NixStore::from_env().unwrap().map(|s| s.flake().to_owned());
        let expect = expect.to_string_lossy();
        assert_eq!(
            got.as_deref(),
            expect.strip_prefix("some:"),
            "expected {expect}"
        );
        return;
    }
    let path = std::env::var_os("PATH").unwrap();
    let cases: [(Option<&str>, &std::ffi::OsStr, &str); 4] = [
        (Some("path:/srv/agents"), &path, "some:path:/srv/agents"),
        (None, &path, "none"),
        (Some("  "), &path, "none"),
        // nix not on PATH: the store is off, not an error.
        (
            Some("path:/srv/agents"),
            std::ffi::OsStr::new("/nonexistent"),
            "none",
        ),
    ];
    for (flake, path, expect) in cases {
        let mut cmd =
            agent_testkit::rerun(&agent_testkit::test_name!("from_env_reads_agent_nix_flake"));
        cmd.env(CHILD, expect)
            .env("PATH", path)
            .env_remove("AGENT_NIX_FLAKE");
        if let Some(flake) = flake {
            cmd.env("AGENT_NIX_FLAKE", flake);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "case {flake:?} / {path:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The child really ran the test (not filtered out).
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}

#[tokio::test]
async fn a_cancelled_pull_stops_the_build() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("builder-child.pid");
    let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let flake = TestFlake::new(&[Package::new("agents-service-slow-1.0.0", &script)]);
    let slow = agent("slow:1.0.0");
    let store = flake.store().with_kill_grace(Duration::from_secs(5));
    let installer = flake.installer();
    let task = {
        let slow = slow.clone();
        tokio::spawn(async move { store.pull(&slow, &Platform::current(), &installer).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pidfile.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(
        common::wait_gone(pid, Duration::from_secs(15)),
        "builder child {pid} survived the cancelled pull"
    );
    assert!(!flake.home().binary_path(&slow).unwrap().exists());
}
