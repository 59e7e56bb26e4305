use std::ffi::OsString;

use crate::RefError;

/// The environment variable that selects where `latest` is resolved from.
pub const AGENT_SOURCE_ENV: &str = "CODEFLY_AGENT_SOURCE";

/// Where `latest` versions come from.
#[doc(alias = "AgentSourceEnv")]
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

    /// Reads `CODEFLY_AGENT_SOURCE`; unset means [`AgentSource::Remote`]
    /// (a thin wrapper over [`AgentSource::from_value`]).
    ///
    /// # Errors
    /// [`RefError::InvalidSource`] when the variable holds anything else.
    pub fn from_env() -> Result<Self, RefError> {
        Self::from_value(std::env::var_os(AGENT_SOURCE_ENV))
    }

    /// The rule of [`AgentSource::from_env`] for a given value of the
    /// variable: `None` (unset) is remote; a value that is not UTF-8 is an error.
    ///
    /// # Errors
    /// [`RefError::InvalidSource`] for a value [`AgentSource::parse`] refuses.
    pub fn from_value(value: Option<OsString>) -> Result<Self, RefError> {
        match value {
            None => Ok(AgentSource::Remote),
            Some(v) => match v.into_string() {
                Ok(s) => Self::parse(&s),
                Err(raw) => Err(RefError::InvalidSource(raw.to_string_lossy().into_owned())),
            },
        }
    }

    /// Whether `latest` comes from the local cache only.
    #[doc(alias = "AgentSourceLocal")]
    #[must_use]
    pub fn is_local(self) -> bool {
        self == AgentSource::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn empty_and_remote_are_remote() {
        for s in ["", "remote", "REMOTE", "Remote", "  remote "] {
            assert_eq!(AgentSource::parse(s).unwrap(), AgentSource::Remote, "{s:?}");
        }
    }

    #[test]
    fn local_is_local_case_insensitive() {
        for s in ["local", "LOCAL", "Local", " local\n"] {
            let src = AgentSource::parse(s).unwrap();
            assert_eq!(src, AgentSource::Local, "{s:?}");
            assert!(src.is_local());
        }
        assert!(!AgentSource::Remote.is_local());
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        for s in ["github", "locale", "1", "true", "local,remote", "lоcal"] {
            let e = AgentSource::parse(s).expect_err(s);
            assert!(matches!(&e, RefError::InvalidSource(v) if v == s), "{s}");
            assert_eq!(e.kind(), ErrorKind::InvalidRef);
            let msg = e.to_string();
            assert!(
                msg.contains("CODEFLY_AGENT_SOURCE") && msg.contains("remote, local"),
                "{msg}"
            );
        }
    }

    #[test]
    fn from_value_mirrors_the_environment_rules() {
        assert_eq!(AgentSource::from_value(None).unwrap(), AgentSource::Remote);
        assert_eq!(
            AgentSource::from_value(Some("local".into())).unwrap(),
            AgentSource::Local
        );
        let not_utf8 = std::ffi::OsString::from(String::from_utf8_lossy(b"lo\xffcal").as_ref());
        assert!(AgentSource::from_value(Some(not_utf8)).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let raw = std::ffi::OsString::from_vec(b"lo\xffcal".to_vec());
            assert!(matches!(
                AgentSource::from_value(Some(raw)),
                Err(RefError::InvalidSource(_))
            ));
        }
    }

    #[test]
    fn default_is_remote() {
        assert_eq!(AgentSource::default(), AgentSource::Remote);
    }
}
