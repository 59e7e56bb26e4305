//! What runs is the file that was checked, on every start: a supervised
//! restart goes through the admission hook again (a refusal ends supervision
//! with the hook's kind, and the replaced bytes never run), and a path
//! replaced between the check and the exec still runs the checked bytes.

use std::io::{Read as _, Seek as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_echo::pb::InfoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_ref::ErrorKind;
use agent_spawn::{
    Admit, AgentEvent, Executable, RestartPolicy, SpawnError, SpawnOptions, spawn, supervise,
};
use agent_testkit::bin_path;

use crate::support::next_event;

fn opts(admit: Admit) -> SpawnOptions {
    SpawnOptions::new()
        .startup_timeout(Duration::from_secs(20))
        .dial_timeout(Duration::from_secs(20))
        .grace(Duration::from_secs(5))
        .admit(admit)
}

/// A cache-like directory holding a copy of agent-echo at `agent`, and a
/// replacement program at `replacement` that leaves `marker` when it runs.
struct Setup {
    _dir: tempfile::TempDir,
    agent: PathBuf,
    replacement: PathBuf,
    marker: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("service-echo");
    std::fs::copy(bin_path("agent-echo"), &agent).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = dir.path().join("replacement-ran");
    let replacement = dir.path().join("replacement");
    std::fs::write(
        &replacement,
        format!(
            "#!/bin/sh\ntouch '{}'\nexec '{}' \"$@\"\n",
            marker.display(),
            bin_path("agent-echo").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&replacement, std::fs::Permissions::from_mode(0o755)).unwrap();
    Setup {
        _dir: dir,
        agent,
        replacement,
        marker,
    }
}

/// An admission that opens the path and refuses (`integrity`) any bytes
/// other than `expected`.
fn fingerprint_admission(path: PathBuf, expected: Vec<u8>) -> Admit {
    Arc::new(move || {
        let (path, expected) = (path.clone(), expected.clone());
        Box::pin(async move {
            let (path, fd) = Executable::open(&path)?.into_parts();
            let mut file = std::fs::File::from(fd);
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            file.rewind().unwrap();
            if bytes != expected {
                return Err(SpawnError::refused(
                    ErrorKind::Integrity,
                    format!("{} changed since it was checked", path.display()),
                    None,
                ));
            }
            Ok(Executable::from_parts(path, OwnedFd::from(file)))
        })
    })
}

#[allow(unsafe_code)]
fn kill9(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    assert_eq!(rc, 0);
}

fn replace(from: &Path, to: &Path) {
    std::fs::rename(from, to).unwrap();
}

#[tokio::test]
async fn a_restart_refused_by_the_admission_runs_nothing() {
    let s = setup();
    let expected = std::fs::read(&s.agent).unwrap();
    let conn = supervise(
        &s.agent,
        opts(fingerprint_admission(s.agent.clone(), expected)),
        RestartPolicy::on_failure()
            .with_backoff(Duration::from_millis(10), Duration::from_millis(10)),
    )
    .await
    .unwrap();
    let mut events = conn.events();

    replace(&s.replacement, &s.agent);
    kill9(conn.pid());

    let gave_up = next_event(&mut events, "gave up", |e| {
        matches!(e, AgentEvent::GaveUp { .. })
    })
    .await;
    let AgentEvent::GaveUp { error } = gave_up else {
        unreachable!()
    };
    assert_eq!(error.kind(), ErrorKind::Integrity, "{error}");
    assert!(
        error.to_string().contains("changed since it was checked"),
        "{error}"
    );
    assert_eq!(conn.failure().unwrap().kind(), ErrorKind::Integrity);
    let mut client = EchoClient::new(conn.channel());
    let status = client.info(InfoRequest {}).await.unwrap_err();
    assert!(status.message().contains("integrity"), "{status:?}");
    assert!(!s.marker.exists(), "the replaced bytes ran");
}

#[tokio::test]
async fn a_restart_runs_what_the_admission_admits_not_the_path() {
    let s = setup();
    // The host's record: the descriptor it checked at install.
    let checked = Arc::new(OwnedFd::from(std::fs::File::open(&s.agent).unwrap()));
    let (path, held) = (s.agent.clone(), Arc::clone(&checked));
    let admit: Admit = Arc::new(move || {
        let (path, held) = (path.clone(), Arc::clone(&held));
        Box::pin(async move {
            let fd = held
                .try_clone()
                .map_err(|e| SpawnError::refused(ErrorKind::Io, "dup", Some(Box::new(e))))?;
            Ok(Executable::from_parts(path, fd))
        })
    });
    let conn = supervise(
        &s.agent,
        opts(admit),
        RestartPolicy::on_failure()
            .with_backoff(Duration::from_millis(10), Duration::from_millis(10)),
    )
    .await
    .unwrap();
    let mut events = conn.events();
    let first = conn.pid();

    replace(&s.replacement, &s.agent);
    kill9(first);

    next_event(&mut events, "started", |e| {
        matches!(e, AgentEvent::Started { restarts: 1, .. })
    })
    .await;
    let mut client = EchoClient::new(conn.channel());
    let pid = client.info(InfoRequest {}).await.unwrap().into_inner().pid;
    assert_ne!(pid, first);
    assert!(!s.marker.exists(), "the restart ran the replaced path");
    conn.close().await;
}

#[tokio::test]
async fn a_path_replaced_after_the_check_still_runs_the_checked_bytes() {
    let s = setup();
    let checked = Executable::open(&s.agent).unwrap();
    replace(&s.replacement, &s.agent);
    let slot = Arc::new(Mutex::new(Some(checked)));
    let admit: Admit = Arc::new(move || {
        let taken = slot.lock().unwrap().take();
        Box::pin(async move { Ok(taken.expect("admitted once")) })
    });
    let conn = spawn(&s.agent, opts(admit)).await.unwrap();
    assert!(!s.marker.exists(), "the replaced path ran");
    conn.close().await;
}

#[tokio::test]
async fn a_script_agent_runs_from_its_descriptor() {
    let s = setup();
    // The replacement is a `#!` script: executed from its descriptor too.
    let exe = Executable::open(&s.replacement).unwrap();
    let slot = Arc::new(Mutex::new(Some(exe)));
    let admit: Admit = Arc::new(move || {
        let taken = slot.lock().unwrap().take();
        Box::pin(async move { Ok(taken.expect("admitted once")) })
    });
    let conn = spawn(&s.replacement, opts(admit)).await.unwrap();
    assert!(s.marker.exists(), "the script did not run");
    conn.close().await;
}

#[tokio::test]
async fn a_first_start_refused_by_the_admission_has_its_kind() {
    let s = setup();
    let admit = fingerprint_admission(s.agent.clone(), b"other bytes".to_vec());
    let err = spawn(&s.agent, opts(admit)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.pid().is_none());
}
