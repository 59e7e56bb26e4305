//! The pulling side: [`OciStore`].

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use agent_ref::semver::Version;
use agent_ref::{AgentRef, Platform, RefError};
use agent_store::{AgentStore, Expected, Installed, Installer, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use oci_client::Reference;
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use tracing::Instrument as _;

use crate::config::{RegistryConfig, STORE};
use crate::errors;
use crate::select::{
    LayerRef, Selected, layer_title, select_layer_titled, select_signature_titled,
};

/// The manifest media types we accept (OCI and Docker, image and index).
pub(crate) const MANIFEST_ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Tags asked for per page of the tag list.
const TAG_PAGE: usize = 1000;

/// An agent store on an OCI registry: `{registry}/{prefix}/agents/{publisher}/{P}-{name}:{version}`,
/// or the Go loader's `…/agents/{publisher}/{name}:{version}` when the first does not exist.
#[derive(Clone)]
pub struct OciStore {
    config: RegistryConfig,
    /// Built at the first request (see [`OciStore::new`]); clones share it.
    client: Arc<OnceLock<oci_client::Client>>,
}

impl fmt::Debug for OciStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciStore")
            .field("registry", &self.config.to_string())
            .field("credentials", self.config.credentials())
            .finish()
    }
}

/// The layer to download, and where it was found.
#[derive(Debug, Clone)]
struct Resolved {
    reference: Reference,
    layer: LayerRef,
    /// The `{prefix}-{name}.minisig` layer of the same manifest, if any.
    signature: Option<LayerRef>,
    manifest_digest: String,
}

/// The largest signature layer we read (a `.minisig` is under 1 KiB).
const MAX_SIGNATURE: u64 = 64 * 1024;

impl OciStore {
    /// A store on `config`'s registry. Its HTTP client (and with it the TLS
    /// configuration, the system's root certificates read) is built at its
    /// first request, so that a program that never reaches the registry (a
    /// load served from the cache) does not pay for it; a client that cannot
    /// be built is that request's `unavailable`.
    ///
    /// # Errors
    /// None today: the `Result` leaves room for checks made when the store
    /// is built.
    pub fn new(config: RegistryConfig) -> Result<OciStore, StoreError> {
        Ok(OciStore {
            config,
            client: Arc::new(OnceLock::new()),
        })
    }

    /// The HTTP client, built on first use.
    fn client(&self) -> Result<&oci_client::Client, StoreError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let built = self.config.client()?;
        Ok(self.client.get_or_init(|| built))
    }

    /// The store configured by `AGENT_REGISTRY` (and `AGENT_REGISTRY_SCHEME`,
    /// credentials from `AGENT_REGISTRY_USERNAME`/`_PASSWORD` or the docker
    /// config), or `None` when `AGENT_REGISTRY` is unset.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for values that do not parse.
    pub fn from_env() -> Result<Option<OciStore>, StoreError> {
        RegistryConfig::from_env()?.map(OciStore::new).transpose()
    }

    /// The registry it talks to.
    #[must_use]
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The OCI reference of a concrete `agent` in the current layout
    /// ([`RegistryConfig::repository`]).
    ///
    /// # Errors
    /// [`StoreError::Ref`] when `agent` has no concrete version.
    pub fn reference(&self, agent: &AgentRef) -> Result<Reference, StoreError> {
        self.reference_in(agent, &self.config.repository(agent))
    }

    fn reference_in(&self, agent: &AgentRef, repository: &str) -> Result<Reference, StoreError> {
        let version = agent
            .concrete_version()
            .ok_or_else(|| RefError::NotConcrete(agent.to_string()))?;
        Ok(Reference::with_tag(
            self.config.host().to_owned(),
            repository.to_owned(),
            version.to_string(),
        ))
    }

    /// The semver tags of `repository` (a leading `v` is accepted; other tags
    /// are left out), or `None` when the registry does not know the repository.
    async fn tags(&self, repository: &str) -> Result<Option<Vec<Version>>, StoreError> {
        let reference = Reference::with_tag(
            self.config.host().to_owned(),
            repository.to_owned(),
            "latest".to_owned(),
        );
        let what = format!("tags of {}/{repository}", self.config.host());
        let auth = self.config.credentials().to_oci();
        let mut versions = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = match self
                .client()?
                .list_tags(&reference, &auth, Some(TAG_PAGE), last.as_deref())
                .await
            {
                Ok(p) => p,
                Err(e) => match self.map(e, &what) {
                    StoreError::Missing { .. } if last.is_none() => return Ok(None),
                    StoreError::Missing { .. } => break,
                    other => return Err(other),
                },
            };
            let n = page.tags.len();
            versions.extend(
                page.tags
                    .iter()
                    .filter_map(|t| agent_ref::parse_version(t).ok()),
            );
            // Registries that ignore `n` return everything at once; a short
            // page is the last one.
            match page.tags.last() {
                Some(t) if n >= TAG_PAGE && last.as_deref() != Some(t.as_str()) => {
                    last = Some(t.clone());
                }
                _ => break,
            }
        }
        versions.sort();
        versions.dedup();
        Ok(Some(versions))
    }

    /// Whether the registry knows `repository` (one tag asked for).
    async fn exists(&self, repository: &str) -> Result<bool, StoreError> {
        let reference = Reference::with_tag(
            self.config.host().to_owned(),
            repository.to_owned(),
            "latest".to_owned(),
        );
        let what = format!("tags of {}/{repository}", self.config.host());
        let auth = self.config.credentials().to_oci();
        match self
            .client()?
            .list_tags(&reference, &auth, Some(1), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.map(e, &what) {
                StoreError::Missing { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// `artifact-missing` for a kind this store may not serve.
    fn refuse_kind(agent: &AgentRef) -> Result<(), StoreError> {
        match agent.kind().refusal(STORE) {
            None => Ok(()),
            Some(why) => Err(StoreError::Missing {
                store: STORE.to_owned(),
                what: format!("{agent}: {why}"),
            }),
        }
    }

    fn map(&self, e: oci_client::errors::OciDistributionError, what: &str) -> StoreError {
        errors::map(e, what, self.config.host(), self.config.credentials())
    }

    /// Fetches (and digest-checks) a manifest, returning its bytes and digest.
    async fn manifest(
        &self,
        reference: &Reference,
        what: &str,
    ) -> Result<(Bytes, String), StoreError> {
        // oci-client checks the body against Docker-Content-Digest when the
        // registry sends one, and against the reference's digest when it has one.
        self.client()?
            .pull_manifest_raw(
                reference,
                &self.config.credentials().to_oci(),
                &MANIFEST_ACCEPT,
            )
            .await
            .map_err(|e| self.map(e, what))
    }

    /// The layer of `agent` for `platform`. The current repository is asked
    /// first; only when its manifest is missing *and* the repository does not
    /// exist is the Go loader's repository asked (one authority, never both).
    async fn resolve(&self, agent: &AgentRef, platform: &Platform) -> Result<Resolved, StoreError> {
        Self::refuse_kind(agent)?;
        let [current, legacy] = self.config.repositories(agent);
        match self.resolve_in(agent, platform, &current).await {
            Err(StoreError::Missing { .. }) if !self.exists(&current).await? => {
                match self.resolve_in(agent, platform, &legacy).await {
                    Err(StoreError::Missing { store, what }) => Err(StoreError::Missing {
                        store,
                        what: format!(
                            "{what} (and no repository {}/{current})",
                            self.config.host()
                        ),
                    }),
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn resolve_in(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        repository: &str,
    ) -> Result<Resolved, StoreError> {
        let reference = self.reference_in(agent, repository)?;
        let what = reference.whole();
        let title = layer_title(agent.kind(), agent.name());
        let (body, digest) = self.manifest(&reference, &what).await?;
        let first = select_layer_titled(&body, platform, &title)
            .map_err(|e| errors::from_select(&e, &what))?;
        let (layer, manifest_digest, signature) = match first {
            Selected::Layer(l) => {
                let sig = select_signature_titled(&body, &title)
                    .map_err(|e| errors::from_select(&e, &what))?;
                (l, digest, sig)
            }
            Selected::Manifest { digest, .. } => {
                let by_digest = reference.clone_with_digest(digest.to_oci());
                let what = format!("{what} ({platform}: {})", digest.to_oci());
                let (body, digest) = self.manifest(&by_digest, &what).await?;
                match select_layer_titled(&body, platform, &title)
                    .map_err(|e| errors::from_select(&e, &what))?
                {
                    Selected::Layer(l) => {
                        let sig = select_signature_titled(&body, &title)
                            .map_err(|e| errors::from_select(&e, &what))?;
                        (l, digest, sig)
                    }
                    Selected::Manifest { .. } => {
                        return Err(errors::integrity(
                            what,
                            "an image index points at another index; nested indexes are not supported".to_owned(),
                        ));
                    }
                }
            }
        };
        Ok(Resolved {
            reference,
            layer,
            signature,
            manifest_digest,
        })
    }

    /// The signature layer's text (digest-checked by oci-client, bounded).
    async fn signature_text(
        &self,
        reference: &Reference,
        layer: &LayerRef,
    ) -> Result<String, StoreError> {
        let oci = layer.digest.to_oci();
        let what = format!(
            "{}/{}@{oci} (signature)",
            self.config.host(),
            reference.repository()
        );
        if layer.size > MAX_SIGNATURE {
            return Err(errors::integrity(
                what,
                format!(
                    "{} bytes, a signature is at most {MAX_SIGNATURE}",
                    layer.size
                ),
            ));
        }
        let desc = OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: oci,
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut out: Vec<u8> = Vec::new();
        self.client()?
            .pull_blob(reference, &desc, &mut out)
            .await
            .map_err(|e| self.map(e, &what))?;
        if out.len() as u64 != layer.size {
            return Err(errors::integrity(
                what,
                format!(
                    "{} bytes received, the manifest says {}",
                    out.len(),
                    layer.size
                ),
            ));
        }
        String::from_utf8(out).map_err(|_| errors::integrity(what, "not UTF-8 text".to_owned()))
    }
}

#[async_trait]
impl AgentStore for OciStore {
    fn name(&self) -> &str {
        STORE
    }

    async fn probe(&self) -> agent_store::StoreProbe {
        crate::probe::probe(&self.config).await
    }

    async fn available(&self, agent: &AgentRef, platform: &Platform) -> Result<bool, StoreError> {
        match self.resolve(agent, platform).await {
            Ok(_) => Ok(true),
            Err(StoreError::Missing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The semver tags (a leading `v` is accepted) of the first repository
    /// that exists, current layout first, then the Go loader's; other tags are
    /// left out. The two lists are never merged. An agent the registry does
    /// not know has no versions.
    async fn versions(
        &self,
        agent: &AgentRef,
        _platform: &Platform,
    ) -> Result<Vec<Version>, StoreError> {
        Self::refuse_kind(agent)?;
        for repository in self.config.repositories(agent) {
            if let Some(versions) = self.tags(&repository).await? {
                tracing::debug!(%repository, count = versions.len(), "versions answered");
                return Ok(versions);
            }
        }
        Ok(Vec::new())
    }

    async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let span = tracing::info_span!("oci_pull", agent = %agent, platform = %platform);
        self.pull_inner(agent, platform, installer)
            .instrument(span)
            .await
    }
}

impl OciStore {
    async fn pull_inner(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let resolved = self.resolve(agent, platform).await?;
        let signature = match &resolved.signature {
            Some(l) => Some(self.signature_text(&resolved.reference, l).await?),
            None => None,
        };
        let layer_oci = resolved.layer.digest.to_oci();
        let what = format!(
            "{}/{}@{layer_oci}",
            self.config.host(),
            resolved.reference.repository()
        );
        tracing::debug!(manifest = %resolved.manifest_digest, layer = %layer_oci, size = resolved.layer.size, "pulling layer");
        let desc = OciDescriptor {
            media_type: resolved.layer.media_type.clone(),
            digest: layer_oci.clone(),
            size: i64::try_from(resolved.layer.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        // The installer hashes every byte against the layer digest and size,
        // and is the check that decides. oci-client verifies a full blob
        // response as well, which doubles the hashing (over half the CPU time
        // of a large pull); asking for the range `0-` gets the same bytes as
        // a partial response, which it leaves to us. A registry that ignores
        // ranges answers 200 and we get its verifying stream: correct, slower.
        let sized = if resolved.layer.size == 0 {
            self.client()?
                .pull_blob_stream(&resolved.reference, &desc)
                .await
                .map_err(|e| self.map(e, &what))?
        } else {
            match self
                .client()?
                .pull_blob_stream_partial(&resolved.reference, &desc, 0, None)
                .await
                .map_err(|e| self.map(e, &what))?
            {
                BlobResponse::Full(s) | BlobResponse::Partial(s) => s,
            }
        };
        if let Some(header) = &sized.digest_header_value
            && *header != layer_oci
        {
            return Err(errors::integrity(
                what,
                format!("the registry serves it as {header}"),
            ));
        }
        if let Some(len) = sized.content_length
            && len != resolved.layer.size
        {
            return Err(errors::integrity(
                what,
                format!(
                    "the registry sends {len} bytes, the manifest says {}",
                    resolved.layer.size
                ),
            ));
        }
        let stream = Observed {
            inner: sized.stream,
            done: false,
        };
        let reader = tokio_util::io::StreamReader::new(stream);
        let expected = Expected {
            sha256: Some(resolved.layer.digest),
            size: Some(resolved.layer.size),
            signature,
            platform: Some(platform.clone()),
            ..Expected::default()
        };
        let source = format!("oci:{what}");
        // A read error of the stream is the installer's `store-unavailable`
        // (retryable) carrying the cause; nothing to translate here.
        installer
            .install_reader(agent, &source, &expected, reader)
            .await
    }
}

/// Passes the blob through, ending the stream where oci-client's own digest
/// check fails so that the installer — which checks the same digest and
/// size — reports it as `integrity` and cleans up, instead of a read error.
struct Observed {
    inner: BoxStream<'static, Result<Bytes, std::io::Error>>,
    done: bool,
}

impl Stream for Observed {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                let is_digest =
                    matches!(e.get_ref(), Some(i) if i.is::<oci_client::errors::DigestError>());
                if is_digest {
                    tracing::debug!(error = %e, "oci-client digest check failed; the installer will report it");
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}
