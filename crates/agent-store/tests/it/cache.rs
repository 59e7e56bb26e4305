//! The cache as a library: list, remove under the install lock, prune by
//! count, age and size (least recently used first), the last-used mark.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_store::{
    AgentHome, AgentRef, Cache, ErrorKind, Expected, Installer, LockTimeouts, PrunePolicy,
    StoreError,
};
use agent_testkit::logs::LogCapture;

fn setup() -> (tempfile::TempDir, Installer) {
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path().join("home")));
    (dir, installer)
}

fn r(s: &str) -> AgentRef {
    s.parse().unwrap()
}

async fn install(installer: &Installer, agent: &AgentRef, len: usize) {
    installer
        .install_reader(agent, "http:x", &Expected::default(), &vec![1u8; len][..])
        .await
        .unwrap();
}

fn set_last_used(installer: &Installer, agent: &AgentRef, ago: Duration) {
    std::fs::File::options()
        .write(true)
        .open(installer.record_path(agent).unwrap())
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(SystemTime::now() - ago))
        .unwrap();
}

fn refs(v: &[agent_store::CacheEntry]) -> Vec<String> {
    v.iter().map(|e| e.agent.identifier()).collect()
}

fn lock_path(installer: &Installer, agent: &AgentRef) -> PathBuf {
    agent_testkit::artifact_lock(&installer.home().binary_path(agent).unwrap())
}

#[tokio::test]
async fn list_reads_records_and_sees_unrecorded_binaries() {
    let (_d, installer) = setup();
    install(&installer, &r("acme/echo:1.0.0"), 10).await;
    install(&installer, &r("acme/echo:1.10.0"), 20).await;
    let go = installer.home().binary_path(&r("acme/go:0.1.0")).unwrap();
    std::fs::write(&go, b"go").unwrap();
    let cache = Cache::of(&installer);
    let all = cache.list().unwrap();
    assert_eq!(
        refs(&all),
        ["acme/echo:1.10.0", "acme/echo:1.0.0", "acme/go:0.1.0"]
    );
    assert_eq!(all[0].size, 20);
    assert_eq!(all[0].source, "http:x");
    assert_eq!(all[0].store.as_deref(), Some("http"));
    assert!(all[0].sha256.is_some());
    assert_eq!(all[0].signer, None);
    assert_eq!(all[2].sha256, None);
    assert_eq!(all[2].source, "local");
}

#[tokio::test]
async fn remove_waits_for_the_install_lock_and_refuses_when_it_is_not_released() {
    let (_d, installer) = setup();
    let agent = r("acme/echo:1.0.0");
    install(&installer, &agent, 10).await;
    let path = installer.home().binary_path(&agent).unwrap();

    let held = agent_testkit::hold_lock(&lock_path(&installer, &agent), None);
    let cache = Cache::of(&installer).with_lock_timeouts(LockTimeouts {
        wait: Duration::from_millis(500),
        stall: Duration::from_secs(3600),
    });
    let err = cache.remove(&agent).unwrap_err();
    assert!(matches!(err, StoreError::LockTimeout { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(
        path.exists(),
        "nothing removed while an install holds the lock"
    );

    // Released while it waits: then it removes.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let cache = Cache::of(&installer);
    let removed = cache.remove(&agent).unwrap().unwrap();
    releaser.join().unwrap();
    assert_eq!(removed.entry.agent, agent);
    assert!(!path.exists());
    assert!(!installer.record_path(&agent).unwrap().exists());
    assert_eq!(cache.remove(&agent).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn remove_during_a_slow_install_waits_for_it() {
    let (_d, installer) = setup();
    let agent = r("acme/echo:1.0.0");
    install(&installer, &agent, 10).await;
    // A re-install (the binary was replaced behind our back) that is slow.
    std::fs::write(installer.home().binary_path(&agent).unwrap(), b"tampered!!").unwrap();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let i = installer.clone();
    let a = agent.clone();
    let install_task = tokio::spawn(async move {
        i.ensure(&a, || async {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(500)).await;
            i.install_reader(&a, "http:slow", &Expected::default(), &b"new bytes!"[..])
                .await
        })
        .await
    });
    started_rx.await.unwrap();
    let cache = Cache::of(&installer);
    let a = agent.clone();
    let removed = tokio::task::spawn_blocking(move || cache.remove(&a))
        .await
        .unwrap()
        .unwrap()
        .expect("the finished install is what is removed");
    install_task.await.unwrap().unwrap();
    assert_eq!(removed.entry.source, "http:slow");
    assert!(!installer.home().binary_path(&agent).unwrap().exists());
}

#[tokio::test]
async fn prune_by_keep_unused_for_and_max_size() {
    let (_d, installer) = setup();
    for (v, len) in [("1.0.0", 100), ("1.1.0", 200), ("2.0.0", 300)] {
        install(&installer, &r(&format!("acme/echo:{v}")), len).await;
    }
    install(&installer, &r("acme/other:1.0.0"), 400).await;
    let cache = Cache::of(&installer);

    let dry = cache
        .prune(&PrunePolicy {
            keep: Some(1),
            dry_run: true,
            ..PrunePolicy::default()
        })
        .unwrap();
    assert_eq!(refs(&dry.removed), ["acme/echo:1.1.0", "acme/echo:1.0.0"]);
    assert_eq!(cache.list().unwrap().len(), 4, "a dry run removes nothing");

    let kept = cache
        .prune(&PrunePolicy {
            keep: Some(2),
            ..PrunePolicy::default()
        })
        .unwrap();
    assert_eq!(refs(&kept.removed), ["acme/echo:1.0.0"]);

    set_last_used(
        &installer,
        &r("acme/echo:1.1.0"),
        Duration::from_secs(40 * 86400),
    );
    let unused = cache
        .prune(&PrunePolicy {
            unused_for: Some(Duration::from_secs(30 * 86400)),
            ..PrunePolicy::default()
        })
        .unwrap();
    assert_eq!(refs(&unused.removed), ["acme/echo:1.1.0"]);

    // 700 bytes left; under 500 the least recently used goes first.
    set_last_used(
        &installer,
        &r("acme/other:1.0.0"),
        Duration::from_secs(3600),
    );
    set_last_used(&installer, &r("acme/echo:2.0.0"), Duration::from_secs(60));
    let sized = cache
        .prune(&PrunePolicy {
            max_size: Some(500),
            ..PrunePolicy::default()
        })
        .unwrap();
    assert_eq!(refs(&sized.removed), ["acme/other:1.0.0"]);
    assert_eq!(sized.freed(), 400);
    assert_eq!(refs(&cache.list().unwrap()), ["acme/echo:2.0.0"]);
}

#[tokio::test]
async fn touch_and_load_move_last_used_and_prune_skips_a_locked_entry() {
    let (_d, installer) = setup();
    let agent = r("acme/echo:1.0.0");
    install(&installer, &agent, 10).await;
    let cache = Cache::of(&installer);
    set_last_used(&installer, &agent, Duration::from_secs(86400));
    let before = cache.get(&agent).unwrap().unwrap().last_used;
    cache.touch_last_used(&agent).unwrap();
    let after = cache.get(&agent).unwrap().unwrap().last_used;
    assert!(after > before + Duration::from_secs(3600));

    let _held = Arc::new(agent_testkit::hold_lock(
        &lock_path(&installer, &agent),
        None,
    ));
    let report = cache
        .prune(&PrunePolicy {
            keep: Some(0),
            ..PrunePolicy::default()
        })
        .unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(refs(&report.kept), ["acme/echo:1.0.0"]);
    assert!(installer.home().binary_path(&agent).unwrap().exists());
}

#[tokio::test]
async fn a_lock_wait_says_once_whom_it_waits_for() {
    let (_d, installer) = setup();
    let agent = r("acme/echo:1.0.0");
    install(&installer, &agent, 10).await;
    let _held = agent_testkit::hold_lock(&lock_path(&installer, &agent), None);
    std::fs::write(lock_path(&installer, &agent), "4242\n").unwrap();
    let out = LogCapture::default();
    let w = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let cache = Cache::of(&installer).with_lock_timeouts(LockTimeouts {
        wait: Duration::from_millis(800),
        stall: Duration::from_secs(3600),
    });
    let err = tracing::subscriber::with_default(subscriber, || cache.remove(&agent)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LockTimeout {
                holder_pid: Some(4242),
                ..
            }
        ),
        "{err:?}"
    );
    let text = out.text();
    assert_eq!(
        text.matches("waiting for the lock held by pid 4242")
            .count(),
        1,
        "{text}"
    );
}

/// The record's modification time, exactly as on disk.
fn record_mtime(installer: &Installer, agent: &AgentRef) -> SystemTime {
    std::fs::metadata(installer.record_path(agent).unwrap())
        .unwrap()
        .modified()
        .unwrap()
}

/// A load marks the record used only when its mark is a minute old or more
/// (or in the future): a host loading one agent over and over writes no
/// inode each time. Both load paths: the fingerprint check and the full lookup.
#[tokio::test]
async fn a_load_moves_a_stale_last_used_mark_and_leaves_a_fresh_one() {
    let (_d, installer) = setup();
    let agent = r("acme/echo:1.0.0");
    install(&installer, &agent, 10).await;
    let loads: [(&str, &dyn Fn()); 2] = [
        ("fingerprint", &|| {
            assert!(matches!(
                installer.cached_path_fingerprint(&agent).unwrap(),
                agent_store::Fingerprint::Match(_)
            ));
        }),
        ("cached_path", &|| {
            assert!(installer.cached_path(&agent).unwrap().is_some());
        }),
    ];
    for (how, load) in loads {
        set_last_used(&installer, &agent, Duration::from_secs(20));
        let fresh = record_mtime(&installer, &agent);
        load();
        assert_eq!(
            record_mtime(&installer, &agent),
            fresh,
            "{how}: a mark 20 s old stays"
        );

        set_last_used(&installer, &agent, Duration::from_secs(120));
        load();
        let moved = record_mtime(&installer, &agent);
        let age = SystemTime::now().duration_since(moved).unwrap();
        assert!(
            age < Duration::from_secs(30),
            "{how}: a mark 2 min old moves to now, {age:?} ago"
        );

        let future = SystemTime::now() + Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(installer.record_path(&agent).unwrap())
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_modified(future))
            .unwrap();
        load();
        assert!(
            record_mtime(&installer, &agent) < future - Duration::from_secs(1800),
            "{how}: a mark in the future is replaced"
        );
    }
}
