use std::fmt;
use std::str::FromStr;

use semver::{Version, VersionReq};

use crate::RefError;

/// The version part of a reference: `latest`, an exact version, or a requirement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionSpec {
    /// The highest released (non-pre-release) version.
    Latest,
    /// Exactly this version (`1.2.3`, written with or without a leading `v`).
    Exact(Version),
    /// The highest version matching a requirement (`^1.2`, `~1.4`, `>=2, <3`).
    /// Pre-releases match only when the requirement names one, as in Cargo.
    Req(VersionReq),
}

impl VersionSpec {
    /// Whether this names one version (no resolution needed).
    #[must_use]
    pub fn is_concrete(&self) -> bool {
        matches!(self, VersionSpec::Exact(_))
    }

    /// The exact version, if this is one.
    #[must_use]
    pub fn exact(&self) -> Option<&Version> {
        match self {
            VersionSpec::Exact(v) => Some(v),
            _ => None,
        }
    }

    /// Whether `v` satisfies this spec. `latest` matches any non-pre-release.
    #[must_use]
    pub fn matches(&self, v: &Version) -> bool {
        match self {
            VersionSpec::Latest => v.pre.is_empty(),
            VersionSpec::Exact(e) => e == v,
            VersionSpec::Req(r) => r.matches(v),
        }
    }

    /// The highest version among `candidates` that satisfies this spec.
    pub fn pick<'a, I>(&self, candidates: I) -> Option<Version>
    where
        I: IntoIterator<Item = &'a Version>,
    {
        candidates
            .into_iter()
            .filter(|v| self.matches(v))
            .max()
            .cloned()
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Latest => f.write_str(crate::LATEST),
            VersionSpec::Exact(v) => write!(f, "{v}"),
            VersionSpec::Req(r) => write!(f, "{r}"),
        }
    }
}

impl FromStr for VersionSpec {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case(crate::LATEST) {
            return Ok(VersionSpec::Latest);
        }
        if let Ok(v) = parse_version(t) {
            return Ok(VersionSpec::Exact(v));
        }
        VersionReq::parse(t)
            .map(VersionSpec::Req)
            .map_err(|e| RefError::InvalidVersion {
                value: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

/// Parses an exact semver version, accepting one leading `v` (`v1.2.3`).
///
/// # Errors
/// [`RefError::InvalidVersion`] when it is not a full `MAJOR.MINOR.PATCH`.
pub fn parse_version(s: &str) -> Result<Version, RefError> {
    let t = s.trim();
    let bare = t.strip_prefix('v').unwrap_or(t);
    Version::parse(bare).map_err(|e| RefError::InvalidVersion {
        value: s.to_owned(),
        reason: e.to_string(),
    })
}

/// Serialized as its string form (`latest`, `1.2.3`, `^1.2`).
impl serde::Serialize for VersionSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Deserialized from the string form, with the rules of [`FromStr`].
impl<'de> serde::Deserialize<'de> for VersionSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
