//! What a load sees of the cache: a changed binary is never returned, an
//! untrusted home is refused with the fix, a planted record cannot hang a
//! load, lock waits end, and a failed record leaves no binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use agent_store::{
    AgentHome, AgentRef, ErrorKind, Expected, Fingerprint, Installed, Installer, LockTimeouts,
    Progress, StoreError, VerifyMode,
};
use sha2::{Digest, Sha256};

fn setup() -> (tempfile::TempDir, Installer, AgentRef) {
    let dir = tempfile::tempdir().unwrap();
    let installer = Installer::new(AgentHome::new(dir.path().join("home")));
    let agent: AgentRef = "codefly.dev/echo:1.2.3".parse().unwrap();
    (dir, installer, agent)
}

async fn install(installer: &Installer, agent: &AgentRef, bytes: &[u8]) -> Installed {
    installer
        .install_reader(agent, "test:mem", &Expected::default(), bytes)
        .await
        .unwrap()
}

fn lock_path(installer: &Installer, agent: &AgentRef) -> PathBuf {
    agent_testkit::artifact_lock(&installer.home().binary_path(agent).unwrap())
}

/// Runs `f` on a thread and fails (instead of hanging the suite) if it does
/// not return within a generous guard.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test]
async fn same_size_replacement_is_not_returned_and_is_fetched_again() {
    let (_d, installer, agent) = setup();
    let good = b"#!/bin/sh\necho good\n".to_vec();
    let got = install(&installer, &agent, &good).await;
    assert_eq!(
        installer.cached_path(&agent).unwrap(),
        Some(got.path.clone())
    );

    // Same size, other bytes, and the mtime put back: only the hash (and the
    // ctime, which no one can set back) can tell.
    let mtime = std::fs::metadata(&got.path).unwrap().modified().unwrap();
    let evil = b"#!/bin/sh\necho evil\n".to_vec();
    assert_eq!(evil.len(), good.len());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&got.path)
        .unwrap();
    std::io::Write::write_all(&mut f, &evil).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(mtime))
        .unwrap();
    drop(f);

    assert_eq!(
        installer.cached_path(&agent).unwrap(),
        None,
        "a replaced binary must not be run"
    );
    assert_eq!(installer.cached(&agent).unwrap(), None);

    // The next pull repairs it.
    let again = installer
        .ensure(&agent, || async {
            installer
                .install_reader(&agent, "test:again", &Expected::default(), &good[..])
                .await
        })
        .await
        .unwrap();
    assert_eq!(again.source, "test:again");
    assert_eq!(std::fs::read(&again.path).unwrap(), good);
    assert_eq!(installer.cached_path(&agent).unwrap(), Some(again.path));
}

/// The bytes behind the descriptor a fingerprint match hands out.
fn read_matched(f: Fingerprint) -> (PathBuf, Vec<u8>) {
    let Fingerprint::Match(mut hit) = f else {
        panic!("expected a fingerprint match, got {f:?}");
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut hit.file, &mut bytes).unwrap();
    (hit.path, bytes)
}

/// The load's check in place: an untouched binary matches and its opened
/// descriptor holds the installed bytes; a binary changed in place (same
/// size, mtime put back) or replaced by rename is never a match, and the
/// hashing lookup it is sent to refuses it.
#[tokio::test]
async fn the_fingerprint_check_hands_out_only_the_recorded_file() {
    let (_d, installer, agent) = setup();
    assert!(matches!(
        installer.cached_path_fingerprint(&agent).unwrap(),
        Fingerprint::Missing
    ));
    let good = b"#!/bin/sh\necho good\n".to_vec();
    let got = install(&installer, &agent, &good).await;
    let (path, bytes) = read_matched(installer.cached_path_fingerprint(&agent).unwrap());
    assert_eq!((path, bytes), (got.path.clone(), good.clone()));

    // Rewritten in place, same size, mtime put back.
    let mtime = std::fs::metadata(&got.path).unwrap().modified().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&got.path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"#!/bin/sh\necho evil\n").unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(mtime))
        .unwrap();
    drop(f);
    assert!(matches!(
        installer.cached_path_fingerprint(&agent).unwrap(),
        Fingerprint::NeedsHash
    ));
    assert_eq!(installer.cached_path(&agent).unwrap(), None);

    // Installed again, then replaced by a rename (another inode).
    let again = installer
        .ensure(&agent, || async {
            installer
                .install_reader(&agent, "test:again", &Expected::default(), &good[..])
                .await
        })
        .await
        .unwrap();
    read_matched(installer.cached_path_fingerprint(&agent).unwrap());
    let other = again.path.with_file_name("other");
    std::fs::write(&other, b"#!/bin/sh\necho swap\n").unwrap();
    std::fs::rename(&other, &again.path).unwrap();
    assert!(matches!(
        installer.cached_path_fingerprint(&agent).unwrap(),
        Fingerprint::NeedsHash
    ));
    assert_eq!(installer.cached_path(&agent).unwrap(), None);
}

/// What the fingerprint cannot vouch for goes to the hash: a binary without
/// a record, an installer that verifies always, a kind that loads only
/// behind its descriptor. A symlink at the cache path is refused as before.
#[tokio::test]
async fn the_fingerprint_check_defers_to_the_hash_or_refuses() {
    let (_d, installer, agent) = setup();
    let got = install(&installer, &agent, b"bytes").await;
    let always = installer.clone().with_verify(VerifyMode::Always);
    assert!(matches!(
        always.cached_path_fingerprint(&agent).unwrap(),
        Fingerprint::NeedsHash
    ));
    let provider: AgentRef = "codefly.dev/echo:1.2.3".parse().unwrap();
    let provider = provider.with_kind(agent_ref::AgentKind::Provider);
    assert!(matches!(
        installer.cached_path_fingerprint(&provider).unwrap(),
        Fingerprint::NeedsHash
    ));
    std::fs::remove_file(installer.record_path(&agent).unwrap()).unwrap();
    assert!(matches!(
        installer.cached_path_fingerprint(&agent).unwrap(),
        Fingerprint::NeedsHash
    ));
    std::fs::remove_file(&got.path).unwrap();
    std::os::unix::fs::symlink("/bin/sh", &got.path).unwrap();
    let err = installer.cached_path_fingerprint(&agent).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[tokio::test]
async fn a_touched_but_unchanged_binary_is_hashed_once_and_kept() {
    let (_d, installer, agent) = setup();
    let got = install(&installer, &agent, b"same bytes").await;
    let before = installer.record(&agent).unwrap().unwrap().identity.unwrap();
    // chmod changes the ctime only.
    std::fs::set_permissions(&got.path, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        installer.cached_path(&agent).unwrap(),
        Some(got.path.clone())
    );
    let after = installer.record(&agent).unwrap().unwrap().identity.unwrap();
    assert_ne!(before, after, "the verified identity is recorded");
    assert_eq!(installer.cached_path(&agent).unwrap(), Some(got.path));
}

#[tokio::test]
async fn verify_always_hashes_even_when_the_identity_matches() {
    let (_d, installer, agent) = setup();
    let got = install(&installer, &agent, b"real bytes").await;
    // A record whose identity is right but whose digest is not: the
    // fingerprint check trusts the identity, `Always` does not.
    let rec_path = installer.record_path(&agent).unwrap();
    let mut rec = installer.record(&agent).unwrap().unwrap();
    rec.sha256 = hex::encode(Sha256::digest(b"other bytes"));
    std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    assert_eq!(installer.cached_path(&agent).unwrap(), Some(got.path));
    let always = installer.clone().with_verify(VerifyMode::Always);
    assert_eq!(always.cached_path(&agent).unwrap(), None);
}

#[tokio::test]
async fn a_binary_without_a_record_is_hashed_once_and_recorded() {
    let (_d, installer, agent) = setup();
    let path = installer.home().binary_path(&agent).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"go-installed").unwrap();
    assert!(installer.record(&agent).unwrap().is_none());
    assert_eq!(installer.cached_path(&agent).unwrap(), Some(path.clone()));
    let rec = installer
        .record(&agent)
        .unwrap()
        .expect("a record was written");
    assert_eq!(rec.sha256, hex::encode(Sha256::digest(b"go-installed")));
    assert_eq!(rec.source, "local");
    assert!(rec.identity.is_some());
}

fn assert_untrusted(err: &StoreError, path: &Path, fix: &str) {
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(fix), "{msg} should say {fix}");
}

#[tokio::test]
async fn a_world_writable_home_is_refused_with_the_fix() {
    let (_d, installer, agent) = setup();
    install(&installer, &agent, b"bin").await;
    let home = installer.home().root().to_path_buf();
    let mode = std::fs::metadata(&home).unwrap().permissions().mode();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(mode | 0o002)).unwrap();
    let err = installer.cached_path(&agent).unwrap_err();
    assert_untrusted(&err, &home, &format!("chmod go-w {}", home.display()));
    // Installing into it is refused too.
    let err = installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"x"[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
    // The fix works.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(mode)).unwrap();
    assert!(installer.cached_path(&agent).unwrap().is_some());
}

#[tokio::test]
async fn a_group_writable_agents_dir_and_binary_are_refused() {
    let (_d, installer, agent) = setup();
    let got = install(&installer, &agent, b"bin").await;
    let agents = installer.home().agents_dir();
    std::fs::set_permissions(&agents, std::fs::Permissions::from_mode(0o770)).unwrap();
    let err = installer.cached_path(&agent).unwrap_err();
    assert_untrusted(&err, &agents, &format!("chmod go-w {}", agents.display()));
    std::fs::set_permissions(&agents, std::fs::Permissions::from_mode(0o700)).unwrap();

    std::fs::set_permissions(&got.path, std::fs::Permissions::from_mode(0o757)).unwrap();
    let err = installer.cached_path(&agent).unwrap_err();
    assert_untrusted(
        &err,
        &got.path,
        &format!("chmod go-w {}", got.path.display()),
    );
}

#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

#[tokio::test]
async fn a_binary_owned_by_another_user_is_refused() {
    let (_d, installer, agent) = setup();
    let got = install(&installer, &agent, b"bin").await;
    if euid() != 0 {
        eprintln!("skipped: chown to another user needs root");
        return;
    }
    std::os::unix::fs::chown(&got.path, Some(65534), None).unwrap();
    let err = installer.cached_path(&agent).unwrap_err();
    assert_untrusted(&err, &got.path, &format!("chown 0 {}", got.path.display()));
    assert!(err.to_string().contains("uid 65534"), "{err}");
}

#[tokio::test]
async fn a_fifo_in_place_of_the_record_is_refused_without_waiting() {
    let (_d, installer, agent) = setup();
    install(&installer, &agent, b"bin").await;
    let rec = installer.record_path(&agent).unwrap();
    std::fs::remove_file(&rec).unwrap();
    let c = std::ffi::CString::new(rec.to_str().unwrap()).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0);
    let i = installer.clone();
    let a = agent.clone();
    let err = within("a load with a FIFO as its record", move || {
        i.cached_path(&a).unwrap_err()
    });
    assert_untrusted(&err, &rec, &format!("rm {}", rec.display()));

    // A symlink in its place is refused too (never followed).
    std::fs::remove_file(&rec).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &rec).unwrap();
    let err = installer.cached_path(&agent).unwrap_err();
    assert_untrusted(&err, &rec, "symlink");
}

#[tokio::test]
async fn an_oversized_record_is_refused() {
    let (_d, installer, agent) = setup();
    install(&installer, &agent, b"bin").await;
    let rec = installer.record_path(&agent).unwrap();
    std::fs::write(&rec, vec![b' '; 1 << 20]).unwrap();
    let err = installer.cached_path(&agent).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Untrusted, "{err}");
}

#[tokio::test]
async fn a_failed_record_write_leaves_no_binary() {
    let (_d, installer, agent) = setup();
    let path = installer.home().binary_path(&agent).unwrap();
    // Something the record cannot be renamed over.
    std::fs::create_dir_all(installer.record_path(&agent).unwrap().join("x")).unwrap();
    std::fs::set_permissions(
        path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let err = installer
        .install_reader(&agent, "t:x", &Expected::default(), &b"bytes"[..])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "no binary may stay at {} without its record",
        path.display()
    );
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_gives_up_naming_the_holder() {
    let (_d, installer, agent) = setup();
    let installer = installer.with_lock_timeouts(LockTimeouts {
        wait: Duration::from_secs(1),
        stall: Duration::from_secs(3600),
    });
    let _held = agent_testkit::hold_lock(&lock_path(&installer, &agent), Some(4242));
    let fut = installer.ensure(&agent, || async {
        installer
            .install_reader(&agent, "t:x", &Expected::default(), &b"x"[..])
            .await
    });
    let err = tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("the lock wait must end")
        .unwrap_err();
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
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
    assert!(err.is_retryable());
    assert!(err.to_string().contains("pid 4242"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_holder_that_is_gone_is_treated_as_dead() {
    let (_d, installer, agent) = setup();
    let installer = installer.with_lock_timeouts(LockTimeouts {
        wait: Duration::from_secs(3600),
        stall: Duration::from_millis(500),
    });
    // A pid no process can have: the lock is held through a descriptor its
    // holder left behind.
    let _held = agent_testkit::hold_lock(&lock_path(&installer, &agent), Some(999_999_999));
    let fut = installer.ensure(&agent, || async {
        installer
            .install_reader(&agent, "t:x", &Expected::default(), &b"fresh"[..])
            .await
    });
    let got = tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("a stalled holder must not block forever")
        .unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), b"fresh");
}

#[tokio::test]
async fn progress_is_reported_through_the_callback() {
    let (_d, installer, agent) = setup();
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let s = seen.clone();
    let installer = installer.with_progress(Arc::new(move |p| s.lock().unwrap().push(p)));
    let bytes = vec![7u8; 3 << 20];
    let expected = Expected {
        size: Some(bytes.len() as u64),
        ..Expected::default()
    };
    installer
        .install_reader(&agent, "t:x", &expected, &bytes[..])
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 3, "{} reports", seen.len());
    assert!(seen.windows(2).all(|w| w[0].bytes <= w[1].bytes));
    let last = seen.last().unwrap();
    assert!(last.done);
    assert_eq!(last.bytes, bytes.len() as u64);
    assert_eq!(last.total, Some(bytes.len() as u64));
    assert_eq!(last.agent, agent);
    assert_eq!(seen.iter().filter(|p| p.done).count(), 1);
}

#[tokio::test]
async fn a_load_marks_the_record_used() {
    let (_d, installer, agent) = setup();
    install(&installer, &agent, b"bin").await;
    let rec = installer.record_path(&agent).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&rec)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(old))
        .unwrap();
    let bin_before = std::fs::metadata(installer.home().binary_path(&agent).unwrap()).unwrap();
    installer.cached_path(&agent).unwrap().unwrap();
    let used = std::fs::metadata(&rec).unwrap().modified().unwrap();
    assert!(used > old + Duration::from_secs(3600));
    let bin_after = std::fs::metadata(installer.home().binary_path(&agent).unwrap()).unwrap();
    assert_eq!(
        bin_before.modified().unwrap(),
        bin_after.modified().unwrap(),
        "the binary is never rewritten"
    );
}

/// Not a test: prints what the load-time check costs (fingerprint vs hash)
/// on a 64 MiB binary. `cargo test --release -p agent-manager-store --test it cache_check:: -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn measure_fingerprint_vs_hash() {
    let (_d, installer, agent) = setup();
    install(&installer, &agent, &vec![5u8; 64 << 20]).await;
    let always = installer.clone().with_verify(VerifyMode::Always);
    for (name, i, n) in [("fingerprint", &installer, 2000u32), ("always", &always, 5)] {
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(i.cached_path(&agent).unwrap().is_some());
        }
        eprintln!("cached_path {name}: {:?} per load", t.elapsed() / n);
    }
}

/// A live holder that writes nothing to its temp file (a GitHub download, a
/// Nix build) keeps its lock: the waiter waits and times out, never breaks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_live_holder_keeps_its_lock() {
    let (_d, installer, agent) = setup();
    let installer = installer.with_lock_timeouts(LockTimeouts {
        wait: Duration::from_secs(2),
        stall: Duration::from_millis(200),
    });
    let me = std::process::id();
    let _held = agent_testkit::hold_lock(&lock_path(&installer, &agent), Some(me));
    let fut = installer.ensure(&agent, || async {
        installer
            .install_reader(&agent, "t:x", &Expected::default(), &b"intruder"[..])
            .await
    });
    let err = tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("the lock wait must end")
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LockTimeout { holder_pid: Some(p), .. } if p == me),
        "{err:?}"
    );
    let path = installer.home().binary_path(&agent).unwrap();
    assert!(
        !path.exists(),
        "the live holder's lock was broken and bytes installed"
    );
}
