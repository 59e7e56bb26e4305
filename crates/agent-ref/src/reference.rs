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
        // The bound holds for the canonical form too (`>2,2` prints as
        // `>2, ^2`), so whatever is accepted also re-parses from its Display.
        let canonical = version.to_string();
        if canonical.len() > MAX_VERSION_SPEC {
            return Err(invalid(
                "version",
                &canonical,
                "longer than 128 bytes once normalised",
                "latest, 1.2.3, v1.2.3, ^1.2, ~1.4, >=2, <3",
            ));
        }
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

    /// Parses `[publisher/]name[:version]` as a reference of `kind`.
    ///
    /// # Errors
    /// [`RefError`] naming the part that does not validate.
    #[doc(alias = "ParseAgent")]
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

    /// `publisher/name:version`.
    #[doc(alias = "Identifier")]
    #[must_use]
    pub fn identifier(&self) -> String {
        format!("{}/{}:{}", self.publisher, self.name, self.version)
    }

    /// `kind::publisher/name:version`, the key of the active-connection registry.
    #[doc(alias = "Unique")]
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
    if let Some(last) = v.pre.as_str().rsplit('.').next()
        && crate::home::RESERVED_SUFFIXES.contains(&last)
    {
        return Err(invalid(
            "version",
            &v.to_string(),
            "a pre-release may not end in .json, .lock, .tmp or .sha256 (the cache's own files)",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentHome, ErrorKind};

    #[test]
    fn prerelease_ending_in_a_cache_suffix_is_refused() {
        for bad in [
            "echo:1.0.0-rc.json",
            "echo:1.0.0-a.lock",
            "echo:2.0.0-x.tmp",
            "echo:1.0.0-1.sha256",
        ] {
            let e = AgentRef::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidRef, "{bad}");
            assert_eq!(field_of(&e), "version", "{bad}");
        }
        assert!(AgentRef::parse("echo:1.0.0-json.1").is_ok());
        let r = AgentRef::parse("echo:1.0.0").unwrap();
        assert!(
            r.with_version(&Version::parse("1.0.0-rc.lock").unwrap())
                .is_err()
        );
    }

    fn field_of(e: &RefError) -> &'static str {
        match e {
            RefError::InvalidField { field, .. } => field,
            RefError::InvalidVersion { .. } => "version",
            other => panic!("not a field error: {other:?}"),
        }
    }

    fn bad(s: &str) -> RefError {
        let e = AgentRef::parse(s).expect_err(s);
        assert_eq!(e.kind(), ErrorKind::InvalidRef, "{s}: {e}");
        e
    }

    #[test]
    fn full_form() {
        let r = AgentRef::parse("codefly.dev/go-grpc:1.2.3").unwrap();
        assert_eq!(r.kind(), AgentKind::Service);
        assert_eq!(r.publisher(), "codefly.dev");
        assert_eq!(r.name(), "go-grpc");
        assert_eq!(r.concrete_version(), Some(&Version::new(1, 2, 3)));
    }

    #[test]
    fn name_only_defaults_publisher_and_latest() {
        let r = AgentRef::parse("echo").unwrap();
        assert_eq!(r.publisher(), DEFAULT_PUBLISHER);
        assert_eq!(r.version_spec(), &VersionSpec::Latest);
        assert_eq!(r.to_string(), "codefly.dev/echo:latest");
    }

    #[test]
    fn name_with_version_defaults_publisher() {
        let r = AgentRef::parse("echo:0.1.0").unwrap();
        assert_eq!(r.publisher(), "codefly.dev");
        assert_eq!(r.identifier(), "codefly.dev/echo:0.1.0");
    }

    #[test]
    fn publisher_without_version_is_latest() {
        let r = AgentRef::parse("acme.io/echo").unwrap();
        assert_eq!(r.publisher(), "acme.io");
        assert!(r.concrete_version().is_none());
        assert_eq!(r.identifier(), "acme.io/echo:latest");
    }

    #[test]
    fn leading_v_is_accepted_and_dropped() {
        let r = AgentRef::parse("echo:v2.0.1").unwrap();
        assert_eq!(r.concrete_version(), Some(&Version::new(2, 0, 1)));
        assert_eq!(r.to_string(), "codefly.dev/echo:2.0.1");
    }

    #[test]
    fn requirement_versions_parse_and_are_not_concrete() {
        for (input, shown) in [("^1.2", "^1.2"), ("~1.4", "~1.4"), (">=2, <3", ">=2, <3")] {
            let r = AgentRef::parse(&format!("echo:{input}")).unwrap();
            assert!(matches!(r.version_spec(), VersionSpec::Req(_)), "{input}");
            assert!(r.concrete_version().is_none());
            assert_eq!(r.to_string(), format!("codefly.dev/echo:{shown}"));
        }
    }

    #[test]
    fn latest_is_case_insensitive() {
        let r = AgentRef::parse("echo:LATEST").unwrap();
        assert_eq!(r.version_spec(), &VersionSpec::Latest);
        assert_eq!(r.to_string(), "codefly.dev/echo:latest");
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(
            AgentRef::parse("  codefly.dev/echo:1.0.0\n").unwrap(),
            AgentRef::parse("codefly.dev/echo:1.0.0").unwrap()
        );
    }

    #[test]
    fn identifier_and_unique_follow_go() {
        let r = AgentRef::parse("codefly.dev/echo:1.0.0").unwrap();
        assert_eq!(r.identifier(), "codefly.dev/echo:1.0.0");
        assert_eq!(r.unique(), "service::codefly.dev/echo:1.0.0");
        let r = r.with_kind(AgentKind::ServiceRuntime);
        assert_eq!(r.unique(), "service:runtime::codefly.dev/echo:1.0.0");
        let m = AgentRef::parse_as(AgentKind::Module, "acme/m:2.0.0").unwrap();
        assert_eq!(m.unique(), "module::acme/m:2.0.0");
    }

    #[test]
    fn unique_differs_by_kind_identifier_does_not() {
        let a = AgentRef::parse("echo:1.0.0").unwrap();
        let b = a.clone().with_kind(AgentKind::Application);
        assert_eq!(a.identifier(), b.identifier());
        assert_ne!(a.unique(), b.unique());
        assert_ne!(a, b);
    }

    #[test]
    fn from_str_equals_parse() {
        let a: AgentRef = "acme/x:1.0.0".parse().unwrap();
        assert_eq!(a, AgentRef::parse("acme/x:1.0.0").unwrap());
    }

    #[test]
    fn with_version_pins() {
        let r = AgentRef::parse("echo").unwrap();
        let p = r.with_version(&Version::new(3, 1, 4)).unwrap();
        assert_eq!(p.to_string(), "codefly.dev/echo:3.1.4");
        assert_eq!(p.kind(), r.kind());
        assert_eq!(r.version_spec(), &VersionSpec::Latest, "original untouched");
    }

    #[test]
    fn with_version_refuses_build_metadata() {
        let r = AgentRef::parse("echo").unwrap();
        let v = Version::parse("1.0.0+abc").unwrap();
        assert_eq!(field_of(&r.with_version(&v).unwrap_err()), "version");
    }

    #[test]
    fn prerelease_exact_is_concrete() {
        let r = AgentRef::parse("echo:1.0.0-rc.1").unwrap();
        assert_eq!(r.concrete_version().unwrap().pre.as_str(), "rc.1");
        assert_eq!(r.to_string(), "codefly.dev/echo:1.0.0-rc.1");
    }

    #[test]
    fn empty_input_names_the_name() {
        assert_eq!(field_of(&bad("")), "name");
        assert_eq!(field_of(&bad("   ")), "name");
    }

    #[test]
    fn empty_publisher_is_rejected() {
        assert_eq!(field_of(&bad("/echo:1.0.0")), "publisher");
    }

    #[test]
    fn empty_name_after_publisher_is_rejected() {
        assert_eq!(field_of(&bad("codefly.dev/:1.0.0")), "name");
        assert_eq!(field_of(&bad("codefly.dev/")), "name");
    }

    #[test]
    fn empty_version_after_colon_is_rejected() {
        let e = bad("echo:");
        assert_eq!(field_of(&e), "version");
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn two_slashes_are_rejected() {
        let e = bad("a/b/c:1.0.0");
        assert_eq!(field_of(&e), "reference");
        assert!(e.to_string().contains("[publisher/]name[:version]"), "{e}");
    }

    #[test]
    fn two_colons_are_rejected() {
        let e = bad("echo:1.0.0:2");
        assert_eq!(field_of(&e), "reference");
        assert!(e.to_string().contains("':'"), "{e}");
    }

    #[test]
    fn dot_dot_traversal_is_rejected_in_every_field() {
        assert_eq!(field_of(&bad("../echo:1.0.0")), "publisher");
        assert_eq!(field_of(&bad("codefly.dev/..:1.0.0")), "name");
        assert_eq!(field_of(&bad("a..b/echo")), "publisher");
        assert_eq!(field_of(&bad("echo..x")), "name");
        assert!(AgentRef::parse("echo:1.0.0-a..b").is_err());
    }

    #[test]
    fn leading_dot_is_rejected() {
        let e = bad(".hidden");
        assert_eq!(field_of(&e), "name");
        assert!(e.to_string().contains("starts with '.'"), "{e}");
        assert_eq!(field_of(&bad(".acme/echo")), "publisher");
        assert_eq!(field_of(&bad("./echo")), "publisher");
    }

    #[test]
    fn separators_and_odd_characters_are_rejected() {
        for s in [
            "ec\\ho", "ec ho", "ec\0ho", "échο", "echo;rm", "echo$x", "a@b", "e*",
        ] {
            let e = bad(s);
            assert_eq!(field_of(&e), "name", "{s}");
            assert!(e.to_string().contains("is not allowed"), "{s}: {e}");
        }
        assert_eq!(field_of(&bad("ac me/echo")), "publisher");
    }

    #[test]
    fn error_names_field_and_allowed_form() {
        let e = bad("codefly.dev/bad name:1.0.0");
        let msg = e.to_string();
        assert!(msg.contains("agent name"), "{msg}");
        assert!(msg.contains("bad name"), "{msg}");
        assert!(msg.contains("A-Z a-z 0-9 . _ -"), "{msg}");
    }

    #[test]
    fn length_bounds() {
        let ok = "a".repeat(128);
        assert!(AgentRef::parse(&format!("{ok}/{ok}:1.0.0")).is_ok());
        let long = "a".repeat(129);
        let e = bad(&long);
        assert_eq!(field_of(&e), "name");
        assert!(e.to_string().contains("longer than 128"), "{e}");
        assert_eq!(field_of(&bad(&format!("{long}/echo"))), "publisher");
    }

    #[test]
    fn long_values_are_truncated_in_errors() {
        let e = bad(&"é".repeat(300));
        let RefError::InvalidField { value, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(value.len() <= 84, "{}", value.len());
        assert!(value.ends_with('…'));
    }

    #[test]
    fn overlong_concrete_version_is_rejected() {
        let v = format!("1.0.0-{}", "a".repeat(60));
        let e = bad(&format!("echo:{v}"));
        assert_eq!(field_of(&e), "version");
        assert!(e.to_string().contains("64"), "{e}");
    }

    #[test]
    fn overlong_version_spec_is_rejected() {
        let v = format!(">={}", "1".repeat(200));
        assert_eq!(field_of(&bad(&format!("echo:{v}"))), "version");
    }

    /// Found by the fuzzer: a requirement under the bound whose normalised
    /// Display is over it parsed, but its Display did not.
    #[test]
    fn bound_applies_to_the_normalised_version() {
        let v = format!(">2,2,<=2.2.3-{}", "r".repeat(114));
        assert!(v.len() <= 128);
        let e = bad(&format!("o:{v}"));
        assert_eq!(field_of(&e), "version");
        assert!(e.to_string().contains("normalised"), "{e}");
        let ok = AgentRef::parse("o:>2,2").unwrap();
        assert_eq!(AgentRef::parse(&ok.to_string()).unwrap(), ok);
    }

    #[test]
    fn build_metadata_in_ref_is_rejected() {
        let e = bad("echo:1.0.0+linux");
        assert_eq!(field_of(&e), "version");
        assert!(e.to_string().contains("build metadata"), "{e}");
    }

    #[test]
    fn garbage_version_names_version_and_allowed_forms() {
        let e = bad("echo:banana");
        assert!(matches!(e, RefError::InvalidVersion { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("banana") && msg.contains("latest, 1.2.3"),
            "{msg}"
        );
    }

    #[test]
    fn new_validates_like_parse() {
        assert!(AgentRef::new(AgentKind::Module, "acme", "m", "1.0.0").is_ok());
        let e = AgentRef::new(AgentKind::Module, "acme", "../m", "1.0.0").unwrap_err();
        assert_eq!(field_of(&e), "name");
        let e = AgentRef::new(AgentKind::Module, "a/b", "m", "1.0.0").unwrap_err();
        assert_eq!(field_of(&e), "publisher");
    }

    #[test]
    fn allowed_characters_pass() {
        let r = AgentRef::parse("Acme_Corp-1.io/My_Agent-2.x:1.0.0").unwrap();
        assert_eq!(r.publisher(), "Acme_Corp-1.io");
        assert_eq!(r.name(), "My_Agent-2.x");
    }

    #[test]
    fn serde_map_round_trip_keeps_kind() {
        let r = AgentRef::parse_as(AgentKind::ServiceBuilder, "acme/b:1.2.3").unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"kind":"service:builder","publisher":"acme","name":"b","version":"1.2.3"})
        );
        let back: AgentRef = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn serde_accepts_string_form() {
        let r: AgentRef = serde_json::from_str("\"acme/echo:^1.2\"").unwrap();
        assert_eq!(r.to_string(), "acme/echo:^1.2");
        assert_eq!(r.kind(), AgentKind::Service);
    }

    #[test]
    fn serde_accepts_go_json_with_defaults() {
        let r: AgentRef =
            serde_json::from_str(r#"{"kind":"codefly:application","name":"web"}"#).unwrap();
        assert_eq!(r.kind(), AgentKind::Application);
        assert_eq!(r.identifier(), "codefly.dev/web:latest");
    }

    #[test]
    fn serde_rejects_invalid_refs() {
        let e = serde_json::from_str::<AgentRef>("\"../x\"").unwrap_err();
        assert!(e.to_string().contains("publisher"), "{e}");
        let e = serde_json::from_str::<AgentRef>(r#"{"name":"a/b"}"#).unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        let e = serde_json::from_str::<AgentRef>(r#"{"kind":"robot","name":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown agent kind"), "{e}");
        assert!(serde_json::from_str::<AgentRef>("42").is_err());
    }

    #[test]
    fn binary_path_of_parsed_ref_uses_go_layout() {
        let home = AgentHome::new("/h");
        let r = AgentRef::parse("codefly.dev/echo:v1.0.0").unwrap();
        assert_eq!(
            home.binary_path(&r).unwrap(),
            std::path::Path::new("/h/agents/services/codefly.dev/echo__1.0.0")
        );
    }
}

#[cfg(test)]
mod proptests {
    use std::path::{Component, Path};

    use proptest::prelude::*;

    use super::*;
    use crate::AgentHome;

    /// A valid publisher or name: allowed charset, no leading dot, no `..`.
    fn field() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,40}".prop_filter("no ..", |s| !s.contains(".."))
    }

    fn prerelease() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "(alpha|beta|rc)(\\.[1-9][0-9]{0,2})?".prop_map(|p| format!("-{p}")),
        ]
    }

    fn version() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("latest".to_owned()),
            (
                0u64..1000,
                0u64..1000,
                0u64..1000,
                prerelease(),
                any::<bool>()
            )
                .prop_map(|(a, b, c, pre, v)| format!(
                    "{}{a}.{b}.{c}{pre}",
                    if v { "v" } else { "" }
                )),
            (0u64..50, 0u64..50).prop_map(|(a, b)| format!("^{a}.{b}")),
            (0u64..50, 0u64..50).prop_map(|(a, b)| format!("~{a}.{b}")),
            (0u64..50, 51u64..99).prop_map(|(a, b)| format!(">={a}, <{b}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn display_parse_is_identity(p in field(), n in field(), v in version(), with_pub in any::<bool>()) {
            let input = if with_pub { format!("{p}/{n}:{v}") } else { format!("{n}:{v}") };
            let r = AgentRef::parse(&input).unwrap();
            let shown = r.to_string();
            let again = AgentRef::parse(&shown).unwrap();
            prop_assert_eq!(&again, &r);
            prop_assert_eq!(again.to_string(), shown);
            prop_assert_eq!(r.name(), n.as_str());
            if with_pub { prop_assert_eq!(r.publisher(), p.as_str()); }
        }

        /// Not only generated-valid refs: whatever the parser accepts prints
        /// back to itself (this is the property the fuzzer broke once).
        #[test]
        fn any_accepted_ref_round_trips(
            n in "[a-z]{1,3}",
            v in "[0-9a-z.<>=^~*, -]{0,140}"
        ) {
            if let Ok(r) = AgentRef::parse(&format!("{n}:{v}")) {
                let shown = r.to_string();
                prop_assert_eq!(AgentRef::parse(&shown).unwrap(), r);
            }
        }

        #[test]
        fn serde_round_trip(p in field(), n in field(), v in version(), k in 0usize..6) {
            let r = AgentRef::parse(&format!("{p}/{n}:{v}")).unwrap().with_kind(AgentKind::ALL[k]);
            let json = serde_json::to_string(&r).unwrap();
            prop_assert_eq!(serde_json::from_str::<AgentRef>(&json).unwrap(), r);
        }

        #[test]
        fn accepted_refs_stay_inside_home(s in "\\PC{0,64}") {
            check_inside_home(&s)?;
        }

        #[test]
        fn accepted_refs_stay_inside_home_pathlike(
            s in "[a-z./\\\\:_v0-9-]{0,24}"
        ) {
            check_inside_home(&s)?;
        }
    }

    fn check_inside_home(s: &str) -> Result<(), TestCaseError> {
        let Ok(r) = AgentRef::parse(s) else {
            return Ok(());
        };
        let home = AgentHome::new("/home/u/.codefly");
        for kind in AgentKind::ALL {
            let r = r.clone().with_kind(kind);
            let Ok(path) = home.binary_path(&r) else {
                prop_assert!(r.concrete_version().is_none());
                continue;
            };
            let agents = Path::new("/home/u/.codefly/agents");
            prop_assert!(path.starts_with(agents), "{path:?}");
            let rest: Vec<_> = path.strip_prefix(agents).unwrap().components().collect();
            prop_assert_eq!(rest.len(), 3, "{:?}", path);
            prop_assert!(
                rest.iter().all(|c| matches!(c, Component::Normal(_))),
                "{:?}",
                path
            );
            prop_assert!(!path.components().any(|c| c == Component::ParentDir));
        }
        Ok(())
    }
}
