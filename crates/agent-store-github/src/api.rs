//! The GitHub REST client: octocrab over a hyper/rustls stack we assemble
//! ourselves, so that redirects are followed by us — each hop checked against
//! the trusted hosts *before* it is requested — and so that every response's
//! headers (rate limits, ETag) reach us.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_store_transport::{
    ClientOptions, HttpsClient, ReadError, RedirectError, RedirectPolicy, read_to_end, retry_after,
    same_origin,
};
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH, LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder};

use crate::GithubError;
use crate::cache::{AnswerCache, CachedAnswer, now_secs};

/// A response body as octocrab hands it over.
pub(crate) type Body = BoxBody<Bytes, octocrab::Error>;

/// API answers (JSON, checksum files) are small; anything bigger is refused.
pub(crate) const MAX_SMALL_BODY: u64 = 16 * 1024 * 1024;
const JSON: &str = "application/vnd.github+json";

/// The REST client and its policy.
#[derive(Debug)]
pub(crate) struct Api {
    client: HttpsClient<OctoBody>,
    /// The API host, `github.com`, `api.github.com`, `*.githubusercontent.com`.
    redirects: RedirectPolicy,
    /// The API base without a trailing `/` (may carry a path, as on GHES).
    base: String,
    base_uri: Uri,
    api_host: String,
    base_is_https: bool,
    auth: Option<HeaderValue>,
    /// Bound on connecting plus receiving response headers, and on each body stall.
    pub(crate) timeout: Duration,
    /// Once GitHub says the limit is exhausted, no request is sent until it resets.
    blocked: Mutex<Option<(SystemTime, String)>>,
}

impl Api {
    pub(crate) fn new(
        api_url: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, GithubError> {
        let base = api_url.trim().trim_end_matches('/').to_owned();
        let base_uri: Uri = base
            .parse()
            .map_err(|e| GithubError::Config(format!("GITHUB_API_URL {api_url:?}: {e}")))?;
        let (Some(scheme), Some(host)) = (base_uri.scheme_str(), base_uri.host()) else {
            return Err(GithubError::Config(format!(
                "GITHUB_API_URL {api_url:?} is not an absolute http(s) URL"
            )));
        };
        if scheme != "https" && scheme != "http" {
            return Err(GithubError::Config(format!(
                "GITHUB_API_URL {api_url:?} is not an http(s) URL"
            )));
        }
        let auth = match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    GithubError::Config("the GitHub token contains invalid characters".to_owned())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let api_host = host.to_ascii_lowercase();
        let api_authority = base_uri
            .authority()
            .map_or_else(|| api_host.clone(), |a| a.as_str().to_ascii_lowercase());
        Ok(Api {
            client: agent_store_transport::client(&ClientOptions {
                connect_timeout: timeout,
                http2: false,
                ..ClientOptions::default()
            }),
            redirects: RedirectPolicy::new()
                .allow_host(api_authority)
                .allow_host("github.com")
                .allow_host("api.github.com")
                .allow_host("*.githubusercontent.com"),
            api_host,
            base_is_https: scheme == "https",
            base,
            base_uri,
            auth,
            timeout,
            blocked: Mutex::new(None),
        })
    }

    /// Whether a token is sent.
    pub(crate) fn has_token(&self) -> bool {
        self.auth.is_some()
    }

    /// The `Authorization` value sent to the API origin, if any.
    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    /// The API host, for cache keys and messages.
    pub(crate) fn api_host(&self) -> &str {
        &self.api_host
    }

    /// `{base}{route}`.
    pub(crate) fn url(&self, route: &str) -> String {
        format!("{}{route}", self.base)
    }

    /// A fresh octocrab over the shared connection pool. Built per call because
    /// octocrab spawns its buffer worker on the runtime current at build time.
    fn crab(&self) -> Result<Octocrab, GithubError> {
        let headers = vec![(
            USER_AGENT,
            HeaderValue::from_static(concat!(
                "agent-manager/",
                env!("CARGO_PKG_VERSION"),
                " (agent-store-github)"
            )),
        )];
        // Authorization is added per request in `get`, only to the API origin.
        let crab = OctocrabBuilder::new_empty()
            .with_service(self.client.clone())
            .with_layer(&BaseUriLayer::new(self.base_uri.clone()))
            .with_layer(&ExtraHeadersLayer::new(Arc::new(headers)))
            .with_auth(AuthState::None)
            .build();
        match crab {
            Ok(c) => Ok(c),
            Err(never) => match never {},
        }
    }

    /// Whether we may send a request to `uri`: the API host, `github.com`,
    /// `api.github.com` or `*.githubusercontent.com`, over https (plain http
    /// only to an http API host, as in tests and on some GHES installs).
    pub(crate) fn host_allowed(&self, uri: &Uri) -> bool {
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return false;
        };
        let is_api = host == self.api_host;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_api && !self.base_is_https => {}
            _ => return false,
        }
        is_api || self.redirects.allows_host(uri)
    }

    /// GET `url`, following up to 5 redirects to trusted hosts. Returns the
    /// final response whatever its status, except that a rate-limit answer
    /// becomes [`GithubError::RateLimited`].
    pub(crate) async fn get(
        &self,
        url: &str,
        accept: &'static str,
        extra: &HeaderMap,
    ) -> Result<Response<Body>, GithubError> {
        if let Some(e) = self.still_blocked() {
            return Err(e);
        }
        let crab = self.crab()?;
        let mut uri: Uri = url.parse().map_err(|e| GithubError::BadResponse {
            url: url.to_owned(),
            message: format!("not a URL: {e}"),
        })?;
        for _ in 0..=self.redirects.max() {
            if !self.host_allowed(&uri) {
                return Err(GithubError::ForeignHost {
                    url: uri.to_string(),
                });
            }
            let mut headers = extra.clone();
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
            // The token only ever goes to the API's origin (scheme, host, port).
            if let Some(auth) = &self.auth
                && same_origin(&self.base_uri, &uri)
            {
                headers.insert(AUTHORIZATION, auth.clone());
            }
            let shown = uri.to_string();
            let resp = tokio::time::timeout(
                self.timeout,
                crab._get_with_headers(uri.clone(), Some(headers)),
            )
            .await
            .map_err(|_| GithubError::Unreachable {
                url: shown.clone(),
                message: format!("no answer within {:?}", self.timeout),
                source: None,
            })?
            .map_err(|e| GithubError::Unreachable {
                url: shown.clone(),
                message: "no answer".to_owned(),
                source: Some(Box::new(e)),
            })?;
            let status = resp.status();
            tracing::debug!(url = %shown, status = status.as_u16(), "GitHub answered");
            if let Some(reset) = rate_limit_reset(&resp) {
                let body = read_small(resp, &shown, self.timeout, 64 * 1024)
                    .await
                    .unwrap_or_default();
                return Err(self.block(reset, &body));
            }
            if !status.is_redirection() {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok(resp);
            };
            uri = match self.redirects.next(&uri, location) {
                Ok(next) => next,
                Err(RedirectError::BadLocation { .. }) => {
                    return Err(GithubError::BadResponse {
                        url: shown.clone(),
                        message: format!("unusable redirect location {location:?}"),
                    });
                }
                Err(
                    RedirectError::Downgrade { to, .. } | RedirectError::ForeignHost { to, .. },
                ) => return Err(GithubError::ForeignHost { url: to }),
                Err(e) => {
                    return Err(GithubError::BadResponse {
                        url: shown.clone(),
                        message: e.to_string(),
                    });
                }
            };
            tracing::debug!(from = %shown, to = %uri, "following redirect");
        }
        Err(GithubError::BadResponse {
            url: url.to_owned(),
            message: format!("more than {} redirects", self.redirects.max()),
        })
    }

    /// GET JSON; `None` for 404, an error for any other non-2xx.
    pub(crate) async fn get_json(
        &self,
        url: &str,
        extra: &HeaderMap,
    ) -> Result<(StatusCode, HeaderMap, Option<serde_json::Value>), GithubError> {
        let resp = self.get(url, JSON, extra).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if status == StatusCode::NOT_MODIFIED {
            return Ok((status, headers, None));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok((status, headers, None));
        }
        let body = read_small(resp, url, self.timeout, MAX_SMALL_BODY).await?;
        if !status.is_success() {
            return Err(self.status_error(url, status, &body));
        }
        let value = serde_json::from_slice(&body).map_err(|e| GithubError::BadResponse {
            url: url.to_owned(),
            message: format!("not JSON: {e}"),
        })?;
        Ok((status, headers, Some(value)))
    }

    /// GET JSON through the answer cache: a fresh entry is used without a
    /// request (unless `refresh`); a stale one is revalidated with
    /// `If-None-Match` (a 304 costs nothing against the rate limit). `None`
    /// means 404. When GitHub cannot answer (rate limit, unreachable) a stale
    /// entry is used rather than failing, with a warning.
    pub(crate) async fn get_json_cached(
        &self,
        cache: &AnswerCache,
        key: &str,
        url: &str,
        ttl: Duration,
        refresh: bool,
    ) -> Result<Option<serde_json::Value>, GithubError> {
        let cached = cache.load(key, url).await;
        if let Some(c) = &cached
            && !refresh
            && c.is_fresh(ttl)
        {
            tracing::debug!(url, "GitHub answer from cache");
            return Ok(c.answer());
        }
        let mut extra = HeaderMap::new();
        if let Some(etag) = cached.as_ref().and_then(|c| c.etag.as_deref())
            && let Ok(v) = HeaderValue::from_str(etag)
        {
            extra.insert(IF_NONE_MATCH, v);
        }
        let (status, headers, body) = match self.get_json(url, &extra).await {
            Ok(r) => r,
            Err(e @ (GithubError::RateLimited { .. } | GithubError::Unreachable { .. })) => {
                if let Some(c) = cached {
                    tracing::warn!(url, error = %agent_ref::error_chain(&e), "GitHub cannot answer; using the cached answer");
                    return Ok(c.answer());
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if status == StatusCode::NOT_MODIFIED {
            if let Some(mut c) = cached {
                tracing::debug!(url, "GitHub answer unchanged (304)");
                c.fetched_at = now_secs();
                cache.store(key, &c).await;
                return Ok(c.answer());
            }
            return Err(GithubError::BadResponse {
                url: url.to_owned(),
                message: "304 Not Modified to an unconditional request".to_owned(),
            });
        }
        let answer = CachedAnswer {
            url: url.to_owned(),
            status: status.as_u16(),
            etag: headers
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            fetched_at: now_secs(),
            body: body.unwrap_or(serde_json::Value::Null),
        };
        cache.store(key, &answer).await;
        Ok(answer.answer())
    }

    fn still_blocked(&self) -> Option<GithubError> {
        let guard = self.blocked.lock().ok()?;
        let (until, message) = guard.as_ref()?;
        let left = until.duration_since(SystemTime::now()).ok()?;
        Some(GithubError::RateLimited {
            message: message.clone(),
            retry_after: Some(left),
        })
    }

    /// Remembers the limit and builds the message users see.
    fn block(&self, reset: SystemTime, body: &[u8]) -> GithubError {
        let left = reset
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let minutes = left.as_secs().div_ceil(60).max(1);
        let when = humantime::format_rfc3339_seconds(reset);
        let github_says = github_message(body)
            .map(|m| format!(" (GitHub: {m})"))
            .unwrap_or_default();
        let remedy = if self.has_token() {
            "the token in GITHUB_TOKEN/GH_TOKEN is rate-limited too; wait for the reset or use another token"
        } else {
            "set GITHUB_TOKEN (or GH_TOKEN) to a GitHub token to get 5000 requests/hour instead of 60"
        };
        let message = format!(
            "GitHub API rate limit exceeded on {}{github_says}; it resets at {when} (in {minutes} minute{}). \
             Not retrying: {remedy}",
            self.api_host,
            if minutes == 1 { "" } else { "s" },
        );
        if let Ok(mut g) = self.blocked.lock() {
            *g = Some((reset, message.clone()));
        }
        GithubError::RateLimited {
            message,
            retry_after: Some(left),
        }
    }

    pub(crate) fn status_error(&self, url: &str, status: StatusCode, body: &[u8]) -> GithubError {
        let mut message = github_message(body).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_owned()
        });
        if status == StatusCode::UNAUTHORIZED {
            message.push_str(" (check GITHUB_TOKEN/GH_TOKEN)");
        } else if status == StatusCode::FORBIDDEN && !self.has_token() {
            message.push_str(" (set GITHUB_TOKEN for private repositories)");
        }
        GithubError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            message,
        }
    }
}

impl CachedAnswer {
    fn answer(&self) -> Option<serde_json::Value> {
        (self.status != 404).then(|| self.body.clone())
    }
}

/// When a 403/429 is a rate limit (`x-ratelimit-remaining: 0` or
/// `Retry-After`), the moment it resets.
fn rate_limit_reset(resp: &Response<Body>) -> Option<SystemTime> {
    let status = resp.status();
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let h = resp.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let exhausted = get("x-ratelimit-remaining") == Some("0");
    // Seconds or an HTTP date, as every store reads it.
    let retry_after = retry_after(h);
    if !exhausted && retry_after.is_none() {
        return None;
    }
    let reset = get("x-ratelimit-reset")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s));
    match (retry_after, reset) {
        // Retry-After (secondary limits) is the more precise instruction.
        (Some(wait), _) => Some(SystemTime::now() + wait),
        (None, Some(r)) => Some(r),
        (None, None) => Some(SystemTime::now() + Duration::from_secs(60)),
    }
}

fn github_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let m = v.get("message")?.as_str()?;
    let mut m = m.trim().to_owned();
    if m.len() > 300 {
        let mut cut = 300;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    Some(m)
}

/// Reads a small body whole, bounded in size and by a stall timeout.
pub(crate) async fn read_small(
    resp: Response<Body>,
    url: &str,
    stall: Duration,
    max: u64,
) -> Result<Vec<u8>, GithubError> {
    read_to_end(resp.into_body(), stall, max)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(max) => GithubError::BadResponse {
                url: url.to_owned(),
                message: format!("answer larger than {max} bytes"),
            },
            other => GithubError::Unreachable {
                url: url.to_owned(),
                message: format!("body {other}"),
                source: None,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_hosts() {
        let api = Api::new("https://api.github.com", None, Duration::from_secs(5)).unwrap();
        for ok in [
            "https://api.github.com/repos/a/b",
            "https://github.com/a/b/releases/download/v1/x",
            "https://objects.githubusercontent.com/x",
            "https://release-assets.githubusercontent.com/x",
        ] {
            assert!(api.host_allowed(&ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "http://objects.githubusercontent.com/x",
            "https://evil.example/x",
            "https://githubusercontent.com.evil.example/x",
            "https://github.com.evil.example/x",
            "http://api.github.com/x",
        ] {
            assert!(!api.host_allowed(&bad.parse().unwrap()), "{bad}");
        }
        let local = Api::new("http://127.0.0.1:9", None, Duration::from_secs(5)).unwrap();
        assert!(local.host_allowed(&"http://127.0.0.1:1234/x".parse().unwrap()));
        assert!(!local.host_allowed(&"http://localhost:1234/x".parse().unwrap()));
    }
}
