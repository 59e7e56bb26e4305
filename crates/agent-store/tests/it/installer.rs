//! The installer against a real temp directory: bytes on disk, modes, records,
//! and nothing at the final path after any failure.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use agent_store::{
    AgentHome, AgentRef, ErrorKind, Expected, Installed, Installer, Sha256Digest, StoreError,
};
use agent_testkit::{assert_nothing_at, dead_pid};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

fn setup() -> (tempfile::TempDir, Installer, AgentRef) {
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path().join("home")));
    let agent: AgentRef = "codefly.dev/echo:1.2.3".parse().unwrap();
    (dir, installer, agent)
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn digest(b: &[u8]) -> Sha256Digest {
    Sha256Digest(Sha256::digest(b).into())
}

/// Every file name in the binary's directory.
fn dir_entries(path: &Path) -> Vec<String> {
    match std::fs::read_dir(path.parent().unwrap()) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn happy_path_installs_exact_bytes_mode_and_record() {
    let (_d, installer, agent) = setup();
    let bytes = payload(1_000_003);
    let expected = Expected {
        sha256: Some(digest(&bytes)),
        size: Some(bytes.len() as u64),
        max_size: None,
        ..Expected::default()
    };
    let got = installer
        .install_reader(&agent, "test:mem", &expected, &bytes[..])
        .await
        .unwrap();
    let path = installer.home().binary_path(&agent).unwrap();
    assert_eq!(got.path, path);
    assert_eq!(got.sha256, digest(&bytes).to_hex());
    assert_eq!(got.size, bytes.len() as u64);
    assert_eq!(got.source, "test:mem");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);

    // New directories are private.
    for d in [
        installer.home().root().join("agents"),
        installer.home().root().join("agents/services"),
        path.parent().unwrap().to_path_buf(),
    ] {
        let m = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700, "{}", d.display());
    }

    let rec = installer.record(&agent).unwrap().unwrap();
    assert_eq!(rec.sha256, got.sha256);
    assert_eq!(rec.size, got.size);
    assert_eq!(rec.source, "test:mem");
    assert!(rec.installed_at > 1_600_000_000);
    assert!(
        installer
            .record_path(&agent)
            .unwrap()
            .ends_with("echo__1.2.3.json")
    );

    assert_eq!(installer.cached(&agent).unwrap(), Some(got));
    assert_eq!(
        dir_entries(&path),
        vec!["echo__1.2.3".to_owned(), "echo__1.2.3.json".to_owned()]
    );
    // The cache scan still sees exactly one version.
    assert_eq!(
        installer.home().installed_versions(&agent).unwrap(),
        vec![agent.concrete_version().unwrap().clone()]
    );
}

#[tokio::test]
async fn wrong_digest_is_integrity_and_leaves_nothing() {
    let (_d, installer, agent) = setup();
    let bytes = payload(70_000);
    let expected = Expected {
        sha256: Some(digest(b"something else")),
        ..Expected::default()
    };
    let err = installer
        .install_reader(&agent, "http:x", &expected, &bytes[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("expected sha256"), "{err}");
    assert_nothing_at(&installer.home().binary_path(&agent).unwrap());
    assert!(installer.record(&agent).unwrap().is_none());
}

/// A pin (a lock file's sha256) holds whatever the store says: the store's
/// own digest may agree with the bytes, they still must be the pinned ones.
#[tokio::test]
async fn a_pinned_digest_refuses_other_bytes_before_they_reach_the_cache() {
    let (_d, installer, agent) = setup();
    let bytes = payload(70_000);
    let pinned = installer.clone().with_pin(agent_store::Pin {
        sha256: digest(b"what the lock says"),
        by: "the lock file /p/agents.lock".to_owned(),
    });
    let expected = Expected {
        sha256: Some(digest(&bytes)),
        ..Expected::default()
    };
    let err = pinned
        .install_reader(&agent, "http:x", &expected, &bytes[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("/p/agents.lock"), "{err}");
    assert_nothing_at(&installer.home().binary_path(&agent).unwrap());
    assert!(installer.record(&agent).unwrap().is_none());

    let pinned = installer.clone().with_pin(agent_store::Pin {
        sha256: digest(&bytes),
        by: "the lock file /p/agents.lock".to_owned(),
    });
    let got = pinned
        .install_reader(&agent, "http:x", &Expected::default(), &bytes[..])
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
}

#[tokio::test]
async fn wrong_size_is_integrity() {
    let (_d, installer, agent) = setup();
    let bytes = payload(10_000);
    for size in [9_999, 10_001] {
        let expected = Expected {
            size: Some(size),
            ..Expected::default()
        };
        let err = installer
            .install_reader(&agent, "http:x", &expected, &bytes[..])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        assert_nothing_at(&installer.home().binary_path(&agent).unwrap());
    }
}

#[tokio::test]
async fn size_cap_stops_the_stream() {
    let (_d, installer, agent) = setup();
    let bytes = payload(600_000);
    let expected = Expected {
        max_size: Some(300_000),
        ..Expected::default()
    };
    let err = installer
        .install_reader(&agent, "http:x", &expected, &bytes[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("size cap"), "{err}");
    assert_nothing_at(&installer.home().binary_path(&agent).unwrap());
}

/// Yields `good` bytes, then fails like a dropped connection.
struct FailingReader {
    good: Vec<u8>,
    pos: usize,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos >= self.good.len() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )));
        }
        let n = buf.remaining().min(self.good.len() - self.pos).min(8192);
        let start = self.pos;
        buf.put_slice(&self.good[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn reader_failure_is_store_unavailable_and_leaves_nothing() {
    let (_d, installer, agent) = setup();
    let reader = FailingReader {
        good: payload(500_000),
        pos: 0,
    };
    let err = installer
        .install_reader(&agent, "http:http://h/x", &Expected::default(), reader)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert!(err.is_retryable());
    match &err {
        StoreError::Unavailable { store, .. } => assert_eq!(store, "http"),
        other => panic!("unexpected {other:?}"),
    }
    assert_nothing_at(&installer.home().binary_path(&agent).unwrap());
}

#[tokio::test]
async fn install_file_copies_and_local_read_errors_are_io() {
    let (d, installer, agent) = setup();
    let src = d.path().join("built");
    let bytes = payload(123_456);
    std::fs::write(&src, &bytes).unwrap();
    let got = installer
        .install_file(
            &agent,
            "nix:/nix/store/x",
            &Expected {
                sha256: Some(digest(&bytes)),
                ..Expected::default()
            },
            &src,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    assert_eq!(got.source, "nix:/nix/store/x");

    let other: AgentRef = "codefly.dev/echo:2.0.0".parse().unwrap();
    let err = installer
        .install_file(
            &other,
            "nix:x",
            &Expected::default(),
            &d.path().join("absent"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_nothing_at(&installer.home().binary_path(&other).unwrap());
}

#[tokio::test]
async fn symlinked_publisher_dir_is_refused() {
    let (d, installer, agent) = setup();
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let services = installer.home().root().join("agents/services");
    std::fs::create_dir_all(&services).unwrap();
    std::os::unix::fs::symlink(&elsewhere, services.join("codefly.dev")).unwrap();

    let err = installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"abc"[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    let err = installer.cached(&agent).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[tokio::test]
async fn symlinked_binary_path_is_refused() {
    let (d, installer, agent) = setup();
    let target = d.path().join("victim");
    std::fs::write(&target, b"precious").unwrap();
    let path = installer.home().binary_path(&agent).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let err = installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"evil"[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(installer.cached(&agent).unwrap_err().kind(), ErrorKind::Io);
}

#[tokio::test]
async fn stale_temp_files_are_cleaned_on_next_install() {
    let (_d, installer, agent) = setup();
    let path = installer.home().binary_path(&agent).unwrap();
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let dead = dir.join(format!(".echo__1.2.3.tmp.{}.abc", dead_pid()));
    let dead_rec = dir.join(format!(".echo__1.2.3.json.tmp.{}.abc", dead_pid()));
    let live = dir.join(format!(".echo__1.2.3.tmp.{}.zzz", std::process::id()));
    let other = dir.join(format!(".other__1.0.0.tmp.{}.abc", dead_pid()));
    for p in [&dead, &dead_rec, &live, &other] {
        std::fs::write(p, b"partial").unwrap();
    }
    installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"ok"[..])
        .await
        .unwrap();
    assert!(!dead.exists(), "dead process's temp must go");
    assert!(!dead_rec.exists(), "dead process's record temp must go");
    assert!(live.exists(), "a live process's fresh temp stays");
    assert!(
        other.exists(),
        "another artifact's temp is not ours to clean"
    );
}

#[tokio::test]
async fn cached_without_record_hashes_and_says_local() {
    let (_d, installer, agent) = setup();
    assert_eq!(installer.cached(&agent).unwrap(), None);
    let path = installer.home().binary_path(&agent).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"go-installed").unwrap();
    let got = installer.cached(&agent).unwrap().unwrap();
    assert_eq!(got.source, "local");
    assert_eq!(got.sha256, digest(b"go-installed").to_hex());
    assert_eq!(got.size, 12);
}

#[tokio::test]
async fn cached_with_mismatching_record_is_not_installed() {
    let (_d, installer, agent) = setup();
    let got = installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"0123456789"[..])
        .await
        .unwrap();
    // Truncated behind our back (the Go loader's failure mode).
    std::fs::write(&got.path, b"01234").unwrap();
    assert_eq!(installer.cached(&agent).unwrap(), None);
    // ensure() then fetches again and repairs it.
    let again = installer
        .ensure(&agent, || async {
            installer
                .install_reader(&agent, "t:y", &Expected::default(), &b"0123456789"[..])
                .await
        })
        .await
        .unwrap();
    assert_eq!(again.source, "t:y");
    assert_eq!(std::fs::read(&again.path).unwrap(), b"0123456789");
}

#[tokio::test]
async fn non_concrete_ref_is_invalid_ref() {
    let (_d, installer, _) = setup();
    let latest: AgentRef = "codefly.dev/echo".parse().unwrap();
    assert_eq!(
        installer.cached(&latest).unwrap_err().kind(),
        ErrorKind::InvalidRef
    );
    let err = installer
        .install_reader(&latest, "t:x", &Expected::default(), &b"x"[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRef);
}

async fn slow_fetch(
    installer: &Installer,
    agent: &AgentRef,
    count: &AtomicUsize,
    bytes: &[u8],
) -> Result<Installed, StoreError> {
    count.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    installer
        .install_reader(agent, "t:x", &Expected::default(), bytes)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ensure_single_flight_16_tasks_one_fetch() {
    let (_d, installer, agent) = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(payload(300_000));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (installer, agent, count, bytes) = (
            installer.clone(),
            agent.clone(),
            count.clone(),
            bytes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            installer
                .ensure(&agent, || slow_fetch(&installer, &agent, &count, &bytes))
                .await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
    for r in &results {
        assert_eq!(r.sha256, results[0].sha256);
        assert_eq!(std::fs::read(&r.path).unwrap(), *bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ensure_shares_a_failure_with_waiters() {
    let (_d, installer, agent) = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (installer, agent, count) = (installer.clone(), agent.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            installer
                .ensure(&agent, || async {
                    count.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err::<Installed, _>(StoreError::Integrity {
                        store: "t".into(),
                        what: "x".into(),
                        message: "bad".into(),
                    })
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().kind(), ErrorKind::Integrity);
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // A later, separate call fetches again rather than reusing the old failure.
    let got = installer
        .ensure(&agent, || async {
            count.fetch_add(1, Ordering::SeqCst);
            installer
                .install_reader(&agent, "t:x", &Expected::default(), &b"fine"[..])
                .await
        })
        .await
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(std::fs::read(got.path).unwrap(), b"fine");
}

/// Two pulls of one artifact whose fetch fails with a kind other than `io`:
/// the pull that waited for the other's fetch gets that very error, with
/// its kind, text and cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_gets_the_fetch_error_with_its_kind_and_cause() {
    let (_d, installer, agent) = setup();
    let count = Arc::new(AtomicUsize::new(0));
    let pull = |installer: Installer,
                agent: AgentRef,
                count: Arc<AtomicUsize>,
                fail: StoreError| async move {
        let mut fail = Some(fail);
        installer
            .ensure(&agent, || async {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Err::<Installed, _>(fail.take().unwrap())
            })
            .await
    };
    for (fail, kind) in [
        (
            || {
                StoreError::Ref(agent_ref::RefError::NotConcrete(
                    "codefly.dev/echo:latest".into(),
                ))
            },
            ErrorKind::InvalidRef,
        ),
        (
            || StoreError::Unavailable {
                store: "t".into(),
                message: "GET http://127.0.0.1:9/x".into(),
                retry_after: None,
                source: Some(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))),
            },
            ErrorKind::StoreUnavailable,
        ),
    ] as [(fn() -> StoreError, ErrorKind); 2]
    {
        count.store(0, Ordering::SeqCst);
        let first = tokio::spawn(pull(
            installer.clone(),
            agent.clone(),
            count.clone(),
            fail(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = tokio::spawn(pull(
            installer.clone(),
            agent.clone(),
            count.clone(),
            fail(),
        ));
        let first = first.await.unwrap().unwrap_err();
        let second = second.await.unwrap().unwrap_err();
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "the second pull waited for the first's fetch"
        );
        for e in [&first, &second] {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(
                std::mem::discriminant(e.unshared()),
                std::mem::discriminant(&fail()),
                "{e:?}"
            );
        }
        assert_eq!(
            agent_ref::error_chain(&second).to_string(),
            agent_ref::error_chain(&fail()).to_string()
        );
        assert_eq!(
            agent_ref::error_chain(&first).to_string(),
            agent_ref::error_chain(&second).to_string()
        );
        assert_nothing_at(&installer.home().binary_path(&agent).unwrap());
    }
}

#[tokio::test]
async fn ensure_returns_cached_without_fetching() {
    let (_d, installer, agent) = setup();
    installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"abc"[..])
        .await
        .unwrap();
    let got = installer
        .ensure(&agent, || async {
            Err(StoreError::io(
                "must not fetch",
                std::io::Error::other("fetched"),
            ))
        })
        .await
        .unwrap();
    assert_eq!(got.source, "t:x");
    let lock: PathBuf = got.path.with_file_name("echo__1.2.3.lock");
    assert!(!lock.exists(), "a cache hit takes no lock");
}

#[tokio::test]
async fn cancelled_install_leaves_nothing() {
    let (_d, installer, agent) = setup();
    // A reader that never ends: the install is dropped mid-stream.
    let (mut w, r) = tokio::io::duplex(64 * 1024);
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..8 {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let res = tokio::time::timeout(
        Duration::from_millis(300),
        installer.install_reader(&agent, "t:x", &Expected::default(), r),
    )
    .await;
    assert!(res.is_err(), "install should still be waiting");
    feeder.abort();
    // The writer thread may still be finishing; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_nothing_at(&installer.home().binary_path(&agent).unwrap());
}

/// `echo__1.0.0-rc.1.json` parses as the pre-release `1.0.0-rc.1.json`
/// (and the lock file likewise): `AgentHome::installed_versions` must skip
/// `.json`/`.lock` names.
#[tokio::test]
async fn prerelease_record_is_not_a_version() {
    let (_d, installer, _) = setup();
    let agent: AgentRef = "codefly.dev/echo:1.0.0-rc.1".parse().unwrap();
    installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"x"[..])
        .await
        .unwrap();
    let vs: Vec<String> = installer
        .home()
        .installed_versions(&agent)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(vs, ["1.0.0-rc.1"]);
}
