//! `agent-store-github`: an [`agent_store::AgentStore`] on GitHub releases,
//! the fallback for everyone without a registry.
//!
//! **Layout.** Owner = publisher with `.` → `-` (`codefly.dev` →
//! `codefly-dev`), repository `{P}-{name}` where P is the kind's prefix
//! ([`agent_ref::AgentKind::prefix`]: `service-echo`, `toolbox-grep`,
//! `module-user-management`), tag `v{version}` (the bare `{version}` is tried
//! when `v…` is missing), asset `{P}-{name}_{version}_{os}_{arch}.tar.gz` (also
//! `x86_64`/`aarch64` and `.tgz`) holding `{P}-{name}` at its root or in one
//! top-level directory (other files, such as README or LICENSE, are ignored).
//! Provider and solution agents are served from the cache and Nix only: this
//! store answers `artifact-missing` for them without asking GitHub.
//!
//! **Versions.** `latest` is `releases/latest` (exactly one leading `v`
//! stripped); when that is 404 or not semver, the highest non-pre-release of
//! the listing. Requirements see every published release, pre-releases
//! included, and [`agent_ref::VersionSpec`] decides (pre-releases only when
//! the requirement names one). Answers are cached under
//! `$CODEFLY_HOME/cache/github/{api host}/{owner}/{repo}/*.json` for an hour
//! (configurable; [`GithubStoreBuilder::refresh`] bypasses the TTL) and
//! revalidated with `If-None-Match` — a 304 does not count against the rate
//! limit. When GitHub cannot answer, a stale cached answer is used.
//!
//! **Rate limits.** A 403/429 with `x-ratelimit-remaining: 0` or `Retry-After`
//! is `store-unavailable` saying when the limit resets and to set
//! `GITHUB_TOKEN`; the store then sends nothing more until the reset and never
//! retries against a limit itself.
//!
//! **Downloads** go through the API (`Accept: application/octet-stream`); we
//! follow the redirect ourselves, and each hop must be the API host,
//! `github.com` or `*.githubusercontent.com` over https (plain http only to an
//! http API host). A redirect anywhere else is refused before it is requested,
//! as `integrity`: the store was steered towards bytes we do not trust, and the
//! chain must not quietly fall through to another store. The token is only
//! ever sent to the API host.
//!
//! **Verification.** The asset's `digest` (`sha256:…`) when GitHub publishes
//! one, else its line in a `SHA256SUMS`/`checksums.txt`/`*_checksums.txt`
//! asset (or an `{asset}.sha256` sidecar); a mismatch is `integrity`. Without
//! any checksum the agent is installed with a `tracing` warning, or refused
//! with [`GithubStoreBuilder::require_checksum`].
//!
//! **Signatures.** The release asset `{asset}.minisig` is the minisign
//! signature of the tarball (what `minisign -S -m {asset}` makes, with the
//! trusted comment `codefly-agent {publisher}/{name}:{version} {os}/{arch}`).
//! It is verified over the downloaded archive before anything is extracted
//! ([`agent_store::trust::verify_detached`]) against the installer's trust
//! policy, and the signer reaches the install record; a release without one
//! is unsigned, which a publisher with `require-signature` refuses
//! (`untrusted`, nothing cached).
//!
//! **Extraction** happens in a private temp dir under the cache dir: only
//! regular files and directories; absolute paths, `..`, symlinks, hard links
//! and device files reject the whole archive (`integrity`), as do more than
//! 10 000 entries or more than 1 GiB claimed (both configurable). Only
//! `{P}-{name}` is written, under a name we choose, then handed to
//! [`agent_store::Installer::install_file`] with source
//! `github:{owner}/{repo}@{tag}`.
//!
//! ```no_run
//! use agent_store::{AgentStore, Installer};
//! use agent_store_github::GithubStore;
//! use agent_ref::{AgentHome, AgentRef, Platform};
//!
//! # async fn demo() -> Result<(), agent_store::StoreError> {
//! let store = GithubStore::builder()
//!     .token(std::env::var("GITHUB_TOKEN").ok())
//!     .cache_dir("/tmp/codefly/cache/github")
//!     .build()?;
//! let latest: AgentRef = "codefly.dev/echo".parse()?;
//! let versions = store.versions(&latest, &Platform::current()).await?;
//! if let Some(v) = latest.version_spec().pick(versions.iter()) {
//!     let installer = Installer::new(AgentHome::new("/tmp/codefly"));
//!     let got = store.pull(&latest.with_version(&v)?, &Platform::current(), &installer).await?;
//!     println!("{} from {}", got.path.display(), got.source);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod api;
pub mod archive;
mod cache;
mod checksum;
mod error;
mod probe;
mod store;

pub use error::GithubError;
pub use store::{
    DEFAULT_API_URL, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_TIMEOUT, DEFAULT_TTL,
    GithubStore, GithubStoreBuilder, asset_names, default_cache_dir, repo_of, tag_version,
};

/// The store's name in messages and records.
pub const STORE_NAME: &str = "github";
