//! `FakeGitHub`: THE STAND-IN FOR api.github.com. GitHub cannot be reached
//! from the machines these tests run on, so this is a real hyper HTTP/1.1
//! server on 127.0.0.1 answering the documented REST calls the store makes,
//! with objects shaped exactly as GitHub sends them (every field of a release
//! and of an asset, user objects included):
//!
//! - `GET /repos/{owner}/{repo}/releases/latest`
//! - `GET /repos/{owner}/{repo}/releases?per_page=&page=` (newest first, `Link` header)
//! - `GET /repos/{owner}/{repo}/releases/tags/{tag}`
//! - `GET /repos/{owner}/{repo}/releases/assets/{id}`: the asset JSON, or with
//!   `Accept: application/octet-stream` a `302` to a download URL (on this
//!   server, as GitHub's is on objects.githubusercontent.com), or wherever
//!   `redirect_assets_to` says
//! - `GET /download/{id}/{name}`: the bytes
//! - `GET /rate_limit`: the `resources` and `rate` objects; it answers `200`
//!   even when the limit is exhausted, as GitHub's does (it does not count
//!   against the limit)
//!
//! plus `ETag`/`If-None-Match` (304), the `x-ratelimit-*` headers on every API
//! answer, an exhausted rate limit on demand (403 + remaining 0 + reset), and
//! a token it refuses on demand (`401 Bad credentials` on every API call that
//! carries it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Locks the state, whether or not a panicking test poisoned it.
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An asset to publish.
#[derive(Clone)]
pub struct AssetSpec {
    /// The file name.
    pub name: String,
    /// The bytes served for it.
    pub bytes: Vec<u8>,
    /// The `digest` field: `Some("sha256:…")`, or `None` for `null` (older releases).
    pub digest: Option<String>,
}

impl AssetSpec {
    /// An asset whose `digest` is its real sha256.
    pub fn with_digest(name: &str, bytes: Vec<u8>) -> Self {
        let digest = Some(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))));
        AssetSpec {
            name: name.to_owned(),
            bytes,
            digest,
        }
    }
    /// An asset with `"digest": null`.
    pub fn without_digest(name: &str, bytes: Vec<u8>) -> Self {
        AssetSpec {
            name: name.to_owned(),
            bytes,
            digest: None,
        }
    }
}

struct Rel {
    id: u64,
    owner: String,
    repo: String,
    tag: String,
    prerelease: bool,
    draft: bool,
    assets: Vec<(u64, AssetSpec)>,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The path and query string.
    pub path_and_query: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    releases: Vec<Rel>,
    next_id: u64,
    no_latest: bool,
    rate_limit_reset: Option<u64>,
    secondary_limit: Option<String>,
    refused_token: Option<String>,
    redirect_assets_to: Option<String>,
    seen: Vec<Seen>,
}

/// The server; see the [module](self) documentation.
pub struct FakeGitHub {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    /// Binds a loopback port and serves on the current runtime, no releases yet.
    pub async fn start() -> FakeGitHub {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let state = Arc::new(Mutex::new(State {
            next_id: 100,
            ..State::default()
        }));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, Infallible>(handle(&st, addr, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        FakeGitHub { addr, state, task }
    }

    /// The API base URL (what `GITHUB_API_URL` would be).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Publishes a release (the most recent one added is `latest`).
    pub fn release(
        &self,
        owner: &str,
        repo: &str,
        tag: &str,
        prerelease: bool,
        assets: Vec<AssetSpec>,
    ) {
        let mut s = lock(&self.state);
        s.next_id += 1;
        let id = s.next_id;
        let assets = assets
            .into_iter()
            .map(|a| {
                s.next_id += 1;
                (s.next_id, a)
            })
            .collect();
        s.releases.push(Rel {
            id,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            tag: tag.to_owned(),
            prerelease,
            draft: false,
            assets,
        });
    }

    /// A draft (only visible to the repo's owner on GitHub; listed here to check it is skipped).
    pub fn draft(&self, owner: &str, repo: &str, tag: &str) {
        self.release(owner, repo, tag, false, vec![]);
        if let Some(r) = lock(&self.state).releases.last_mut() {
            r.draft = true;
        }
    }

    /// `releases/latest` answers 404 (only pre-releases, or none marked latest).
    pub fn no_latest(&self) {
        lock(&self.state).no_latest = true;
    }

    /// Every API request carrying `token` (as `Bearer`) answers `401 Bad credentials`.
    pub fn refuse_token(&self, token: &str) {
        lock(&self.state).refused_token = Some(token.to_owned());
    }

    /// Every API request answers 403 with an exhausted limit resetting at `reset` (unix seconds).
    pub fn exhaust_rate_limit(&self, reset: u64) {
        lock(&self.state).rate_limit_reset = Some(reset);
    }

    /// Every API request answers 429 with `Retry-After: {value}` (a secondary
    /// limit: seconds or an HTTP date), without `x-ratelimit-remaining: 0`.
    pub fn secondary_limit(&self, value: &str) {
        lock(&self.state).secondary_limit = Some(value.to_owned());
    }

    /// Asset downloads redirect to `base` + `/download/…` instead of this server.
    pub fn redirect_assets_to(&self, base: &str) {
        lock(&self.state).redirect_assets_to = Some(base.to_owned());
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path_and_query.starts_with(prefix))
            .count()
    }

    /// Requests answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.seen().iter().filter(|s| s.status == status).count()
    }
}

fn handle(st: &Mutex<State>, addr: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut s = lock(st);
    let pq = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let resp = route(&s, addr, req, &pq);
    s.seen.push(Seen {
        path_and_query: pq,
        headers: req.headers().clone(),
        status: resp.status().as_u16(),
    });
    resp
}

fn route(s: &State, addr: SocketAddr, req: &Request<Incoming>, pq: &str) -> Response<Full<Bytes>> {
    let base = format!("http://{addr}");
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    if let ["download", id, _name] = segs.as_slice() {
        let id: u64 = id.parse().unwrap_or(0);
        for r in &s.releases {
            for (aid, a) in &r.assets {
                if *aid == id {
                    return Response::builder()
                        .status(200)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_LENGTH, a.bytes.len())
                        .body(Full::new(Bytes::from(a.bytes.clone())))
                        .expect("a valid response");
                }
            }
        }
        return plain(404, "Not Found");
    }

    if let Some(refused) = &s.refused_token {
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent == Some(format!("Bearer {refused}").as_str()) {
            return json_response(
                401,
                &json!({
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401"
                }),
            );
        }
    }

    if path == "/rate_limit" {
        let (remaining, reset) = match s.rate_limit_reset {
            Some(reset) => (0, reset),
            None => (59, 4_102_444_800),
        };
        let used = 60 - remaining;
        let core = json!({ "limit": 60, "remaining": remaining, "reset": reset, "used": used, "resource": "core" });
        return json_response(
            200,
            &json!({
                "resources": {
                    "core": core,
                    "search": { "limit": 10, "remaining": 10, "reset": reset, "used": 0, "resource": "search" },
                    "graphql": { "limit": 0, "remaining": 0, "reset": reset, "used": 0, "resource": "graphql" }
                },
                "rate": core
            }),
        );
    }

    if let Some(reset) = s.rate_limit_reset {
        let body = json!({
            "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)",
            "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"
        });
        let mut r = json_response(403, &body);
        let h = r.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from_static("60"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        h.insert("x-ratelimit-used", HeaderValue::from_static("60"));
        h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
        return r;
    }

    if let Some(value) = &s.secondary_limit {
        let body = json!({
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
        });
        let mut r = json_response(429, &body);
        r.headers_mut().insert(
            header::RETRY_AFTER,
            value.parse().expect("a Retry-After value"),
        );
        return r;
    }

    let resp = match segs.as_slice() {
        ["repos", owner, repo, "releases", "latest"] => {
            let latest = s
                .releases
                .iter()
                .rev()
                .find(|r| &r.owner == owner && &r.repo == repo && !r.draft && !r.prerelease);
            match latest {
                Some(r) if !s.no_latest => json_response(200, &release_json(&base, r)),
                _ => not_found(
                    "https://docs.github.com/rest/releases/releases#get-the-latest-release",
                ),
            }
        }
        ["repos", owner, repo, "releases", "tags", tag] => {
            match s
                .releases
                .iter()
                .find(|r| &r.owner == owner && &r.repo == repo && &r.tag == tag)
            {
                Some(r) => json_response(200, &release_json(&base, r)),
                None => not_found(
                    "https://docs.github.com/rest/releases/releases#get-a-release-by-tag-name",
                ),
            }
        }
        ["repos", owner, repo, "releases", "assets", id] => {
            let id: u64 = id.parse().unwrap_or(0);
            let found = s
                .releases
                .iter()
                .filter(|r| &r.owner == owner && &r.repo == repo)
                .find_map(|r| {
                    r.assets
                        .iter()
                        .find(|(aid, _)| *aid == id)
                        .map(|(aid, a)| (r, *aid, a))
                });
            let Some((r, aid, a)) = found else {
                return not_found(
                    "https://docs.github.com/rest/releases/assets#get-a-release-asset",
                );
            };
            let wants_bytes = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/octet-stream"));
            if wants_bytes {
                let target = s.redirect_assets_to.clone().unwrap_or_else(|| base.clone());
                // GitHub: 302 to a signed, short-lived URL on objects.githubusercontent.com.
                let location = format!(
                    "{target}/download/{aid}/{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=300&response-content-disposition=attachment",
                    a.name
                );
                Response::builder()
                    .status(302)
                    .header(header::LOCATION, location)
                    .header(header::CONTENT_LENGTH, 0)
                    .body(Full::new(Bytes::new()))
                    .expect("a valid response")
            } else {
                json_response(200, &asset_json(&base, r, aid, a))
            }
        }
        ["repos", owner, repo, "releases"] => {
            let mut all: Vec<&Rel> = s
                .releases
                .iter()
                .filter(|r| &r.owner == owner && &r.repo == repo)
                .collect();
            if all.is_empty() {
                return not_found("https://docs.github.com/rest/releases/releases#list-releases");
            }
            all.reverse();
            let param = |k: &str| {
                query.split('&').find_map(|kv| {
                    kv.strip_prefix(&format!("{k}="))
                        .and_then(|v| v.parse::<usize>().ok())
                })
            };
            let per_page = param("per_page").unwrap_or(30).min(100);
            let page = param("page").unwrap_or(1).max(1);
            let items: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|r| release_json(&base, r))
                .collect();
            let mut resp = json_response(200, &Value::Array(items));
            if page * per_page < all.len() {
                let link = format!(
                    "<{base}/repos/{owner}/{repo}/releases?per_page={per_page}&page={}>; rel=\"next\"",
                    page + 1
                );
                resp.headers_mut()
                    .insert(header::LINK, link.parse().expect("a Link value"));
            }
            resp
        }
        _ => not_found("https://docs.github.com/rest"),
    };
    let _ = pq;
    with_api_headers(req, resp)
}

/// ETag / If-None-Match and the rate-limit headers GitHub puts on every API answer.
fn with_api_headers(req: &Request<Incoming>, resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, body) = resp.into_parts();
    let h = &mut parts.headers;
    h.insert("x-ratelimit-limit", HeaderValue::from_static("60"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("59"));
    h.insert("x-ratelimit-reset", HeaderValue::from_static("4102444800"));
    h.insert("x-ratelimit-used", HeaderValue::from_static("1"));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    h.insert(
        "x-github-api-version-selected",
        HeaderValue::from_static("2022-11-28"),
    );
    let etag = h
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let matches = etag.is_some_and(|etag| {
        req.headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag)
    });
    if parts.status == StatusCode::OK && matches {
        parts.status = StatusCode::NOT_MODIFIED;
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_TYPE);
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    Response::from_parts(parts, body)
}

fn json_response(status: u16, v: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).expect("JSON");
    let etag = format!("W/\"{}\"", hex::encode(Sha256::digest(&body)));
    Response::builder()
        .status(status)
        .header(header::ETAG, etag)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn not_found(doc: &str) -> Response<Full<Bytes>> {
    json_response(
        404,
        &json!({"message": "Not Found", "documentation_url": doc, "status": "404"}),
    )
}

fn plain(status: u16, text: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(text.to_owned())))
        .expect("a valid response")
}

fn user_json(base: &str, login: &str, id: u64) -> Value {
    let web = "https://github.com";
    json!({
        "login": login,
        "id": id,
        "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": format!("{base}/users/{login}"),
        "html_url": format!("{web}/{login}"),
        "followers_url": format!("{base}/users/{login}/followers"),
        "following_url": format!("{base}/users/{login}/following{{/other_user}}"),
        "gists_url": format!("{base}/users/{login}/gists{{/gist_id}}"),
        "starred_url": format!("{base}/users/{login}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{base}/users/{login}/subscriptions"),
        "organizations_url": format!("{base}/users/{login}/orgs"),
        "repos_url": format!("{base}/users/{login}/repos"),
        "events_url": format!("{base}/users/{login}/events{{/privacy}}"),
        "received_events_url": format!("{base}/users/{login}/received_events"),
        "type": "User",
        "user_view_type": "public",
        "site_admin": false
    })
}

fn asset_json(base: &str, r: &Rel, id: u64, a: &AssetSpec) -> Value {
    let (o, repo) = (&r.owner, &r.repo);
    json!({
        "url": format!("{base}/repos/{o}/{repo}/releases/assets/{id}"),
        "id": id,
        "node_id": format!("RA_kwDOAbCdEf4A{id}"),
        "name": a.name,
        "label": "",
        "uploader": user_json(base, "release-bot", 41898282),
        "content_type": if a.name.ends_with(".gz") || a.name.ends_with(".tgz") { "application/gzip" } else { "application/octet-stream" },
        "state": "uploaded",
        "size": a.bytes.len(),
        "digest": a.digest,
        "download_count": 7,
        "created_at": "2025-06-02T10:00:00Z",
        "updated_at": "2025-06-02T10:00:01Z",
        "browser_download_url": format!("{base}/download/{id}/{}", a.name)
    })
}

fn release_json(base: &str, r: &Rel) -> Value {
    let (o, repo, id, tag) = (&r.owner, &r.repo, r.id, &r.tag);
    let web = format!("https://github.com/{o}/{repo}");
    json!({
        "url": format!("{base}/repos/{o}/{repo}/releases/{id}"),
        "assets_url": format!("{base}/repos/{o}/{repo}/releases/{id}/assets"),
        "upload_url": format!("https://uploads.github.com/repos/{o}/{repo}/releases/{id}/assets{{?name,label}}"),
        "html_url": format!("{web}/releases/tag/{tag}"),
        "id": id,
        "author": user_json(base, "octocat", 583231),
        "node_id": format!("RE_kwDOAbCdEf4A{id}"),
        "tag_name": tag,
        "target_commitish": "main",
        "name": format!("{repo} {tag}"),
        "draft": r.draft,
        "immutable": false,
        "prerelease": r.prerelease,
        "created_at": "2025-06-02T09:59:00Z",
        "updated_at": "2025-06-02T10:00:02Z",
        "published_at": if r.draft { Value::Null } else { json!("2025-06-02T10:00:02Z") },
        "assets": r.assets.iter().map(|(aid, a)| asset_json(base, r, *aid, a)).collect::<Vec<_>>(),
        "tarball_url": format!("{base}/repos/{o}/{repo}/tarball/{tag}"),
        "zipball_url": format!("{base}/repos/{o}/{repo}/zipball/{tag}"),
        "body": "## What's Changed\n* Release by @octocat"
    })
}
