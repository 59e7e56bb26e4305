//! `StoreChain` ordering, error precedence and retries, with small in-test
//! stores that install real bytes through a real `Installer`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_ref::semver::Version;
use agent_store::{
    AgentHome, AgentRef, AgentStore, ErrorKind, Expected, Fallback, Installed, Installer, Platform,
    RetryPolicy, StoreChain, StoreError,
};
use async_trait::async_trait;

#[derive(Debug, Clone)]
enum Answer {
    Bytes(&'static [u8]),
    /// Bytes that do not match the digest the store publishes.
    Tampered,
    Missing,
    Unavailable(Option<Duration>),
}

/// A store that answers from a script (the last answer repeats).
#[derive(Debug)]
struct Scripted {
    name: &'static str,
    answers: Mutex<VecDeque<Answer>>,
    versions: Option<Vec<&'static str>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(name: &'static str, answers: &[Answer]) -> Arc<Self> {
        Arc::new(Scripted {
            name,
            answers: Mutex::new(answers.iter().cloned().collect()),
            // Lists nothing: no store is authoritative, pulls go in order.
            versions: Some(Vec::new()),
            calls: AtomicUsize::new(0),
        })
    }

    fn with_versions(name: &'static str, versions: Option<Vec<&'static str>>) -> Arc<Self> {
        Arc::new(Scripted {
            name,
            answers: Mutex::new(VecDeque::from([Answer::Missing])),
            versions,
            calls: AtomicUsize::new(0),
        })
    }

    fn next(&self) -> Answer {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut q = self.answers.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front().cloned().unwrap()
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn unavailable(&self, retry_after: Option<Duration>) -> StoreError {
        StoreError::Unavailable {
            store: self.name.into(),
            message: "connection refused".into(),
            retry_after,
            source: None,
        }
    }
}

#[async_trait]
impl AgentStore for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    async fn available(&self, _: &AgentRef, _: &Platform) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn versions(&self, _: &AgentRef, _: &Platform) -> Result<Vec<Version>, StoreError> {
        if self.versions.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.versions {
            Some(v) => Ok(v.iter().map(|s| Version::parse(s).unwrap()).collect()),
            None => Err(self.unavailable(None)),
        }
    }

    async fn pull(
        &self,
        agent: &AgentRef,
        _: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let source = format!("{}:test", self.name);
        match self.next() {
            Answer::Bytes(b) => {
                installer
                    .install_reader(agent, &source, &Expected::default(), b)
                    .await
            }
            Answer::Tampered => {
                let expected = Expected {
                    sha256: Some(
                        "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                            .parse()
                            .unwrap(),
                    ),
                    ..Expected::default()
                };
                installer
                    .install_reader(agent, &source, &expected, &b"evil"[..])
                    .await
            }
            Answer::Missing => Err(StoreError::Missing {
                store: self.name.into(),
                what: agent.identifier(),
            }),
            Answer::Unavailable(ra) => Err(self.unavailable(ra)),
        }
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    }
}

fn setup() -> (tempfile::TempDir, Installer, AgentRef, Platform) {
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path()));
    (
        dir,
        installer,
        "codefly.dev/echo:1.0.0".parse().unwrap(),
        Platform::current(),
    )
}

fn chain(stores: &[Arc<Scripted>]) -> StoreChain {
    StoreChain::new(
        stores
            .iter()
            .map(|s| s.clone() as Arc<dyn AgentStore>)
            .collect(),
    )
    .with_retry(fast_retry())
}

fn assert_not_installed(installer: &Installer, agent: &AgentRef) {
    assert!(!installer.home().binary_path(agent).unwrap().exists());
}

#[tokio::test]
async fn first_store_with_the_artifact_wins() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new("a", &[Answer::Missing]);
    let b = Scripted::new("b", &[Answer::Bytes(b"from b")]);
    let c = Scripted::new("c", &[Answer::Bytes(b"from c")]);
    let got = chain(&[a.clone(), b.clone(), c.clone()])
        .pull(&agent, &platform, &installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b"from b");
    assert_eq!(got.source, "b:test");
    assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 0));

    // Cached now: no store is asked again.
    let again = chain(&[a.clone(), b.clone(), c.clone()])
        .pull(&agent, &platform, &installer)
        .await
        .unwrap();
    assert_eq!(again, got);
    assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 0));
}

#[tokio::test]
async fn integrity_from_first_store_is_not_masked_by_the_second() {
    let (_d, installer, agent, platform) = setup();
    let bad = Scripted::new("bad", &[Answer::Tampered]);
    let good = Scripted::new("good", &[Answer::Bytes(b"fine")]);
    let err = chain(&[bad.clone(), good.clone()])
        .pull(&agent, &platform, &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("bad"), "{err}");
    assert_eq!(good.calls(), 0, "must not fall through after tampering");
    assert_eq!(bad.calls(), 1, "integrity is not retried");
    assert_not_installed(&installer, &agent);
}

#[tokio::test]
async fn all_missing_is_artifact_missing() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new("a", &[Answer::Missing]);
    let b = Scripted::new("b", &[Answer::Missing]);
    let err = chain(&[a.clone(), b.clone()])
        .pull(&agent, &platform, &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing, "{err}");
    match &err {
        StoreError::Chain { answers, .. } => {
            let names: Vec<&str> = answers.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["a", "b"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!((a.calls(), b.calls()), (1, 1), "missing is not retried");
    assert_not_installed(&installer, &agent);
}

#[tokio::test]
async fn mixed_is_store_unavailable_naming_each_store() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new("oci", &[Answer::Missing]);
    let b = Scripted::new("http", &[Answer::Unavailable(None)]);
    let err = chain(&[a.clone(), b.clone()])
        .pull(&agent, &platform, &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("oci: store oci has no"), "{msg}");
    assert!(msg.contains("http: store http unavailable"), "{msg}");
    assert_eq!(
        b.calls(),
        3,
        "unavailable is retried up to the policy's attempts"
    );
    assert_not_installed(&installer, &agent);
}

#[tokio::test]
async fn empty_chain_is_artifact_missing() {
    let (_d, installer, agent, platform) = setup();
    let err = StoreChain::default()
        .pull(&agent, &platform, &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing);
    assert!(err.to_string().contains("no store is configured"), "{err}");
}

#[tokio::test]
async fn unavailable_then_success_is_retried() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new(
        "a",
        &[
            Answer::Unavailable(None),
            Answer::Unavailable(Some(Duration::from_millis(100))),
            Answer::Bytes(b"third time"),
        ],
    );
    let started = std::time::Instant::now();
    let got = chain(std::slice::from_ref(&a))
        .pull(&agent, &platform, &installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(got.path).unwrap(), b"third time");
    assert_eq!(a.calls(), 3);
    // Retry-After is a lower bound on the wait (not a wall-clock limit).
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn retry_after_beyond_the_cap_is_not_waited_for() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new("a", &[Answer::Unavailable(Some(Duration::from_secs(3600)))]);
    let err = chain(std::slice::from_ref(&a))
        .pull(&agent, &platform, &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert_eq!(a.calls(), 1);
}

#[tokio::test]
async fn no_retry_policy_tries_once() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new("a", &[Answer::Unavailable(None)]);
    let chain =
        StoreChain::new(vec![a.clone() as Arc<dyn AgentStore>]).with_retry(RetryPolicy::none());
    let err = chain.pull(&agent, &platform, &installer).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert_eq!(a.calls(), 1);
}

#[tokio::test]
async fn versions_come_from_the_first_store_that_lists_any_never_a_union() {
    // Dependency confusion: "a" (the configured store) has 1.0.0; "b" (say, a
    // GitHub org that happens to match the publisher) publishes 9.9.9.
    let (_d, _installer, agent, platform) = setup();
    let a = Scripted::with_versions("a", Some(vec!["1.0.0"]));
    let b = Scripted::with_versions("b", Some(vec!["9.9.9", "1.0.0"]));
    let got = chain(&[a.clone(), b.clone()])
        .authoritative_versions(&agent, &platform)
        .await
        .unwrap();
    assert_eq!(got.store, "a");
    let vs: Vec<String> = got.versions.iter().map(ToString::to_string).collect();
    assert_eq!(
        vs,
        ["1.0.0"],
        "a lower store's versions are never merged in"
    );
    assert!(got.answers.is_empty());
    assert_eq!(b.calls(), 0, "the lower store is not even asked");
}

#[tokio::test]
async fn stores_that_list_nothing_are_passed_over() {
    let (_d, _installer, agent, platform) = setup();
    let empty = Scripted::with_versions("empty", Some(vec![]));
    let b = Scripted::with_versions("b", Some(vec!["1.10.0", "1.2.0", "1.2.0"]));
    let got = chain(&[empty, b])
        .authoritative_versions(&agent, &platform)
        .await
        .unwrap();
    assert_eq!(got.store, "b");
    let vs: Vec<String> = got.versions.iter().map(ToString::to_string).collect();
    assert_eq!(vs, ["1.2.0", "1.10.0"]);
    assert_eq!(got.answers.len(), 1);
    assert_eq!(got.answers[0].0, "empty");
}

#[tokio::test]
async fn a_failing_store_ends_resolution_naming_it() {
    let (_d, _installer, agent, platform) = setup();
    let a = Scripted::with_versions("a", None);
    let b = Scripted::with_versions("b", Some(vec!["9.9.9"]));
    let err = chain(&[a.clone(), b.clone()])
        .authoritative_versions(&agent, &platform)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(err.to_string().contains("store a unavailable"), "{err}");
    assert_eq!(b.calls(), 0, "no fall-through to a lower store");
    assert_eq!(a.calls(), 3, "resolution goes through the retry path");

    // With fallback = "any", the next store answers.
    let got = chain(&[a, b])
        .with_fallback(Fallback::Any)
        .authoritative_versions(&agent, &platform)
        .await
        .unwrap();
    assert_eq!(got.store, "b");
    assert_eq!(got.answers.len(), 1);
    assert!(
        got.answers[0].1.contains("unavailable"),
        "{:?}",
        got.answers
    );
}

#[tokio::test]
async fn no_store_listing_versions_is_artifact_missing() {
    let (_d, _installer, agent, platform) = setup();
    let a = Scripted::with_versions("a", Some(vec![]));
    let b = Scripted::with_versions("b", Some(vec![]));
    let err = chain(&[a, b])
        .authoritative_versions(&agent, &platform)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ArtifactMissing);
    let msg = err.to_string();
    assert!(msg.contains("a: ") && msg.contains("b: "), "{msg}");
}

#[tokio::test]
async fn an_unavailable_store_does_not_fall_through_to_the_next() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new("a", &[Answer::Unavailable(None)]);
    let b = Scripted::new("b", &[Answer::Bytes(b"from b")]);
    let err = chain(&[a.clone(), b.clone()])
        .pull(&agent, &platform, &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.to_string().contains("store a unavailable"), "{err}");
    assert_eq!(b.calls(), 0, "an exact version is not fetched from b");
    assert_eq!(a.calls(), 3, "a is retried first");
    assert_not_installed(&installer, &agent);
}

#[tokio::test]
async fn fallback_any_falls_through_an_unavailable_store() {
    let (_d, installer, agent, platform) = setup();
    let a = Scripted::new("a", &[Answer::Unavailable(None)]);
    let b = Scripted::new("b", &[Answer::Bytes(b"from b")]);
    let got = chain(&[a.clone(), b.clone()])
        .with_fallback(Fallback::Any)
        .pull(&agent, &platform, &installer)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b"from b");
    assert_eq!(b.calls(), 1);
}

#[tokio::test]
async fn fallback_any_still_stops_on_tampering() {
    let (_d, installer, agent, platform) = setup();
    let bad = Scripted::new("bad", &[Answer::Tampered]);
    let good = Scripted::new("good", &[Answer::Bytes(b"fine")]);
    let err = chain(&[bad, good.clone()])
        .with_fallback(Fallback::Any)
        .pull(&agent, &platform, &installer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert_eq!(good.calls(), 0);
    assert_not_installed(&installer, &agent);
}
