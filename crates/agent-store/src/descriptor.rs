//! The verified-artifact descriptor that provider and solution agents must
//! carry before they load, in the format of codefly's `provider/artifact`
//! (schema `codefly.provider-artifact/v0`).
//!
//! **Where it is.** For an installed binary `B` (the cache's
//! `{name}__{version}`), the descriptor is `B.provider.artifact.json` and the
//! provider manifest `B.provider.codefly.yaml`, side by side. Failing that,
//! a *layout*: `provider.artifact.json` in `B`'s directory (or, when `B` is in
//! a `bin/` directory, in its parent, as a Nix output has it), naming the
//! binary and the manifest by leaf name; the binary it names must then be `B`.
//!
//! **What it says.** A JSON object with exactly these fields, in this order:
//! `schema_version`, `protocol_version` (`codefly.provider/v0`),
//! `manifest_schema_version` (`codefly.provider-manifest/v0`), `publisher`,
//! `name`, `version` (concrete), `binary_path` (a leaf name),
//! `binary_digest` (`sha256:` + 64 lower-case hex), `manifest_path`
//! (`provider.codefly.yaml`), `manifest_digest` and `artifact_digest`.
//! Unknown fields and trailing JSON values are refused.
//!
//! **What is checked.** The schema, protocol and manifest-schema versions;
//! the identity (`publisher`, `name`, `version` equal to the requested
//! [`AgentRef`], whose kind must be one that needs a descriptor);
//! `artifact_digest`, the sha256 of the descriptor serialized as Go's
//! `encoding/json` does (these fields in this order, no spaces, `<`, `>`,
//! `&`, U+2028 and U+2029 escaped) with `artifact_digest` empty; the
//! binary's sha256 against `binary_digest`; and the manifest's sha256
//! against `manifest_digest`.
//!
//! The manifest digest is codefly's: the sha256 of the manifest's canonical
//! form (decoded, list sets sorted, written as Go's `encoding/json` writes
//! it; see `descriptor::manifest`), so reformatting the YAML keeps the digest. The
//! manifest must decode (its `agent.kind` is `codefly:provider`, the one
//! kind codefly's manifest schema admits, for a solution too), and say the
//! same schema, protocol and identity as the descriptor.
//!
//! Every failure, a missing descriptor included, is
//! [`ErrorKind::Untrusted`]: nothing may run.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use agent_ref::{AgentRef, ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

mod manifest;

/// `provider.artifact.json`: the descriptor of a layout directory.
pub const DESCRIPTOR_FILE_NAME: &str = "provider.artifact.json";
/// Suffix of an installed binary's descriptor: `{binary}.provider.artifact.json`.
pub const INSTALLED_DESCRIPTOR_SUFFIX: &str = ".provider.artifact.json";
/// Suffix of an installed binary's manifest: `{binary}.provider.codefly.yaml`.
pub const INSTALLED_MANIFEST_SUFFIX: &str = ".provider.codefly.yaml";
/// The manifest's leaf name in a layout.
pub const MANIFEST_FILE_NAME: &str = "provider.codefly.yaml";
/// The descriptor schema this module reads.
pub const SCHEMA_V0: &str = "codefly.provider-artifact/v0";
/// The provider protocol the descriptor must name.
pub const PROTOCOL_V0: &str = "codefly.provider/v0";
/// The manifest schema the descriptor must name.
pub const MANIFEST_SCHEMA_V0: &str = "codefly.provider-manifest/v0";

/// A descriptor is a few hundred bytes; anything larger is not one.
const MAX_DESCRIPTOR: u64 = 64 * 1024;
/// Bound on the manifest read into memory.
const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

/// The descriptor's fields, in the order codefly serializes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// [`SCHEMA_V0`].
    pub schema_version: String,
    /// [`PROTOCOL_V0`].
    pub protocol_version: String,
    /// [`MANIFEST_SCHEMA_V0`].
    pub manifest_schema_version: String,
    /// The agent's publisher.
    pub publisher: String,
    /// The agent's name.
    pub name: String,
    /// The agent's concrete version.
    pub version: String,
    /// Leaf name of the binary (`provider-{name}`).
    pub binary_path: String,
    /// `sha256:{hex}` of the binary.
    pub binary_digest: String,
    /// Leaf name of the manifest ([`MANIFEST_FILE_NAME`]).
    pub manifest_path: String,
    /// `sha256:{hex}` of the manifest.
    pub manifest_digest: String,
    /// `sha256:{hex}` of this descriptor with this field empty.
    pub artifact_digest: String,
}

/// A descriptor that checked out, and the files it vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The descriptor.
    pub descriptor: Descriptor,
    /// The binary it binds (the one asked about).
    pub binary: PathBuf,
    /// Where the descriptor was read.
    pub descriptor_path: PathBuf,
    /// Where the manifest was read.
    pub manifest_path: PathBuf,
}

/// Why a descriptor does not vouch for a binary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// No descriptor beside the binary nor in its layout.
    #[error(
        "{binary} has no verified-artifact descriptor ({binary}{INSTALLED_DESCRIPTOR_SUFFIX} or {DESCRIPTOR_FILE_NAME} beside it); provider and solution agents load only with one"
    )]
    Missing {
        /// The binary asked about.
        binary: String,
    },
    /// A file of the artifact could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The descriptor is not a valid v0 descriptor.
    #[error("descriptor {path} is not valid: {reason}")]
    Invalid {
        /// The descriptor file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A digest does not match the bytes it names.
    #[error(
        "descriptor {path}: {what} digest mismatch (descriptor says {want}, the bytes are {got})"
    )]
    Digest {
        /// The descriptor file.
        path: String,
        /// `binary`, `manifest` or `artifact`.
        what: &'static str,
        /// The digest the descriptor states.
        want: String,
        /// The digest of the bytes.
        got: String,
    },
    /// The descriptor is for another agent, or binds another binary.
    #[error("descriptor {path} does not match {expected}: {reason}")]
    Identity {
        /// The descriptor file.
        path: String,
        /// The requested agent.
        expected: String,
        /// What differs.
        reason: String,
    },
}

impl DescriptorError {
    /// Always [`ErrorKind::Untrusted`]: whatever went wrong, the binary is
    /// not vouched for and must not run.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Untrusted
    }
}

impl Descriptor {
    /// The descriptor for `agent` (concrete version) whose binary, named
    /// `binary_name`, has bytes `binary`, and whose manifest has bytes
    /// `manifest`, with its `artifact_digest` filled in.
    ///
    /// # Errors
    /// [`DescriptorError::Invalid`] for a non-concrete `agent` or a
    /// `binary_name` that is not a leaf name.
    pub fn build(
        agent: &AgentRef,
        binary_name: &str,
        binary: &[u8],
        manifest: &[u8],
    ) -> Result<Descriptor, DescriptorError> {
        let version = agent
            .concrete_version()
            .ok_or_else(|| DescriptorError::Invalid {
                path: binary_name.to_owned(),
                reason: format!("{agent} has no concrete version"),
            })?;
        let mut d = Descriptor {
            schema_version: SCHEMA_V0.to_owned(),
            protocol_version: PROTOCOL_V0.to_owned(),
            manifest_schema_version: MANIFEST_SCHEMA_V0.to_owned(),
            publisher: agent.publisher().to_owned(),
            name: agent.name().to_owned(),
            version: version.to_string(),
            binary_path: binary_name.to_owned(),
            binary_digest: sha256_of(binary),
            manifest_path: MANIFEST_FILE_NAME.to_owned(),
            manifest_digest: manifest_digest(manifest, MANIFEST_FILE_NAME)?,
            artifact_digest: String::new(),
        };
        d.validate(binary_name, false)?;
        d.artifact_digest = d.self_digest();
        Ok(d)
    }

    /// The descriptor as JSON, the way codefly writes it.
    #[must_use]
    pub fn to_json(&self) -> Vec<u8> {
        go_json(self).into_bytes()
    }

    /// Parses and validates a descriptor and checks its own digest; `path`
    /// is for messages.
    ///
    /// # Errors
    /// [`DescriptorError::Invalid`] or [`DescriptorError::Digest`].
    pub fn parse(bytes: &[u8], path: &str) -> Result<Descriptor, DescriptorError> {
        let invalid = |reason: String| DescriptorError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Descriptor>();
        let d = match stream.next() {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(invalid(e.to_string())),
            None => return Err(invalid("empty".to_owned())),
        };
        if stream.next().is_some() {
            return Err(invalid("trailing JSON after the descriptor".to_owned()));
        }
        d.validate(path, true)?;
        let want = d.self_digest();
        if d.artifact_digest != want {
            return Err(DescriptorError::Digest {
                path: path.to_owned(),
                what: "artifact",
                want: d.artifact_digest.clone(),
                got: want,
            });
        }
        Ok(d)
    }

    fn validate(&self, path: &str, with_digest: bool) -> Result<(), DescriptorError> {
        let fail = |reason: String| {
            Err(DescriptorError::Invalid {
                path: path.to_owned(),
                reason,
            })
        };
        if self.schema_version != SCHEMA_V0 {
            return fail(format!(
                "schema_version {:?} is not {SCHEMA_V0:?}",
                self.schema_version
            ));
        }
        if self.protocol_version != PROTOCOL_V0
            || self.manifest_schema_version != MANIFEST_SCHEMA_V0
        {
            return fail(format!(
                "protocol_version {:?} / manifest_schema_version {:?} are not {PROTOCOL_V0:?} / {MANIFEST_SCHEMA_V0:?}",
                self.protocol_version, self.manifest_schema_version
            ));
        }
        if self.publisher.is_empty()
            || self.name.is_empty()
            || self.version.is_empty()
            || self.version == "latest"
        {
            return fail("publisher, name and a concrete version are required".to_owned());
        }
        if !is_leaf(&self.binary_path) || !is_leaf(&self.manifest_path) {
            return fail("binary_path and manifest_path must be leaf file names".to_owned());
        }
        if self.manifest_path != MANIFEST_FILE_NAME {
            return fail(format!("manifest_path must be {MANIFEST_FILE_NAME:?}"));
        }
        if !is_digest(&self.binary_digest) || !is_digest(&self.manifest_digest) {
            return fail("binary_digest and manifest_digest must be sha256:<64 hex>".to_owned());
        }
        if with_digest && !is_digest(&self.artifact_digest) {
            return fail("artifact_digest must be sha256:<64 hex>".to_owned());
        }
        Ok(())
    }

    fn self_digest(&self) -> String {
        let mut clone = self.clone();
        clone.artifact_digest = String::new();
        sha256_of(go_json(&clone).as_bytes())
    }
}

/// Checks that `binary` is vouched for, as `agent`, by its descriptor (see
/// the module docs for where it is looked for and what is checked).
///
/// # Errors
/// A [`DescriptorError`], always of kind `untrusted`.
pub fn verify(binary: &Path, agent: &AgentRef) -> Result<Verified, DescriptorError> {
    let mut installed = binary.as_os_str().to_owned();
    installed.push(INSTALLED_DESCRIPTOR_SUFFIX);
    let installed = PathBuf::from(installed);
    match read_bounded(&installed, MAX_DESCRIPTOR) {
        Ok(bytes) => {
            let mut manifest = binary.as_os_str().to_owned();
            manifest.push(INSTALLED_MANIFEST_SUFFIX);
            return verify_files(binary, &PathBuf::from(manifest), &installed, &bytes, agent);
        }
        Err(DescriptorError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut roots = Vec::new();
    if let Some(dir) = binary.parent() {
        roots.push(dir.to_path_buf());
        if dir.file_name().is_some_and(|n| n == "bin")
            && let Some(up) = dir.parent()
        {
            roots.push(up.to_path_buf());
        }
    }
    for root in roots {
        let path = root.join(DESCRIPTOR_FILE_NAME);
        let bytes = match read_bounded(&path, MAX_DESCRIPTOR) {
            Ok(b) => b,
            Err(DescriptorError::Read { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let shown = path.display().to_string();
        let d = Descriptor::parse(&bytes, &shown)?;
        let bound = root.join(&d.binary_path);
        if !same_file(&bound, binary) {
            return Err(DescriptorError::Identity {
                path: shown,
                expected: binary.display().to_string(),
                reason: format!("it binds {}, not this executable", bound.display()),
            });
        }
        return verify_files(binary, &root.join(&d.manifest_path), &path, &bytes, agent);
    }
    Err(DescriptorError::Missing {
        binary: binary.display().to_string(),
    })
}

fn verify_files(
    binary: &Path,
    manifest: &Path,
    descriptor_path: &Path,
    descriptor_bytes: &[u8],
    agent: &AgentRef,
) -> Result<Verified, DescriptorError> {
    let shown = descriptor_path.display().to_string();
    let d = Descriptor::parse(descriptor_bytes, &shown)?;
    let identity = |reason: String| DescriptorError::Identity {
        path: shown.clone(),
        expected: agent.to_string(),
        reason,
    };
    if !agent.kind().needs_descriptor() {
        return Err(identity(format!(
            "a {} agent is not loaded through a verified-artifact descriptor",
            agent.kind()
        )));
    }
    let version = agent
        .concrete_version()
        .map(ToString::to_string)
        .unwrap_or_default();
    if d.publisher != agent.publisher() || d.name != agent.name() || d.version != version {
        return Err(identity(format!(
            "the descriptor is for {}/{}:{}",
            d.publisher, d.name, d.version
        )));
    }
    let got = sha256_file(binary)?;
    if got != d.binary_digest {
        return Err(DescriptorError::Digest {
            path: shown,
            what: "binary",
            want: d.binary_digest,
            got,
        });
    }
    let manifest_bytes = read_bounded(manifest, MAX_MANIFEST)?;
    let shown_manifest = manifest.display().to_string();
    let m =
        manifest::Manifest::load(&manifest_bytes).map_err(|reason| DescriptorError::Invalid {
            path: shown_manifest.clone(),
            reason,
        })?;
    if m.schema_version != d.manifest_schema_version
        || m.protocol_version != d.protocol_version
        || m.agent.publisher != d.publisher
        || m.agent.name != d.name
        || m.agent.version != d.version
    {
        return Err(identity(format!(
            "the manifest {shown_manifest} is for {}/{}:{}",
            m.agent.publisher, m.agent.name, m.agent.version
        )));
    }
    let got = sha256_of(&m.canonical());
    if got != d.manifest_digest {
        return Err(DescriptorError::Digest {
            path: shown,
            what: "manifest",
            want: d.manifest_digest,
            got,
        });
    }
    Ok(Verified {
        descriptor: d,
        binary: binary.to_path_buf(),
        descriptor_path: descriptor_path.to_path_buf(),
        manifest_path: manifest.to_path_buf(),
    })
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, DescriptorError> {
    let read = |source| DescriptorError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out).map_err(read)?;
    if out.len() as u64 > max {
        return Err(DescriptorError::Invalid {
            path: path.display().to_string(),
            reason: format!("larger than {max} bytes"),
        });
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String, DescriptorError> {
    let read = |source| DescriptorError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// The digest codefly gives the manifest `bytes`: the sha256 of its
/// canonical form. `path` is for messages.
///
/// # Errors
/// [`DescriptorError::Invalid`] when the manifest does not decode or
/// validate.
pub fn manifest_digest(bytes: &[u8], path: &str) -> Result<String, DescriptorError> {
    let m = manifest::Manifest::load(bytes).map_err(|reason| DescriptorError::Invalid {
        path: path.to_owned(),
        reason,
    })?;
    Ok(sha256_of(&m.canonical()))
}

fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn is_leaf(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// JSON as Go's `encoding/json` writes a struct: fields in declaration
/// order, no spaces, and `<`, `>`, `&`, U+2028, U+2029 escaped. Those
/// characters only ever occur inside strings, so escaping them in the
/// output is escaping them in the strings.
fn go_json(d: &Descriptor) -> String {
    go_escape(&serde_json::to_string(d).unwrap_or_default())
}

/// `serde_json`'s compact output with the escapes Go's `encoding/json` adds.
fn go_escape(plain: &str) -> String {
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_MANIFEST: &[u8] = b"\
schema_version: codefly.provider-manifest/v0
protocol_version: codefly.provider/v0
state_schema_versions: [1]
agent:
  kind: codefly:provider
  publisher: acme
  name: p
  version: 1.0.0
default_deletion_policy: retain
permissions:
  required:
    - id: read-record
      action: read
      resource: records/*
      resource_type: record
      reason: Reads records
      risk: low
resource_types:
  - id: record
    actions: [observe]
state:
  schema_versions: [1]
diagnostic_namespace: codefly.echo.
";

    #[test]
    fn go_json_escapes_like_encoding_json() {
        let agent = AgentRef::parse_as(agent_ref::AgentKind::Provider, "acme/p:1.0.0").unwrap();
        let mut d = Descriptor::build(&agent, "provider-p", b"bin", TEST_MANIFEST).unwrap();
        d.name = "a<b>&c".to_owned();
        let json = go_json(&d);
        assert!(json.contains(r#""name":"a\u003cb\u003e\u0026c""#), "{json}");
        assert!(
            json.starts_with(
                r#"{"schema_version":"codefly.provider-artifact/v0","protocol_version""#
            )
        );
    }

    #[test]
    fn digests_are_canonical() {
        assert!(is_digest(&sha256_of(b"x")));
        assert!(!is_digest(&sha256_of(b"x").to_uppercase()));
        assert!(!is_digest("sha256:abc"));
    }
}
