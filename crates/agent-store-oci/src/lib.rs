//! `agent-store-oci`: an [`agent_store::AgentStore`] on an OCI registry, and
//! the publishing side ([`push`]).
//!
//! An agent `publisher/name:version` lives at
//! `{registry}/{prefix}/agents/{publisher}/{name}:{version}` as an artifact
//! shaped like `oras push` makes it: one layer titled `service-{name}`
//! (`org.opencontainers.image.title`), an empty config, `artifactType`
//! `application/vnd.codefly.agent.v1`; or an image index with one such
//! manifest per platform. Pulling verifies the manifest digest (oci-client
//! checks it against `Docker-Content-Digest`), picks the platform and layer
//! with the pure [`select_layer`], and streams the blob through the
//! [`agent_store::Installer`], which checks its sha256 and size.
//! `latest` is the highest semver tag.
//!
//! **Signatures.** A second layer titled `service-{name}.minisig` in the same
//! manifest (in each platform's manifest of an index) is the binary's
//! minisign signature, as `oras push … service-{name} service-{name}.minisig`
//! makes it ([`push_files`] with [`PushFile::signature`]). It is fetched
//! (digest-checked, at most 64 KiB) and handed to the installer, whose trust
//! policy decides; a manifest without one is an unsigned agent.
//!
//! Configured by `AGENT_REGISTRY` (`ghcr.io/codefly-dev`, `127.0.0.1:5000`),
//! `AGENT_REGISTRY_SCHEME` (plain HTTP is the default only for loopback
//! hosts), and credentials from `AGENT_REGISTRY_USERNAME`/`_PASSWORD` or
//! `~/.docker/config.json` (`docker login`, `oras login`).
//!
//! ```no_run
//! use agent_store::{AgentStore, Installer};
//! use agent_ref::{AgentHome, AgentRef, Platform};
//! use agent_store_oci::{OciStore, RegistryConfig, push};
//!
//! # async fn demo() -> Result<(), agent_store::StoreError> {
//! let registry = RegistryConfig::parse("127.0.0.1:5000")?;
//! let agent = AgentRef::parse("codefly.dev/echo:1.0.0")?;
//! push(&registry, &agent, &[("target/release/agent-echo".into(), None)]).await?;
//!
//! let store = OciStore::new(registry)?;
//! let installer = Installer::new(AgentHome::new("/tmp/codefly"));
//! let installed = store.pull(&agent, &Platform::current(), &installer).await?;
//! println!("{}", installed.path.display());
//! # Ok(()) }
//! ```

mod config;
mod errors;
mod push;
mod select;
mod store;

pub use config::{
    Credentials, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, RegistryConfig, Scheme,
};
pub use push::{
    ARTIFACT_TYPE, EMPTY_CONFIG, EMPTY_MEDIA_TYPE, INDEX_MEDIA_TYPE, LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE, PushFile, PushResult, PushedLayer, push, push_files,
};
pub use select::{
    LayerRef, SelectError, Selected, TITLE_ANNOTATION, layer_title, select_layer, select_signature,
    signature_title,
};
pub use store::OciStore;
