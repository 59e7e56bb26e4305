//! `agent-store-oci`: an [`agent_store::AgentStore`] on an OCI registry, and
//! the publishing side ([`push`]).
//!
//! An agent `publisher/name:version` of a kind with artifact prefix P
//! ([`agent_ref::AgentKind::prefix`]) lives at
//! `{registry}/{prefix}/agents/{publisher}/P-{name}:{version}` (codefly
//! v0.3.x, and what [`push`] writes), or, in the Go loader's layout, at
//! `{registry}/{prefix}/agents/{publisher}/{name}:{version}`. Both are one
//! store and one authority: the first repository that exists answers for
//! versions and pulls, and their tags are never merged (a stale Go loader
//! repository cannot add versions to a current one). The artifact is
//! shaped like `oras push` makes it: one layer titled `P-{name}`
//! (`org.opencontainers.image.title`), an empty config, `artifactType`
//! `application/vnd.codefly.agent.v1`; or an image index with one such
//! manifest per platform. Pulling verifies the manifest digest (oci-client
//! checks it against `Docker-Content-Digest`), picks the platform and layer
//! with the pure [`select_layer`], and streams the blob through the
//! [`agent_store::Installer`], which checks its sha256 and size.
//! `latest` is the highest semver tag. Provider and solution agents are served
//! from the cache and Nix only: this store answers `artifact-missing` for
//! them without asking the registry, and [`push`] refuses them.
//!
//! **Signatures.** A second layer titled `P-{name}.minisig` in the same
//! manifest (in each platform's manifest of an index) is the binary's
//! minisign signature, as `oras push … P-{name} P-{name}.minisig`
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
#![forbid(unsafe_code)]

mod config;
mod errors;
mod probe;
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
    LayerRef, SelectError, Selected, TITLE_ANNOTATION, layer_title, select_layer,
    select_layer_titled, select_signature, select_signature_titled, signature_title,
};
pub use store::OciStore;
