//! `bin_path` builds and finds workspace binaries from inside `cargo test`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn test_agent_is_built_and_runs() {
    let path = agent_testkit::bin_path("test-agent");
    assert!(path.is_absolute() && path.exists(), "{}", path.display());
    let out = Command::new(&path).arg("exit-early").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit-early"));
    // Cached: the second call answers the same path without building again.
    assert_eq!(agent_testkit::bin_path("test-agent"), path);
}

#[test]
fn agent_echo_is_built_and_runs() {
    let path = agent_testkit::bin_path("agent-echo");
    let out = Command::new(&path).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
}
