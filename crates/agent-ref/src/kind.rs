use std::fmt;
use std::str::FromStr;

use crate::RefError;

/// What an agent is for; decides its cache sub-directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum AgentKind {
    /// `service`: a service agent.
    #[default]
    Service,
    /// `service:runtime`.
    ServiceRuntime,
    /// `service:builder`.
    ServiceBuilder,
    /// `service:code`.
    ServiceCode,
    /// `application`.
    Application,
    /// `module`.
    Module,
}

impl AgentKind {
    /// Every kind.
    pub const ALL: [AgentKind; 6] = [
        AgentKind::Service,
        AgentKind::ServiceRuntime,
        AgentKind::ServiceBuilder,
        AgentKind::ServiceCode,
        AgentKind::Application,
        AgentKind::Module,
    ];

    /// The kind as written in references and in `unique()` keys, e.g. `service:runtime`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Service => "service",
            AgentKind::ServiceRuntime => "service:runtime",
            AgentKind::ServiceBuilder => "service:builder",
            AgentKind::ServiceCode => "service:code",
            AgentKind::Application => "application",
            AgentKind::Module => "module",
        }
    }

    /// The cache sub-directory under `agents/`, as the Go loader names it.
    #[must_use]
    pub fn cache_dir(self) -> &'static str {
        match self {
            AgentKind::Service
            | AgentKind::ServiceRuntime
            | AgentKind::ServiceBuilder
            | AgentKind::ServiceCode => "services",
            AgentKind::Application => "applications",
            AgentKind::Module => "modules",
        }
    }

    /// The kind as it appears in Nix attribute names: `:` becomes `-`
    /// (`service:runtime` → `service-runtime`).
    #[must_use]
    pub fn attr_name(self) -> &'static str {
        match self {
            AgentKind::Service => "service",
            AgentKind::ServiceRuntime => "service-runtime",
            AgentKind::ServiceBuilder => "service-builder",
            AgentKind::ServiceCode => "service-code",
            AgentKind::Application => "application",
            AgentKind::Module => "module",
        }
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgentKind {
    type Err = RefError;

    /// Accepts the plain names, an optional `codefly:` prefix (the Go
    /// resources' form), and ASCII case differences.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("codefly:").unwrap_or(&lower);
        AgentKind::ALL
            .into_iter()
            .find(|k| k.as_str() == bare)
            .ok_or_else(|| RefError::UnknownKind(s.to_owned()))
    }
}

/// Serialized as [`AgentKind::as_str`] (`service:runtime`).
impl serde::Serialize for AgentKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Deserialized with the rules of [`FromStr`] (so Go's `codefly:service` works too).
impl<'de> serde::Deserialize<'de> for AgentKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for k in AgentKind::ALL {
            assert_eq!(k.as_str().parse::<AgentKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.as_str());
        }
    }

    #[test]
    fn cache_dirs_match_the_go_layout() {
        assert_eq!(AgentKind::Service.cache_dir(), "services");
        assert_eq!(AgentKind::ServiceRuntime.cache_dir(), "services");
        assert_eq!(AgentKind::ServiceBuilder.cache_dir(), "services");
        assert_eq!(AgentKind::ServiceCode.cache_dir(), "services");
        assert_eq!(AgentKind::Application.cache_dir(), "applications");
        assert_eq!(AgentKind::Module.cache_dir(), "modules");
    }

    #[test]
    fn service_sub_kinds_parse() {
        assert_eq!(
            "service:runtime".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceRuntime
        );
        assert_eq!(
            "service:builder".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceBuilder
        );
        assert_eq!(
            "service:code".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceCode
        );
    }

    #[test]
    fn go_prefix_and_case_are_accepted() {
        assert_eq!(
            "codefly:service".parse::<AgentKind>().unwrap(),
            AgentKind::Service
        );
        assert_eq!(
            "codefly:service:runtime".parse::<AgentKind>().unwrap(),
            AgentKind::ServiceRuntime
        );
        assert_eq!(" Module ".parse::<AgentKind>().unwrap(), AgentKind::Module);
        assert_eq!(
            "APPLICATION".parse::<AgentKind>().unwrap(),
            AgentKind::Application
        );
    }

    #[test]
    fn unknown_kinds_are_errors_listing_allowed() {
        for bad in [
            "",
            "services",
            "service:",
            "service:factory",
            "library",
            "job",
            "codefly:",
        ] {
            let e = bad.parse::<AgentKind>().expect_err(bad);
            assert!(matches!(e, RefError::UnknownKind(_)), "{bad}");
            assert_eq!(e.kind(), ErrorKind::InvalidRef);
            assert!(e.to_string().contains("allowed: service"), "{e}");
        }
    }

    #[test]
    fn attr_names_have_no_colon() {
        for k in AgentKind::ALL {
            assert!(!k.attr_name().contains(':'), "{k}");
        }
        assert_eq!(AgentKind::ServiceRuntime.attr_name(), "service-runtime");
    }

    #[test]
    fn default_is_service() {
        assert_eq!(AgentKind::default(), AgentKind::Service);
    }

    #[test]
    fn serde_is_the_string_form() {
        assert_eq!(
            serde_json::to_string(&AgentKind::ServiceCode).unwrap(),
            "\"service:code\""
        );
        assert_eq!(
            serde_json::from_str::<AgentKind>("\"codefly:module\"").unwrap(),
            AgentKind::Module
        );
        assert!(serde_json::from_str::<AgentKind>("\"robot\"").is_err());
    }
}
