use std::path::PathBuf;

use agent_ref::ErrorKind;

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The policy cannot be enforced on this machine; the agent must not start.
    #[error("sandbox cannot be enforced here: {missing}; fix: {fix}")]
    Admission {
        /// What this machine lacks.
        missing: String,
        /// How to get it, or how to opt out explicitly.
        fix: String,
    },
    /// A path of the policy does not expand to an absolute path.
    #[error(
        "sandbox path {value:?}: {reason} (allowed variables: ${{HOME}}, ${{WORKDIR}}, ${{TMPDIR}}; the result must be absolute)"
    )]
    Path {
        /// The path as written in the policy.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A filesystem or kernel call failed while preparing the sandbox.
    #[error("preparing the sandbox: {what} {}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_default())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved, if any.
        path: Option<PathBuf>,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    /// The stable kind: `admission`, `config` or `io`.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            SandboxError::Admission { .. } => ErrorKind::Admission,
            SandboxError::Path { .. } => ErrorKind::Config,
            SandboxError::Io { .. } => ErrorKind::Io,
        }
    }
}
