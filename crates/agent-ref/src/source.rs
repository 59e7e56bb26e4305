use crate::RefError;

/// The environment variable that selects where `latest` is resolved from.
pub const AGENT_SOURCE_ENV: &str = "CODEFLY_AGENT_SOURCE";

/// Where `latest` versions come from (the seed's `AgentSourceEnv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentSource {
    /// Local scan first, then the remote stores, then local again.
    #[default]
    Remote,
    /// Only the local agent directory; no store is asked.
    Local,
}

impl AgentSource {
    /// Parses a value of `CODEFLY_AGENT_SOURCE`: `""`/`remote` or `local`,
    /// ASCII case-insensitive. Anything else is an error, never a silent default.
    ///
    /// # Errors
    /// [`RefError::InvalidSource`] for any other value.
    pub fn parse(value: &str) -> Result<Self, RefError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "remote" => Ok(AgentSource::Remote),
            "local" => Ok(AgentSource::Local),
            _ => Err(RefError::InvalidSource(value.to_owned())),
        }
    }

    /// Reads `CODEFLY_AGENT_SOURCE`; unset means [`AgentSource::Remote`].
    ///
    /// # Errors
    /// [`RefError::InvalidSource`] when the variable holds anything else.
    pub fn from_env() -> Result<Self, RefError> {
        match std::env::var(AGENT_SOURCE_ENV) {
            Ok(v) => Self::parse(&v),
            Err(std::env::VarError::NotPresent) => Ok(AgentSource::Remote),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(RefError::InvalidSource(v.to_string_lossy().into_owned()))
            }
        }
    }

    /// The seed's `AgentSourceLocal()`.
    #[must_use]
    pub fn is_local(self) -> bool {
        self == AgentSource::Local
    }
}
