//! What `GithubStore::probe` says against `FakeGitHub`, the stand-in for
//! api.github.com serving `/rate_limit` as GitHub documents it, and against a
//! closed port.

use std::time::Duration;

use agent_ref::ErrorKind;
use agent_store::{AgentStore, ProbeStatus};
use agent_store_github::GithubStore;
use agent_testkit::github::FakeGitHub;

fn store(api: &str, token: Option<&str>, home: &std::path::Path) -> GithubStore {
    GithubStore::builder()
        .api_url(api)
        .token(token.map(str::to_owned))
        .cache_dir(home.join("github"))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_api_answers_with_the_requests_left() {
    let gh = FakeGitHub::start().await;
    let home = tempfile::tempdir().unwrap();
    let p = store(&gh.url(), None, home.path()).probe().await;
    assert_eq!(p.status, ProbeStatus::Ok, "{p:?}");
    assert!(
        p.detail
            .contains("rate limit 59 of 60 left; no token (60 requests/hour)"),
        "{p:?}"
    );
    assert!(p.latency.is_some());
    assert_eq!(gh.count("/rate_limit"), 1);
}

#[tokio::test]
async fn an_exhausted_limit_fails_until_it_resets() {
    let gh = FakeGitHub::start().await;
    gh.exhaust_rate_limit(4_000_000_000);
    let home = tempfile::tempdir().unwrap();
    let p = store(&gh.url(), None, home.path()).probe().await;
    assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
    assert_eq!(p.kind, Some(ErrorKind::StoreUnavailable));
    assert!(p.detail.contains("rate limit 0 of 60 left"), "{p:?}");
    assert_eq!(
        p.fix.as_deref(),
        Some("wait for the rate limit to reset, or set GITHUB_TOKEN")
    );
}

#[tokio::test]
async fn a_refused_token_is_named_and_never_shown() {
    let gh = FakeGitHub::start().await;
    gh.refuse_token("ghp_never_shown_0123");
    let home = tempfile::tempdir().unwrap();
    let p = store(&gh.url(), Some("ghp_never_shown_0123"), home.path())
        .probe()
        .await;
    assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
    assert_eq!(p.kind, Some(ErrorKind::StoreUnavailable));
    assert!(p.detail.contains("HTTP 401; token set"), "{p:?}");
    assert!(!format!("{p:?}").contains("ghp_never_shown"), "{p:?}");
    assert_eq!(
        p.fix.as_deref(),
        Some("the token was refused: renew GITHUB_TOKEN")
    );
    // The token went to the API origin, as every request of the store's does.
    let sent = gh.seen();
    let last = sent.last().unwrap();
    assert_eq!(last.path_and_query, "/rate_limit");
    assert_eq!(last.status, 401);
    assert!(last.headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_url_that_is_not_the_api_names_the_variable() {
    let gh = FakeGitHub::start().await;
    let home = tempfile::tempdir().unwrap();
    let p = store(&format!("{}/not-the-api", gh.url()), None, home.path())
        .probe()
        .await;
    assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
    assert!(
        p.detail.contains("/not-the-api/rate_limit: HTTP 404"),
        "{p:?}"
    );
    assert_eq!(p.fix.as_deref(), Some("check GITHUB_API_URL"));
}

#[tokio::test]
async fn an_unreachable_api_fails_with_the_network_fix() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let home = tempfile::tempdir().unwrap();
    let store = GithubStore::builder()
        .api_url(format!("http://{dead}"))
        .cache_dir(home.path().join("github"))
        .build()
        .unwrap();
    let p = store.probe().await;
    assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
    assert!(p.detail.contains("unreachable"), "{p:?}");
    assert!(
        p.fix
            .as_deref()
            .unwrap()
            .contains("[stores] github = false")
    );
}
