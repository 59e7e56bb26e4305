//! The verified-artifact descriptor of provider and solution agents, on real
//! files: one that verifies (installed beside the binary, and as a Nix-style
//! layout), a wrong binary digest, a missing descriptor, and the other ways a
//! descriptor can lie. Every refusal is `untrusted`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use agent_ref::{AgentKind, AgentRef, ErrorKind};
use agent_store::descriptor::{self, Descriptor, DescriptorError};

const BIN: &[u8] = b"#!/bin/sh\necho provider\n";
const MANIFEST: &[u8] = b"schema_version: codefly.provider-manifest/v0\nagent:\n  name: echo\n";

fn provider(v: &str) -> AgentRef {
    AgentRef::parse_as(AgentKind::Provider, &format!("acme/echo:{v}")).unwrap()
}

/// A cache entry `{dir}/echo__1.0.0` with its descriptor and manifest beside it.
fn installed(dir: &Path, agent: &AgentRef) -> PathBuf {
    let bin = dir.join("echo__1.0.0");
    std::fs::write(&bin, BIN).unwrap();
    let d = Descriptor::build(agent, "provider-echo", BIN, MANIFEST).unwrap();
    std::fs::write(dir.join("echo__1.0.0.provider.artifact.json"), d.to_json()).unwrap();
    std::fs::write(dir.join("echo__1.0.0.provider.codefly.yaml"), MANIFEST).unwrap();
    bin
}

fn assert_untrusted(e: &DescriptorError, says: &str) {
    assert_eq!(e.kind(), ErrorKind::Untrusted, "{e}");
    assert!(e.to_string().contains(says), "{says:?} not in: {e}");
}

#[test]
fn an_installed_descriptor_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let agent = provider("1.0.0");
    let bin = installed(dir.path(), &agent);
    let v = descriptor::verify(&bin, &agent).unwrap();
    assert_eq!(v.binary, bin);
    assert_eq!(v.descriptor.name, "echo");
    assert_eq!(v.descriptor.binary_path, "provider-echo");
    assert!(v.descriptor.artifact_digest.starts_with("sha256:"));
    // The same bytes for a solution of the same identity verify too.
    let solution = agent.clone().with_kind(AgentKind::Solution);
    assert!(descriptor::verify(&bin, &solution).is_ok());
}

#[test]
fn a_nix_style_layout_verifies_and_binds_its_binary() {
    let dir = tempfile::tempdir().unwrap();
    let agent = provider("1.0.0");
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("bin")).unwrap();
    std::fs::write(out.join("bin/provider-echo"), BIN).unwrap();
    std::fs::write(out.join("bin/other"), BIN).unwrap();
    std::fs::write(out.join("provider.codefly.yaml"), MANIFEST).unwrap();
    let d = Descriptor::build(&agent, "provider-echo", BIN, MANIFEST).unwrap();
    // The layout names its binary relative to its root.
    std::fs::rename(out.join("bin/provider-echo"), out.join("provider-echo")).unwrap();
    std::fs::write(out.join("provider.artifact.json"), d.to_json()).unwrap();
    let v = descriptor::verify(&out.join("provider-echo"), &agent).unwrap();
    assert_eq!(v.descriptor_path, out.join("provider.artifact.json"));
    // From bin/, the output root's descriptor is found, and it binds another
    // file than this executable (same bytes or not).
    let e = descriptor::verify(&out.join("bin/other"), &agent).unwrap_err();
    assert_untrusted(&e, "binds");
}

#[test]
fn a_wrong_binary_digest_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = provider("1.0.0");
    let bin = installed(dir.path(), &agent);
    std::fs::write(&bin, b"#!/bin/sh\necho swapped\n").unwrap();
    let e = descriptor::verify(&bin, &agent).unwrap_err();
    assert_untrusted(&e, "binary digest mismatch");
}

#[test]
fn a_missing_descriptor_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("echo__1.0.0");
    std::fs::write(&bin, BIN).unwrap();
    let e = descriptor::verify(&bin, &provider("1.0.0")).unwrap_err();
    assert!(matches!(e, DescriptorError::Missing { .. }), "{e}");
    assert_untrusted(&e, "no verified-artifact descriptor");
}

#[test]
fn a_tampered_or_foreign_descriptor_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = provider("1.0.0");
    let bin = installed(dir.path(), &agent);
    let desc = dir.path().join("echo__1.0.0.provider.artifact.json");
    let good = std::fs::read(&desc).unwrap();

    // Edited without re-digesting: the descriptor's own digest fails.
    let edited = String::from_utf8(good.clone())
        .unwrap()
        .replace("\"version\":\"1.0.0\"", "\"version\":\"1.0.1\"");
    std::fs::write(&desc, edited).unwrap();
    assert_untrusted(
        &descriptor::verify(&bin, &agent).unwrap_err(),
        "artifact digest mismatch",
    );

    // A well-formed descriptor of another agent.
    let other = AgentRef::parse_as(AgentKind::Provider, "acme/other:1.0.0").unwrap();
    let d = Descriptor::build(&other, "provider-other", BIN, MANIFEST).unwrap();
    std::fs::write(&desc, d.to_json()).unwrap();
    assert_untrusted(
        &descriptor::verify(&bin, &agent).unwrap_err(),
        "acme/other:1.0.0",
    );

    // Unknown fields and trailing values are refused.
    let mut extra = good.clone();
    extra.pop();
    extra.extend_from_slice(b",\"extra\":1}");
    std::fs::write(&desc, &extra).unwrap();
    assert_untrusted(&descriptor::verify(&bin, &agent).unwrap_err(), "extra");
    let mut twice = good.clone();
    twice.extend_from_slice(&good);
    std::fs::write(&desc, &twice).unwrap();
    assert_untrusted(&descriptor::verify(&bin, &agent).unwrap_err(), "trailing");

    // A changed manifest.
    std::fs::write(&desc, &good).unwrap();
    std::fs::write(dir.path().join("echo__1.0.0.provider.codefly.yaml"), b"x").unwrap();
    assert_untrusted(
        &descriptor::verify(&bin, &agent).unwrap_err(),
        "manifest digest mismatch",
    );

    // A service never loads through a descriptor.
    std::fs::write(
        dir.path().join("echo__1.0.0.provider.codefly.yaml"),
        MANIFEST,
    )
    .unwrap();
    assert!(descriptor::verify(&bin, &agent).is_ok());
    let service = agent.clone().with_kind(AgentKind::Service);
    assert_untrusted(&descriptor::verify(&bin, &service).unwrap_err(), "service");
}
