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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn spec(s: &str) -> VersionSpec {
        s.parse().unwrap()
    }

    fn versions(list: &[&str]) -> Vec<Version> {
        list.iter().map(|s| v(s)).collect()
    }

    #[test]
    fn latest_forms() {
        assert_eq!(spec("latest"), VersionSpec::Latest);
        assert_eq!(spec("Latest"), VersionSpec::Latest);
        assert_eq!(spec(""), VersionSpec::Latest);
        assert_eq!(VersionSpec::Latest.to_string(), "latest");
    }

    #[test]
    fn exact_with_and_without_v() {
        assert_eq!(spec("1.2.3"), VersionSpec::Exact(v("1.2.3")));
        assert_eq!(spec("v1.2.3"), VersionSpec::Exact(v("1.2.3")));
        assert!(spec("1.2.3").is_concrete());
        assert_eq!(spec("v1.2.3").exact(), Some(&v("1.2.3")));
    }

    #[test]
    fn parse_version_accepts_one_leading_v_only() {
        assert_eq!(parse_version("v0.0.1").unwrap(), v("0.0.1"));
        assert_eq!(parse_version(" 1.0.0 ").unwrap(), v("1.0.0"));
        for bad in ["vv1.0.0", "1.0", "1", "V1.0.0", "01.0.0", "1.0.0.0", "x"] {
            let e = parse_version(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidRef);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn requirements_parse() {
        for r in ["^1.2", "~1.4", ">=2, <3", "=1.0.0", "*", "1.2"] {
            let s = spec(r);
            assert!(matches!(s, VersionSpec::Req(_)), "{r}");
            assert!(!s.is_concrete());
            assert!(s.exact().is_none());
        }
    }

    #[test]
    fn requirement_display_round_trips() {
        for r in ["^1.2", "~1.4", ">=2, <3", "1.2"] {
            let s = spec(r);
            assert_eq!(spec(&s.to_string()), s, "{r}");
        }
    }

    #[test]
    fn garbage_is_invalid_version() {
        for bad in ["banana", ">>1", "1.2.3.4.5", "^", "latest2"] {
            let e = bad.parse::<VersionSpec>().expect_err(bad);
            assert!(matches!(e, RefError::InvalidVersion { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains("allowed"), "{e}");
        }
    }

    #[test]
    fn latest_skips_prereleases() {
        let all = versions(&["1.0.0", "1.2.0", "2.0.0-rc.1", "1.10.0"]);
        assert_eq!(VersionSpec::Latest.pick(&all), Some(v("1.10.0")));
        assert!(!VersionSpec::Latest.matches(&v("2.0.0-rc.1")));
    }

    #[test]
    fn latest_of_only_prereleases_is_none() {
        let all = versions(&["1.0.0-alpha", "1.0.0-beta"]);
        assert_eq!(VersionSpec::Latest.pick(&all), None);
    }

    #[test]
    fn highest_is_semver_not_lexical() {
        let all = versions(&["1.9.0", "1.10.0", "1.2.0"]);
        assert_eq!(VersionSpec::Latest.pick(&all), Some(v("1.10.0")));
    }

    #[test]
    fn caret_and_tilde_pick_highest_match() {
        let all = versions(&["1.2.0", "1.2.9", "1.4.1", "1.4.7", "1.5.0", "2.0.0"]);
        assert_eq!(spec("^1.2").pick(&all), Some(v("1.5.0")));
        assert_eq!(spec("~1.4").pick(&all), Some(v("1.4.7")));
        assert_eq!(spec(">=2, <3").pick(&all), Some(v("2.0.0")));
        assert_eq!(spec("^3").pick(&all), None);
    }

    #[test]
    fn requirement_prereleases_only_when_asked() {
        let all = versions(&["1.2.0", "1.3.0-rc.1"]);
        assert_eq!(spec("^1.2").pick(&all), Some(v("1.2.0")));
        assert_eq!(spec(">=1.3.0-rc.0").pick(&all), Some(v("1.3.0-rc.1")));
    }

    #[test]
    fn exact_matches_only_itself_including_prerelease() {
        let s = spec("2.0.0-rc.1");
        assert!(s.matches(&v("2.0.0-rc.1")));
        assert!(!s.matches(&v("2.0.0")));
        let all = versions(&["2.0.0", "2.0.0-rc.1"]);
        assert_eq!(s.pick(&all), Some(v("2.0.0-rc.1")));
        assert_eq!(spec("3.0.0").pick(&all), None);
    }

    #[test]
    fn pick_of_nothing_is_none() {
        assert_eq!(VersionSpec::Latest.pick(&[]), None);
    }

    #[test]
    fn serde_is_the_string_form() {
        let s = spec("~1.4");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"~1.4\"");
        assert_eq!(
            serde_json::from_str::<VersionSpec>("\"v1.0.0\"").unwrap(),
            spec("1.0.0")
        );
        assert!(serde_json::from_str::<VersionSpec>("\"nope\"").is_err());
    }
}
