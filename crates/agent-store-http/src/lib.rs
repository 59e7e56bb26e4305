//! `agent-store-http`: an [`agent_store::AgentStore`] over plain HTTP(S).
//!
//! Layout (ARCHITECTURE.md):
//! - `{base}/{publisher}/{name}/{version}/{P}-{name}_{os}_{arch}` — the binary,
//!   where P is the kind's prefix ([`agent_ref::AgentKind::prefix`]:
//!   `service-echo_linux_amd64`, `toolbox-grep_darwin_arm64`); provider and
//!   solution agents are served from the cache and Nix only, so this store
//!   answers `artifact-missing` for them without a request;
//! - the same URL + `.sha256` — its digest (the first whitespace-separated
//!   token, as `sha256sum` writes it). The sidecar is **required**: an artifact
//!   without one is refused (`integrity`);
//! - the same URL + `.minisig` — its minisign signature, optional (404: none);
//!   passed to the installer, whose trust policy decides whether an unsigned
//!   binary may be installed and checks the signature while the bytes stream;
//! - `{base}/{publisher}/{name}/versions` — one version per line (non-semver
//!   lines are skipped).
//!
//! Configured by `AGENT_HTTP_STORE` ([`HttpStore::from_env`]). The body is
//! streamed into the [`Installer`] (never buffered),
//! with `Content-Length` as the expected size. Statuses map as every network
//! store maps them ([`agent_store_transport::classify`]): 404/410 are
//! `artifact-missing`; 401, 403 and the other 4xx are denied (kind
//! `store-unavailable`, not retried); connection errors, timeouts, 408, 429
//! and 5xx are `store-unavailable`, retried honouring `Retry-After` (seconds
//! or HTTP date). A body that sends no bytes for the stall timeout is
//! `store-unavailable` too (empty frames are no progress).
//!
//! Redirects: never https → http, and no hop to another host unless the
//! builder allows it ([`HttpStoreBuilder::allow_redirect_host`]). The
//! optional `Authorization` value ([`HttpStoreBuilder::authorization`]) is
//! only ever sent to the base URL's origin, wherever a redirect leads.
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
#![forbid(unsafe_code)]

mod probe;

use std::fmt;
use std::time::Duration;

use agent_ref::semver::Version;
use agent_ref::{AgentRef, Platform, parse_version};
use agent_store::{AgentStore, Expected, Installed, Installer, Sha256Digest, StoreError};
use agent_store_transport::{
    Class, ClientOptions, HttpsClient, RedirectPolicy, classify, read_to_end, same_origin,
    status_error,
};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper::body::Incoming;

/// A response body as an `AsyncRead` with a byte-counting stall timer.
pub type BodyReader = agent_store_transport::BodyReader<Incoming>;

/// The environment variable holding the store's base URL.
pub const AGENT_HTTP_STORE_ENV: &str = "AGENT_HTTP_STORE";

/// The name this store uses in errors and install records.
const STORE: &str = "http";

/// Default time to establish a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default longest wait for response headers or for the next body bytes.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest sidecar, signature or versions file we read.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

/// What a denial tells the user to check.
const DENIED_HINT: &str = "the HTTP store sends no credentials unless one is configured \
     (HttpStoreBuilder::authorization); make the store readable, or use a pre-signed base URL \
     in AGENT_HTTP_STORE";

/// An agent store serving the layout above over HTTP or HTTPS.
#[derive(Clone)]
pub struct HttpStore {
    base: String,
    base_uri: Uri,
    client: HttpsClient<Empty<Bytes>>,
    redirects: RedirectPolicy,
    authorization: Option<HeaderValue>,
    connect_timeout: Duration,
    stall_timeout: Duration,
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStore")
            .field("base", &self.base)
            .field("connect_timeout", &self.connect_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("redirects", &self.redirects)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Builds an [`HttpStore`] with non-default timeouts.
#[derive(Debug, Clone)]
pub struct HttpStoreBuilder {
    base: String,
    connect_timeout: Duration,
    stall_timeout: Duration,
    redirects: RedirectPolicy,
    authorization: Option<String>,
    roots: Vec<Vec<u8>>,
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

    /// Also follow redirects to `pattern` (`host`, `host:port` or
    /// `*.suffix`), e.g. the CDN the store redirects downloads to. By default
    /// no redirect leaves the base URL's host; https → http is never followed.
    #[must_use]
    pub fn allow_redirect_host(mut self, pattern: impl Into<String>) -> Self {
        self.redirects = self.redirects.allow_host(pattern);
        self
    }

    /// An `Authorization` header value (`Bearer …`, `Basic …`) sent with
    /// every request to the base URL's origin (scheme, host, port) and never
    /// to any other, wherever a redirect leads.
    #[must_use]
    pub fn authorization(mut self, value: impl Into<String>) -> Self {
        self.authorization = Some(value.into());
        self
    }

    /// Trust only these root certificates (DER) instead of the system's:
    /// a store behind a private CA.
    #[must_use]
    pub fn root_certificates(mut self, roots: Vec<Vec<u8>>) -> Self {
        self.roots = roots;
        self
    }

    /// The store.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the base is not an `http(s)://` URL
    /// or the authorization value is not a valid header value.
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
        let authorization = match self.authorization {
            Some(v) => {
                let mut v = HeaderValue::from_str(v.trim()).map_err(|_| {
                    config_error(&base, "the authorization value is not a valid header value")
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let client = agent_store_transport::client(&ClientOptions {
            connect_timeout: self.connect_timeout,
            roots: self.roots,
            ..ClientOptions::default()
        });
        Ok(HttpStore {
            client,
            base,
            base_uri: uri,
            redirects: self.redirects,
            authorization,
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
            redirects: RedirectPolicy::new(),
            authorization: None,
            roots: Vec::new(),
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

    /// The binary's URL: `{base}/{publisher}/{name}/{version}/{prefix}-{name}_{os}_{arch}`.
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
            "{}/{}/{}/{}/{}_{}",
            self.base,
            agent.publisher(),
            agent.name(),
            version,
            agent.kind().artifact_name(agent.name()),
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

    /// Sends `method url`, following redirects under the store's policy,
    /// with the connect + stall timeouts on the response head. Returns the
    /// final URL and response.
    async fn send(
        &self,
        method: &Method,
        url: &str,
    ) -> Result<(String, Response<Incoming>), StoreError> {
        let mut uri: Uri = url.parse().map_err(|e| StoreError::Unavailable {
            store: STORE.to_owned(),
            message: format!("bad URL {url}"),
            retry_after: None,
            source: Some(Box::new(e)),
        })?;
        for _ in 0..=self.redirects.max() {
            let shown = uri.to_string();
            let mut req = Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .header(
                    header::USER_AGENT,
                    concat!("agent-store-http/", env!("CARGO_PKG_VERSION")),
                );
            // Credentials only ever go to the origin they were given for.
            if let Some(auth) = &self.authorization
                && same_origin(&self.base_uri, &uri)
            {
                req = req.header(header::AUTHORIZATION, auth.clone());
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| StoreError::Unavailable {
                    store: STORE.to_owned(),
                    message: format!("cannot build a request for {shown}"),
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
                        message: format!("{what} {method} {shown}"),
                        retry_after: None,
                        source: Some(Box::new(e)),
                    });
                }
                Err(_) => {
                    return Err(StoreError::Unavailable {
                        store: STORE.to_owned(),
                        message: format!("{method} {shown}: no response within {wait:?}"),
                        retry_after: None,
                        source: None,
                    });
                }
            };
            if classify(resp.status()) == Class::Redirect
                && let Some(loc) = resp.headers().get(header::LOCATION)
            {
                let next = self
                    .redirects
                    .next(&uri, loc.to_str().unwrap_or_default())
                    .map_err(|e| StoreError::Denied {
                        store: STORE.to_owned(),
                        status: resp.status().as_u16(),
                        message: e.to_string(),
                        hint: "allow the host with HttpStoreBuilder::allow_redirect_host if it is trusted"
                            .to_owned(),
                    })?;
                tracing::debug!(from = %shown, to = %next, "following redirect");
                uri = next;
                continue;
            }
            return Ok((shown, resp));
        }
        Err(StoreError::Unavailable {
            store: STORE.to_owned(),
            message: format!(
                "{method} {url}: more than {} redirects",
                self.redirects.max()
            ),
            retry_after: None,
            source: None,
        })
    }

    /// Reads a small body completely (bounded size, stall timeout).
    async fn small_body(&self, url: &str, resp: Response<Incoming>) -> Result<Vec<u8>, StoreError> {
        read_to_end(resp.into_body(), self.stall_timeout, SMALL_BODY_LIMIT)
            .await
            .map_err(|e| StoreError::Unavailable {
                store: STORE.to_owned(),
                message: format!("reading {url}: {e}"),
                retry_after: None,
                source: None,
            })
    }

    /// The minisign signature published beside `url` (`{url}.minisig`), or
    /// `None` when there is none (404/410): the installer's trust policy
    /// decides whether an unsigned binary may be installed.
    async fn signature(&self, agent: &AgentRef, url: &str) -> Result<Option<String>, StoreError> {
        let sig_url = format!("{url}.minisig");
        let (final_url, resp) = self.send(&Method::GET, &sig_url).await?;
        match classify(resp.status()) {
            Class::Success => {}
            Class::Missing => return Ok(None),
            _ => return Err(status_err(resp.status(), resp.headers(), &final_url, agent)),
        }
        let body = self.small_body(&final_url, resp).await?;
        Ok(Some(String::from_utf8_lossy(&body).into_owned()))
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
                    s => Err(status_err(s, head.headers(), url, agent)),
                };
            }
            s => return Err(status_err(s, resp.headers(), &final_url, agent)),
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

/// Maps a non-success status to the stable kinds.
/// `artifact-missing` for a kind this store may not serve (provider,
/// solution: cache and Nix only; job: never loaded).
fn refuse_kind(agent: &AgentRef) -> Result<(), StoreError> {
    match agent.kind().refusal(STORE) {
        None => Ok(()),
        Some(why) => Err(StoreError::Missing {
            store: STORE.to_owned(),
            what: format!("{agent}: {why}"),
        }),
    }
}

fn status_err(
    status: StatusCode,
    headers: &http::HeaderMap,
    url: &str,
    agent: &AgentRef,
) -> StoreError {
    status_error(
        STORE,
        status,
        headers,
        url,
        &agent.identifier(),
        DENIED_HINT,
    )
}

#[async_trait]
impl AgentStore for HttpStore {
    fn name(&self) -> &str {
        STORE
    }

    async fn probe(&self) -> agent_store::StoreProbe {
        probe::probe(self).await
    }

    async fn available(&self, agent: &AgentRef, platform: &Platform) -> Result<bool, StoreError> {
        if agent.kind().refusal(STORE).is_some() {
            return Ok(false);
        }
        let url = self.artifact_url(agent, platform)?;
        let (final_url, resp) = self.send(&Method::HEAD, &url).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(false),
            s => Err(status_err(s, resp.headers(), &final_url, agent)),
        }
    }

    async fn versions(
        &self,
        agent: &AgentRef,
        _platform: &Platform,
    ) -> Result<Vec<Version>, StoreError> {
        refuse_kind(agent)?;
        let url = self.versions_url(agent);
        let (final_url, resp) = self.send(&Method::GET, &url).await?;
        if !resp.status().is_success() {
            return Err(status_err(resp.status(), resp.headers(), &final_url, agent));
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
        refuse_kind(agent)?;
        let url = self.artifact_url(agent, platform)?;
        let digest = self.sidecar(agent, &url).await?;
        let signature = self.signature(agent, &url).await?;
        let (final_url, resp) = self.send(&Method::GET, &url).await?;
        if !resp.status().is_success() {
            return Err(status_err(resp.status(), resp.headers(), &final_url, agent));
        }
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expected = Expected {
            sha256: Some(digest),
            size,
            signature,
            platform: Some(platform.clone()),
            ..Expected::default()
        };
        tracing::debug!(url = %final_url, ?size, sha256 = %digest, signed = expected.signature.is_some(), "downloading");
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
    fn statuses_map_to_kinds() {
        use agent_ref::ErrorKind;
        let agent: AgentRef = "echo:1.0.0".parse().unwrap();
        let h = http::HeaderMap::new();
        let e = |s: u16| status_err(StatusCode::from_u16(s).unwrap(), &h, "u", &agent);
        let k = |s: u16| e(s).kind();
        assert_eq!(k(404), ErrorKind::ArtifactMissing);
        assert_eq!(k(410), ErrorKind::ArtifactMissing);
        assert_eq!(k(401), ErrorKind::StoreUnavailable);
        assert_eq!(k(403), ErrorKind::StoreUnavailable);
        assert_eq!(k(500), ErrorKind::StoreUnavailable);
        assert_eq!(k(503), ErrorKind::StoreUnavailable);
        assert_eq!(k(429), ErrorKind::StoreUnavailable);
        assert!(!e(401).is_retryable() && !e(403).is_retryable());
        assert!(e(503).is_retryable() && e(429).is_retryable());
        let msg = e(403).to_string();
        assert!(
            msg.contains("denied") && msg.contains("AGENT_HTTP_STORE"),
            "{msg}"
        );
    }
}
