//! Choosing what to fetch from a manifest: a pure function over the bytes the
//! registry sent, so it can be tested and fuzzed without a registry.

use std::collections::BTreeMap;

use agent_ref::{AgentKind, ErrorKind, Platform};
use agent_store::Sha256Digest;
use serde::Deserialize;

/// The annotation ORAS puts on a file layer: the file's name.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// What a manifest says to fetch next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selected {
    /// The document is an image index: fetch this platform's manifest (by digest).
    Manifest {
        /// The platform manifest's digest.
        digest: Sha256Digest,
        /// Its size in bytes, as the index states it.
        size: u64,
    },
    /// The document is an image manifest: this layer is the agent binary.
    Layer(LayerRef),
}

/// The agent's layer in an image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// The blob's digest.
    pub digest: Sha256Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The layer's media type.
    pub media_type: String,
    /// Its `org.opencontainers.image.title`, if any.
    pub title: Option<String>,
}

/// Why a manifest does not yield the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// Not JSON, or not shaped like a manifest or an index.
    #[error("not an OCI manifest or index: {0}")]
    Malformed(String),
    /// A digest that is not `sha256:<64 hex>`, or a negative size.
    #[error("bad descriptor: {0}")]
    BadDescriptor(String),
    /// The index has no entry for the platform.
    #[error("no entry for {platform} in the image index (it has: {available})")]
    NoPlatform {
        /// The platform asked for.
        platform: String,
        /// The platforms the index lists, comma separated.
        available: String,
    },
    /// The manifest has no layer that is the agent.
    #[error("no layer titled {wanted:?} among {count} layer(s) (titles: {titles})")]
    NoLayer {
        /// `{prefix}-{name}`.
        wanted: String,
        /// How many layers there are.
        count: usize,
        /// Their titles, comma separated.
        titles: String,
    },
}

impl SelectError {
    /// The stable kind: a missing platform or layer is `artifact-missing`; a
    /// document that is not a manifest is `integrity` (its digest checked out,
    /// so the publisher made it that way, or the registry is lying).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            SelectError::Malformed(_) | SelectError::BadDescriptor(_) => ErrorKind::Integrity,
            SelectError::NoPlatform { .. } | SelectError::NoLayer { .. } => {
                ErrorKind::ArtifactMissing
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Entry>>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Entry {
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// The layer file name an agent of `kind` is published under: `{prefix}-{name}`
/// (`service-echo`, `toolbox-grep`).
#[must_use]
pub fn layer_title(kind: AgentKind, name: &str) -> String {
    kind.artifact_name(name)
}

/// The title of an agent's signature layer: `{prefix}-{name}.minisig`.
#[must_use]
pub fn signature_title(kind: AgentKind, name: &str) -> String {
    format!("{}.minisig", kind.artifact_name(name))
}

/// [`select_signature_titled`] for a service agent `name`.
///
/// # Errors
/// As [`select_signature_titled`].
pub fn select_signature(manifest: &[u8], name: &str) -> Result<Option<LayerRef>, SelectError> {
    select_signature_titled(manifest, &layer_title(AgentKind::Service, name))
}

/// The signature layer of an image manifest (titled `{artifact}.minisig`,
/// `artifact` being the binary layer's title), if it has one.
///
/// # Errors
/// [`SelectError::Malformed`] / [`SelectError::BadDescriptor`] for a
/// document that is not a manifest or a bad descriptor.
pub fn select_signature_titled(
    manifest: &[u8],
    artifact: &str,
) -> Result<Option<LayerRef>, SelectError> {
    let doc: Doc =
        serde_json::from_slice(manifest).map_err(|e| SelectError::Malformed(e.to_string()))?;
    let wanted = format!("{artifact}.minisig");
    let Some(layers) = doc.layers else {
        return Ok(None);
    };
    let hit = layers.iter().find(|d| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(TITLE_ANNOTATION))
            .is_some_and(|t| *t == wanted)
    });
    match hit {
        None => Ok(None),
        Some(d) => Ok(Some(LayerRef {
            digest: parse_digest(&d.digest)?,
            size: parse_size(d.size)?,
            media_type: d.media_type.clone(),
            title: Some(wanted),
        })),
    }
}

/// [`select_layer_titled`] for a service agent `name` (layer `service-{name}`).
///
/// # Errors
/// As [`select_layer_titled`].
pub fn select_layer(
    manifest: &[u8],
    platform: &Platform,
    name: &str,
) -> Result<Selected, SelectError> {
    select_layer_titled(manifest, platform, &layer_title(AgentKind::Service, name))
}

/// Reads a manifest or image index and says what to fetch next for the
/// artifact titled `artifact` on `platform`.
///
/// - An image index (by `mediaType`, or by having `manifests`): the first
///   entry whose `platform` has our OS and architecture (or an alias of it).
/// - An image manifest: the layer titled `artifact` (`{prefix}-{name}`, see
///   [`layer_title`]); failing that, the only layer if there is exactly one
///   (as `oras push` of one file makes it).
///
/// # Errors
/// [`SelectError`]: `NoPlatform`/`NoLayer` (missing) or `Malformed`/`BadDescriptor` (integrity).
pub fn select_layer_titled(
    manifest: &[u8],
    platform: &Platform,
    artifact: &str,
) -> Result<Selected, SelectError> {
    let doc: Doc =
        serde_json::from_slice(manifest).map_err(|e| SelectError::Malformed(e.to_string()))?;
    let is_index = doc
        .media_type
        .as_deref()
        .is_some_and(|t| INDEX_TYPES.contains(&t))
        || (doc.layers.is_none() && doc.manifests.is_some());
    if is_index {
        let entries = doc.manifests.unwrap_or_default();
        let aliases = platform.arch_aliases();
        let hit = entries.iter().find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == platform.os && aliases.contains(&p.architecture.as_str()))
        });
        let Some(entry) = hit else {
            let available: Vec<String> = entries
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            return Err(SelectError::NoPlatform {
                platform: platform.to_string(),
                available: if available.is_empty() {
                    "nothing".to_owned()
                } else {
                    available.join(", ")
                },
            });
        };
        return Ok(Selected::Manifest {
            digest: parse_digest(&entry.digest)?,
            size: parse_size(entry.size)?,
        });
    }
    let Some(layers) = doc.layers else {
        return Err(SelectError::Malformed(
            "neither `layers` nor `manifests`".to_owned(),
        ));
    };
    let wanted = artifact.to_owned();
    let title = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(TITLE_ANNOTATION))
            .cloned()
    };
    let chosen = match layers
        .iter()
        .find(|d| title(d).as_deref() == Some(wanted.as_str()))
    {
        Some(d) => d,
        None if layers.len() == 1 => &layers[0],
        None => {
            let titles: Vec<String> = layers.iter().filter_map(title).collect();
            return Err(SelectError::NoLayer {
                wanted,
                count: layers.len(),
                titles: if titles.is_empty() {
                    "none".to_owned()
                } else {
                    titles.join(", ")
                },
            });
        }
    };
    Ok(Selected::Layer(LayerRef {
        digest: parse_digest(&chosen.digest)?,
        size: parse_size(chosen.size)?,
        media_type: chosen.media_type.clone(),
        title: title(chosen),
    }))
}

fn parse_digest(s: &str) -> Result<Sha256Digest, SelectError> {
    let Some(hex) = s.strip_prefix("sha256:") else {
        return Err(SelectError::BadDescriptor(format!(
            "digest {s:?} is not sha256:<hex> (only sha256 is supported)"
        )));
    };
    if hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SelectError::BadDescriptor(format!(
            "digest {s:?} is not 64 lower-case hex digits"
        )));
    }
    hex.parse::<Sha256Digest>()
        .map_err(SelectError::BadDescriptor)
}

fn parse_size(size: i64) -> Result<u64, SelectError> {
    u64::try_from(size).map_err(|_| SelectError::BadDescriptor(format!("negative size {size}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn linux() -> Platform {
        "linux/amd64".parse().unwrap()
    }

    #[test]
    fn single_untitled_layer_is_the_agent() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D2}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D1}","size":7}}]}}"#
        );
        let Selected::Layer(l) = select_layer(m.as_bytes(), &linux(), "echo").unwrap() else {
            panic!("expected a layer")
        };
        assert_eq!(l.digest.to_oci(), D1);
        assert_eq!(l.size, 7);
    }

    #[test]
    fn titled_layer_wins_among_several() {
        let m = format!(
            r#"{{"schemaVersion":2,"layers":[
            {{"mediaType":"a","digest":"{D2}","size":1,"annotations":{{"org.opencontainers.image.title":"README"}}}},
            {{"mediaType":"a","digest":"{D1}","size":9,"annotations":{{"org.opencontainers.image.title":"service-echo"}}}}]}}"#
        );
        let Selected::Layer(l) = select_layer(m.as_bytes(), &linux(), "echo").unwrap() else {
            panic!("expected a layer")
        };
        assert_eq!(l.digest.to_oci(), D1);
        assert_eq!(l.title.as_deref(), Some("service-echo"));
        let e = select_layer(m.as_bytes(), &linux(), "other").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArtifactMissing, "{e}");
    }

    #[test]
    fn index_picks_the_platform() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":300,"platform":{{"os":"darwin","architecture":"arm64"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":301,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        assert_eq!(
            select_layer(m.as_bytes(), &linux(), "echo").unwrap(),
            Selected::Manifest {
                digest: D1.parse().unwrap(),
                size: 301
            }
        );
        let e = select_layer(m.as_bytes(), &"windows/amd64".parse().unwrap(), "echo").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArtifactMissing);
        assert!(e.to_string().contains("darwin/arm64"), "{e}");
    }

    #[test]
    fn garbage_is_integrity() {
        for bad in [
            &b"not json"[..],
            br#"{"schemaVersion":2}"#,
            br#"{"layers":[{"digest":"md5:abc","size":1}]}"#,
            br#"{"layers":[{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":-1}]}"#,
        ] {
            let e = select_layer(bad, &linux(), "echo").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        }
    }
}
