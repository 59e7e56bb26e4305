//! The GitHub REST client: octocrab over a hyper/rustls stack we assemble
//! ourselves, so that redirects are followed by us — each hop checked against
//! the trusted hosts *before* it is requested — and so that every response's
//! headers (rate limits, ETag) reach us.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, ETAG, IF_NONE_MATCH, LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use octocrab::service::middleware::auth_header::AuthHeaderLayer;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder};

use crate::GithubError;
use crate::cache::{AnswerCache, CachedAnswer, now_secs};

/// A response body as octocrab hands it over.
pub(crate) type Body = BoxBody<Bytes, octocrab::Error>;

const MAX_REDIRECTS: usize = 5;
/// API answers (JSON, checksum files) are small; anything bigger is refused.
pub(crate) const MAX_SMALL_BODY: u64 = 16 * 1024 * 1024;
const JSON: &str = "application/vnd.github+json";

/// The REST client and its policy.
#[derive(Debug)]
pub(crate) struct Api {
    client: Client<HttpsConnector<HttpConnector>, OctoBody>,
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
        Ok(Api {
            client: http_client(timeout),
            api_host: host.to_ascii_lowercase(),
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
        // Authorization only ever goes to the API host (octocrab's AuthHeader
        // layer compares the request's authority with the base URI's).
        let crab = OctocrabBuilder::new_empty()
            .with_service(self.client.clone())
            .with_layer(&BaseUriLayer::new(self.base_uri.clone()))
            .with_layer(&ExtraHeadersLayer::new(Arc::new(headers)))
            .with_layer(&AuthHeaderLayer::new(
                self.auth.clone(),
                self.base_uri.clone(),
                self.base_uri.clone(),
            ))
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
        is_api
            || host == "github.com"
            || host == "api.github.com"
            || host.ends_with(".githubusercontent.com")
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
        for _ in 0..=MAX_REDIRECTS {
            if !self.host_allowed(&uri) {
                return Err(GithubError::ForeignHost {
                    url: uri.to_string(),
                });
            }
            let mut headers = extra.clone();
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
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
                message: error_chain(&e),
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
            uri = resolve_location(&uri, location).ok_or_else(|| GithubError::BadResponse {
                url: shown.clone(),
                message: format!("unusable redirect location {location:?}"),
            })?;
            tracing::debug!(from = %shown, to = %uri, "following redirect");
        }
        Err(GithubError::BadResponse {
            url: url.to_owned(),
            message: format!("more than {MAX_REDIRECTS} redirects"),
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
                    tracing::warn!(url, error = %e, "GitHub cannot answer; using the cached answer");
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
    let retry_after = get("retry-after").and_then(|v| v.parse::<u64>().ok());
    if !exhausted && retry_after.is_none() {
        return None;
    }
    let reset = get("x-ratelimit-reset")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s));
    match (retry_after, reset) {
        // Retry-After (secondary limits) is the more precise instruction.
        (Some(s), _) => Some(SystemTime::now() + Duration::from_secs(s)),
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
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(stall, body.frame())
            .await
            .map_err(|_| GithubError::Unreachable {
                url: url.to_owned(),
                message: format!("body stalled for {stall:?}"),
                source: None,
            })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| GithubError::Unreachable {
            url: url.to_owned(),
            message: error_chain(&e),
            source: Some(Box::new(e)),
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() as u64 + data.len() as u64 > max {
                return Err(GithubError::BadResponse {
                    url: url.to_owned(),
                    message: format!("answer larger than {max} bytes"),
                });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// An absolute `Location`, or one relative to the current origin.
fn resolve_location(current: &Uri, location: &str) -> Option<Uri> {
    let loc: Uri = location.parse().ok()?;
    if loc.scheme().is_some() && loc.authority().is_some() {
        return Some(loc);
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let mut parts = http::uri::Parts::default();
        parts.scheme = current.scheme().cloned();
        parts.authority = current.authority().cloned();
        parts.path_and_query = loc.path_and_query().cloned();
        return Uri::from_parts(parts).ok();
    }
    None
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn http_client(timeout: Duration) -> Client<HttpsConnector<HttpConnector>, OctoBody> {
    // One TLS stack for the workspace: rustls with ring. Installing the
    // process default is harmless when another crate already did.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(Arc::clone(&provider))
    {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no system CA certificates; https to GitHub will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            match config {
                Ok(c) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c),
                // ring supports the default versions; this cannot fail, but
                // stay total rather than panic.
                Err(_) => {
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty_config())
                }
            }
        }
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

fn empty_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
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

    #[test]
    fn locations() {
        let cur: Uri = "http://127.0.0.1:8/repos/a/b/releases/assets/1"
            .parse()
            .unwrap();
        assert_eq!(
            resolve_location(&cur, "/download/x").unwrap().to_string(),
            "http://127.0.0.1:8/download/x"
        );
        assert_eq!(
            resolve_location(&cur, "https://objects.githubusercontent.com/y?z=1")
                .unwrap()
                .to_string(),
            "https://objects.githubusercontent.com/y?z=1"
        );
        assert!(resolve_location(&cur, "relative").is_none());
    }
}
