//! `agent-store-http`: an [`agent_store::AgentStore`] over plain HTTP(S).
//!
//! Layout (DESIGN.md):
//! - `{base}/{publisher}/{name}/{version}/service-{name}_{os}_{arch}` — the binary;
//! - the same URL + `.sha256` — its digest (the first whitespace-separated
//!   token, as `sha256sum` writes it). The sidecar is **required**: an artifact
//!   without one is refused (`integrity`);
//! - `{base}/{publisher}/{name}/versions` — one version per line (non-semver
//!   lines are skipped).
//!
//! Configured by `AGENT_HTTP_STORE` ([`HttpStore::from_env`]). The body is
//! streamed into the [`Installer`](agent_store::Installer) (never buffered),
//! with `Content-Length` as the expected size. 404 is `artifact-missing`;
//! connection errors, timeouts, 5xx, 429, 401 and 403 are `store-unavailable`
//! (with `Retry-After` when given); a body that stops sending bytes for the
//! stall timeout is `store-unavailable` too.
//!
//! ```no_run
//! use std::sync::Arc;
//! use agent_store::{AgentHome, AgentRef, Installer, Platform, StoreChain};
//! use agent_store_http::HttpStore;
//!
//! # async fn demo() -> Result<(), agent_store::StoreError> {
//! let store = HttpStore::new("https://agents.example.com/store")?;
//! let chain = StoreChain::new(vec![Arc::new(store)]);
//! let installer = Installer::new(AgentHome::new("/tmp/codefly"));
//! let agent: AgentRef = "codefly.dev/echo:1.0.0".parse()?;
//! let installed = chain.pull(&agent, &Platform::current(), &installer).await?;
//! println!("{}", installed.path.display());
//! # Ok(()) }
//! ```

mod body;

use std::fmt;
use std::time::{Duration, SystemTime};

use agent_ref::semver::Version;
use agent_ref::{AgentRef, Platform, parse_version};
use agent_store::{AgentStore, Expected, Installed, Installer, Sha256Digest, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use body::BodyReader;

/// The environment variable holding the store's base URL.
pub const AGENT_HTTP_STORE_ENV: &str = "AGENT_HTTP_STORE";

/// The name this store uses in errors and install records.
const STORE: &str = "http";

/// Default time to establish a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default longest wait for response headers or for the next body bytes.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed at most (`3xx` with `Location`).
const MAX_REDIRECTS: usize = 5;

/// Largest sidecar or versions file we read.
const SMALL_BODY_LIMIT: usize = 1 << 20;

/// An agent store serving the layout above over HTTP or HTTPS.
#[derive(Clone)]
pub struct HttpStore {
    base: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    connect_timeout: Duration,
    stall_timeout: Duration,
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStore")
            .field("base", &self.base)
            .field("connect_timeout", &self.connect_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds an [`HttpStore`] with non-default timeouts.
#[derive(Debug, Clone)]
pub struct HttpStoreBuilder {
    base: String,
    connect_timeout: Duration,
    stall_timeout: Duration,
}

impl HttpStoreBuilder {
    /// Time allowed to connect (TCP and TLS). Default 10 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest wait for response headers, and for the next bytes of a body;
    /// a download that stalls longer is `store-unavailable`. Default 30 s.
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// The store.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the base is not an `http(s)://` URL.
    pub fn build(self) -> Result<HttpStore, StoreError> {
        let base = self.base.trim().trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| config_error(&base, &format!("not a URL ({e})")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(config_error(
                &base,
                "expected http://host[/path] or https://host[/path]",
            ));
        }
        if uri.query().is_some() {
            return Err(config_error(&base, "a query string is not allowed"));
        }
        Ok(HttpStore {
            client: build_client(self.connect_timeout),
            base,
            connect_timeout: self.connect_timeout,
            stall_timeout: self.stall_timeout,
        })
    }
}

fn config_error(base: &str, why: &str) -> StoreError {
    StoreError::Unavailable {
        store: STORE.to_owned(),
        message: format!("{AGENT_HTTP_STORE_ENV}={base:?} is not usable: {why}"),
        retry_after: None,
        source: None,
    }
}

fn build_client(connect_timeout: Duration) -> Client<HttpsConnector<HttpConnector>, Empty<Bytes>> {
    // One TLS stack for the workspace: rustls with ring. Another crate may
    // have installed it already; that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no native root certificates; https stores will fail to verify");
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let connector = tls
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

impl HttpStore {
    /// A store at `base` (e.g. `https://agents.example.com/store`) with default timeouts.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when `base` is not an `http(s)://` URL.
    pub fn new(base: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(base).build()
    }

    /// A builder for a store at `base`.
    #[must_use]
    pub fn builder(base: impl Into<String>) -> HttpStoreBuilder {
        HttpStoreBuilder {
            base: base.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }

    /// The store named by `AGENT_HTTP_STORE`, or `None` when it is unset or empty.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it is set to something that is not an `http(s)://` URL.
    pub fn from_env() -> Result<Option<Self>, StoreError> {
        match std::env::var(AGENT_HTTP_STORE_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::new(v).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(config_error(&v.to_string_lossy(), "not UTF-8"))
            }
        }
    }

    /// The base URL, without a trailing slash.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The binary's URL: `{base}/{publisher}/{name}/{version}/service-{name}_{os}_{arch}`.
    ///
    /// # Errors
    /// [`StoreError::Ref`] for a non-concrete ref.
    pub fn artifact_url(
        &self,
        agent: &AgentRef,
        platform: &Platform,
    ) -> Result<String, StoreError> {
        let version = agent
            .concrete_version()
            .ok_or_else(|| agent_ref::RefError::NotConcrete(agent.identifier()))?;
        Ok(format!(
            "{}/{}/{}/{}/service-{}_{}",
            self.base,
            agent.publisher(),
            agent.name(),
            version,
            agent.name(),
            platform.suffix()
        ))
    }

    /// The versions list's URL: `{base}/{publisher}/{name}/versions`.
    #[must_use]
    pub fn versions_url(&self, agent: &AgentRef) -> String {
        format!(
            "{}/{}/{}/versions",
            self.base,
            agent.publisher(),
            agent.name()
        )
    }

    /// Sends `method url`, following redirects, with the connect + stall
    /// timeouts on the response head. Returns the final URL and response.
    async fn send(
        &self,
        method: &Method,
        url: &str,
    ) -> Result<(String, Response<Incoming>), StoreError> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url.parse().map_err(|e| StoreError::Unavailable {
                store: STORE.to_owned(),
                message: format!("bad URL {url}"),
                retry_after: None,
                source: Some(Box::new(e)),
            })?;
            let req = Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .header(
                    header::USER_AGENT,
                    concat!("agent-store-http/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|e| StoreError::Unavailable {
                    store: STORE.to_owned(),
                    message: format!("cannot build a request for {url}"),
                    retry_after: None,
                    source: Some(Box::new(e)),
                })?;
            let wait = self.connect_timeout + self.stall_timeout;
            let resp = match tokio::time::timeout(wait, self.client.request(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    let what = if e.is_connect() {
                        "cannot connect to"
                    } else {
                        "request failed:"
                    };
                    return Err(StoreError::Unavailable {
                        store: STORE.to_owned(),
                        message: format!("{what} {method} {url}: {}", error_chain(&e)),
                        retry_after: None,
                        source: Some(Box::new(e)),
                    });
                }
                Err(_) => {
                    return Err(StoreError::Unavailable {
                        store: STORE.to_owned(),
                        message: format!("{method} {url}: no response within {wait:?}"),
                        retry_after: None,
                        source: None,
                    });
                }
            };
            if resp.status().is_redirection()
                && let Some(loc) = resp.headers().get(header::LOCATION)
            {
                let next = resolve_location(&uri, loc.to_str().unwrap_or_default());
                tracing::debug!(from = %url, to = %next, "following redirect");
                url = next;
                continue;
            }
            return Ok((url, resp));
        }
        Err(StoreError::Unavailable {
            store: STORE.to_owned(),
            message: format!("{method} {url}: more than {MAX_REDIRECTS} redirects"),
            retry_after: None,
            source: None,
        })
    }

    /// Reads a small body completely (bounded size, stall timeout).
    async fn small_body(&self, url: &str, resp: Response<Incoming>) -> Result<Bytes, StoreError> {
        let body = Limited::new(resp.into_body(), SMALL_BODY_LIMIT);
        match tokio::time::timeout(self.stall_timeout, body.collect()).await {
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(e)) => Err(StoreError::Unavailable {
                store: STORE.to_owned(),
                message: format!("reading {url}: {e}"),
                retry_after: None,
                source: None,
            }),
            Err(_) => Err(StoreError::Unavailable {
                store: STORE.to_owned(),
                message: format!("reading {url}: stalled for {:?}", self.stall_timeout),
                retry_after: None,
                source: None,
            }),
        }
    }

    /// The digest published beside `url`.
    async fn sidecar(&self, agent: &AgentRef, url: &str) -> Result<Sha256Digest, StoreError> {
        let sidecar_url = format!("{url}.sha256");
        let (final_url, resp) = self.send(&Method::GET, &sidecar_url).await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                // Tell "no such artifact" from "artifact without a digest".
                let (_, head) = self.send(&Method::HEAD, url).await?;
                return match head.status() {
                    s if s.is_success() => Err(StoreError::Integrity {
                        store: STORE.to_owned(),
                        what: agent.identifier(),
                        message: format!(
                            "{url} has no sha256 sidecar ({sidecar_url} is missing); refusing an unverifiable binary"
                        ),
                    }),
                    s => Err(status_error(s, head.headers(), url, agent)),
                };
            }
            s => return Err(status_error(s, resp.headers(), &final_url, agent)),
        }
        let body = self.small_body(&final_url, resp).await?;
        let text = String::from_utf8_lossy(&body);
        let token = text.split_whitespace().next().unwrap_or_default();
        token
            .parse::<Sha256Digest>()
            .map_err(|e| StoreError::Integrity {
                store: STORE.to_owned(),
                what: agent.identifier(),
                message: format!("sidecar {sidecar_url} is not a sha256 digest: {e}"),
            })
    }
}

/// The full cause chain of an error, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Resolves a `Location` header against the request URI.
fn resolve_location(base: &Uri, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", http::uri::Authority::as_str);
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = base.path();
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{scheme}://{authority}{dir}/{location}")
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Maps a non-success status to the stable kinds.
fn status_error(
    status: StatusCode,
    headers: &http::HeaderMap,
    url: &str,
    agent: &AgentRef,
) -> StoreError {
    match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => StoreError::Missing {
            store: STORE.to_owned(),
            what: format!("{} ({url} answered {status})", agent.identifier()),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StoreError::Unavailable {
            store: STORE.to_owned(),
            message: format!(
                "{url} answered {status}: access denied. The HTTP store sends no credentials; \
                 make the store readable anonymously (or use a pre-signed base URL in {AGENT_HTTP_STORE_ENV})"
            ),
            retry_after: None,
            source: None,
        },
        s => StoreError::Unavailable {
            store: STORE.to_owned(),
            message: format!("{url} answered {s}"),
            retry_after: parse_retry_after(headers),
            source: None,
        },
    }
}

#[async_trait]
impl AgentStore for HttpStore {
    fn name(&self) -> &str {
        STORE
    }

    async fn available(&self, agent: &AgentRef, platform: &Platform) -> Result<bool, StoreError> {
        let url = self.artifact_url(agent, platform)?;
        let (final_url, resp) = self.send(&Method::HEAD, &url).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(false),
            s => Err(status_error(s, resp.headers(), &final_url, agent)),
        }
    }

    async fn versions(
        &self,
        agent: &AgentRef,
        _platform: &Platform,
    ) -> Result<Vec<Version>, StoreError> {
        let url = self.versions_url(agent);
        let (final_url, resp) = self.send(&Method::GET, &url).await?;
        if !resp.status().is_success() {
            return Err(status_error(
                resp.status(),
                resp.headers(),
                &final_url,
                agent,
            ));
        }
        let body = self.small_body(&final_url, resp).await?;
        let text = String::from_utf8_lossy(&body);
        let mut out: Vec<Version> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| match parse_version(l) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::debug!(line = l, url = %final_url, "skipping a non-semver line");
                    None
                }
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let url = self.artifact_url(agent, platform)?;
        let digest = self.sidecar(agent, &url).await?;
        let (final_url, resp) = self.send(&Method::GET, &url).await?;
        if !resp.status().is_success() {
            return Err(status_error(
                resp.status(),
                resp.headers(),
                &final_url,
                agent,
            ));
        }
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expected = Expected {
            sha256: Some(digest),
            size,
            max_size: None,
        };
        tracing::debug!(url = %final_url, ?size, sha256 = %digest, "downloading");
        let reader = BodyReader::new(resp.into_body(), self.stall_timeout);
        installer
            .install_reader(agent, &format!("http:{url}"), &expected, reader)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_layout() {
        let store = HttpStore::new("http://127.0.0.1:1/store/").unwrap();
        assert_eq!(store.base(), "http://127.0.0.1:1/store");
        let agent: AgentRef = "codefly.dev/echo:1.2.3".parse().unwrap();
        let platform: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(
            store.artifact_url(&agent, &platform).unwrap(),
            "http://127.0.0.1:1/store/codefly.dev/echo/1.2.3/service-echo_linux_amd64"
        );
        assert_eq!(
            store.versions_url(&agent),
            "http://127.0.0.1:1/store/codefly.dev/echo/versions"
        );
        let latest: AgentRef = "codefly.dev/echo".parse().unwrap();
        assert_eq!(
            store.artifact_url(&latest, &platform).unwrap_err().kind(),
            agent_ref::ErrorKind::InvalidRef
        );
    }

    #[test]
    fn bad_bases_are_refused() {
        for base in [
            "",
            "ftp://x/y",
            "not a url",
            "/just/a/path",
            "http://h/p?q=1",
        ] {
            assert!(HttpStore::new(base).is_err(), "{base:?}");
        }
        assert!(HttpStore::new("https://example.com").is_ok());
    }

    #[test]
    fn retry_after_forms() {
        let mut h = http::HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(header::RETRY_AFTER, later.parse().unwrap());
        let d = parse_retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }

    #[test]
    fn locations_resolve() {
        let base: Uri = "http://h:1/a/b/file".parse().unwrap();
        assert_eq!(resolve_location(&base, "https://x/y"), "https://x/y");
        assert_eq!(resolve_location(&base, "/z"), "http://h:1/z");
        assert_eq!(resolve_location(&base, "other"), "http://h:1/a/b/other");
        assert_eq!(resolve_location(&base, "//cdn/q"), "http://cdn/q");
    }

    #[test]
    fn statuses_map_to_kinds() {
        use agent_ref::ErrorKind;
        let agent: AgentRef = "echo:1.0.0".parse().unwrap();
        let h = http::HeaderMap::new();
        let k = |s: u16| status_error(StatusCode::from_u16(s).unwrap(), &h, "u", &agent).kind();
        assert_eq!(k(404), ErrorKind::ArtifactMissing);
        assert_eq!(k(410), ErrorKind::ArtifactMissing);
        assert_eq!(k(401), ErrorKind::StoreUnavailable);
        assert_eq!(k(403), ErrorKind::StoreUnavailable);
        assert_eq!(k(500), ErrorKind::StoreUnavailable);
        assert_eq!(k(503), ErrorKind::StoreUnavailable);
        assert_eq!(k(429), ErrorKind::StoreUnavailable);
        let msg = status_error(StatusCode::FORBIDDEN, &h, "u", &agent).to_string();
        assert!(msg.contains("access denied"), "{msg}");
    }
}
