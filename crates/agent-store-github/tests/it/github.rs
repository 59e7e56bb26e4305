//! `GithubStore` against `FakeGitHub`, the stand-in for api.github.com
//! (`agent_testkit::github`): real HTTP on 127.0.0.1, real installs into
//! a temp `CODEFLY_HOME`.

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_ref::semver::Version;
use agent_ref::{AgentHome, AgentRef, ErrorKind, Platform, VersionSpec};
use agent_store::{AgentStore, Installer, StoreError};
use agent_store_github::{GithubStore, GithubStoreBuilder};
use agent_testkit::github::{AssetSpec, FakeGitHub};
use agent_testkit::logs::LogCapture;
use sha2::{Digest, Sha256};
use support::archives::{Entry, tgz};

const OWNER: &str = "codefly-dev";
const REPO: &str = "service-echo";
const BIN: &[u8] = b"#!/bin/sh\necho 'I am service-echo'\n";

struct Env {
    gh: FakeGitHub,
    home: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        Env {
            gh: FakeGitHub::start().await,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn agent_home(&self) -> AgentHome {
        AgentHome::new(self.home.path())
    }

    fn builder(&self) -> GithubStoreBuilder {
        GithubStore::builder()
            .api_url(self.gh.url())
            .cache_dir(self.home.path().join("cache").join("github"))
            .timeout(Duration::from_secs(20))
    }

    fn store(&self) -> GithubStore {
        self.builder().build().unwrap()
    }

    fn installer(&self) -> Installer {
        Installer::new(self.agent_home())
    }

    async fn pull(
        &self,
        store: &GithubStore,
        version: &str,
    ) -> Result<agent_store::Installed, StoreError> {
        store
            .pull(&agent(version), &linux_amd64(), &self.installer())
            .await
    }

    /// The user-visible guarantee of every failure: nothing at the cache path.
    fn assert_not_installed(&self, version: &str) {
        let path = self.agent_home().binary_path(&agent(version)).unwrap();
        assert!(!path.exists(), "{} must not exist", path.display());
        // And nothing left in the download temp area either.
        let tmp = self.home.path().join("cache/github/tmp");
        if tmp.exists() {
            assert_eq!(
                std::fs::read_dir(&tmp).unwrap().count(),
                0,
                "temp dirs left in {}",
                tmp.display()
            );
        }
    }
}

fn agent(version: &str) -> AgentRef {
    format!("codefly.dev/echo:{version}").parse().unwrap()
}

fn linux_amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn asset(version: &str) -> String {
    format!("service-echo_{version}_linux_amd64.tar.gz")
}

fn good_archive() -> Vec<u8> {
    tgz(&[
        Entry::File("README.md", b"docs"),
        Entry::File("service-echo", BIN),
    ])
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_kind(e: &StoreError, kind: ErrorKind) {
    assert_eq!(e.kind(), kind, "wrong kind for: {e}");
}

// ---------------------------------------------------------------- versions

#[tokio::test]
async fn latest_comes_from_releases_latest_with_one_v_stripped() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.0.0", false, vec![]);
    env.gh.release(OWNER, REPO, "v1.2.0", false, vec![]);
    let got = env
        .store()
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    assert_eq!(got, vec![v("1.2.0")]);
    assert_eq!(
        env.gh
            .count("/repos/codefly-dev/service-echo/releases/latest"),
        1
    );
    assert_eq!(
        env.gh.count("/repos/codefly-dev/service-echo/releases?"),
        0,
        "no listing needed"
    );
}

#[tokio::test]
async fn latest_falls_back_to_the_highest_non_prerelease_of_the_listing() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.10.0", false, vec![]);
    env.gh.release(OWNER, REPO, "v1.2.0", false, vec![]);
    env.gh.release(OWNER, REPO, "v2.0.0-rc.1", true, vec![]);
    env.gh.release(OWNER, REPO, "vv3.0.0", false, vec![]); // two v's: not semver after stripping one
    env.gh.release(OWNER, REPO, "nightly", false, vec![]);
    env.gh.draft(OWNER, REPO, "v9.0.0");
    env.gh.no_latest();
    let store = env.store();
    let got = store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    assert_eq!(got, vec![v("1.10.0")]);
    assert_eq!(
        env.gh
            .count("/repos/codefly-dev/service-echo/releases/latest"),
        1
    );
    assert_eq!(
        env.gh
            .count("/repos/codefly-dev/service-echo/releases?per_page=100&page=1"),
        1
    );
}

#[tokio::test]
async fn requirements_see_prereleases_only_when_they_ask() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.2.0", false, vec![]);
    env.gh.release(OWNER, REPO, "v1.4.1", false, vec![]);
    env.gh.release(OWNER, REPO, "v2.0.0-rc.1", true, vec![]);
    env.gh.draft(OWNER, REPO, "v2.0.0");
    let store = env.store();

    let caret: AgentRef = "codefly.dev/echo:^1.2".parse().unwrap();
    let all = store.versions(&caret, &linux_amd64()).await.unwrap();
    assert_eq!(
        all,
        vec![v("1.2.0"), v("1.4.1"), v("2.0.0-rc.1")],
        "drafts are never listed"
    );
    assert_eq!(caret.version_spec().pick(all.iter()), Some(v("1.4.1")));

    let pre: AgentRef = "codefly.dev/echo:>=2.0.0-rc.1".parse().unwrap();
    assert_eq!(pre.version_spec().pick(all.iter()), Some(v("2.0.0-rc.1")));
    let any2: AgentRef = "codefly.dev/echo:>=2".parse().unwrap();
    assert_eq!(
        any2.version_spec().pick(all.iter()),
        None,
        "no pre-release unless asked for"
    );
    assert_eq!(VersionSpec::Latest.pick(all.iter()), Some(v("1.4.1")));
}

#[tokio::test]
async fn unknown_repository_is_artifact_missing() {
    let env = Env::new().await;
    let e = env
        .store()
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap_err();
    assert_kind(&e, ErrorKind::ArtifactMissing);
    assert!(e.to_string().contains("codefly-dev/service-echo"), "{e}");
}

#[tokio::test]
async fn cached_latest_is_not_asked_again_even_by_a_new_store() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.2.0", false, vec![]);
    for _ in 0..3 {
        let got = env
            .store()
            .versions(&agent("latest"), &linux_amd64())
            .await
            .unwrap();
        assert_eq!(got, vec![v("1.2.0")]);
    }
    assert_eq!(
        env.gh.count("/repos/"),
        1,
        "one request, then the disk cache"
    );
    let file = env
        .home
        .path()
        .join("cache/github/127.0.0.1/codefly-dev/service-echo/latest.json");
    assert!(file.is_file(), "cache file {} missing", file.display());

    // --refresh: asks again, conditionally; GitHub says 304, the answer is reused.
    let got = env
        .builder()
        .refresh(true)
        .build()
        .unwrap()
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    assert_eq!(got, vec![v("1.2.0")]);
    assert_eq!(env.gh.count("/repos/"), 2);
    assert_eq!(env.gh.count_status(304), 1);
}

#[tokio::test]
async fn stale_answers_are_revalidated_with_the_etag() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.2.0", false, vec![]);
    let store = env.builder().ttl(Duration::ZERO).build().unwrap();
    store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    let got = store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    assert_eq!(got, vec![v("1.2.0")]);
    let seen = env.gh.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].headers.get("if-none-match").is_none());
    let etag = seen[1]
        .headers
        .get("if-none-match")
        .expect("second request is conditional");
    assert!(etag.to_str().unwrap().starts_with("W/\""));
    assert_eq!(seen[1].status, 304);

    // A new release changes the answer: 200, and the new latest is seen.
    env.gh.release(OWNER, REPO, "v1.3.0", false, vec![]);
    let got = store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    assert_eq!(got, vec![v("1.3.0")]);
    assert_eq!(env.gh.seen().last().unwrap().status, 200);
}

#[tokio::test]
async fn token_goes_to_the_api_as_authorization_and_nowhere_without_one() {
    let env = Env::new().await;
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![AssetSpec::with_digest(&asset("1.0.0"), good_archive())],
    );
    let store = env
        .builder()
        .token(Some("ghp_testtoken123".to_owned()))
        .build()
        .unwrap();
    store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    env.pull(&store, "1.0.0").await.unwrap();
    let seen = env.gh.seen();
    assert!(seen.len() >= 3);
    for s in seen
        .iter()
        .filter(|s| s.path_and_query.starts_with("/repos/"))
    {
        let auth: Vec<_> = s.headers.get_all("authorization").iter().collect();
        assert_eq!(
            auth.len(),
            1,
            "exactly one Authorization on {}",
            s.path_and_query
        );
        assert_eq!(auth[0], "Bearer ghp_testtoken123");
        assert!(
            s.headers.get("user-agent").is_some(),
            "GitHub requires a User-Agent"
        );
        assert_eq!(s.headers.get("x-github-api-version").unwrap(), "2022-11-28");
    }

    let anon = Env::new().await;
    anon.gh.release(OWNER, REPO, "v1.0.0", false, vec![]);
    anon.store()
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    assert!(
        anon.gh
            .seen()
            .iter()
            .all(|s| s.headers.get("authorization").is_none())
    );
}

// ---------------------------------------------------------------- rate limits, outages

#[tokio::test]
async fn rate_limit_is_store_unavailable_saying_when_it_resets_and_is_not_retried() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.0.0", false, vec![]);
    let reset = unix_now() + 42 * 60 + 30;
    env.gh.exhaust_rate_limit(reset);
    let store = env.store();
    let e = store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap_err();
    assert_kind(&e, ErrorKind::StoreUnavailable);
    let msg = e.to_string();
    let when = humantime_rfc3339(reset);
    assert!(msg.contains(&when), "reset time {when} missing: {msg}");
    assert!(msg.contains("in 43 minutes"), "{msg}");
    assert!(msg.contains("GITHUB_TOKEN"), "{msg}");
    match &e {
        StoreError::Unavailable {
            retry_after: Some(ra),
            ..
        } => {
            assert!(*ra > Duration::from_secs(40 * 60) && *ra <= Duration::from_secs(43 * 60));
        }
        other => panic!("expected Unavailable with retry_after, got {other:?}"),
    }
    assert_eq!(env.gh.count("/repos/"), 1, "one request, no retry loop");

    // Until the reset, the store does not even ask.
    let e = env.pull(&store, "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::StoreUnavailable);
    assert!(e.to_string().contains(&when));
    assert_eq!(env.gh.count("/repos/"), 1);
    env.assert_not_installed("1.0.0");
}

#[tokio::test]
async fn secondary_limit_with_retry_after_as_an_http_date_is_honoured() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.0.0", false, vec![]);
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(20 * 60));
    env.gh.secondary_limit(&later);
    let store = env.store();
    let e = store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap_err();
    assert_kind(&e, ErrorKind::StoreUnavailable);
    match &e {
        StoreError::Unavailable {
            retry_after: Some(ra),
            ..
        } => assert!(
            *ra > Duration::from_secs(18 * 60) && *ra <= Duration::from_secs(20 * 60),
            "{ra:?}"
        ),
        other => panic!("expected Unavailable with the date's retry_after, got {other:?}"),
    }
    assert!(e.to_string().contains("in 20 minutes"), "{e}");
    assert_eq!(env.gh.count("/repos/"), 1, "one request, no retry loop");
    // Until then the store does not even ask.
    let _ = env.pull(&store, "1.0.0").await.unwrap_err();
    assert_eq!(env.gh.count("/repos/"), 1);
}

#[tokio::test]
async fn rate_limited_but_cached_answers_still_resolve() {
    let env = Env::new().await;
    env.gh.release(OWNER, REPO, "v1.0.0", false, vec![]);
    env.builder()
        .build()
        .unwrap()
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    env.gh.exhaust_rate_limit(unix_now() + 600);
    let store = env.builder().refresh(true).build().unwrap();
    let got = store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![v("1.0.0")],
        "stale answer used when GitHub cannot answer"
    );
}

#[tokio::test]
async fn server_down_is_store_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = tempfile::tempdir().unwrap();
    let store = GithubStore::builder()
        .api_url(format!("http://127.0.0.1:{port}"))
        .cache_dir(home.path().join("cache/github"))
        .build()
        .unwrap();
    let e = store
        .versions(&agent("latest"), &linux_amd64())
        .await
        .unwrap_err();
    assert_kind(&e, ErrorKind::StoreUnavailable);
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    let installer = Installer::new(AgentHome::new(home.path()));
    let e = store
        .pull(&agent("1.0.0"), &linux_amd64(), &installer)
        .await
        .unwrap_err();
    assert_kind(&e, ErrorKind::StoreUnavailable);
    assert!(
        !AgentHome::new(home.path())
            .binary_path(&agent("1.0.0"))
            .unwrap()
            .exists()
    );
}

// ---------------------------------------------------------------- pulls

#[tokio::test]
async fn pull_with_asset_digest_installs_the_binary() {
    let env = Env::new().await;
    env.gh.release(
        OWNER,
        REPO,
        "v1.2.3",
        false,
        vec![AssetSpec::with_digest(&asset("1.2.3"), good_archive())],
    );
    let store = env.store();
    assert!(
        store
            .available(&agent("1.2.3"), &linux_amd64())
            .await
            .unwrap()
    );
    let got = env.pull(&store, "1.2.3").await.unwrap();
    let path = env.agent_home().binary_path(&agent("1.2.3")).unwrap();
    assert_eq!(got.path, path);
    assert_eq!(std::fs::read(&path).unwrap(), BIN);
    assert_eq!(got.sha256, sha(BIN));
    assert_eq!(got.source, "github:codefly-dev/service-echo@v1.2.3");
    // The API asset URL answered 302, the download came from the redirect target.
    assert_eq!(env.gh.count_status(302), 1);
    assert_eq!(env.gh.count("/download/"), 1);
    env.assert_not_installed_tmp_only();
}

impl Env {
    fn assert_not_installed_tmp_only(&self) {
        let tmp = self.home.path().join("cache/github/tmp");
        if tmp.exists() {
            assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        }
    }
}

#[tokio::test]
async fn bare_tag_without_v_and_arch_alias_tgz_are_found() {
    let env = Env::new().await;
    let archive = tgz(&[
        Entry::Dir("service-echo_1.3.0/"),
        Entry::File("service-echo_1.3.0/service-echo", BIN),
    ]);
    env.gh.release(
        OWNER,
        REPO,
        "1.3.0",
        false,
        vec![AssetSpec::with_digest(
            "service-echo_1.3.0_linux_x86_64.tgz",
            archive,
        )],
    );
    let store = env.store();
    let got = env.pull(&store, "1.3.0").await.unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), BIN);
    assert_eq!(got.source, "github:codefly-dev/service-echo@1.3.0");
    assert_eq!(
        env.gh
            .count("/repos/codefly-dev/service-echo/releases/tags/v1.3.0"),
        1
    );
    assert_eq!(
        env.gh
            .count("/repos/codefly-dev/service-echo/releases/tags/1.3.0"),
        1
    );
}

#[tokio::test]
async fn wrong_asset_digest_is_integrity_and_installs_nothing() {
    let env = Env::new().await;
    let mut a = AssetSpec::with_digest(&asset("1.0.0"), good_archive());
    a.digest = Some(format!("sha256:{}", sha(b"something else")));
    env.gh.release(OWNER, REPO, "v1.0.0", false, vec![a]);
    let e = env.pull(&env.store(), "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::Integrity);
    assert!(e.to_string().contains("does not match"), "{e}");
    env.assert_not_installed("1.0.0");
}

#[tokio::test]
async fn sha256sums_asset_verifies_when_there_is_no_digest() {
    let env = Env::new().await;
    let archive = good_archive();
    let sums = format!(
        "{}  other_file.tar.gz\n{}  {}\n",
        sha(b"x"),
        sha(&archive),
        asset("1.0.0")
    );
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![
            AssetSpec::without_digest(&asset("1.0.0"), archive),
            AssetSpec::without_digest("SHA256SUMS", sums.into_bytes()),
        ],
    );
    let got = env
        .pull(
            &env.builder().require_checksum(true).build().unwrap(),
            "1.0.0",
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), BIN);
    assert_eq!(
        env.gh.count_status(302),
        2,
        "SHA256SUMS and the archive both downloaded"
    );
}

#[tokio::test]
async fn goreleaser_checksums_with_a_wrong_line_is_integrity() {
    let env = Env::new().await;
    let sums = format!("{} *{}\n", sha(b"tampered"), asset("1.0.0"));
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![
            AssetSpec::without_digest(&asset("1.0.0"), good_archive()),
            AssetSpec::without_digest("service-echo_1.0.0_checksums.txt", sums.into_bytes()),
        ],
    );
    let e = env.pull(&env.store(), "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::Integrity);
    assert!(
        e.to_string().contains("service-echo_1.0.0_checksums.txt"),
        "{e}"
    );
    env.assert_not_installed("1.0.0");
}

#[tokio::test]
async fn no_checksum_installs_with_a_warning_or_is_refused_when_required() {
    let env = Env::new().await;
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![AssetSpec::without_digest(&asset("1.0.0"), good_archive())],
    );
    let e = env
        .pull(
            &env.builder().require_checksum(true).build().unwrap(),
            "1.0.0",
        )
        .await
        .unwrap_err();
    assert_kind(&e, ErrorKind::Integrity);
    assert!(e.to_string().contains("no sha256"), "{e}");
    env.assert_not_installed("1.0.0");

    let logs = LogCapture::default();
    let got = {
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_ansi(false)
                .finish(),
        );
        env.pull(&env.store(), "1.0.0").await.unwrap()
    };
    assert_eq!(std::fs::read(&got.path).unwrap(), BIN);
    let text = logs.text();
    assert!(
        text.contains("WARN") && text.contains("UNVERIFIED"),
        "no warning logged: {text}"
    );
}

#[tokio::test]
async fn missing_asset_and_missing_release_are_artifact_missing() {
    let env = Env::new().await;
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![AssetSpec::with_digest(
            "service-echo_1.0.0_darwin_arm64.tar.gz",
            good_archive(),
        )],
    );
    let store = env.store();
    assert!(
        !store
            .available(&agent("1.0.0"), &linux_amd64())
            .await
            .unwrap()
    );
    let e = env.pull(&store, "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::ArtifactMissing);
    let msg = e.to_string();
    assert!(
        msg.contains(&asset("1.0.0")) && msg.contains("darwin_arm64"),
        "{msg}"
    );
    env.assert_not_installed("1.0.0");

    let e = env.pull(&store, "9.9.9").await.unwrap_err();
    assert_kind(&e, ErrorKind::ArtifactMissing);
    assert!(e.to_string().contains("v9.9.9"), "{e}");
    env.assert_not_installed("9.9.9");
}

#[tokio::test]
async fn archive_without_the_binary_is_artifact_missing() {
    let env = Env::new().await;
    let archive = tgz(&[
        Entry::File("a/b/service-echo", BIN),
        Entry::File("other", b"x"),
    ]);
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![AssetSpec::with_digest(&asset("1.0.0"), archive)],
    );
    let e = env.pull(&env.store(), "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::ArtifactMissing);
    env.assert_not_installed("1.0.0");
}

#[tokio::test]
async fn redirect_to_a_foreign_host_is_refused_before_it_is_requested() {
    let env = Env::new().await;
    // The "foreign" host: another server, reached by a name that is not the API host.
    let foreign = FakeGitHub::start().await;
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![AssetSpec::with_digest(&asset("1.0.0"), good_archive())],
    );
    env.gh
        .redirect_assets_to(&format!("http://localhost:{}", foreign.port()));
    let e = env.pull(&env.store(), "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::Integrity);
    assert!(e.to_string().contains("localhost"), "{e}");
    assert_eq!(
        foreign.seen().len(),
        0,
        "the foreign host was never contacted"
    );
    env.assert_not_installed("1.0.0");
}

// ---------------------------------------------------------------- hostile archives

async fn refused(entries: &[Entry<'_>], why: &str) {
    let env = Env::new().await;
    let archive = tgz(entries);
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![AssetSpec::with_digest(&asset("1.0.0"), archive)],
    );
    let e = env.pull(&env.store(), "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::Integrity);
    assert!(e.to_string().contains(why), "expected {why:?} in: {e}");
    env.assert_not_installed("1.0.0");
    // Nothing was written next to the home either (where `../` would land).
    let parent = env.home.path().parent().unwrap();
    assert!(!parent.join("evil").exists());
}

#[tokio::test]
async fn archive_with_dotdot_is_refused() {
    refused(
        &[
            Entry::File("service-echo", BIN),
            Entry::RawName("../../evil", b"pwned"),
        ],
        "'..'",
    )
    .await;
}

#[tokio::test]
async fn archive_with_absolute_path_is_refused() {
    refused(
        &[
            Entry::RawName("/tmp/evil-agent-store-github", b"pwned"),
            Entry::File("service-echo", BIN),
        ],
        "absolute path",
    )
    .await;
    assert!(!std::path::Path::new("/tmp/evil-agent-store-github").exists());
}

#[tokio::test]
async fn archive_with_symlink_is_refused() {
    refused(
        &[Entry::Symlink("service-echo", "/bin/sh")],
        "symbolic link",
    )
    .await;
}

#[tokio::test]
async fn archive_with_hard_link_is_refused() {
    refused(
        &[Entry::File("x", BIN), Entry::HardLink("service-echo", "x")],
        "hard link",
    )
    .await;
}

#[tokio::test]
async fn archive_with_device_is_refused() {
    refused(&[Entry::CharDevice("service-echo")], "device").await;
}

#[tokio::test]
async fn archive_claiming_2_gib_is_refused_without_reading_it() {
    refused(
        &[Entry::Claims("service-echo", 2 << 30)],
        "claim more than 1073741824 bytes",
    )
    .await;
}

#[tokio::test]
async fn archive_with_too_many_entries_is_refused() {
    refused(
        &[Entry::ManyDirs(10_001), Entry::File("service-echo", BIN)],
        "more than 10000 entries",
    )
    .await;
}

#[tokio::test]
async fn garbage_instead_of_a_tarball_is_refused() {
    let env = Env::new().await;
    env.gh.release(
        OWNER,
        REPO,
        "v1.0.0",
        false,
        vec![AssetSpec::with_digest(
            &asset("1.0.0"),
            b"<html>not a tarball</html>".to_vec(),
        )],
    );
    let e = env.pull(&env.store(), "1.0.0").await.unwrap_err();
    assert_kind(&e, ErrorKind::Integrity);
    env.assert_not_installed("1.0.0");
}

fn humantime_rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}
