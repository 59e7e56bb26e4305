//! Version resolution: `latest` and requirements → one concrete version, in
//! the Go loader's order (`ResolveLatest` / `PinToLatestRelease`).

use agent_ref::semver::Version;
use agent_ref::{AgentHome, AgentRef, AgentSource, ErrorKind, Platform, VersionSpec};
use agent_store::{StoreChain, StoreError};
use tracing::debug;

use crate::{ManagerError, StoreAnswer};

/// What the stores said about the versions of one agent.
#[derive(Debug, Default)]
pub(crate) struct StoreVersions {
    /// The versions of the authoritative store (the first, in order, that
    /// lists any); never a union across stores.
    pub(crate) versions: Vec<Version>,
    /// One answer per store asked, in order.
    pub(crate) answers: Vec<StoreAnswer>,
    /// Whether a store could not be asked (the resolution stopped there).
    pub(crate) unavailable: bool,
    /// Another failure that stops resolution (a bad ref, a local error).
    pub(crate) fatal: Option<ManagerError>,
}

/// Asks the stores in order until one lists a version (store authority,
/// through the chain's retry path). A store that is down stops the search
/// (`store-unavailable`), unless the chain falls back on any error.
pub(crate) async fn store_versions(
    chain: &StoreChain,
    agent: &AgentRef,
    platform: &Platform,
) -> StoreVersions {
    let mut out = StoreVersions::default();
    if chain.is_empty() {
        return out;
    }
    match chain.authoritative_versions(agent, platform).await {
        Ok(a) => {
            debug!(store = %a.store, count = a.versions.len(), "authoritative store");
            out.answers.extend(
                a.answers
                    .into_iter()
                    .map(|(store, answer)| StoreAnswer { store, answer }),
            );
            out.answers.push(StoreAnswer {
                store: a.store,
                answer: format!(
                    "{} version(s), none matching (authoritative: lower stores not asked)",
                    a.versions.len()
                ),
            });
            out.versions = a.versions;
        }
        Err(StoreError::Chain { kind, answers }) => {
            out.unavailable = kind == ErrorKind::StoreUnavailable
                || answers
                    .iter()
                    .any(|(_, e)| e.kind() == ErrorKind::StoreUnavailable);
            out.answers
                .extend(answers.iter().map(|(store, e)| StoreAnswer::of(store, e)));
        }
        Err(e) if e.kind() == ErrorKind::StoreUnavailable => {
            out.unavailable = true;
            out.answers.push(StoreAnswer::of("stores", &e));
        }
        Err(e) => out.fatal = Some(ManagerError::from_store(&agent.identifier(), Vec::new(), e)),
    }
    out
}

/// The highest installed version matching `spec` (scans the directory off the runtime threads).
pub(crate) async fn find_local(
    home: &AgentHome,
    agent: &AgentRef,
    spec: &VersionSpec,
) -> Result<Option<Version>, ManagerError> {
    let (home, agent2, spec) = (home.clone(), agent.clone(), spec.clone());
    let dir = home.publisher_dir(agent);
    tokio::task::spawn_blocking(move || home.find_local(&agent2, &spec))
        .await
        .map_err(|e| ManagerError::io("local scan", std::io::Error::other(e)))?
        .map_err(|e| ManagerError::io(format!("scanning {}", dir.display()), e))
}

fn local_answer(home: &AgentHome, agent: &AgentRef, spec: &VersionSpec) -> StoreAnswer {
    StoreAnswer {
        store: "local".to_owned(),
        answer: format!(
            "no installed version matching {spec} in {}",
            home.publisher_dir(agent).display()
        ),
    }
}

/// `latest`/requirement → concrete, in the Go loader's order:
/// `CODEFLY_AGENT_SOURCE=local` → local scan only; otherwise the local scan
/// first (a local build wins), then the stores (the highest matching version
/// of the authoritative store: the first that lists any version), then the
/// local scan again (something may have been installed meanwhile). Exact
/// versions pass through untouched.
pub(crate) async fn resolve(
    home: &AgentHome,
    source: AgentSource,
    chain: &StoreChain,
    platform: &Platform,
    agent: &AgentRef,
) -> Result<AgentRef, ManagerError> {
    let spec = agent.version_spec();
    if spec.is_concrete() {
        return Ok(agent.clone());
    }
    if let Some(v) = find_local(home, agent, spec).await? {
        debug!(%v, "resolved from the local cache");
        return Ok(agent.with_version(&v)?);
    }
    let mut answers = vec![local_answer(home, agent, spec)];
    if source.is_local() {
        answers.push(StoreAnswer::stores_not_asked());
        return Err(ManagerError::NotFound {
            agent: agent.identifier(),
            answers,
        });
    }
    if chain.is_empty() {
        answers.push(StoreAnswer::no_store_enabled());
    }
    let remote = store_versions(chain, agent, platform).await;
    if let Some(e) = remote.fatal {
        return Err(e);
    }
    if let Some(v) = spec.pick(remote.versions.iter()) {
        debug!(%v, "resolved from the stores");
        return Ok(agent.with_version(&v)?);
    }
    if let Some(v) = find_local(home, agent, spec).await? {
        debug!(%v, "resolved from the local cache (second look)");
        return Ok(agent.with_version(&v)?);
    }
    answers.extend(remote.answers);
    Err(ManagerError::not_found(
        agent.identifier(),
        answers,
        remote.unavailable,
    ))
}

/// The newest release the stores offer, but never lower than a version
/// already installed (the Go loader's `PinToLatestRelease`, which fell back to
/// the local scan when GitHub had nothing). With `CODEFLY_AGENT_SOURCE=local` only the
/// local scan is used. Exact versions pass through untouched.
pub(crate) async fn pin_to_latest_release(
    home: &AgentHome,
    source: AgentSource,
    chain: &StoreChain,
    platform: &Platform,
    agent: &AgentRef,
) -> Result<AgentRef, ManagerError> {
    let spec = agent.version_spec();
    if spec.is_concrete() {
        return Ok(agent.clone());
    }
    let local = find_local(home, agent, spec).await?;
    let mut answers = vec![local_answer(home, agent, spec)];
    let remote = if source.is_local() {
        answers.push(StoreAnswer::stores_not_asked());
        StoreVersions::default()
    } else {
        store_versions(chain, agent, platform).await
    };
    if let Some(e) = remote.fatal {
        return Err(e);
    }
    let best = spec
        .pick(remote.versions.iter())
        .into_iter()
        .chain(local)
        .max();
    match best {
        Some(v) => Ok(agent.with_version(&v)?),
        None => {
            answers.extend(remote.answers);
            Err(ManagerError::not_found(
                agent.identifier(),
                answers,
                remote.unavailable,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::sync::Arc;

    use agent_store::{AgentStore, Installed, Installer, RetryPolicy};
    use async_trait::async_trait;

    use super::*;

    /// A store that answers `versions` from a fixed list (or fails). Only
    /// resolution order is tested with it; pulls use the real stores.
    #[derive(Debug)]
    struct ListStore {
        name: &'static str,
        answer: Mutex<Result<Vec<&'static str>, &'static str>>,
        asked: AtomicUsize,
    }

    impl ListStore {
        fn ok(name: &'static str, v: &[&'static str]) -> Arc<Self> {
            Arc::new(ListStore {
                name,
                answer: Mutex::new(Ok(v.to_vec())),
                asked: AtomicUsize::new(0),
            })
        }
        fn down(name: &'static str) -> Arc<Self> {
            Arc::new(ListStore {
                name,
                answer: Mutex::new(Err("connection refused")),
                asked: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait]
    impl AgentStore for ListStore {
        fn name(&self) -> &str {
            self.name
        }
        async fn available(&self, _: &AgentRef, _: &Platform) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn versions(&self, _: &AgentRef, _: &Platform) -> Result<Vec<Version>, StoreError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            match &*self.answer.lock().unwrap() {
                Ok(v) => Ok(v.iter().map(|s| Version::parse(s).unwrap()).collect()),
                Err(m) => Err(StoreError::Unavailable {
                    store: self.name.to_owned(),
                    message: (*m).to_owned(),
                    retry_after: None,
                    source: None,
                }),
            }
        }
        async fn pull(
            &self,
            agent: &AgentRef,
            _: &Platform,
            _: &Installer,
        ) -> Result<Installed, StoreError> {
            Err(StoreError::Missing {
                store: self.name.to_owned(),
                what: agent.identifier(),
            })
        }
    }

    fn install(home: &AgentHome, agent: &AgentRef, versions: &[&str]) {
        let dir = home.publisher_dir(agent);
        std::fs::create_dir_all(&dir).unwrap();
        for v in versions {
            std::fs::write(dir.join(format!("{}__{v}", agent.name())), b"#!/bin/sh\n").unwrap();
        }
    }

    fn chain(stores: &[Arc<dyn AgentStore>]) -> StoreChain {
        StoreChain::new(stores.to_vec()).with_retry(RetryPolicy::none())
    }

    fn r(s: &str) -> AgentRef {
        s.parse().unwrap()
    }

    async fn res(
        home: &AgentHome,
        source: AgentSource,
        stores: &[Arc<dyn AgentStore>],
        agent: &str,
    ) -> Result<String, ManagerError> {
        resolve(
            home,
            source,
            &chain(stores),
            &Platform::current(),
            &r(agent),
        )
        .await
        .map(|a| a.identifier())
    }

    #[tokio::test]
    async fn exact_versions_pass_through_without_asking_anyone() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let s = ListStore::ok("oci", &["9.9.9"]);
        let stores: Vec<Arc<dyn AgentStore>> = vec![s.clone()];
        let got = res(&home, AgentSource::Remote, &stores, "acme/echo:v1.2.3").await;
        assert_eq!(got.unwrap(), "acme/echo:1.2.3");
        assert_eq!(s.asked.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn local_build_wins_over_a_newer_release() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        install(&home, &r("acme/echo"), &["1.0.0", "1.1.0"]);
        let s = ListStore::ok("oci", &["2.0.0"]);
        let stores: Vec<Arc<dyn AgentStore>> = vec![s.clone()];
        let got = res(&home, AgentSource::Remote, &stores, "acme/echo").await;
        assert_eq!(got.unwrap(), "acme/echo:1.1.0");
        assert_eq!(s.asked.load(Ordering::SeqCst), 0, "local hit asks no store");
    }

    /// Store authority: the first store that lists any version decides;
    /// a lower store's higher version is never merged in.
    #[tokio::test]
    async fn the_first_store_listing_versions_is_authoritative() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let http = ListStore::ok("http", &["1.10.0", "1.9.0", "2.0.0-rc.1"]);
        let github = ListStore::ok("github", &["9.9.9"]);
        let stores: Vec<Arc<dyn AgentStore>> =
            vec![ListStore::ok("nix", &[]), http.clone(), github.clone()];
        let got = res(&home, AgentSource::Remote, &stores, "acme/echo").await;
        assert_eq!(
            got.unwrap(),
            "acme/echo:1.10.0",
            "pre-release not picked for latest; github's 9.9.9 not merged in"
        );
        let got = res(&home, AgentSource::Remote, &stores, "acme/echo:~1.9").await;
        assert_eq!(got.unwrap(), "acme/echo:1.9.0");
        let got = res(
            &home,
            AgentSource::Remote,
            &stores,
            "acme/echo:>=2.0.0-rc.0",
        )
        .await;
        assert_eq!(got.unwrap(), "acme/echo:2.0.0-rc.1");
        // A requirement only a lower store meets is not met.
        let e = res(&home, AgentSource::Remote, &stores, "acme/echo:^9")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BinaryNotFound, "{e}");
        assert!(e.to_string().contains("http: 3 version(s)"), "{e}");
        assert_eq!(github.asked.load(Ordering::SeqCst), 0, "github never asked");
    }

    #[tokio::test]
    async fn a_store_that_is_down_stops_resolution_lower_stores_are_not_asked() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let github = ListStore::ok("github", &["9.9.9"]);
        let stores: Vec<Arc<dyn AgentStore>> = vec![ListStore::down("http"), github.clone()];
        let e = res(&home, AgentSource::Remote, &stores, "acme/echo")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StoreUnavailable, "{e}");
        assert!(e.to_string().contains("http"), "{e}");
        assert_eq!(github.asked.load(Ordering::SeqCst), 0);
        // With fallback = any, the next store is asked.
        let any = StoreChain::new(stores.clone())
            .with_retry(RetryPolicy::none())
            .with_fallback(agent_store::Fallback::Any);
        let got = resolve(
            &home,
            AgentSource::Remote,
            &any,
            &Platform::current(),
            &r("acme/echo"),
        )
        .await
        .unwrap();
        assert_eq!(got.identifier(), "acme/echo:9.9.9");
    }

    #[tokio::test]
    async fn requirement_not_met_locally_goes_to_the_stores() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        install(&home, &r("acme/echo"), &["1.0.0"]);
        let stores: Vec<Arc<dyn AgentStore>> = vec![ListStore::ok("http", &["2.1.0", "3.0.0"])];
        let got = res(&home, AgentSource::Remote, &stores, "acme/echo:^2").await;
        assert_eq!(got.unwrap(), "acme/echo:2.1.0");
    }

    #[tokio::test]
    async fn local_source_never_asks_a_store() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let s = ListStore::ok("oci", &["2.0.0"]);
        let stores: Vec<Arc<dyn AgentStore>> = vec![s.clone()];
        let e = res(&home, AgentSource::Local, &stores, "acme/echo")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BinaryNotFound);
        assert!(e.to_string().contains("CODEFLY_AGENT_SOURCE=local"), "{e}");
        assert_eq!(s.asked.load(Ordering::SeqCst), 0);
        install(&home, &r("acme/echo"), &["0.3.0"]);
        let got = res(&home, AgentSource::Local, &stores, "acme/echo").await;
        assert_eq!(got.unwrap(), "acme/echo:0.3.0");
    }

    #[tokio::test]
    async fn nothing_anywhere_lists_every_answer() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let stores: Vec<Arc<dyn AgentStore>> = vec![
            ListStore::ok("nix", &[]),
            ListStore::ok("http", &["0.1.0-alpha"]),
        ];
        let e = res(&home, AgentSource::Remote, &stores, "acme/echo")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BinaryNotFound);
        let msg = e.to_string();
        for needle in [
            "acme/echo:latest",
            "local:",
            "nix: store nix has no version",
            "http: 1 version",
            "AGENT_REGISTRY",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_makes_it_store_unavailable() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let stores: Vec<Arc<dyn AgentStore>> =
            vec![ListStore::ok("nix", &[]), ListStore::down("oci")];
        let e = res(&home, AgentSource::Remote, &stores, "acme/echo")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StoreUnavailable);
        assert!(e.is_retryable());
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[tokio::test]
    async fn no_stores_and_nothing_local_is_binary_not_found() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let e = res(&home, AgentSource::Remote, &[], "acme/echo")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BinaryNotFound);
        assert!(e.to_string().contains("none enabled"), "{e}");
    }

    #[tokio::test]
    async fn pin_never_goes_below_what_is_installed() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        install(&home, &r("acme/echo"), &["1.5.0"]);
        let p = Platform::current();
        let older: Vec<Arc<dyn AgentStore>> = vec![ListStore::ok("oci", &["1.2.0"])];
        let got = pin_to_latest_release(
            &home,
            AgentSource::Remote,
            &chain(&older),
            &p,
            &r("acme/echo"),
        )
        .await
        .unwrap();
        assert_eq!(got.identifier(), "acme/echo:1.5.0");
        let newer: Vec<Arc<dyn AgentStore>> = vec![ListStore::ok("oci", &["1.2.0", "1.7.0"])];
        let got = pin_to_latest_release(
            &home,
            AgentSource::Remote,
            &chain(&newer),
            &p,
            &r("acme/echo"),
        )
        .await
        .unwrap();
        assert_eq!(
            got.identifier(),
            "acme/echo:1.7.0",
            "pin asks the stores even with a local hit"
        );
        let down: Vec<Arc<dyn AgentStore>> = vec![ListStore::down("oci")];
        let got = pin_to_latest_release(
            &home,
            AgentSource::Remote,
            &chain(&down),
            &p,
            &r("acme/echo"),
        )
        .await
        .unwrap();
        assert_eq!(got.identifier(), "acme/echo:1.5.0", "falls back to local");
        let got = pin_to_latest_release(
            &home,
            AgentSource::Local,
            &chain(&newer),
            &p,
            &r("acme/echo"),
        )
        .await
        .unwrap();
        assert_eq!(
            got.identifier(),
            "acme/echo:1.5.0",
            "local source asks no store"
        );
    }

    #[tokio::test]
    async fn pin_with_nothing_is_not_found() {
        let t = tempfile::tempdir().unwrap();
        let home = AgentHome::new(t.path());
        let p = Platform::current();
        let e = pin_to_latest_release(&home, AgentSource::Remote, &chain(&[]), &p, &r("acme/echo"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BinaryNotFound);
    }
}
