use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_ref::semver::Version;
use agent_ref::{AgentHome, AgentRef, Platform, RefError, VersionSpec};
use agent_store::{AgentStore, Expected, Installed, Installer, Sha256Digest, StoreError};
use agent_store_transport::BodyReader;
use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use octocrab::models::repos::{Asset, Release};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use crate::api::{Api, MAX_SMALL_BODY, read_small};
use crate::archive::{Limits, extract_binary};
use crate::cache::{AnswerCache, create_private_dir_all};
use crate::checksum::{find_in_sums, is_checksums_file, parse_asset_digest};
use crate::{GithubError, STORE_NAME};

/// The default API endpoint.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// How long `latest` and release listings are cached by default (one hour).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Default cap on a downloaded archive and on its extracted size (1 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default cap on the number of entries in an archive.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Default bound on connecting, on receiving headers, and on a stalled body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Release listings are read 100 at a time, at most this many pages.
const MAX_PAGES: u32 = 10;

mod pull;

/// Agents published as GitHub release assets.
///
/// Owner = publisher with `.` → `-` (`codefly.dev` → `codefly-dev`), repository
/// `{prefix}-{name}` (the kind's prefix: `service-echo`, `toolbox-grep`), tag
/// `v{version}` (or the bare version), asset
/// `{prefix}-{name}_{version}_{os}_{arch}.tar.gz` (also `x86_64`/`aarch64` and
/// `.tgz`) holding `{prefix}-{name}`. See the crate docs for verification and caching.
#[derive(Debug, Clone)]
pub struct GithubStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: Api,
    cache_dir: PathBuf,
    ttl: Duration,
    refresh: bool,
    require_checksum: bool,
    max_download: u64,
    limits: Limits,
}

/// Builds a [`GithubStore`]; every setting has a default. `Debug` says
/// whether a token is set, never what it is.
#[derive(Clone)]
pub struct GithubStoreBuilder {
    api_url: String,
    token: Option<String>,
    cache_dir: Option<PathBuf>,
    ttl: Duration,
    refresh: bool,
    require_checksum: bool,
    max_download: u64,
    max_extracted: u64,
    max_entries: u64,
    timeout: Duration,
}

impl std::fmt::Debug for GithubStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubStoreBuilder")
            .field("api_url", &self.api_url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("cache_dir", &self.cache_dir)
            .field("ttl", &self.ttl)
            .field("refresh", &self.refresh)
            .field("require_checksum", &self.require_checksum)
            .field("max_download", &self.max_download)
            .field("max_extracted", &self.max_extracted)
            .field("max_entries", &self.max_entries)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for GithubStoreBuilder {
    fn default() -> Self {
        GithubStoreBuilder {
            api_url: DEFAULT_API_URL.to_owned(),
            token: None,
            cache_dir: None,
            ttl: DEFAULT_TTL,
            refresh: false,
            require_checksum: false,
            max_download: DEFAULT_MAX_BYTES,
            max_extracted: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl GithubStoreBuilder {
    /// The API base URL (default [`DEFAULT_API_URL`]; GHES: `https://host/api/v3`).
    #[must_use]
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    /// A token sent as `Authorization: Bearer …` to the API host only.
    #[must_use]
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// Where API answers and download temp files live (default
    /// `$CODEFLY_HOME/cache/github`).
    #[must_use]
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// How long a cached `latest`/listing answer is used without asking
    /// (default one hour; zero always revalidates, cheaply, with the ETag).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Ignore the TTL: revalidate every cached answer (`agentctl resolve --refresh`).
    #[must_use]
    pub fn refresh(mut self, refresh: bool) -> Self {
        self.refresh = refresh;
        self
    }

    /// Refuse (`integrity`) releases that publish no checksum for the asset,
    /// instead of installing with a warning.
    #[must_use]
    pub fn require_checksum(mut self, require: bool) -> Self {
        self.require_checksum = require;
        self
    }

    /// Cap on the downloaded archive (default 1 GiB).
    #[must_use]
    pub fn max_download_bytes(mut self, max: u64) -> Self {
        self.max_download = max;
        self
    }

    /// Cap on the sizes the archive's entries claim, summed (default 1 GiB).
    #[must_use]
    pub fn max_extracted_bytes(mut self, max: u64) -> Self {
        self.max_extracted = max;
        self
    }

    /// Cap on the number of archive entries (default 10 000).
    #[must_use]
    pub fn max_entries(mut self, max: u64) -> Self {
        self.max_entries = max;
        self
    }

    /// Bound on connecting, on receiving headers and on a stalled body (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the store. Needs no runtime; makes no request.
    ///
    /// # Errors
    /// `store-unavailable` for a bad API URL or token, `io` when no cache
    /// directory is given and no home can be found.
    pub fn build(self) -> Result<GithubStore, StoreError> {
        let cache_dir = match self.cache_dir {
            Some(d) => d,
            None => default_cache_dir(&AgentHome::from_env()?),
        };
        let api = Api::new(&self.api_url, self.token.as_deref(), self.timeout)?;
        Ok(GithubStore {
            inner: Arc::new(Inner {
                api,
                cache_dir,
                ttl: self.ttl,
                refresh: self.refresh,
                require_checksum: self.require_checksum,
                max_download: self.max_download,
                limits: Limits {
                    max_total: self.max_extracted,
                    max_entries: self.max_entries,
                },
            }),
        })
    }
}

/// `{home}/cache/github`.
#[must_use]
pub fn default_cache_dir(home: &AgentHome) -> PathBuf {
    home.root().join("cache").join("github")
}

/// Owner and repository of an agent: `codefly.dev/echo` → `codefly-dev`,
/// `service-echo` (`toolbox-echo` for a toolbox: the kind's prefix).
#[must_use]
pub fn repo_of(agent: &AgentRef) -> (String, String) {
    (
        agent.publisher().replace('.', "-"),
        agent.kind().artifact_name(agent.name()),
    )
}

/// `artifact-missing` for a kind this store may not serve (provider,
/// solution: cache and Nix only; job: never loaded).
fn refuse_kind(agent: &AgentRef) -> Result<(), GithubError> {
    match agent.kind().refusal(STORE_NAME) {
        None => Ok(()),
        Some(why) => Err(GithubError::Missing(format!("{agent}: {why}"))),
    }
}

/// Asset names tried, in order: Go arch names first, then the aliases, `.tar.gz` before `.tgz`.
#[must_use]
pub fn asset_names(agent: &AgentRef, version: &Version, platform: &Platform) -> Vec<String> {
    let mut out = Vec::new();
    for arch in platform.arch_aliases() {
        for ext in ["tar.gz", "tgz"] {
            out.push(format!(
                "{}_{version}_{}_{arch}.{ext}",
                agent.kind().artifact_name(agent.name()),
                platform.os
            ));
        }
    }
    out
}

/// The version a tag names: exactly one leading `v` is stripped.
#[must_use]
pub fn tag_version(tag: &str) -> Option<Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    Version::parse(t).ok().filter(|v| v.build.is_empty())
}

impl GithubStore {
    /// A builder with every default.
    #[must_use]
    pub fn builder() -> GithubStoreBuilder {
        GithubStoreBuilder::default()
    }

    /// The store as the environment configures it: `GITHUB_API_URL` (default
    /// `https://api.github.com`), token from `GITHUB_TOKEN` or else `GH_TOKEN`,
    /// cache under `$CODEFLY_HOME/cache/github`. Always `Some`: GitHub needs no
    /// configuration.
    ///
    /// # Errors
    /// As [`GithubStoreBuilder::build`].
    pub fn from_env() -> Result<Option<GithubStore>, StoreError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut b = GithubStore::builder().token(var("GITHUB_TOKEN").or_else(|| var("GH_TOKEN")));
        if let Some(url) = var("GITHUB_API_URL") {
            b = b.api_url(url);
        }
        b.build().map(Some)
    }

    /// Where answers and temp files are kept.
    #[must_use]
    pub fn cache_dir(&self) -> &Path {
        &self.inner.cache_dir
    }
}

impl Inner {
    fn answers(&self, owner: &str, repo: &str) -> AnswerCache {
        let host = self.api.api_host().replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_",
        );
        AnswerCache::new(self.cache_dir.join(host).join(owner).join(repo))
    }

    /// `releases/latest`, as a version; `None` when there is none (404) or
    /// its tag is not semver.
    async fn latest(&self, owner: &str, repo: &str) -> Result<Option<Version>, GithubError> {
        let url = self
            .api
            .url(&format!("/repos/{owner}/{repo}/releases/latest"));
        let cache = self.answers(owner, repo);
        let Some(json) = self
            .api
            .get_json_cached(&cache, "latest", &url, self.ttl, self.refresh)
            .await?
        else {
            return Ok(None);
        };
        let release: Release = parse(&url, json)?;
        let v = tag_version(&release.tag_name).filter(|v| v.pre.is_empty() && !release.prerelease);
        if v.is_none() {
            tracing::debug!(tag = %release.tag_name, "latest release tag is not a plain semver version");
        }
        Ok(v)
    }

    /// Every published (non-draft) release with a semver tag, pre-releases
    /// included. `None` when the repository does not exist.
    async fn listed(&self, owner: &str, repo: &str) -> Result<Option<Vec<Version>>, GithubError> {
        let cache = self.answers(owner, repo);
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let url = self.api.url(&format!(
                "/repos/{owner}/{repo}/releases?per_page=100&page={page}"
            ));
            let key = format!("releases-{page}");
            let Some(json) = self
                .api
                .get_json_cached(&cache, &key, &url, self.ttl, self.refresh)
                .await?
            else {
                return Ok(if page == 1 { None } else { Some(out) });
            };
            // Read only the fields needed, so one odd release cannot hide the others.
            let items = json.as_array().ok_or_else(|| GithubError::BadResponse {
                url: url.clone(),
                message: "release listing is not an array".to_owned(),
            })?;
            for r in items {
                let draft = r
                    .get("draft")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                let Some(tag) = r.get("tag_name").and_then(serde_json::Value::as_str) else {
                    continue;
                };
                if draft {
                    continue;
                }
                let pre = r
                    .get("prerelease")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                if let Some(v) = tag_version(tag) {
                    // A release flagged pre-release but tagged like a
                    // release is not offered as one.
                    if pre && v.pre.is_empty() {
                        continue;
                    }
                    out.push(v);
                }
            }
            if items.len() < 100 {
                break;
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(Some(out))
    }

    /// The release of `version`: tag `v{version}`, else `{version}`.
    async fn release(
        &self,
        owner: &str,
        repo: &str,
        version: &Version,
    ) -> Result<(String, Release), GithubError> {
        for tag in [format!("v{version}"), version.to_string()] {
            let url = self
                .api
                .url(&format!("/repos/{owner}/{repo}/releases/tags/{tag}"));
            let (_, _, json) = self.api.get_json(&url, &HeaderMap::new()).await?;
            if let Some(json) = json {
                return Ok((tag, parse(&url, json)?));
            }
        }
        Err(GithubError::Missing(format!(
            "release v{version} (or {version}) in {owner}/{repo}"
        )))
    }

    /// The asset for `platform`; `release_name` (`{owner}/{repo}@{tag}`) is for the message.
    fn pick_asset<'r>(
        agent: &AgentRef,
        version: &Version,
        platform: &Platform,
        release_name: &str,
        release: &'r Release,
    ) -> Result<&'r Asset, GithubError> {
        let names = asset_names(agent, version, platform);
        for n in &names {
            if let Some(a) = release.assets.iter().find(|a| &a.name == n) {
                return Ok(a);
            }
        }
        let have: Vec<&str> = release.assets.iter().map(|a| a.name.as_str()).collect();
        Err(GithubError::Missing(format!(
            "asset {} in release {release_name} (it has: {})",
            names.first().map_or("", String::as_str),
            if have.is_empty() {
                "no assets".to_owned()
            } else {
                have.join(", ")
            }
        )))
    }

    /// A small asset of the release (checksums, signature), read whole.
    async fn small_asset(&self, release: &Release, f: &Asset) -> Result<Vec<u8>, GithubError> {
        let url = self
            .api
            .url(&format!("{}/releases/assets/{}", repo_path(release), f.id));
        let resp = self
            .api
            .get(&url, "application/octet-stream", &HeaderMap::new())
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = read_small(resp, &url, self.api.timeout, 64 * 1024)
                .await
                .unwrap_or_default();
            return Err(self.api.status_error(&url, status, &body));
        }
        read_small(resp, &url, self.api.timeout, MAX_SMALL_BODY).await
    }

    /// The minisign signature of `asset` (the tarball): the release asset
    /// `{asset}.minisig`, or `None` when the release has none.
    async fn signature(
        &self,
        release: &Release,
        asset: &Asset,
    ) -> Result<Option<String>, GithubError> {
        let name = format!("{}.minisig", asset.name);
        match release.assets.iter().find(|a| a.name == name) {
            Some(f) => {
                let body = self.small_asset(release, f).await?;
                Ok(Some(String::from_utf8_lossy(&body).into_owned()))
            }
            None => Ok(None),
        }
    }

    /// The published sha256 of `asset`: its `digest` field, else a
    /// checksums file of the release, else a `{asset}.sha256` sidecar.
    async fn published_digest(
        &self,
        release: &Release,
        asset: &Asset,
    ) -> Result<Option<(Sha256Digest, String)>, GithubError> {
        if let Some(d) = asset.digest.as_deref().and_then(parse_asset_digest) {
            return Ok(Some((d, "the asset's digest".to_owned())));
        }
        let sidecar = format!("{}.sha256", asset.name);
        let files = release
            .assets
            .iter()
            .filter(|a| is_checksums_file(&a.name) || a.name == sidecar);
        for f in files {
            let body = self.small_asset(release, f).await?;
            let text = String::from_utf8_lossy(&body);
            if let Some(d) = find_in_sums(&text, &asset.name, f.name == sidecar) {
                return Ok(Some((d, f.name.clone())));
            }
            tracing::debug!(file = %f.name, asset = %asset.name, "checksums file does not list the asset");
        }
        Ok(None)
    }
}

/// `/repos/{owner}/{repo}` from a release's API URL, so asset requests go
/// where the release came from (repository renames included).
fn repo_path(release: &Release) -> String {
    let path = release.url.path();
    match path.find("/repos/") {
        Some(i) => {
            let rest = &path[i..];
            let mut parts = rest.splitn(5, '/');
            let (_, r, o, n) = (parts.next(), parts.next(), parts.next(), parts.next());
            match (r, o, n) {
                (Some(r), Some(o), Some(n)) => format!("/{r}/{o}/{n}"),
                _ => path.to_owned(),
            }
        }
        None => path.to_owned(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    url: &str,
    json: serde_json::Value,
) -> Result<T, GithubError> {
    serde_json::from_value(json).map_err(|e| GithubError::BadResponse {
        url: url.to_owned(),
        message: format!("not a GitHub release object: {e}"),
    })
}

#[async_trait]
impl AgentStore for GithubStore {
    fn name(&self) -> &str {
        STORE_NAME
    }

    async fn probe(&self) -> agent_store::StoreProbe {
        crate::probe::probe(&self.inner.api).await
    }

    async fn available(&self, agent: &AgentRef, platform: &Platform) -> Result<bool, StoreError> {
        let i = &self.inner;
        let version = agent
            .concrete_version()
            .ok_or_else(|| RefError::NotConcrete(agent.identifier()))?;
        if agent.kind().refusal(STORE_NAME).is_some() {
            return Ok(false);
        }
        let (owner, repo) = repo_of(agent);
        let span = tracing::debug_span!("github.available", agent = %agent);
        async {
            let (tag, release) = match i.release(&owner, &repo, version).await {
                Ok(r) => r,
                Err(GithubError::Missing(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            match Inner::pick_asset(
                agent,
                version,
                platform,
                &format!("{owner}/{repo}@{tag}"),
                &release,
            ) {
                Ok(_) => Ok(true),
                Err(GithubError::Missing(_)) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        .instrument(span)
        .await
    }

    /// For `latest`: GitHub's `releases/latest`, or, when there is none
    /// (404) or its tag is not semver, the highest non-pre-release of the
    /// listing. For anything else: every published semver release,
    /// pre-releases included; [`VersionSpec`] decides which match.
    async fn versions(
        &self,
        agent: &AgentRef,
        _platform: &Platform,
    ) -> Result<Vec<Version>, StoreError> {
        let i = &self.inner;
        refuse_kind(agent)?;
        let (owner, repo) = repo_of(agent);
        let span = tracing::debug_span!("github.versions", agent = %agent);
        async {
            if matches!(agent.version_spec(), VersionSpec::Latest) {
                if let Some(v) = i.latest(&owner, &repo).await? {
                    return Ok(vec![v]);
                }
                let listed = i.listed(&owner, &repo).await?;
                let Some(all) = listed else {
                    return Err(GithubError::Missing(format!("repository {owner}/{repo}")).into());
                };
                return Ok(VersionSpec::Latest.pick(all.iter()).into_iter().collect());
            }
            match i.listed(&owner, &repo).await? {
                Some(all) => Ok(all),
                None => Err(GithubError::Missing(format!("repository {owner}/{repo}")).into()),
            }
        }
        .instrument(span)
        .await
    }

    async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let span = tracing::info_span!("github.pull", agent = %agent, platform = %platform);
        self.inner
            .pull(agent, platform, installer)
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::GithubStore;

    #[test]
    fn the_builders_debug_never_shows_the_token() {
        let b = GithubStore::builder().token(Some("ghp_do_not_print_me".into()));
        let shown = format!("{b:?}");
        assert!(!shown.contains("ghp_do_not_print_me"), "{shown}");
        assert!(shown.contains("token: Some(\"<set>\")"), "{shown}");
        let none = format!("{:?}", GithubStore::builder());
        assert!(none.contains("token: None"), "{none}");
    }
}
