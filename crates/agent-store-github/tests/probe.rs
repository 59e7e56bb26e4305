#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! What `GithubStore::probe` says against `FakeGitHub`, the stand-in for
//! api.github.com (it serves no `/rate_limit`, so these are the answers of
//! an API that refuses the probe), and against a closed port.

use std::time::Duration;

use agent_ref::ErrorKind;
use agent_store::{AgentStore, ProbeStatus};
use agent_store_github::GithubStore;
use agent_testkit::github::FakeGitHub;

#[tokio::test]
async fn an_api_that_refuses_the_probe_fails_naming_the_token_and_never_showing_it() {
    let gh = FakeGitHub::start().await;
    let home = tempfile::tempdir().unwrap();
    let store = |token: Option<&str>| {
        GithubStore::builder()
            .api_url(gh.url())
            .token(token.map(str::to_owned))
            .cache_dir(home.path().join("github"))
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    };
    let p = store(None).probe().await;
    assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
    assert_eq!(p.kind, Some(ErrorKind::StoreUnavailable));
    assert!(
        p.detail
            .contains("/rate_limit: HTTP 404; no token (60 requests/hour)"),
        "{p:?}"
    );
    assert_eq!(p.fix.as_deref(), Some("check GITHUB_API_URL"));
    assert!(p.latency.is_some());

    gh.exhaust_rate_limit(4_000_000_000);
    let p = store(Some("ghp_never_shown_0123")).probe().await;
    assert_eq!(p.status, ProbeStatus::Fail, "{p:?}");
    assert!(p.detail.contains("HTTP 403; token set"), "{p:?}");
    assert!(!format!("{p:?}").contains("ghp_never_shown"), "{p:?}");
    assert_eq!(
        p.fix.as_deref(),
        Some("the token was refused: renew GITHUB_TOKEN")
    );
    // The token went to the API origin, as every request of the store's does.
    let sent = gh.seen();
    let last = sent.last().unwrap();
    assert_eq!(last.path_and_query, "/rate_limit");
    assert!(last.headers.contains_key("authorization"));
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
