#![allow(clippy::unwrap_used, unsafe_code)]
//! `GithubStore::from_env()`: the only test in this binary, because it sets
//! process environment variables.

use agent_ref::{AgentRef, Platform};
use agent_store::AgentStore;
use agent_store_github::GithubStore;
use agent_testkit::github::FakeGitHub;

#[tokio::test]
async fn from_env_reads_api_url_tokens_and_codefly_home() {
    let gh = FakeGitHub::start().await;
    gh.release("codefly-dev", "service-echo", "v2.1.0", false, vec![]);
    let home = tempfile::tempdir().unwrap();
    // SAFETY: no other thread of this test binary reads the environment concurrently.
    unsafe {
        std::env::set_var("GITHUB_API_URL", gh.url());
        std::env::set_var("CODEFLY_HOME", home.path());
        std::env::remove_var("GITHUB_TOKEN");
        std::env::set_var("GH_TOKEN", "gh-cli-token");
    }
    let latest: AgentRef = "codefly.dev/echo".parse().unwrap();
    let platform = Platform::current();

    let store = GithubStore::from_env()
        .unwrap()
        .expect("GitHub is always configured");
    assert_eq!(store.name(), "github");
    assert_eq!(store.cache_dir(), home.path().join("cache").join("github"));
    let got = store.versions(&latest, &platform).await.unwrap();
    assert_eq!(got, vec!["2.1.0".parse().unwrap()]);
    assert_eq!(
        gh.seen()[0].headers.get("authorization").unwrap(),
        "Bearer gh-cli-token"
    );

    // GITHUB_TOKEN wins over GH_TOKEN.
    gh.release("codefly-dev", "service-other", "v0.3.0", false, vec![]);
    // SAFETY: as above, the only test in this binary.
    unsafe { std::env::set_var("GITHUB_TOKEN", "actions-token") };
    let other: AgentRef = "codefly.dev/other".parse().unwrap();
    let store = GithubStore::from_env().unwrap().unwrap();
    assert_eq!(
        store.versions(&other, &platform).await.unwrap(),
        vec!["0.3.0".parse().unwrap()]
    );
    assert_eq!(gh.seen().len(), 2);
    assert_eq!(
        gh.seen()[1].headers.get("authorization").unwrap(),
        "Bearer actions-token"
    );

    // A bad URL is a configuration error, reported as store-unavailable.
    // SAFETY: as above.
    unsafe { std::env::set_var("GITHUB_API_URL", "not a url") };
    let e = GithubStore::from_env().unwrap_err();
    assert_eq!(e.kind(), agent_ref::ErrorKind::StoreUnavailable);
    assert!(e.to_string().contains("GITHUB_API_URL"), "{e}");
}
