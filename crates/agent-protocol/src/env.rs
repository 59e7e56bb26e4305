//! The environment a host gives an agent: the variables it sets, and what of
//! its own environment it may pass on.

/// The per-spawn token (256-bit hex) the host sends back on every RPC as
/// [`TOKEN_METADATA_KEY`]. An agent started without it refuses every RPC but
/// health, unless [`INSECURE_ENV`] is `1`.
pub const TOKEN_ENV: &str = "CODEFLY_AGENT_TOKEN";
/// The agent's work directory (also its current directory), when the host gives one.
pub const WORKDIR_ENV: &str = "CODEFLY_AGENT_WORKDIR";
/// The unix socket path to listen on, when the host asks for unix-socket mode.
/// The handshake must then name exactly this path.
pub const UDS_PATH_ENV: &str = "CODEFLY_AGENT_UDS_PATH";
/// A file descriptor number: the read end of a pipe whose write end only the
/// host holds. EOF (or an error) on it means the host is gone. Optional for agents.
pub const LIFELINE_ENV: &str = "CODEFLY_AGENT_LIFELINE";
/// How a host attaches to an agent it did not start (a JSON object holding
/// the agent's token): a host secret, never passed on to an agent.
pub const ATTACH_ENV: &str = "CODEFLY_AGENT_ATTACH";
/// `1` lets an agent serve without a token (for running an agent by hand).
pub const INSECURE_ENV: &str = "CODEFLY_AGENT_INSECURE";
/// The log format the host would like on stderr; [`LOG_JSON`] asks for one JSON
/// object per line.
pub const LOG_ENV: &str = "CODEFLY_AGENT_LOG";
/// The value of [`LOG_ENV`] asking for JSON lines.
pub const LOG_JSON: &str = "json";

/// The gRPC metadata key carrying the token on every RPC.
pub const TOKEN_METADATA_KEY: &str = "x-codefly-token";

/// Host credentials that never reach an agent: removed from the inherited
/// environment on every spawn (an explicit variable given by the caller still wins).
pub const HOST_SECRET_ENV: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "AGENT_REGISTRY_USERNAME",
    "AGENT_REGISTRY_PASSWORD",
    ATTACH_ENV,
];

/// What survives when a host clears an agent's environment down to an
/// allowlist. A trailing `*` matches any suffix (`LC_*` matches `LC_ALL`).
pub const DEFAULT_ENV_ALLOWLIST: &[&str] = &[
    "PATH", "HOME", "USER", "LANG", "LC_*", "TZ", "TMPDIR", "TERM", "OTEL_*",
];

/// Whether the variable `name` is on [`DEFAULT_ENV_ALLOWLIST`] or on `extra`
/// (same pattern rules: exact name, or a prefix followed by `*`).
///
/// A host secret ([`HOST_SECRET_ENV`]) is never allowed, whatever `extra` says.
///
/// ```
/// use agent_protocol::env_allowed;
///
/// assert!(env_allowed("LC_ALL", &[]));
/// assert!(env_allowed("RUST_LOG", &["RUST_*".to_owned()]));
/// assert!(!env_allowed("AWS_SECRET_ACCESS_KEY", &[]));
/// assert!(!env_allowed("GITHUB_TOKEN", &["GITHUB_TOKEN".to_owned()]));
/// ```
#[must_use]
pub fn env_allowed(name: &str, extra: &[String]) -> bool {
    if HOST_SECRET_ENV.contains(&name) {
        return false;
    }
    DEFAULT_ENV_ALLOWLIST
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .any(|pattern| matches(pattern, name))
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_patterns() {
        for ok in [
            "PATH",
            "HOME",
            "LC_CTYPE",
            "LC_",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "TERM",
        ] {
            assert!(env_allowed(ok, &[]), "{ok}");
        }
        for no in ["PATHX", "XPATH", "LD_PRELOAD", "GH_TOKEN", "OTEL", "path"] {
            assert!(!env_allowed(no, &[]), "{no}");
        }
        let extra = vec!["MY_VAR".to_owned(), "APP_*".to_owned()];
        assert!(env_allowed("MY_VAR", &extra));
        assert!(!env_allowed("MY_VAR2", &extra));
        assert!(env_allowed("APP_X", &extra));
    }

    #[test]
    fn secrets_are_never_allowed() {
        let extra = vec!["*".to_owned()];
        for secret in HOST_SECRET_ENV {
            assert!(!env_allowed(secret, &extra), "{secret}");
        }
        assert!(env_allowed("ANYTHING", &extra));
    }
}
