//! What an agent is given, as the agent itself reports it: no host secret, no
//! descriptor but 0, 1, 2 and the lifeline, only the socket the host assigned,
//! only an absolute program.
#![allow(clippy::unwrap_used, unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_ref::ErrorKind;
use agent_spawn::{LIFELINE_ENV, SpawnOptions, spawn};
use agent_testkit::bin_path;

fn opts(args: &[&str]) -> SpawnOptions {
    SpawnOptions::new()
        .args(args.iter().copied())
        .startup_timeout(Duration::from_secs(20))
        .dial_timeout(Duration::from_secs(20))
        .grace(Duration::from_millis(300))
}

struct Report {
    env: BTreeMap<String, String>,
    fds: BTreeMap<u32, String>,
}

/// Loads `test-agent report FILE` with `o` and returns what the agent saw.
async fn report(o: SpawnOptions) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report");
    let o = o.arg("report").arg(&file);
    let conn = spawn(&bin_path("test-agent"), o).await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    conn.close().await;
    let mut env = BTreeMap::new();
    let mut fds = BTreeMap::new();
    for line in text.lines() {
        if let Some(kv) = line.strip_prefix("env ") {
            let (k, v) = kv.split_once('=').unwrap();
            env.insert(k.to_owned(), v.to_owned());
        } else if let Some(fd) = line.strip_prefix("fd ") {
            let (n, target) = fd.split_once(' ').unwrap();
            fds.insert(n.parse().unwrap(), target.to_owned());
        }
    }
    Report { env, fds }
}

const SECRETS: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "AGENT_REGISTRY_USERNAME",
    "AGENT_REGISTRY_PASSWORD",
    "CODEFLY_AGENT_ATTACH",
];

/// One test, so the host environment is set once and nothing races it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_descriptors_do_not_reach_the_agent() {
    for (i, name) in SECRETS.iter().enumerate() {
        // SAFETY: set before any agent is spawned by this test binary's only test.
        unsafe { std::env::set_var(name, format!("host-secret-{i}")) };
    }
    // SAFETY: as above, before any agent is spawned.
    unsafe {
        std::env::set_var("H1_PLAIN_VAR", "plain");
        std::env::set_var("H1_REMOVED_VAR", "removed");
        std::env::set_var("H1_KEEP_THIS", "kept");
    }
    // A descriptor the host holds without close-on-exec (as if inherited).
    let leaked_file = tempfile::NamedTempFile::new().unwrap();
    let leaked_path = leaked_file.path().to_path_buf();
    // SAFETY: dup of a valid fd; dup never sets FD_CLOEXEC.
    let leaked_fd = unsafe { libc::dup(leaked_file.as_file().as_raw_fd()) };
    assert!(leaked_fd > 2);
    assert_eq!(
        // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags.
        unsafe { libc::fcntl(leaked_fd, libc::F_GETFD) } & libc::FD_CLOEXEC,
        0
    );

    // Default: inherit minus the secrets, `env_remove` removed too.
    let r = report(opts(&[]).env_remove("H1_REMOVED_VAR")).await;
    for name in SECRETS {
        assert!(!r.env.contains_key(*name), "{name} reached the agent");
    }
    assert_eq!(r.env.get("H1_PLAIN_VAR").map(String::as_str), Some("plain"));
    assert!(!r.env.contains_key("H1_REMOVED_VAR"));
    // Only 0, 1, 2 and the lifeline (and the agent's own /proc listing).
    let lifeline: u32 = r.env[LIFELINE_ENV].parse().unwrap();
    for (fd, target) in &r.fds {
        assert!(
            *fd <= 2 || *fd == lifeline || target.starts_with("/proc/"),
            "fd {fd} ({target}) reached the agent: {:?}",
            r.fds
        );
        assert_ne!(
            Path::new(target),
            leaked_path,
            "the host's fd {leaked_fd} leaked"
        );
    }
    assert!(r.fds[&lifeline].starts_with("pipe:"), "{:?}", r.fds);

    // An explicit variable still wins.
    let r = report(opts(&[]).env("GH_TOKEN", "given-on-purpose")).await;
    assert_eq!(
        r.env.get("GH_TOKEN").map(String::as_str),
        Some("given-on-purpose")
    );
    assert!(!r.env.contains_key("GITHUB_TOKEN"));

    // The allowlist: PATH and friends plus what the caller adds, nothing
    // else; `env_remove` still removes; a host secret stays out even when a
    // pattern covers it.
    let r = report(
        opts(&[])
            .env_allowlist(["H1_*", "CODEFLY_*", "GH_*"])
            .env_remove("H1_PLAIN_VAR"),
    )
    .await;
    assert!(!r.env.contains_key("H1_PLAIN_VAR"), "env_remove ignored");
    assert_eq!(r.env.get("H1_KEEP_THIS").map(String::as_str), Some("kept"));
    for name in SECRETS {
        assert!(!r.env.contains_key(*name), "{name} reached the agent");
    }
    let r = report(opts(&[]).env_allowlist(["H1_KEEP_*"])).await;
    assert_eq!(r.env.get("H1_KEEP_THIS").map(String::as_str), Some("kept"));
    assert!(r.env.contains_key("PATH"));
    assert!(!r.env.contains_key("H1_PLAIN_VAR"));
    for name in SECRETS {
        assert!(!r.env.contains_key(*name), "{name} reached the agent");
    }
    assert!(r.env.contains_key("CODEFLY_AGENT_TOKEN"));

    // SAFETY: `leaked_fd` is this test's own descriptor, used by nothing else now.
    unsafe { libc::close(leaked_fd) };
}

#[tokio::test]
async fn a_foreign_socket_is_refused() {
    let o = opts(&["foreign-socket"]).unix_socket(true);
    let err = spawn(&bin_path("test-agent"), o).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HandshakeMalformed, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("/s.sock") && msg.contains("/agent.sock"),
        "{msg}"
    );
    let pid = err.pid().unwrap();
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("foreign-{pid}")));
}

#[tokio::test]
async fn a_relative_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(bin_path("test-agent"), dir.path().join("test-agent")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let relative: PathBuf = pathdiff(dir.path(), &cwd).join("test-agent");
    assert!(relative.is_relative());
    let err = spawn(&relative, opts(&["serve"])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Spawn, "{err}");
    assert!(err.to_string().contains("absolute"), "{err}");
    assert!(err.pid().is_none(), "nothing was started");
}

/// `to` relative to `from` (both absolute).
fn pathdiff(to: &Path, from: &Path) -> PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}
