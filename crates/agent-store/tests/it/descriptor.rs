//! The verified-artifact descriptor of provider and solution agents, on real
//! files: one that verifies (installed beside the binary, and as a Nix-style
//! layout), a wrong binary digest, a missing descriptor, and the other ways a
//! descriptor can lie. Every refusal is `untrusted`.

use std::path::{Path, PathBuf};

use agent_ref::{AgentKind, AgentRef, ErrorKind};
use agent_store::descriptor::{self, Descriptor, DescriptorError};

const BIN: &[u8] = b"#!/bin/sh\necho provider\n";
/// A provider manifest as a provider author writes it: comments, flow and
/// block lists, lists out of order, quoted and plain scalars.
const MANIFEST: &[u8] = br#"# provider.codefly.yaml
schema_version: codefly.provider-manifest/v0
protocol_version: codefly.provider/v0
state_schema_versions: [1]
agent:
  kind: codefly:provider
  publisher: acme
  name: echo
  version: 1.0.0
default_deletion_policy: retain
permissions:
  required:
    - id: write-record
      action: write
      resource: "records/*"
      resource_type: record
      reason: Creates and updates DNS records
      risk: medium
    - id: read-record   # listed second, sorted first
      action: read
      resource: "records/*"
      resource_type: record
      reason: 'Reads records, <all> of them & more'
      risk: low
resource_types:
  - id: record
    actions: [update, create, observe]
    supports_delete: false
origin_rules:
  - id: api
    defaults: ["https://api.example.com"]
    schemes: [https]
    host_patterns: ["*.example.com", api.example.com]
    ports: [8443, 443]
    binding_override: deny
    private_network_classes: []
sandbox:
  network: loopback
  read_paths:
  - /etc/ssl
  - ${WORKSPACE}
state:
  schema_versions: [1]
  import_identity: true
  replace: false
  delete: false
  stepwise_upgrade: false
diagnostic_namespace: acme.echo.
"#;

/// [`MANIFEST`] in its canonical form, written out by hand following
/// codefly's `provider/manifest` (`Manifest.CanonicalBytes`): the Go struct's
/// fields in declaration order, every set-like list sorted (permissions and
/// resource types by id, actions, host patterns, ports, sandbox paths),
/// empty lists `null` or, where the field is `omitempty`, left out, and
/// `encoding/json`'s HTML escapes.
const CANONICAL_MANIFEST: &str = concat!(
    r#"{"schema_version":"codefly.provider-manifest/v0","protocol_version":"codefly.provider/v0","#,
    r#""state_schema_versions":[1],"#,
    r#""agent":{"kind":"codefly:provider","name":"echo","version":"1.0.0","publisher":"acme"},"#,
    r#""default_deletion_policy":"retain","#,
    r#""permissions":{"required":["#,
    r#"{"id":"read-record","action":"read","resource":"records/*","resource_type":"record","#,
    r#""reason":"Reads records, \u003call\u003e of them \u0026 more","risk":"low"},"#,
    r#"{"id":"write-record","action":"write","resource":"records/*","resource_type":"record","#,
    r#""reason":"Creates and updates DNS records","risk":"medium"}]},"#,
    r#""resource_types":[{"id":"record","actions":["create","observe","update"]}],"#,
    r#""requests":null,"#,
    r#""origin_rules":[{"id":"api","defaults":["https://api.example.com"],"schemes":["https"],"#,
    r#""host_patterns":["*.example.com","api.example.com"],"ports":[443,8443],"#,
    r#""binding_override":"deny","private_network_classes":null}],"#,
    r#""credential_purposes":null,"response_schemas":null,"projections":null,"#,
    r#""sandbox":{"read_paths":["${WORKSPACE}","/etc/ssl"],"network":"loopback"},"#,
    r#""state":{"schema_versions":[1],"import_identity":true,"replace":false,"delete":false,"stepwise_upgrade":false},"#,
    r#""diagnostic_namespace":"acme.echo."}"#,
);

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The descriptor codefly's `provider/artifact` (`BuildDescriptor`, then
/// `MarshalDescriptor`) writes for `binary` and [`MANIFEST`]: the identity
/// from the manifest, `binary_path` the executable name `provider-echo`,
/// the manifest digest over its canonical form, and `artifact_digest` the
/// sha256 of the same JSON with `artifact_digest` empty.
fn codefly_descriptor(binary: &[u8]) -> String {
    let body = |artifact: &str| {
        format!(
            concat!(
                r#"{{"schema_version":"codefly.provider-artifact/v0","protocol_version":"codefly.provider/v0","#,
                r#""manifest_schema_version":"codefly.provider-manifest/v0","publisher":"acme","name":"echo","#,
                r#""version":"1.0.0","binary_path":"provider-echo","binary_digest":"{}","#,
                r#""manifest_path":"provider.codefly.yaml","manifest_digest":"{}","artifact_digest":"{}"}}"#
            ),
            sha256(binary),
            sha256(CANONICAL_MANIFEST.as_bytes()),
            artifact
        )
    };
    body(&sha256(body("").as_bytes()))
}

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

    // A manifest replaced by something that is not one.
    std::fs::write(&desc, &good).unwrap();
    std::fs::write(dir.path().join("echo__1.0.0.provider.codefly.yaml"), b"x").unwrap();
    assert_untrusted(
        &descriptor::verify(&bin, &agent).unwrap_err(),
        "is not valid",
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

#[test]
fn a_descriptor_written_as_codefly_writes_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let agent = provider("1.0.0");
    let bin = dir.path().join("echo__1.0.0");
    std::fs::write(&bin, BIN).unwrap();
    let desc = dir.path().join("echo__1.0.0.provider.artifact.json");
    let yaml = dir.path().join("echo__1.0.0.provider.codefly.yaml");
    std::fs::write(&desc, codefly_descriptor(BIN)).unwrap();
    std::fs::write(&yaml, MANIFEST).unwrap();
    let v = descriptor::verify(&bin, &agent).unwrap();
    assert_eq!(
        v.descriptor.manifest_digest,
        sha256(CANONICAL_MANIFEST.as_bytes())
    );
    // Our writer writes the same bytes.
    let ours = Descriptor::build(&agent, "provider-echo", BIN, MANIFEST).unwrap();
    assert_eq!(
        String::from_utf8(ours.to_json()).unwrap(),
        codefly_descriptor(BIN)
    );

    // The digest is of the canonical form: another layout of the same
    // manifest (order, quoting, comments, block lists) verifies.
    let reformatted = String::from_utf8(MANIFEST.to_vec())
        .unwrap()
        .replace("# provider.codefly.yaml\n", "")
        .replace(
            "actions: [update, create, observe]",
            "actions:\n      - observe\n      - create\n      - 'update'",
        )
        .replace("ports: [8443, 443]", "ports: [443, 8443]  # https");
    std::fs::write(&yaml, reformatted).unwrap();
    descriptor::verify(&bin, &agent).unwrap();

    // A manifest that says something else does not.
    let widened = String::from_utf8(MANIFEST.to_vec())
        .unwrap()
        .replace("ports: [8443, 443]", "ports: [8443, 443, 80]");
    std::fs::write(&yaml, widened).unwrap();
    assert_untrusted(
        &descriptor::verify(&bin, &agent).unwrap_err(),
        "manifest digest mismatch",
    );

    // A manifest digest over the file's bytes, not codefly's canonical
    // form, is not codefly's descriptor.
    std::fs::write(&yaml, MANIFEST).unwrap();
    let file_digest =
        codefly_descriptor(BIN).replace(&sha256(CANONICAL_MANIFEST.as_bytes()), &sha256(MANIFEST));
    std::fs::write(&desc, file_digest).unwrap();
    assert!(descriptor::verify(&bin, &agent).is_err());
}

#[test]
fn a_codefly_descriptor_with_a_wrong_binary_digest_or_none_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = provider("1.0.0");
    let bin = dir.path().join("echo__1.0.0");
    std::fs::write(&bin, BIN).unwrap();
    std::fs::write(
        dir.path().join("echo__1.0.0.provider.codefly.yaml"),
        MANIFEST,
    )
    .unwrap();
    let desc = dir.path().join("echo__1.0.0.provider.artifact.json");
    std::fs::write(&desc, codefly_descriptor(b"another binary")).unwrap();
    assert_untrusted(
        &descriptor::verify(&bin, &agent).unwrap_err(),
        "binary digest mismatch",
    );
    std::fs::remove_file(&desc).unwrap();
    assert_untrusted(
        &descriptor::verify(&bin, &agent).unwrap_err(),
        "no verified-artifact descriptor",
    );
}

#[test]
fn a_manifest_outside_the_yaml_subset_or_schema_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let agent = provider("1.0.0");
    let bin = installed(dir.path(), &agent);
    let yaml = dir.path().join("echo__1.0.0.provider.codefly.yaml");
    let text = String::from_utf8(MANIFEST.to_vec()).unwrap();
    for (bad, says) in [
        (text.replace("risk: low", "risk: &r low"), "anchors"),
        (
            text.replace("network: loopback", "network: open"),
            "sandbox.network",
        ),
        (
            text.replace("kind: codefly:provider", "kind: codefly:service"),
            "agent.kind",
        ),
        (
            text.replace(
                "stepwise_upgrade: false\n",
                "stepwise_upgrade: false\n  surprise: 1\n",
            ),
            "surprise",
        ),
        (
            text.replace("replace: false", "replace: false\n  replace: true"),
            "already defined",
        ),
        (format!("{text}---\n{text}"), "one YAML document"),
    ] {
        std::fs::write(&yaml, &bad).unwrap();
        assert_untrusted(&descriptor::verify(&bin, &agent).unwrap_err(), says);
    }
}
