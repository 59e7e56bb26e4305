//! `agent-ref`: naming agents and finding them on disk.
//!
//! An agent is named by an [`AgentRef`] — `kind`, `publisher`, `name` and a
//! `version` that may be `latest`, an exact semver or a requirement
//! ([`VersionSpec`]). It is written `[publisher/]name[:version]`; the
//! publisher defaults to [`DEFAULT_PUBLISHER`] (`codefly.dev`) and the version
//! to [`LATEST`]. [`AgentHome`] maps a concrete reference to its place in
//! the cache shared with codefly's Go loader:
//! `$CODEFLY_HOME/agents/{kind cache dir}/{publisher}/{name}__{version}`, where
//! every kind's cache directory and artifact-name prefix come from one table,
//! [`AgentKind::TABLE`] (`service` → `services`/`service-{name}`, `toolbox` →
//! `toolboxes`/`toolbox-{name}`, …).
//!
//! Every field is validated before it can touch a path: publisher and name
//! are 1–128 bytes of `[A-Za-z0-9._-]`, never start with `.` and never contain
//! `..`; a concrete version is strict semver without build metadata. A bad
//! reference is a [`RefError`] whose [`kind`](RefError::kind) is
//! [`ErrorKind::InvalidRef`] and whose message names the field and the
//! allowed form.
//!
//! The crate also holds what every other crate of the workspace shares:
//! the stable [`ErrorKind`]s, [`AgentSource`] (`CODEFLY_AGENT_SOURCE`) and
//! [`Platform`] (Go's `os`/`arch` names).
//!
//! ```
//! use agent_ref::{AgentHome, AgentKind, AgentRef, ErrorKind, VersionSpec};
//!
//! let r: AgentRef = "codefly.dev/go-grpc:v1.2.3".parse()?;
//! assert_eq!(r.identifier(), "codefly.dev/go-grpc:1.2.3");
//! assert_eq!(r.unique(), "service::codefly.dev/go-grpc:1.2.3");
//!
//! let home = AgentHome::new("/tmp/codefly");
//! assert_eq!(
//!     home.binary_path(&r)?,
//!     std::path::Path::new("/tmp/codefly/agents/services/codefly.dev/go-grpc__1.2.3"),
//! );
//! let module = r.clone().with_kind(AgentKind::Module);
//! assert!(home.binary_path(&module)?.starts_with("/tmp/codefly/agents/modules"));
//!
//! let latest: AgentRef = "echo".parse()?;
//! assert_eq!(latest.publisher(), "codefly.dev");
//! assert!(matches!(latest.version_spec(), VersionSpec::Latest));
//!
//! // `latest` skips pre-releases; requirements pick the highest match.
//! let installed = ["1.2.0", "1.4.1", "2.0.0-rc.1"].map(|v| agent_ref::parse_version(v).unwrap());
//! assert_eq!(VersionSpec::Latest.pick(&installed).unwrap().to_string(), "1.4.1");
//! assert_eq!("~1.2".parse::<VersionSpec>()?.pick(&installed).unwrap().to_string(), "1.2.0");
//!
//! // Nothing that could escape the home is accepted.
//! let err = AgentRef::parse("../../etc/passwd").unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidRef);
//! assert!(err.to_string().contains("publisher"));
//! # Ok::<(), agent_ref::RefError>(())
//! ```
//!
//! The parser has a `cargo fuzz` target in `crates/agent-ref/fuzz`
//! (`cargo +nightly fuzz run parse_ref`).
#![forbid(unsafe_code)]

mod error;
mod home;
mod kind;
mod platform;
mod reference;
mod source;
mod version;

pub use error::{ErrorChain, ErrorKind, RefError, UnknownErrorKind, causes, error_chain};
pub use home::{AgentHome, CODEFLY_HOME_ENV};
pub use kind::{AgentKind, KindSpec, KindStores};
pub use platform::{Platform, platform_suffix};
pub use reference::{AgentRef, DEFAULT_PUBLISHER, LATEST};
pub use source::{AGENT_SOURCE_ENV, AgentSource};
pub use version::{VersionSpec, parse_version};

/// Re-exported so users of [`VersionSpec`] need no direct `semver` dependency.
pub use semver;
