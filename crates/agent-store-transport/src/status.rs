//! One status → answer mapping, with its retry class, and `Retry-After`.

use std::time::{Duration, SystemTime};

use agent_store::StoreError;
use http::{HeaderMap, StatusCode, header};

/// What a response status means for a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Success,
    /// 3xx: follow `Location` under the [`crate::RedirectPolicy`].
    Redirect,
    /// 404, 410: the artifact is not there (`artifact-missing`).
    Missing,
    /// 401, 403 and the other 4xx: refused; asking again does not help
    /// ([`StoreError::Denied`], not retried).
    Denied,
    /// 408, 429, 5xx (and anything else): worth retrying later, honouring
    /// `Retry-After` (`store-unavailable`).
    Retry,
}

/// The class of `status`.
#[must_use]
pub fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        200..=299 => Class::Success,
        300..=399 => Class::Redirect,
        404 | 410 => Class::Missing,
        408 | 429 => Class::Retry,
        400..=499 => Class::Denied,
        _ => Class::Retry,
    }
}

/// The [`StoreError`] for a non-success answer: `what` is the artifact (for
/// `artifact-missing`), `hint` the remedy shown with a denial (which
/// credential to set or check).
#[must_use]
pub fn status_error(
    store: &str,
    status: StatusCode,
    headers: &HeaderMap,
    url: &str,
    what: &str,
    hint: &str,
) -> StoreError {
    match classify(status) {
        Class::Missing => StoreError::Missing {
            store: store.to_owned(),
            what: format!("{what} ({url} answered {status})"),
        },
        Class::Denied => StoreError::Denied {
            store: store.to_owned(),
            status: status.as_u16(),
            message: format!("{url} answered {status}"),
            hint: hint.to_owned(),
        },
        Class::Success | Class::Redirect | Class::Retry => StoreError::Unavailable {
            store: store.to_owned(),
            message: format!("{url} answered {status}"),
            retry_after: retry_after(headers),
            source: None,
        },
    }
}

/// `Retry-After` as a wait from now: delta-seconds or an HTTP date (a date in
/// the past is no wait). `None` when absent or unreadable.
#[must_use]
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    retry_after_at(v, SystemTime::now())
}

/// [`retry_after`] for one header value, relative to `now`.
#[must_use]
pub fn retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_store::ErrorKind;

    #[test]
    fn classes() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap());
        assert_eq!(c(200), Class::Success);
        assert_eq!(c(302), Class::Redirect);
        assert_eq!(c(404), Class::Missing);
        assert_eq!(c(410), Class::Missing);
        for s in [400, 401, 403, 405, 451] {
            assert_eq!(c(s), Class::Denied, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(c(s), Class::Retry, "{s}");
        }
    }

    #[test]
    fn errors_and_retry_classes() {
        let h = HeaderMap::new();
        let e = |s: u16| status_error("x", StatusCode::from_u16(s).unwrap(), &h, "u", "w", "set X");
        assert_eq!(e(404).kind(), ErrorKind::ArtifactMissing);
        let denied = e(401);
        assert_eq!(denied.kind(), ErrorKind::StoreUnavailable);
        assert!(!denied.is_retryable());
        assert!(denied.to_string().contains("set X"), "{denied}");
        assert!(e(503).is_retryable());
        assert!(e(429).is_retryable());
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after_at("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(retry_after_at(&later, now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after_at("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_at("soon", now), None);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }
}
