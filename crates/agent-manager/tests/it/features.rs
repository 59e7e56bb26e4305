//! The facade is pick-and-choose: with one store feature, no
//! other store crate is in the dependency graph, and an app outside the
//! workspace builds against the facade with only `http`.

use std::path::{Path, PathBuf};
use std::process::Command;

const STORES: [&str; 4] = ["oci", "http", "nix", "github"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// The crates in agent-manager's normal dependency graph with `features`.
fn tree(features: &[&str]) -> String {
    let mut c = cargo();
    c.args([
        "tree",
        "--offline",
        "-e",
        "normal",
        "-p",
        "agent-manager",
        "--prefix",
        "none",
        "--format",
        "{p}",
        "--no-default-features",
    ]);
    if !features.is_empty() {
        c.args(["--features", &features.join(",")]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn has_crate(tree: &str, name: &str) -> bool {
    tree.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn one_store_feature_pulls_in_that_store_only() {
    for store in STORES {
        let t = tree(&[store]);
        for other in STORES {
            let name = format!("agent-store-{other}");
            assert_eq!(
                has_crate(&t, &name),
                other == store,
                "--features {store}: {name} {} the tree",
                if other == store { "missing from" } else { "in" }
            );
        }
        // octocrab only ever comes with the GitHub store; oci-client with OCI.
        assert_eq!(has_crate(&t, "octocrab"), store == "github", "{store}");
        assert_eq!(has_crate(&t, "oci-client"), store == "oci", "{store}");
    }
    let none = tree(&[]);
    for other in STORES {
        assert!(!has_crate(&none, &format!("agent-store-{other}")), "{none}");
    }
    assert!(
        has_crate(&none, "agent-manager-store"),
        "the trait crate is always there"
    );
}

/// An app outside the workspace, depending on the facade by path with only
/// the `http` feature, builds offline. Slow (it builds the stack in its own
/// target directory), so it is opt-in:
/// `cargo test -p agent-manager --test it features:: -- --ignored`.
#[test]
#[ignore = "builds a project outside the workspace (minutes); run with --ignored"]
fn an_app_outside_the_workspace_builds_with_only_http() {
    let dir = tempfile::tempdir().unwrap();
    let facade = workspace_root().join("crates/agent-manager");
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"http-only-app\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nagent-manager = {{ path = {facade:?}, default-features = false, features = [\"http\"] }}\n\
             tokio = {{ version = \"1\", features = [\"rt-multi-thread\", \"macros\"] }}\n\n[workspace]\n",
            facade = facade.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/main.rs"),
        r#"use std::sync::Arc;

use agent_manager::stores::http::HttpStore;
use agent_manager::{AgentStore, LoadOptions, Manager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn AgentStore> = Arc::new(HttpStore::new("https://agents.example.com")?);
    let manager = Manager::builder().stores(vec![store]).build()?;
    let _ = (manager, LoadOptions::new());
    Ok(())
}
"#,
    )
    .unwrap();
    // The workspace's lock, so that offline resolution finds what is cached.
    std::fs::copy(
        workspace_root().join("Cargo.lock"),
        dir.path().join("Cargo.lock"),
    )
    .unwrap();
    let target = workspace_root().join("target/out-of-workspace");
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--offline"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(dir.path())
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&tree.stdout);
    for other in ["oci", "nix", "github"] {
        assert!(!tree.contains(&format!("agent-store-{other} ")), "{tree}");
    }
}
