use std::fmt;
use std::str::FromStr;

use semver::Version;

use crate::{AgentKind, RefError, VersionSpec};

/// The publisher used when a reference names none.
pub const DEFAULT_PUBLISHER: &str = "codefly.dev";
/// The version used when a reference names none.
pub const LATEST: &str = "latest";

const MAX_FIELD: usize = 128;
const FIELD_FORM: &str = "1-128 of A-Z a-z 0-9 . _ -, not starting with '.', no '..'";
const REF_FORM: &str = "[publisher/]name[:version]";
const MAX_VERSION: usize = 64;
const MAX_VERSION_SPEC: usize = 128;
const CONCRETE_FORM: &str = "MAJOR.MINOR.PATCH[-PRERELEASE], at most 64 bytes";

/// A validated reference to an agent: `kind`, `publisher`, `name`, `version`.
///
/// Written `[publisher/]name[:version]`; the publisher defaults to
/// [`DEFAULT_PUBLISHER`] and the version to `latest`. The kind is not part of
/// the string form; it defaults to [`AgentKind::Service`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentRef {
    kind: AgentKind,
    publisher: String,
    name: String,
    version: VersionSpec,
}

impl AgentRef {
    /// Builds a reference from its parts, validating each.
    ///
    /// # Errors
    /// [`RefError::InvalidField`] or [`RefError::InvalidVersion`] naming the bad part.
    pub fn new(
        kind: AgentKind,
        publisher: &str,
        name: &str,
        version: &str,
    ) -> Result<Self, RefError> {
        validate_field("publisher", publisher)?;
        validate_field("name", name)?;
        if version.trim().len() > MAX_VERSION_SPEC {
            return Err(invalid(
                "version",
                version,
                "longer than 128 bytes",
                "latest, 1.2.3, v1.2.3, ^1.2, ~1.4, >=2, <3",
            ));
        }
        let version = version.parse::<VersionSpec>()?;
        if let VersionSpec::Exact(v) = &version {
            validate_concrete(v)?;
        }
        Ok(AgentRef {
            kind,
            publisher: publisher.to_owned(),
            name: name.to_owned(),
            version,
        })
    }

    /// Parses `[publisher/]name[:version]` as a [`AgentKind::Service`] reference.
    ///
    /// Surrounding whitespace is ignored; the publisher defaults to
    /// [`DEFAULT_PUBLISHER`] and the version to [`LATEST`].
    ///
    /// # Errors
    /// [`RefError`] naming the part that does not validate.
    pub fn parse(s: &str) -> Result<Self, RefError> {
        Self::parse_as(AgentKind::Service, s)
    }

    /// Parses `[publisher/]name[:version]` as a reference of `kind`
    /// (Go: `ParseAgent(ctx, kind, input)`).
    ///
    /// # Errors
    /// [`RefError`] naming the part that does not validate.
    pub fn parse_as(kind: AgentKind, s: &str) -> Result<Self, RefError> {
        let s = s.trim();
        let (path, version) = match s.split_once(':') {
            Some((p, v)) => (p, v),
            None => (s, LATEST),
        };
        if version.contains(':') {
            return Err(invalid("reference", s, "more than one ':'", REF_FORM));
        }
        if version.trim().is_empty() {
            return Err(invalid(
                "version",
                s,
                "empty after ':'",
                "latest, 1.2.3, v1.2.3, ^1.2, ~1.4, >=2, <3",
            ));
        }
        let (publisher, name) = match path.split_once('/') {
            Some((p, n)) => (p, n),
            None => (DEFAULT_PUBLISHER, path),
        };
        if name.contains('/') {
            return Err(invalid("reference", s, "more than one '/'", REF_FORM));
        }
        Self::new(kind, publisher, name, version)
    }

    /// The same reference with another kind.
    #[must_use]
    pub fn with_kind(mut self, kind: AgentKind) -> Self {
        self.kind = kind;
        self
    }

    /// The same reference pinned to a concrete version.
    ///
    /// # Errors
    /// [`RefError::InvalidField`] for versions that cannot name a file (build metadata).
    pub fn with_version(&self, version: &Version) -> Result<Self, RefError> {
        validate_concrete(version)?;
        Ok(AgentRef {
            version: VersionSpec::Exact(version.clone()),
            ..self.clone()
        })
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> AgentKind {
        self.kind
    }

    /// The publisher, e.g. `codefly.dev`.
    #[must_use]
    pub fn publisher(&self) -> &str {
        &self.publisher
    }

    /// The name, e.g. `go-grpc`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version spec.
    #[must_use]
    pub fn version_spec(&self) -> &VersionSpec {
        &self.version
    }

    /// The concrete version, when the reference has one.
    #[must_use]
    pub fn concrete_version(&self) -> Option<&Version> {
        self.version.exact()
    }

    /// `publisher/name:version` (Go: `Identifier()`).
    #[must_use]
    pub fn identifier(&self) -> String {
        format!("{}/{}:{}", self.publisher, self.name, self.version)
    }

    /// `kind::publisher/name:version`, the key of the active-connection registry (Go: `Unique()`).
    #[must_use]
    pub fn unique(&self) -> String {
        format!("{}::{}", self.kind, self.identifier())
    }
}

impl fmt::Display for AgentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.identifier())
    }
}

impl FromStr for AgentRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RefRepr {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    publisher: Option<String>,
    name: String,
    #[serde(default)]
    version: Option<String>,
}

impl serde::Serialize for AgentRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RefRepr {
            kind: Some(self.kind.as_str().to_owned()),
            publisher: Some(self.publisher.clone()),
            name: self.name.clone(),
            version: Some(self.version.to_string()),
        }
        .serialize(s)
    }
}

/// Accepts either the string form (`"codefly.dev/echo:1.0.0"`, a service) or
/// the map form `{kind?, publisher?, name, version?}` that [`serde::Serialize`]
/// writes (Go's `resources.Agent` JSON, `codefly:service` kinds included).
impl<'de> serde::Deserialize<'de> for AgentRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RefVisitor)
    }
}

struct RefVisitor;

impl<'de> serde::de::Visitor<'de> for RefVisitor {
    type Value = AgentRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an agent reference: \"[publisher/]name[:version]\" or {kind, publisher, name, version}")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AgentRef, E> {
        AgentRef::parse(v).map_err(E::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<AgentRef, A::Error> {
        use serde::Deserialize as _;
        let r = RefRepr::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let kind = match r.kind.as_deref() {
            Some(k) => k.parse().map_err(serde::de::Error::custom)?,
            None => AgentKind::Service,
        };
        AgentRef::new(
            kind,
            r.publisher.as_deref().unwrap_or(DEFAULT_PUBLISHER),
            &r.name,
            r.version.as_deref().unwrap_or(LATEST),
        )
        .map_err(serde::de::Error::custom)
    }
}

fn invalid(field: &'static str, value: &str, reason: &str, allowed: &'static str) -> RefError {
    let mut value = value.to_owned();
    if value.len() > 80 {
        let mut cut = 80;
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        value.truncate(cut);
        value.push('…');
    }
    RefError::InvalidField {
        field,
        value,
        reason: reason.to_owned(),
        allowed,
    }
}

/// Checks a publisher or name before it can become a path component.
pub(crate) fn validate_field(field: &'static str, value: &str) -> Result<(), RefError> {
    if value.is_empty() {
        return Err(invalid(field, value, "empty", FIELD_FORM));
    }
    if value.len() > MAX_FIELD {
        return Err(invalid(field, value, "longer than 128 bytes", FIELD_FORM));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            field,
            value,
            &format!("character {c:?} is not allowed"),
            FIELD_FORM,
        ));
    }
    if value.starts_with('.') {
        return Err(invalid(field, value, "starts with '.'", FIELD_FORM));
    }
    if value.contains("..") {
        return Err(invalid(field, value, "contains '..'", FIELD_FORM));
    }
    Ok(())
}

/// A concrete version becomes part of a file name; build metadata (`+…`) cannot.
pub(crate) fn validate_concrete(v: &Version) -> Result<(), RefError> {
    if !v.build.is_empty() {
        return Err(invalid(
            "version",
            &v.to_string(),
            "build metadata ('+…') is not allowed",
            CONCRETE_FORM,
        ));
    }
    let text = v.to_string();
    if text.len() > MAX_VERSION {
        return Err(invalid(
            "version",
            &text,
            "longer than 64 bytes",
            CONCRETE_FORM,
        ));
    }
    Ok(())
}
