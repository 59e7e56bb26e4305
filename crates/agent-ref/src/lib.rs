//! `agent-ref`: naming agents and finding them on disk.
//!
//! An agent is named by an [`AgentRef`] — `kind`, `publisher`, `name` and a
//! `version` that may be `latest`, an exact semver or a requirement
//! ([`VersionSpec`]). [`AgentHome`] maps a concrete reference to its place in
//! the cache shared with codefly's Go loader:
//! `$CODEFLY_HOME/agents/{services|applications|modules}/{publisher}/{name}__{version}`.
//! Every field is validated before it can touch a path.
//!
//! ```
//! use agent_ref::{AgentHome, AgentRef, VersionSpec};
//!
//! let r: AgentRef = "codefly.dev/go-grpc:1.2.3".parse()?;
//! assert_eq!(r.identifier(), "codefly.dev/go-grpc:1.2.3");
//! assert_eq!(r.unique(), "service::codefly.dev/go-grpc:1.2.3");
//!
//! let home = AgentHome::new("/tmp/codefly");
//! assert_eq!(
//!     home.binary_path(&r)?,
//!     std::path::Path::new("/tmp/codefly/agents/services/codefly.dev/go-grpc__1.2.3"),
//! );
//!
//! let latest: AgentRef = "echo".parse()?;
//! assert_eq!(latest.publisher(), "codefly.dev");
//! assert!(matches!(latest.version_spec(), VersionSpec::Latest));
//! # Ok::<(), agent_ref::RefError>(())
//! ```

mod error;
mod home;
mod kind;
mod platform;
mod reference;
mod source;
mod version;

pub use error::{ErrorKind, RefError, UnknownErrorKind};
pub use home::{AgentHome, CODEFLY_HOME_ENV};
pub use kind::AgentKind;
pub use platform::{Platform, platform_suffix};
pub use reference::{AgentRef, DEFAULT_PUBLISHER, LATEST};
pub use source::{AGENT_SOURCE_ENV, AgentSource};
pub use version::{VersionSpec, parse_version};

/// Re-exported so users of [`VersionSpec`] need no direct `semver` dependency.
pub use semver;
