//! Every kind end to end through the facade, from its own cache directory:
//! a real `agent-echo` placed where the Go loader puts each kind, loaded and
//! called; `job` refused; provider and solution binaries placed in the cache
//! by hand run only when their verified-artifact descriptor vouches for them.

use crate::common;

use std::path::{Path, PathBuf};

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_manager::reference::AgentKind;
use agent_manager::store::descriptor::{self, Descriptor};
use agent_manager::{AgentRef, ErrorKind};
use common::{Home, manager};

/// A provider manifest (`provider.codefly.yaml`) for `codefly.dev/echo:1.0.0`.
const MANIFEST: &str = agent_testkit::PROVIDER_MANIFEST;

/// Puts `src` at the cache path of `codefly.dev/echo:1.0.0` as `kind`.
fn place(home: &Home, kind: AgentKind, src: &Path) -> PathBuf {
    let bin = home.binary(kind.cache_dir(), "codefly.dev", "echo", "1.0.0");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(src, &bin).unwrap();
    bin
}

/// Writes `{bin}.provider.artifact.json` (for `bytes`) and
/// `{bin}.provider.codefly.yaml` beside the cached binary.
fn vouch(bin: &Path, agent: &AgentRef, bytes: &[u8]) {
    let d = Descriptor::build(agent, "provider-echo", bytes, MANIFEST.as_bytes()).unwrap();
    let side = |suffix: &str| {
        let mut p = bin.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    std::fs::write(side(descriptor::INSTALLED_DESCRIPTOR_SUFFIX), d.to_json()).unwrap();
    std::fs::write(side(descriptor::INSTALLED_MANIFEST_SUFFIX), MANIFEST).unwrap();
}

async fn call(conn: &agent_manager::AgentConn) -> String {
    EchoClient::new(conn.channel())
        .echo(EchoRequest {
            message: "hi".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .message
}

#[tokio::test]
async fn every_loadable_kind_loads_from_its_own_cache_directory() {
    let echo = common::echo();
    for kind in AgentKind::ALL.into_iter().filter(|k| k.loads()) {
        let home = Home::new();
        let agent = AgentRef::parse_as(kind, "echo:1.0.0").unwrap();
        let bin = place(&home, kind, &echo);
        if kind.needs_descriptor() {
            vouch(&bin, &agent, &std::fs::read(&echo).unwrap());
        }
        let m = manager(&home);
        let conn = m
            .load(&agent)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(call(&conn).await, "hi", "{kind}");
        let active = m.active();
        assert_eq!(active.len(), 1, "{kind}");
        assert_eq!(active[0].unique, agent.unique(), "{kind}");
        drop(active);
        m.cleanup_all().await;
    }
}

#[tokio::test]
async fn a_job_parses_but_never_loads() {
    let home = Home::new();
    let agent = AgentRef::parse_as(AgentKind::Job, "codefly.dev/echo:1.0.0").unwrap();
    place(&home, AgentKind::Job, &common::echo());
    let e = manager(&home).load(&agent).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRef, "{e}");
}

/// A provider binary that leaves `marker` behind when it starts, then
/// becomes `agent-echo`.
fn marking_provider(dir: &Path, marker: &Path) -> PathBuf {
    let src = dir.join("provider-echo");
    common::write_script(
        &src,
        &format!(
            "touch '{}'\nexec '{}'\n",
            marker.display(),
            common::echo().display()
        ),
    );
    src
}

#[tokio::test]
async fn a_provider_placed_in_the_cache_by_hand_runs_only_behind_its_descriptor() {
    for kind in [AgentKind::Provider, AgentKind::Solution] {
        let home = Home::new();
        let marker = home.path().join("started");
        let src = marking_provider(home.path(), &marker);
        let bytes = std::fs::read(&src).unwrap();
        let agent = AgentRef::parse_as(kind, "echo:1.0.0").unwrap();
        let bin = place(&home, kind, &src);
        let m = manager(&home);

        // No descriptor: untrusted, and the binary never started.
        let e = m.load(&agent).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Untrusted, "{kind}: {e}");
        assert!(
            e.to_string().contains("no verified-artifact descriptor"),
            "{e}"
        );
        assert!(!marker.exists(), "{kind}: the unvouched binary ran");

        // A descriptor for other bytes: untrusted, nothing ran.
        vouch(&bin, &agent, b"another binary");
        let e = m.load(&agent).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Untrusted, "{kind}: {e}");
        assert!(e.to_string().contains("binary digest mismatch"), "{e}");
        assert!(!marker.exists(), "{kind}: the unvouched binary ran");

        // Vouched for: it loads and runs.
        vouch(&bin, &agent, &bytes);
        let conn = m
            .load(&agent)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(call(&conn).await, "hi");
        assert!(marker.exists());
        m.cleanup_all().await;
    }
}
