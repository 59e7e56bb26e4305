//! Queries over the cache: by kind and by agent (its version spec), the
//! sha256 of binaries without a record, removal of every version a ref
//! matches, pruning one kind directory.

use agent_ref::AgentKind;
use agent_store::{AgentHome, AgentRef, Cache, CacheEntry, CacheQuery, PrunePolicy};

fn home_with(files: &[&str]) -> (tempfile::TempDir, AgentHome) {
    let t = tempfile::tempdir().unwrap();
    for f in files {
        let p = t.path().join("agents").join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, f.as_bytes()).unwrap();
    }
    let h = AgentHome::new(t.path());
    (t, h)
}

fn refs(v: &[CacheEntry]) -> Vec<String> {
    v.iter().map(|e| e.agent.identifier()).collect()
}

fn r(s: &str) -> AgentRef {
    s.parse().unwrap()
}

fn keep(n: usize) -> PrunePolicy {
    PrunePolicy {
        keep: Some(n),
        ..PrunePolicy::default()
    }
}

#[test]
fn a_query_reads_records_and_hashes_the_rest() {
    let (_t, home) = home_with(&[
        "services/acme/echo__1.0.0",
        "services/acme/echo__1.10.0",
        "services/acme/.echo__2.0.0.tmp.1.1",
        "modules/acme/mod__0.1.0",
    ]);
    let rec = home.agents_dir().join("services/acme/echo__1.10.0.json");
    std::fs::write(
        &rec,
        r#"{"sha256":"ab","size":3,"source":"oci:x","installed_at":1,"store":"oci","signer":{"key_id":"0123456789ABCDEF","trusted_comment":"codefly-agent acme/echo:1.10.0 linux/amd64"}}"#,
    )
    .unwrap();
    let cache = Cache::new(home.clone());
    let all = cache
        .query(&CacheQuery::all().hash_unrecorded(true))
        .unwrap();
    assert_eq!(
        refs(&all),
        ["acme/mod:0.1.0", "acme/echo:1.10.0", "acme/echo:1.0.0"]
    );
    assert_eq!(all[1].sha256.as_deref(), Some("ab"));
    assert_eq!(all[1].source, "oci:x");
    assert_eq!(
        all[1].signer.as_ref().map(|s| s.key_id.as_str()),
        Some("0123456789ABCDEF")
    );
    assert_eq!(all[2].source, "local");
    assert!(all[2].signer.is_none());
    // The sha256 of the file's bytes (`printf %s services/acme/echo__1.0.0 | sha256sum`).
    assert_eq!(
        all[2].sha256.as_deref(),
        Some("dba3da08ffca3bf16f3b399369fffb7dbf0460f695ef8537a19fd17857d89a06")
    );
    assert_eq!(all[0].agent.kind(), AgentKind::Module);
    // Without hashing, a binary without a record has no sha256.
    let plain = cache.query(&CacheQuery::all()).unwrap();
    assert_eq!(plain[2].sha256, None);

    let only = cache
        .query(&CacheQuery::all().agent(&r("acme/echo:^1.5")))
        .unwrap();
    assert_eq!(refs(&only), ["acme/echo:1.10.0"]);
    let every = cache
        .query(&CacheQuery::all().agent(&r("acme/echo")))
        .unwrap();
    assert_eq!(refs(&every), ["acme/echo:1.10.0", "acme/echo:1.0.0"]);
    let mods = cache
        .query(&CacheQuery::all().kind(Some(AgentKind::Module)))
        .unwrap();
    assert_eq!(refs(&mods), ["acme/mod:0.1.0"]);
    // An agent's kind decides the directory, whatever kind is asked.
    let echo_as_module = cache
        .query(
            &CacheQuery::all()
                .kind(Some(AgentKind::Service))
                .agent(&r("acme/mod").with_kind(AgentKind::Module)),
        )
        .unwrap();
    assert_eq!(refs(&echo_as_module), ["acme/mod:0.1.0"]);
}

#[test]
fn remove_matching_takes_an_exact_version_a_requirement_or_every_version() {
    let (_t, home) = home_with(&[
        "services/acme/echo__1.0.0",
        "services/acme/echo__1.1.0",
        "services/acme/echo__2.0.0",
        "services/acme/other__1.0.0",
    ]);
    std::fs::write(
        home.agents_dir().join("services/acme/echo__1.0.0.json"),
        r#"{"sha256":"ab","size":3,"source":"oci:x","installed_at":1}"#,
    )
    .unwrap();
    let cache = Cache::new(home.clone());
    let gone = cache.remove_matching(&r("acme/echo:1.0.0")).unwrap();
    assert_eq!(refs(&gone), ["acme/echo:1.0.0"]);
    let dir = home.agents_dir().join("services/acme");
    assert!(!dir.join("echo__1.0.0").exists());
    assert!(!dir.join("echo__1.0.0.json").exists());
    assert!(
        cache
            .remove_matching(&r("acme/echo:1.0.0"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        refs(&cache.remove_matching(&r("acme/echo:^1")).unwrap()),
        ["acme/echo:1.1.0"]
    );
    assert_eq!(
        refs(&cache.remove_matching(&r("acme/echo")).unwrap()),
        ["acme/echo:2.0.0"]
    );
    assert!(dir.join("other__1.0.0").exists());
}

#[test]
fn prune_kind_decides_on_the_whole_cache_and_acts_on_one_kind() {
    let (_t, home) = home_with(&[
        "services/acme/echo__1.2.0",
        "services/acme/echo__1.10.0",
        "services/acme/echo__1.9.0",
        "services/other/echo__0.1.0",
        "applications/acme/app__3.0.0",
        "applications/acme/app__2.0.0",
    ]);
    let cache = Cache::new(home.clone());
    let report = cache.prune_kind(None, &keep(2)).unwrap();
    assert_eq!(refs(&report.removed), ["acme/echo:1.2.0"]);
    assert_eq!(report.kept.len(), 5);
    let report = cache
        .prune_kind(Some(AgentKind::Application), &keep(1))
        .unwrap();
    assert_eq!(refs(&report.removed), ["acme/app:2.0.0"]);
    assert_eq!(
        refs(&report.kept),
        ["acme/app:3.0.0"],
        "kept: that kind only"
    );
    let dir = home.agents_dir().join("services/acme");
    assert!(dir.join("echo__1.9.0").exists(), "the kind limits prune");
    // A dry run of one kind removes nothing.
    let plan = cache
        .prune_kind(
            Some(AgentKind::Service),
            &PrunePolicy {
                dry_run: true,
                ..keep(1)
            },
        )
        .unwrap();
    assert_eq!(refs(&plan.removed), ["acme/echo:1.9.0"]);
    assert!(dir.join("echo__1.9.0").exists());
    let report = cache.prune_kind(None, &keep(1)).unwrap();
    assert_eq!(refs(&report.removed), ["acme/echo:1.9.0"]);
    assert!(dir.join("echo__1.10.0").exists());
    assert!(
        home.agents_dir()
            .join("services/other/echo__0.1.0")
            .exists()
    );
}
