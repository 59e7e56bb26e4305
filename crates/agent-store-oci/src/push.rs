//! The publishing side: [`push`] makes the artifact `oras push` would, so
//! both tools can read what the other wrote.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use agent_ref::{AgentRef, Platform, RefError};
use agent_store::{Sha256Digest, StoreError};
use futures_util::TryStreamExt as _;
use oci_client::Reference;
use serde_json::json;
use sha2::Digest as _;

use crate::config::RegistryConfig;
use crate::errors;
use crate::select::{TITLE_ANNOTATION, layer_title, signature_title};

/// The `artifactType` of an agent artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.codefly.agent.v1";
/// The media type of the agent layer (what `oras push` uses for a file).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The empty config's media type (image-spec 1.1).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config blob, `{}`.
pub const EMPTY_CONFIG: &[u8] = b"{}";

/// What [`push`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushResult {
    /// `host/repository:tag`.
    pub reference: String,
    /// The digest of what the tag points at (manifest or index), `sha256:<hex>`.
    pub digest: String,
    /// The media type of what the tag points at.
    pub media_type: String,
    /// One entry per file, in the order given.
    pub layers: Vec<PushedLayer>,
}

/// One pushed file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushedLayer {
    /// The local file.
    pub path: PathBuf,
    /// Its platform, if one was given.
    pub platform: Option<Platform>,
    /// The blob digest, `sha256:<hex>`.
    pub digest: String,
    /// The blob size.
    pub size: u64,
    /// Whether the registry already had the blob (not uploaded again).
    pub reused: bool,
    /// The digest of the manifest holding this layer.
    pub manifest_digest: String,
}

/// One file to publish: the binary, its platform, and optionally its
/// minisign signature (the `.minisig` file), pushed as a second layer titled
/// `{prefix}-{name}.minisig` in the same manifest — what
/// `oras push … {prefix}-{name} {prefix}-{name}.minisig` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFile {
    /// The binary.
    pub path: PathBuf,
    /// Its platform (several files: one each).
    pub platform: Option<Platform>,
    /// Its `.minisig` file, if it is signed.
    pub signature: Option<PathBuf>,
}

fn invalid(message: String) -> StoreError {
    StoreError::io(message, std::io::ErrorKind::InvalidInput.into())
}

/// Publishes `agent` (concrete version = the tag) to `registry` as an
/// ORAS-compatible artifact: for each file a manifest with one layer
/// (media type [`LAYER_MEDIA_TYPE`], title `{prefix}-{name}`), the empty
/// config and `artifactType` [`ARTIFACT_TYPE`].
///
/// - One file without a platform: the tag points at that manifest.
/// - Files with platforms (every file must then have one, each different):
///   the tag points at an image index with one entry per platform, so a
///   host on another platform gets `artifact-missing`, not a wrong binary.
///
/// Files are hashed, then streamed to the registry in one `PUT` each
/// (constant memory, whatever their size); blobs the registry already has
/// are not uploaded again.
///
/// # Errors
/// [`StoreError::Ref`] for a non-concrete ref; [`StoreError::Io`] for
/// unreadable files or unusable arguments (kind `io`); [`StoreError::Unavailable`]
/// when the registry cannot be reached or refuses (naming the credentials tried).
pub async fn push(
    registry: &RegistryConfig,
    agent: &AgentRef,
    files: &[(PathBuf, Option<Platform>)],
) -> Result<PushResult, StoreError> {
    let files: Vec<PushFile> = files
        .iter()
        .map(|(path, platform)| PushFile {
            path: path.clone(),
            platform: platform.clone(),
            signature: None,
        })
        .collect();
    push_files(registry, agent, &files).await
}

/// As [`push`], with an optional signature layer per file ([`PushFile`]).
///
/// # Errors
/// As [`push`]; an unreadable or empty signature file is [`StoreError::Io`].
pub async fn push_files(
    registry: &RegistryConfig,
    agent: &AgentRef,
    files: &[PushFile],
) -> Result<PushResult, StoreError> {
    let version = agent
        .concrete_version()
        .ok_or_else(|| RefError::NotConcrete(agent.to_string()))?;
    if let Some(why) = agent.kind().refusal(crate::config::STORE) {
        return Err(invalid(format!("cannot push {agent}: {why}")));
    }
    let with_platform = files.iter().filter(|f| f.platform.is_some()).count();
    match files.len() {
        0 => return Err(invalid("no file to push".to_owned())),
        1 => {}
        n if with_platform != n => {
            return Err(invalid(
                "several files need a platform each (--platform os/arch)".to_owned(),
            ));
        }
        _ => {}
    }
    for (i, f) in files.iter().enumerate() {
        if let Some(p) = &f.platform
            && files[..i].iter().any(|g| g.platform.as_ref() == Some(p))
        {
            return Err(invalid(format!("platform {p} given twice")));
        }
    }

    let client = registry.client()?;
    let host = registry.host().to_owned();
    let repository = registry.repository(agent);
    let creds = registry.credentials();
    let auth = creds.to_oci();
    let tag_ref = Reference::with_tag(host.clone(), repository.clone(), version.to_string());
    client
        .store_auth_if_needed(tag_ref.resolve_registry(), &auth)
        .await;
    let map = |e, what: &str| errors::map(e, what, &host, creds);
    let whole = format!("{host}/{repository}:{version}");

    // The empty config, shared by every manifest.
    let empty_digest = sha256_bytes(EMPTY_CONFIG).to_oci();
    upload_bytes(&client, &tag_ref, EMPTY_CONFIG, &empty_digest)
        .await
        .map_err(|e| map(e, &format!("upload of the empty config to {whole}")))?;

    let title = layer_title(agent.kind(), agent.name());
    let mut layers = Vec::with_capacity(files.len());
    let mut entries = Vec::with_capacity(files.len());
    let mut single: Option<(Vec<u8>, String)> = None;
    for PushFile {
        path,
        platform,
        signature,
    } in files
    {
        let (digest, size, reused) = upload_file(&client, &tag_ref, path, &map, &whole).await?;
        let mut manifest_layers = vec![json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": digest,
            "size": size,
            "annotations": { TITLE_ANNOTATION: title },
        })];
        if let Some(sig) = signature {
            let (sig_digest, sig_size, _) =
                upload_file(&client, &tag_ref, sig, &map, &whole).await?;
            manifest_layers.push(json!({
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": sig_digest,
                "size": sig_size,
                "annotations": { TITLE_ANNOTATION: signature_title(agent.kind(), agent.name()) },
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": {
                "mediaType": EMPTY_MEDIA_TYPE,
                "digest": empty_digest,
                "size": EMPTY_CONFIG.len(),
                "data": "e30=",
            },
            "layers": manifest_layers,
        });
        let body = serde_json::to_vec(&manifest)
            .map_err(|e| invalid(format!("serialising the manifest: {e}")))?;
        let manifest_digest = sha256_bytes(&body).to_oci();
        if let Some(p) = platform {
            let by_digest =
                Reference::with_digest(host.clone(), repository.clone(), manifest_digest.clone());
            put_manifest(&client, &by_digest, body.clone(), MANIFEST_MEDIA_TYPE)
                .await
                .map_err(|e| map(e, &format!("manifest of {} for {whole}", path.display())))?;
            entries.push(json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "artifactType": ARTIFACT_TYPE,
                "digest": manifest_digest,
                "size": body.len(),
                "platform": { "os": p.os, "architecture": p.arch },
            }));
        } else {
            single = Some((body, manifest_digest.clone()));
        }
        layers.push(PushedLayer {
            path: path.clone(),
            platform: platform.clone(),
            digest,
            size,
            reused,
            manifest_digest,
        });
    }

    let (body, media_type) = if let Some((body, _)) = single {
        (body, MANIFEST_MEDIA_TYPE)
    } else {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "manifests": entries,
        });
        let body = serde_json::to_vec(&index)
            .map_err(|e| invalid(format!("serialising the index: {e}")))?;
        (body, INDEX_MEDIA_TYPE)
    };
    let digest = sha256_bytes(&body).to_oci();
    put_manifest(&client, &tag_ref, body, media_type)
        .await
        .map_err(|e| map(e, &format!("tag {whole}")))?;
    tracing::info!(reference = %whole, %digest, "pushed agent");
    Ok(PushResult {
        reference: whole,
        digest,
        media_type: media_type.to_owned(),
        layers,
    })
}

/// Hashes `path` and uploads it as a blob unless the registry has it.
/// Returns its digest (`sha256:…`), size and whether it was already there.
async fn upload_file(
    client: &oci_client::Client,
    tag_ref: &Reference,
    path: &Path,
    map: &impl Fn(oci_client::errors::OciDistributionError, &str) -> StoreError,
    whole: &str,
) -> Result<(String, u64, bool), StoreError> {
    let (digest, size) = hash_file(path).await?;
    if size == 0 {
        return Err(invalid(format!("{} is empty", path.display())));
    }
    let digest = digest.to_oci();
    let what = format!("upload of {} to {whole}", path.display());
    let reused = client
        .blob_exists(tag_ref, &digest)
        .await
        .map_err(|e| map(e, &what))?;
    if reused {
        tracing::debug!(%digest, "blob already in the registry");
    } else {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .map_err(oci_client::errors::OciDistributionError::IoError);
        client
            .push_blob_stream(tag_ref, stream, &digest, Some(size))
            .await
            .map_err(|e| map(e, &what))?;
    }
    Ok((digest, size, reused))
}

async fn upload_bytes(
    client: &oci_client::Client,
    reference: &Reference,
    data: &'static [u8],
    digest: &str,
) -> Result<(), oci_client::errors::OciDistributionError> {
    if !client.blob_exists(reference, digest).await? {
        client.push_blob(reference, data, digest).await?;
    }
    Ok(())
}

async fn put_manifest(
    client: &oci_client::Client,
    reference: &Reference,
    body: Vec<u8>,
    media_type: &'static str,
) -> Result<(), oci_client::errors::OciDistributionError> {
    client
        .push_manifest_raw(reference, body, http::HeaderValue::from_static(media_type))
        .await
        .map(drop)
}

fn sha256_bytes(data: &[u8]) -> Sha256Digest {
    Sha256Digest(sha2::Sha256::digest(data).into())
}

/// sha256 and size of a file, read in 1 MiB pieces on a blocking thread.
pub(crate) async fn hash_file(path: &Path) -> Result<(Sha256Digest, u64), StoreError> {
    let p = path.to_path_buf();
    let res = tokio::task::spawn_blocking(move || -> std::io::Result<(Sha256Digest, u64)> {
        let mut f = std::fs::File::open(&p)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        Ok((Sha256Digest(h.finalize().into()), n))
    })
    .await
    .map_err(|e| {
        StoreError::io(
            format!("hashing {}", path.display()),
            std::io::Error::other(e),
        )
    })?;
    res.map_err(|e| StoreError::io(format!("reading {}", path.display()), e))
}
