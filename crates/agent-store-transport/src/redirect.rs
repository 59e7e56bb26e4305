//! One redirect policy for every store.

use http::Uri;

/// Redirects followed at most, by default.
pub const DEFAULT_MAX_REDIRECTS: usize = 5;

/// Which redirects a store follows.
///
/// - never from `https` to `http`;
/// - a hop to another host (name or port) only when the host is allowed
///   ([`RedirectPolicy::allow_host`]); same-host hops are always fine;
/// - at most [`RedirectPolicy::max`] hops.
///
/// Credentials are a separate, stricter rule: they only ever go to the
/// origin they were given for ([`same_origin`]), wherever a redirect leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectPolicy {
    max: usize,
    allowed: Vec<String>,
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        RedirectPolicy {
            max: DEFAULT_MAX_REDIRECTS,
            allowed: Vec::new(),
        }
    }
}

/// A redirect the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    /// `Location` is not a usable URL.
    #[error("{from} redirected to an unusable location {location:?}")]
    BadLocation {
        /// The URL that answered.
        from: String,
        /// The `Location` value.
        location: String,
    },
    /// From `https` to `http`.
    #[error("refusing the redirect from {from} to {to}: https is never downgraded to http")]
    Downgrade {
        /// The URL that answered.
        from: String,
        /// Where it pointed.
        to: String,
    },
    /// To a host the store does not allow.
    #[error("refusing the redirect from {from} to {to}: the store does not allow that host")]
    ForeignHost {
        /// The URL that answered.
        from: String,
        /// Where it pointed.
        to: String,
    },
    /// More hops than allowed.
    #[error("more than {max} redirects")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

impl RedirectPolicy {
    /// Same-host redirects only (at most [`DEFAULT_MAX_REDIRECTS`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also allow hops to `pattern`: `host` (any port), `host:port`, or
    /// `*.suffix` (any host under `suffix`, not `suffix` itself). Case-insensitive.
    #[must_use]
    pub fn allow_host(mut self, pattern: impl Into<String>) -> Self {
        self.allowed
            .push(pattern.into().trim().to_ascii_lowercase());
        self
    }

    /// At most `max` hops.
    #[must_use]
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The most hops followed.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether `uri`'s host is on the allow list.
    #[must_use]
    pub fn allows_host(&self, uri: &Uri) -> bool {
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return false;
        };
        let with_port = format!("{host}:{}", effective_port(uri).unwrap_or(0));
        self.allowed.iter().any(|p| {
            if let Some(suffix) = p.strip_prefix("*.") {
                host.ends_with(&format!(".{suffix}"))
            } else {
                *p == host || *p == with_port
            }
        })
    }

    /// Where a redirect from `from` with `Location: location` leads, if the
    /// policy allows it.
    ///
    /// # Errors
    /// [`RedirectError`] saying why the hop is refused.
    pub fn next(&self, from: &Uri, location: &str) -> Result<Uri, RedirectError> {
        let to = resolve_location(from, location).ok_or_else(|| RedirectError::BadLocation {
            from: from.to_string(),
            location: location.to_owned(),
        })?;
        if !matches!(to.scheme_str(), Some("http" | "https")) {
            return Err(RedirectError::BadLocation {
                from: from.to_string(),
                location: location.to_owned(),
            });
        }
        if from.scheme_str() == Some("https") && to.scheme_str() == Some("http") {
            return Err(RedirectError::Downgrade {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        if !same_host(from, &to) && !self.allows_host(&to) {
            return Err(RedirectError::ForeignHost {
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        Ok(to)
    }
}

fn effective_port(uri: &Uri) -> Option<u16> {
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

/// Same host name and same (effective) port.
#[must_use]
pub fn same_host(a: &Uri, b: &Uri) -> bool {
    match (a.host(), b.host()) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y) && effective_port(a) == effective_port(b),
        _ => false,
    }
}

/// Same scheme, host and port: where credentials given for `a` may go.
#[must_use]
pub fn same_origin(a: &Uri, b: &Uri) -> bool {
    a.scheme_str().map(str::to_ascii_lowercase) == b.scheme_str().map(str::to_ascii_lowercase)
        && same_host(a, b)
}

/// A `Location` resolved against the URL that answered: absolute,
/// scheme-relative (`//host/p`), absolute-path (`/p`) or relative (`p`).
#[must_use]
pub fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let joined = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.contains("://") {
        // Another scheme (ftp://, file://): not ours to follow.
        return None;
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    };
    let uri: Uri = joined.parse().ok()?;
    uri.authority()?;
    Some(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn locations_resolve() {
        let base = u("http://h:1/a/b/file");
        let r = |l: &str| resolve_location(&base, l).map(|x| x.to_string());
        assert_eq!(r("https://x/y").as_deref(), Some("https://x/y"));
        assert_eq!(r("/z").as_deref(), Some("http://h:1/z"));
        assert_eq!(r("other").as_deref(), Some("http://h:1/a/b/other"));
        assert_eq!(r("//cdn/q").as_deref(), Some("http://cdn/q"));
        assert_eq!(r("ftp://x/y"), None);
        assert_eq!(r(""), None);
    }

    #[test]
    fn never_https_to_http() {
        let p = RedirectPolicy::new().allow_host("cdn.example");
        let from = u("https://store.example/a");
        assert!(matches!(
            p.next(&from, "http://store.example/b"),
            Err(RedirectError::Downgrade { .. })
        ));
        assert!(matches!(
            p.next(&from, "http://cdn.example/b"),
            Err(RedirectError::Downgrade { .. })
        ));
        assert_eq!(
            p.next(&u("http://store.example/a"), "https://store.example/b")
                .map(|x| x.to_string()),
            Err(RedirectError::ForeignHost {
                from: "http://store.example/a".into(),
                to: "https://store.example/b".into()
            }),
            "http → https changes the port: another host unless allowed"
        );
    }

    #[test]
    fn cross_host_only_to_allowed_hosts() {
        let from = u("https://store.example/a");
        let none = RedirectPolicy::new();
        assert!(none.next(&from, "/b").is_ok());
        assert!(matches!(
            none.next(&from, "https://evil.example/b"),
            Err(RedirectError::ForeignHost { .. })
        ));
        assert!(matches!(
            none.next(&from, "https://store.example:8443/b"),
            Err(RedirectError::ForeignHost { .. })
        ));
        let gh = RedirectPolicy::new()
            .allow_host("github.com")
            .allow_host("*.githubusercontent.com")
            .allow_host("127.0.0.1:9000");
        assert!(
            gh.next(&from, "https://objects.githubusercontent.com/x")
                .is_ok()
        );
        assert!(gh.next(&from, "https://github.com/x").is_ok());
        for bad in [
            "https://githubusercontent.com.evil.example/x",
            "https://github.com.evil.example/x",
            "https://githubusercontent.com/x",
        ] {
            assert!(gh.next(&from, bad).is_err(), "{bad}");
        }
        let local = u("http://127.0.0.1:8000/a");
        assert!(gh.next(&local, "http://127.0.0.1:9000/b").is_ok());
        assert!(gh.next(&local, "http://127.0.0.1:9001/b").is_err());
    }

    #[test]
    fn origins() {
        assert!(same_origin(&u("https://a/x"), &u("https://A:443/y")));
        assert!(!same_origin(&u("https://a/x"), &u("http://a/x")));
        assert!(!same_origin(&u("http://a:1/x"), &u("http://a:2/x")));
        assert!(!same_origin(&u("http://a/x"), &u("http://b/x")));
    }
}
