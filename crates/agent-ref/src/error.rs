use std::fmt;

/// The stable error kinds every crate of the workspace maps its errors to.
///
/// These strings are a contract: `agentctl` prints them as `error[KIND]` and
/// as `{"error":{"kind":…}}`, and scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A reference, kind, version or platform that does not parse or validate.
    InvalidRef,
    /// No cache entry and no store had the binary.
    BinaryNotFound,
    /// The process could not be started.
    Spawn,
    /// The agent exited before it was ready.
    AgentExited,
    /// No handshake line within the startup timeout.
    HandshakeTimeout,
    /// The first stdout line is not a valid handshake.
    HandshakeMalformed,
    /// The handshake names a protocol version the host does not accept.
    VersionMismatch,
    /// The gRPC connection was not ready within the dial timeout.
    DialTimeout,
    /// The agent's health service never reported SERVING.
    NotServing,
    /// A store could not be reached or refused to answer (retryable).
    StoreUnavailable,
    /// The store answered that it has no such artifact.
    ArtifactMissing,
    /// Bytes did not match their published digest or size, or an archive was unsafe.
    Integrity,
    /// A local filesystem or OS error.
    Io,
    /// A signature the policy requires is missing, invalid, by an unknown key or
    /// names another artifact; or the cache is writable by others.
    Untrusted,
    /// A configuration file or variable that does not validate.
    Config,
    /// `--locked`, and the lock file has no entry for the ref.
    NotLocked,
    /// The agent may not start as asked: a sandbox is required and none is set, or
    /// the policy cannot be enforced on this machine.
    Admission,
}

impl ErrorKind {
    /// Every kind, in the order of the README's table.
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::InvalidRef,
        ErrorKind::BinaryNotFound,
        ErrorKind::Spawn,
        ErrorKind::AgentExited,
        ErrorKind::HandshakeTimeout,
        ErrorKind::HandshakeMalformed,
        ErrorKind::VersionMismatch,
        ErrorKind::DialTimeout,
        ErrorKind::NotServing,
        ErrorKind::StoreUnavailable,
        ErrorKind::ArtifactMissing,
        ErrorKind::Integrity,
        ErrorKind::Io,
        ErrorKind::Untrusted,
        ErrorKind::Config,
        ErrorKind::NotLocked,
        ErrorKind::Admission,
    ];

    /// The stable kebab-case name, e.g. `handshake-timeout`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRef => "invalid-ref",
            ErrorKind::BinaryNotFound => "binary-not-found",
            ErrorKind::Spawn => "spawn",
            ErrorKind::AgentExited => "agent-exited",
            ErrorKind::HandshakeTimeout => "handshake-timeout",
            ErrorKind::HandshakeMalformed => "handshake-malformed",
            ErrorKind::VersionMismatch => "version-mismatch",
            ErrorKind::DialTimeout => "dial-timeout",
            ErrorKind::NotServing => "not-serving",
            ErrorKind::StoreUnavailable => "store-unavailable",
            ErrorKind::ArtifactMissing => "artifact-missing",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Io => "io",
            ErrorKind::Untrusted => "untrusted",
            ErrorKind::Config => "config",
            ErrorKind::NotLocked => "not-locked",
            ErrorKind::Admission => "admission",
        }
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = UnknownErrorKind;

    /// Parses the stable name printed by [`ErrorKind::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownErrorKind(s.to_owned()))
    }
}

/// A string that is not one of the stable error kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error kind {0:?}")]
pub struct UnknownErrorKind(pub String);

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The causes of `e`, outermost first: `e.source()`, its source, and so on
/// (`e` itself is not included).
///
/// Every error of this workspace says what failed at its own level and leaves
/// the why to its source, so each text in the chain is said once.
pub fn causes<'a>(
    e: &'a dyn std::error::Error,
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |c| c.source())
}

/// `e` and its causes on one line, `what failed: why: why that`. Built by
/// [`error_chain`]; the one way this workspace renders a cause chain as text.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(&'a dyn std::error::Error);

/// Renders `e` and every cause ([`causes`]) on one line, joined by `: `;
/// a cause with no text is skipped.
///
/// ```
/// use std::io;
/// let e = io::Error::new(io::ErrorKind::NotFound, "no such file");
/// assert_eq!(agent_ref::error_chain(&e).to_string(), "no such file");
/// ```
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> ErrorChain<'_> {
    ErrorChain(e)
}

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        for c in causes(self.0) {
            let text = c.to_string();
            if !text.is_empty() {
                write!(f, ": {text}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a reference, version, kind, platform or agent home is not acceptable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefError {
    /// A field of a reference breaks the allowed form.
    #[error("invalid agent {field} {value:?}: {reason} (allowed: {allowed})")]
    InvalidField {
        /// `publisher`, `name`, `version` or `reference`.
        field: &'static str,
        /// The offending input (possibly truncated).
        value: String,
        /// What is wrong with it.
        reason: String,
        /// The allowed form, for the user.
        allowed: &'static str,
    },
    /// An unknown agent kind.
    #[error("unknown agent kind {0:?} (allowed: {allowed})", allowed = crate::AgentKind::allowed())]
    UnknownKind(String),
    /// A kind that parses but is never loaded (`job`).
    #[error(
        "agents of kind {0} are not loaded by the agent manager (loadable: every kind but job)"
    )]
    NotLoadable(&'static str),
    /// A version or version requirement that is not semver.
    #[error(
        "invalid version {value:?}: {reason} (allowed: latest, 1.2.3, v1.2.3, ^1.2, ~1.4, >=2, <3)"
    )]
    InvalidVersion {
        /// The offending input.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// An operation needed a concrete version but got `latest` or a requirement.
    #[error("agent {0} has no concrete version; resolve it first")]
    NotConcrete(String),
    /// `CODEFLY_AGENT_SOURCE` holds something other than `remote` or `local`.
    #[error("CODEFLY_AGENT_SOURCE={0:?} is not understood (allowed: \"\", remote, local)")]
    InvalidSource(String),
    /// No `CODEFLY_HOME` and no home directory to default to.
    #[error("cannot find the agent home: set CODEFLY_HOME or HOME")]
    NoHome,
    /// An OS or architecture name that is not known.
    #[error("unknown platform {0:?} (allowed: os/arch such as linux/amd64, darwin/arm64)")]
    InvalidPlatform(String),
}

impl RefError {
    /// The stable kind: [`ErrorKind::InvalidRef`] for all but [`RefError::NoHome`] ([`ErrorKind::Io`]).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            RefError::NoHome => ErrorKind::Io,
            _ => ErrorKind::InvalidRef,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_names() {
        let names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "invalid-ref",
                "binary-not-found",
                "spawn",
                "agent-exited",
                "handshake-timeout",
                "handshake-malformed",
                "version-mismatch",
                "dial-timeout",
                "not-serving",
                "store-unavailable",
                "artifact-missing",
                "integrity",
                "io",
                "untrusted",
                "config",
                "not-locked",
                "admission",
            ]
        );
    }

    #[test]
    fn display_from_str_and_serde_agree() {
        for k in ErrorKind::ALL {
            assert_eq!(k.to_string(), k.as_str());
            assert_eq!(k.as_str().parse::<ErrorKind>().unwrap(), k);
            let j = serde_json::to_string(&k).unwrap();
            assert_eq!(j, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<ErrorKind>(&j).unwrap(), k);
        }
        assert!("Invalid-Ref".parse::<ErrorKind>().is_err());
        assert!("".parse::<ErrorKind>().is_err());
    }

    #[derive(Debug)]
    struct Level(&'static str, Option<Box<Level>>);
    impl fmt::Display for Level {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Level {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn the_chain_is_each_level_once_outermost_first() {
        let e = Level(
            "pull failed",
            Some(Box::new(Level(
                "",
                Some(Box::new(Level("connection refused", None))),
            ))),
        );
        let texts: Vec<String> = causes(&e).map(ToString::to_string).collect();
        assert_eq!(texts, ["", "connection refused"]);
        assert_eq!(
            error_chain(&e).to_string(),
            "pull failed: connection refused"
        );
        // A cause that happens to contain its parent's words is still shown.
        let e = Level(
            "read failed",
            Some(Box::new(Level("read failed: EIO", None))),
        );
        assert_eq!(error_chain(&e).to_string(), "read failed: read failed: EIO");
    }

    #[test]
    fn ref_error_kinds() {
        assert_eq!(RefError::NoHome.kind(), ErrorKind::Io);
        for e in [
            RefError::UnknownKind("x".into()),
            RefError::NotConcrete("a/b:latest".into()),
            RefError::InvalidSource("x".into()),
            RefError::InvalidPlatform("x".into()),
            RefError::NotLoadable("job"),
            RefError::InvalidVersion {
                value: "x".into(),
                reason: "y".into(),
            },
        ] {
            assert_eq!(e.kind(), ErrorKind::InvalidRef, "{e}");
        }
    }
}
