//! Helpers shared by the workspace tests: temp homes with installed agents,
//! `agentctl` with a clean environment, wrapper scripts around `test-agent`.
#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Variables that would change what `agentctl` does; removed for every test.
const SCRUB: [&str; 12] = [
    "CODEFLY_HOME",
    "CODEFLY_AGENT_SOURCE",
    "CODEFLY_AGENT_STORES",
    "AGENT_REGISTRY",
    "AGENT_REGISTRY_SCHEME",
    "AGENT_HTTP_STORE",
    "AGENT_NIX_FLAKE",
    "GITHUB_API_URL",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "RUST_LOG",
    "AGENT_REGISTRY_USERNAME",
];

pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Self {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The cache path of `publisher/name` at `version` (kind dir `services` unless given).
    pub fn binary(&self, kind_dir: &str, publisher: &str, name: &str, version: &str) -> PathBuf {
        self.path()
            .join("agents")
            .join(kind_dir)
            .join(publisher)
            .join(format!("{name}__{version}"))
    }

    /// Copies `src` into the cache as a local build would (no install record).
    pub fn install_copy(&self, publisher: &str, name: &str, version: &str, src: &Path) -> PathBuf {
        let dst = self.binary("services", publisher, name, version);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, &dst).unwrap();
        dst
    }

    /// Installs a shell script that `exec`s `test-agent MODE` (same pid, so the
    /// conn's process is the test agent itself).
    pub fn install_mode(&self, name: &str, version: &str, mode: &str) -> PathBuf {
        let dst = self.binary("services", "codefly.dev", name, version);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        write_script(&dst, &format!("exec '{}' {mode}\n", test_agent().display()));
        dst
    }

    /// Installs the real `agent-echo` as `codefly.dev/echo:version`.
    pub fn install_echo(&self, version: &str) -> PathBuf {
        self.install_copy("codefly.dev", "echo", version, &echo())
    }
}

/// A manager on `home` with no store: loads come from the cache alone.
pub fn manager(home: &Home) -> agent_manager::Manager {
    agent_manager::Manager::builder()
        .home(agent_manager::AgentHome::new(home.path()))
        .stores(Vec::new())
        .build()
        .unwrap()
}

pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn echo() -> PathBuf {
    agent_testkit::bin_path("agent-echo")
}

pub fn test_agent() -> PathBuf {
    agent_testkit::bin_path("test-agent")
}

pub fn agentctl_bin() -> PathBuf {
    agent_testkit::bin_path("agentctl")
}

/// `agentctl --home HOME …` with no store enabled and a clean environment.
pub fn agentctl(home: &Home) -> Command {
    let mut c = Command::new(agentctl_bin());
    for v in SCRUB {
        c.env_remove(v);
    }
    c.env("CODEFLY_AGENT_STORES", "none");
    c.arg("--home").arg(home.path());
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {:?}", self.stdout))
    }

    /// Asserts a failure of `kind`: exit 1, `error[KIND]:` on stderr.
    pub fn assert_kind(&self, kind: &str) {
        assert_eq!(self.code, 1, "exit code; stderr: {}", self.stderr);
        assert!(
            self.stderr.starts_with(&format!("error[{kind}]: ")),
            "want error[{kind}], got stderr: {}",
            self.stderr
        );
    }

    /// Asserts the `--json` error document of `kind`.
    pub fn assert_json_kind(&self, kind: &str) {
        self.assert_kind(kind);
        let j = self.json();
        assert_eq!(j["error"]["kind"], kind, "{j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{j}"
        );
    }
}

pub fn run(mut c: Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `agentctl --home HOME ARGS…`.
pub fn ctl(home: &Home, args: &[&str]) -> Run {
    let mut c = agentctl(home);
    c.args(args);
    run(c)
}

/// Runs `agentctl --home HOME ARGS…` in `cwd` with `env` set, and without
/// the lock file, config file and signing password of the calling environment.
pub fn ctl_env(home: &Home, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = agentctl(home);
    c.env_remove("CODEFLY_AGENT_LOCKFILE")
        .env_remove("CODEFLY_CONFIG")
        .env_remove("CODEFLY_SIGN_PASSWORD")
        .current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args);
    run(c)
}

/// `agentctl --home HOME ARGS…` run from `cwd`, no store, no lock or config from the environment.
pub fn ctl_in(home: &Home, cwd: &Path, args: &[&str]) -> Run {
    ctl_env(home, cwd, &[], args)
}

/// The names created in, or moved into, one directory while a watch is held
/// (inotify: every event, however brief the file's life, so a test can
/// prove a file never appeared, not merely that it is gone now).
#[cfg(target_os = "linux")]
pub struct DirWatch {
    fd: std::os::fd::OwnedFd,
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code, dead_code)]
impl DirWatch {
    /// Watches `dir` (which must exist) for creations and moves into it.
    pub fn new(dir: &std::path::Path) -> DirWatch {
        use std::os::fd::FromRawFd as _;
        use std::os::unix::ffi::OsStrExt as _;
        // SAFETY: plain syscalls; the descriptor is owned from here on.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            raw >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: inotify_init1 returned this descriptor above and nothing else owns it.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: `path` is a valid C string for the duration of the call.
        let wd = unsafe {
            libc::inotify_add_watch(raw, path.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO)
        };
        assert!(
            wd >= 0,
            "inotify_add_watch {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        DirWatch { fd }
    }

    /// Every name created or moved in since the watch began (or the last call).
    pub fn names(&self) -> Vec<String> {
        use std::os::fd::AsRawFd as _;
        let mut names = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            let mut at = 0;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n {
                // SAFETY: the kernel wrote a whole event at `at`.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let len = ev.len as usize;
                let name = &buf[at + header..at + header + len];
                let name = name.split(|&b| b == 0).next().unwrap_or_default();
                names.push(String::from_utf8_lossy(name).into_owned());
                at += header + len;
            }
        }
        names
    }
}
