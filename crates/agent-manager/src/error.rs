use std::fmt;

use agent_ref::{ErrorKind, RefError};
use agent_store::StoreError;

use crate::config::ConfigError;

/// What a store (or the local cache) answered when asked for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreAnswer {
    /// `local`, `nix`, `oci`, `http`, `github`…
    pub store: String,
    /// Its answer, for a person.
    pub answer: String,
}

impl StoreAnswer {
    /// The answer for the stores as a whole when none is enabled.
    pub(crate) fn no_store_enabled() -> Self {
        StoreAnswer {
            store: "stores".to_owned(),
            answer: "none enabled".to_owned(),
        }
    }

    /// The answer for the stores as a whole under `CODEFLY_AGENT_SOURCE=local`.
    pub(crate) fn stores_not_asked() -> Self {
        StoreAnswer {
            store: "stores".to_owned(),
            answer: "not asked (CODEFLY_AGENT_SOURCE=local)".to_owned(),
        }
    }
}

impl StoreAnswer {
    /// `store`'s answer `e`, with its causes.
    pub(crate) fn of(store: &str, e: &(dyn std::error::Error + 'static)) -> Self {
        StoreAnswer {
            store: store.to_owned(),
            answer: agent_ref::error_chain(e).to_string(),
        }
    }
}

impl fmt::Display for StoreAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.store, self.answer)
    }
}

/// The remedy printed with every `binary-not-found`.
pub const NOT_FOUND_REMEDY: &str = "build or install the agent, \
configure a store (AGENT_REGISTRY, AGENT_NIX_FLAKE or AGENT_HTTP_STORE, or [stores] in config.toml; \
GitHub releases are tried unless [stores] github = false), \
or check the publisher, name and version of the reference";

/// Everything that can go wrong in the manager. [`ManagerError::kind`] maps
/// each to a stable kind (`agent_ref::ErrorKind`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// A reference, version, kind, platform or `CODEFLY_*` value that does not validate.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// The configuration (file, environment or builder) does not validate or
    /// is contradictory, e.g. an unknown key in `config.toml`, or
    /// `CODEFLY_AGENT_STORES=oci` without a registry. Kind `config`; names the
    /// file, line and key (or the variable) and what is accepted.
    #[error(transparent)]
    Config(ConfigError),
    /// Nothing (local cache, then every store) had the agent, and every store
    /// answered (kind `binary-not-found`).
    #[doc(alias = "ErrAgentBinaryNotFound")]
    #[error("{}", not_found_message(agent, answers))]
    NotFound {
        /// `publisher/name:version` as asked.
        agent: String,
        /// One answer per place looked at, in order.
        answers: Vec<StoreAnswer>,
    },
    /// Nothing that answered had the agent, and at least one store could not
    /// be asked (kind `store-unavailable`): the binary may exist after all;
    /// retry later.
    #[error("{}", not_found_message(agent, answers))]
    StoresUnavailable {
        /// `publisher/name:version` as asked.
        agent: String,
        /// One answer per place looked at, in order.
        answers: Vec<StoreAnswer>,
    },
    /// [`Manager::load_path`](crate::Manager::load_path) was given a path with
    /// no file behind it (kind `binary-not-found`).
    #[error("no executable at {}", path.display())]
    NoSuchPath {
        /// The path.
        path: std::path::PathBuf,
    },
    /// A store failed in a way that is not "not found": bad bytes
    /// (`integrity`), a local I/O error while installing (`io`).
    #[error(transparent)]
    Store(StoreError),
    /// Starting the agent or getting it ready failed; carries the agent's stderr tail.
    #[error(transparent)]
    Spawn(#[from] agent_spawn::SpawnError),
    /// `locked` is on and the lock file does not list the ref (kind `not-locked`).
    #[error("{agent} is not in the lock file {} (run `agentctl lock {agent}`, or load without --locked)", lockfile.display())]
    NotLocked {
        /// The ref as asked.
        agent: String,
        /// The lock file.
        lockfile: std::path::PathBuf,
    },
    /// The lock file lists the ref but locks no artifact for this platform
    /// (kind `not-locked`): nothing the stores serve is accepted instead.
    #[error("{agent} is in the lock file {} for {locked} only, not for {platform} (run `{fix}`)", lockfile.display())]
    NotLockedForPlatform {
        /// The ref as asked.
        agent: String,
        /// The lock file.
        lockfile: std::path::PathBuf,
        /// The running platform.
        platform: String,
        /// The platforms the lock has an artifact for.
        locked: String,
        /// The command that adds the platform.
        fix: String,
    },
    /// The binary's sha256 is not the one the lock file pins (kind
    /// `integrity`); it was removed from the cache and not run.
    #[error("{agent}: {} has sha256 {actual}, but the lock file {} pins {expected}; removed, not run", path.display(), lockfile.display())]
    LockMismatch {
        /// The locked ref.
        agent: String,
        /// The lock file.
        lockfile: std::path::PathBuf,
        /// The lock's sha256.
        expected: String,
        /// What the binary hashed to.
        actual: String,
        /// The binary.
        path: std::path::PathBuf,
    },
    /// `[sandbox] require = true` and nothing confines this agent (kind
    /// `admission`); nothing was started.
    #[error("{agent} has no sandbox policy, and the configuration{} requires one ([sandbox] require = true); fix: add a [publishers.\"{publisher}\".sandbox] or [publishers.\"*\".sandbox] table, or load it with LoadOptions::sandbox(Sandbox::unconfined()) (agentctl --no-sandbox) to run it unconfined deliberately", config.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    SandboxRequired {
        /// The agent (ref or path).
        agent: String,
        /// Its publisher (`*` for an agent loaded by path).
        publisher: String,
        /// The configuration file that requires it, when it came from one.
        config: Option<std::path::PathBuf>,
    },
    /// The lock file cannot be read (`io`) or does not validate (`config`).
    #[error(transparent)]
    Lock(#[from] crate::lockfile::LockError),
    /// A local filesystem error.
    #[error("{context}")]
    Io {
        /// What we were doing, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn not_found_message(agent: &str, answers: &[StoreAnswer]) -> String {
    let mut s = format!("agent {agent} not found");
    if !answers.is_empty() {
        s.push_str(" (");
        let parts: Vec<String> = answers.iter().map(ToString::to_string).collect();
        s.push_str(&parts.join("; "));
        s.push(')');
    }
    s.push_str("; ");
    s.push_str(NOT_FOUND_REMEDY);
    s
}

impl ManagerError {
    /// The stable kind (ARCHITECTURE.md), e.g. [`ErrorKind::BinaryNotFound`].
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            ManagerError::Ref(e) => e.kind(),
            ManagerError::Config(_) => ErrorKind::Config,
            ManagerError::NotFound { .. } | ManagerError::NoSuchPath { .. } => {
                ErrorKind::BinaryNotFound
            }
            ManagerError::StoresUnavailable { .. } => ErrorKind::StoreUnavailable,
            ManagerError::Store(e) => e.kind(),
            ManagerError::Spawn(e) => e.kind(),
            ManagerError::Io { .. } => ErrorKind::Io,
            ManagerError::NotLocked { .. } | ManagerError::NotLockedForPlatform { .. } => {
                ErrorKind::NotLocked
            }
            ManagerError::LockMismatch { .. } => ErrorKind::Integrity,
            ManagerError::SandboxRequired { .. } => ErrorKind::Admission,
            ManagerError::Lock(e) => e.kind(),
        }
    }

    /// The agent's last stderr output, for failures of a started agent.
    #[must_use]
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            ManagerError::Spawn(e) => e.stderr_tail().filter(|t| !t.is_empty()),
            _ => None,
        }
    }

    /// Whether retrying later might succeed (a store was unreachable).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::StoreUnavailable
    }

    /// No place had `agent`: [`ManagerError::StoresUnavailable`] when a store
    /// could not be asked, else [`ManagerError::NotFound`].
    pub(crate) fn not_found(agent: String, answers: Vec<StoreAnswer>, unavailable: bool) -> Self {
        if unavailable {
            ManagerError::StoresUnavailable { agent, answers }
        } else {
            ManagerError::NotFound { agent, answers }
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ManagerError::Io {
            context: context.into(),
            source,
        }
    }

    /// Maps a store chain's failure: "nobody has it" becomes
    /// [`ManagerError::NotFound`] or [`ManagerError::StoresUnavailable`]
    /// (with every store's answer), tampering and local errors stay
    /// [`ManagerError::Store`].
    pub(crate) fn from_store(agent: &str, mut prior: Vec<StoreAnswer>, e: StoreError) -> Self {
        let kind = e.kind();
        let nobody_has_it = matches!(
            kind,
            ErrorKind::ArtifactMissing | ErrorKind::StoreUnavailable
        );
        match e.unshared() {
            StoreError::Chain { answers, .. } if nobody_has_it => {
                prior.extend(
                    answers
                        .iter()
                        .map(|(store, err)| StoreAnswer::of(store, err)),
                );
            }
            StoreError::Missing { store, .. } | StoreError::Unavailable { store, .. } => {
                prior.push(StoreAnswer::of(store, &e));
            }
            _ => {
                return match e {
                    StoreError::Ref(r) => ManagerError::Ref(r),
                    other => ManagerError::Store(other),
                };
            }
        }
        ManagerError::not_found(agent.to_owned(), prior, kind == ErrorKind::StoreUnavailable)
    }
}
