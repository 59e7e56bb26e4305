//! `agent-testkit`: test support shared by the workspace (not published).
//!
//! - [`bin_path`] finds (and, once per process, builds) a workspace binary:
//!   `agent-echo`, `test-agent` (misbehaving agents, one mode per failure; see
//!   `src/bin/test-agent.rs`), `agentctl`.
//! - [`group_alive`], [`pid_alive`], [`wait_group_gone`], [`wait_pid_gone`]
//!   check that processes are really gone (zombies count as gone: they run
//!   nothing, and on machines whose pid 1 does not reap, orphans stay zombies).
//! - [`vm_rss_kib`], [`vm_hwm_kib`]: this process's memory, for flood tests.
//! - `agent`: an agent process started directly (no agent-spawn), its
//!   handshake, channel, signals and exit.
//! - [`test_name!`]: the harness's name of a test, for a test that runs its
//!   own binary again for one test.
//! - `logs`: what a `tracing` subscriber writes, for a test to read.
//! - `nix`: the configuration the real `nix` needs for test flakes.
//! - `registry`: a real OCI registry.
//! - `http`: a real HTTP server with scripted faults; `github`: the stand-in
//!   for api.github.com.
//! - [`dead_pid`], [`artifact_lock`], [`hold_lock`], [`assert_nothing_at`]:
//!   the installer's files, as another process or a failed install leaves them.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let agent = agent_testkit::bin_path("test-agent");
//! let mut child = std::process::Command::new(&agent).arg("hang").spawn().unwrap();
//! child.kill().unwrap();
//! child.wait().unwrap();
//! assert!(agent_testkit::wait_pid_gone(child.id(), Duration::from_secs(5)));
//! ```

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub mod agent;
pub mod github;
pub mod http;
pub mod logs;
pub mod nix;
pub mod proxy;
pub mod registry;
pub mod sandbox;

/// Set to `1` to never run `cargo build` from [`bin_path`] (use what is on disk).
pub const NO_BUILD_ENV: &str = "AGENT_TESTKIT_NO_BUILD";

/// The package that owns a workspace binary.
fn package_of(bin: &str) -> &str {
    match bin {
        "test-agent" | "probe-agent" => "agent-testkit",
        "agentctl" => "agent-manager-cli",
        other => other,
    }
}

/// The profile directory of the running test (`target/debug`), from the test
/// executable's own path (`target/debug/deps/foo-HASH` or `target/debug/foo`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the executable's directory")
        .to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    dir
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/agent-testkit is two levels below the workspace root")
        .to_path_buf()
}

/// The path of workspace binary `name` in the running test's profile
/// directory, built first (`cargo build -q -p PKG --bin NAME`) once per
/// process so it is never stale.
///
/// The build uses the test's own target directory and profile. Cargo only
/// holds its build-directory lock while compiling, not while tests run, so
/// the nested build neither blocks nor is blocked by `cargo test`; when the
/// outer `cargo test --workspace` already built the binary it is a no-op.
/// Set `AGENT_TESTKIT_NO_BUILD=1` to skip the build.
///
/// # Panics
/// When the build fails or the binary is missing afterwards (a test helper:
/// failing loudly is the point).
#[must_use]
pub fn bin_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let cell = {
        let mut map = BUILT
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(name.to_owned()).or_default())
    };
    cell.get_or_init(|| build(name)).clone()
}

fn build(name: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let path = profile_dir.join(name);
    if std::env::var_os(NO_BUILD_ENV).is_some_and(|v| v == "1") {
        assert!(
            path.exists(),
            "{} missing and {NO_BUILD_ENV}=1",
            path.display()
        );
        return path;
    }
    let target_dir = profile_dir.parent().expect("a target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("-q")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", package_of(name), "--bin", name])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().expect("cannot run cargo");
    assert!(
        out.status.success(),
        "building {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        path.exists(),
        "{} missing after building it",
        path.display()
    );
    path
}

/// `(state, pgrp)` of a process from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn running(state: char) -> bool {
    !matches!(state, 'Z' | 'X' | 'x')
}

/// The name the test harness gives test `test` of the calling module, for a test
/// binary that runs one of its own tests again (`--exact NAME`): the module path
/// without the crate's name, so `test_name!("host")` in `tests/it/host_death.rs`
/// is `host_death::host`, and in a binary of its own just `host`.
#[macro_export]
macro_rules! test_name {
    ($test:expr) => {
        $crate::test_name_in(::core::module_path!(), $test)
    };
}

/// [`test_name!`] for an explicit module path (`module_path!()` of the caller).
#[must_use]
pub fn test_name_in(module_path: &str, test: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, path)) => format!("{path}::{test}"),
        None => test.to_owned(),
    }
}

/// The arguments that make a test binary run only its test `name` (a
/// [`test_name!`]), ignored or not, with its output shown, on one thread.
#[must_use]
pub fn rerun_args(name: &str) -> [&str; 5] {
    [
        name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// This test binary, to be run again as a child process for its test `name`
/// alone (a [`test_name!`]): as a host to kill, or with variables in its
/// initial environment that the running tests must not see.
///
/// # Panics
/// When the path of the running test binary is unknown.
#[must_use]
pub fn rerun(name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("the test binary's path"));
    c.args(rerun_args(name));
    c
}

/// Asserts that the file at `path` holds exactly `want` (a mismatch names both
/// sizes rather than printing megabytes).
///
/// # Panics
/// When the file cannot be read or its bytes differ.
#[track_caller]
pub fn assert_file_bytes(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        got == want,
        "installed bytes differ ({} vs {} bytes)",
        got.len(),
        want.len()
    );
}

/// What follows `marker` on the first line of `child`'s piped stdout that
/// contains it (a rerun host announcing what it started). `None` when no such
/// line comes within `timeout` or stdout ends first; the child is then killed
/// and reaped. Lines are read on a thread of their own, which ends with stdout.
///
/// # Panics
/// When `child`'s stdout was not piped (or was taken already).
pub fn printed_after(child: &mut Child, marker: &str, timeout: Duration) -> Option<String> {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once(&marker) {
                let _ = tx.send(rest.to_owned());
                return;
            }
        }
    });
    let got = rx.recv_timeout(timeout).ok();
    if got.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    got
}

/// A provider manifest (`provider.codefly.yaml`) for `codefly.dev/echo:1.0.0`, as
/// a provider's verified-artifact descriptor vouches for it beside the binary.
pub const PROVIDER_MANIFEST: &str = "\
schema_version: codefly.provider-manifest/v0
protocol_version: codefly.provider/v0
state_schema_versions: [1]
agent:
  kind: codefly:provider
  publisher: codefly.dev
  name: echo
  version: 1.0.0
default_deletion_policy: retain
permissions:
  required:
    - id: read-record
      action: read
      resource: records/*
      resource_type: record
      reason: Reads records
      risk: low
resource_types:
  - id: record
    actions: [observe]
sandbox:
  network: loopback
state:
  schema_versions: [1]
diagnostic_namespace: codefly.echo.
";

/// Whether process `pid` exists and is not a zombie.
#[must_use]
pub fn pid_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| running(state))
}

/// Whether any process of group `pgid` exists and is not a zombie.
#[must_use]
pub fn group_alive(pgid: u32) -> bool {
    group_members(pgid).next().is_some()
}

/// Pids of the live (non-zombie) members of group `pgid`.
pub fn group_members(pgid: u32) -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| stat(pid).is_some_and(|(s, g)| g == pgid && running(s)))
}

/// Polls `alive` until it is false or `timeout` passes; `true` when gone.
pub fn wait_until_gone(timeout: Duration, mut alive: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until group `pgid` has no live member; `true` when gone.
#[must_use]
pub fn wait_group_gone(pgid: u32, timeout: Duration) -> bool {
    wait_until_gone(timeout, || group_alive(pgid))
}

/// Waits (bounded) until process `pid` is gone or a zombie; `true` when gone.
#[must_use]
pub fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    wait_until_gone(timeout, || pid_alive(pid))
}

/// The pid of a process that has exited and been reaped.
#[must_use]
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("run `true`");
    let pid = child.id();
    child.wait().expect("reap `true`");
    pid
}

/// The lock file the installer takes for the artifact at `binary`
/// (`{binary}.lock`).
#[must_use]
pub fn artifact_lock(binary: &Path) -> PathBuf {
    let mut p = binary.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Holds the lock file at `path` as an installer in another process would:
/// its own open file, flocked. With a `holder`, the file names that pid
/// (`"{pid}\n"`); without, its content is left as it is. Dropping the file
/// releases the lock.
pub fn hold_lock(path: &Path, holder: Option<u32>) -> std::fs::File {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("the lock's directory");
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(holder.is_some())
        .open(path)
        .expect("open the lock file");
    f.lock().expect("flock the lock file");
    if let Some(pid) = holder {
        std::fs::write(path, format!("{pid}\n")).expect("name the holder");
    }
    f
}

/// Asserts nothing is at `path` (not even a dangling link) and no temp file
/// (`*.tmp.*`) is left beside it: what a failed install must leave.
pub fn assert_nothing_at(path: &Path) {
    assert!(
        std::fs::symlink_metadata(path).is_err(),
        "{} must not exist",
        path.display()
    );
    let dir = path.parent().unwrap_or(Path::new("."));
    let temps: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
}

fn self_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// This process's resident set size, KiB.
#[must_use]
pub fn vm_rss_kib() -> u64 {
    self_status_kib("VmRSS")
}

/// This process's peak resident set size, KiB.
#[must_use]
pub fn vm_hwm_kib() -> u64 {
    self_status_kib("VmHWM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_name_follows_the_module_path_without_the_crate() {
        assert_eq!(test_name_in("it::host_death", "host"), "host_death::host");
        assert_eq!(test_name_in("it::a::b", "t"), "a::b::t");
        assert_eq!(test_name_in("stale_sockets", "host"), "host");
        assert_eq!(test_name!("t"), "tests::t");
    }

    #[test]
    fn own_process_is_alive() {
        assert!(pid_alive(std::process::id()));
        let pgid = u32::try_from(unsafe_free_getpgrp()).unwrap();
        assert!(group_alive(pgid));
        assert!(group_members(pgid).any(|p| p == std::process::id()));
    }

    fn unsafe_free_getpgrp() -> i64 {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let rest = &text[text.rfind(')').unwrap() + 1..];
        rest.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn memory_figures() {
        // RSS first: the peak read afterwards is at least any earlier RSS,
        // however other test threads allocate in between.
        let rss = vm_rss_kib();
        assert!(rss > 0);
        assert!(vm_hwm_kib() >= rss);
    }

    #[test]
    fn reaped_child_is_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(wait_pid_gone(pid, Duration::from_secs(5)));
    }
}
