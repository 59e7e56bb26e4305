//! An agent process as agent-serve's and agent-echo's tests drive it, without
//! agent-spawn: start a real agent binary, read its handshake, connect to it,
//! signal it, watch it exit.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tonic::transport::{Channel, Endpoint};

/// Generous upper bound for anything a test waits on (machines are shared).
pub const WAIT: Duration = Duration::from_secs(30);
/// A token of the form the host generates (64 hex chars).
pub const TOKEN: &str = "8f3c2a1b9d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

/// A running agent process; killed on drop if a test panics.
pub struct Running {
    pub child: Child,
    pub pid: i32,
    pub handshake: String,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Option<ChildStderr>,
}

/// The agent variables a test controls: removed from what the agent inherits.
const AGENT_VARS: &[&str] = &[
    "CODEFLY_AGENT_TOKEN",
    "CODEFLY_AGENT_UDS_PATH",
    "CODEFLY_AGENT_WORKDIR",
    "CODEFLY_AGENT_INSECURE",
    "CODEFLY_AGENT_LIFELINE",
    "CODEFLY_AGENT_LOG",
];

/// `bin args…` with exactly `env` among the agent variables, stdout and
/// stderr piped.
pub fn agent_command(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for k in AGENT_VARS {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts `bin` with `args` and exactly `env` among the agent variables, and
/// reads its handshake line.
pub async fn start(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    start_command(agent_command(bin, args, env)).await
}

/// Starts `cmd` (stdout and stderr piped) and reads its handshake line.
pub async fn start_command(mut cmd: Command) -> Running {
    let mut child = cmd.spawn().expect("spawn agent");
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = child.stderr.take();
    let handshake = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("handshake within the wait")
        .expect("read stdout")
        .expect("a handshake line before EOF");
    Running {
        child,
        pid,
        handshake,
        stdout,
        stderr,
    }
}

/// A lifeline pipe as a host makes it: the agent gets the read end, the test
/// holds the write end; dropping [`Lifeline::write`] is the host dying.
pub struct Lifeline {
    pub read: std::os::fd::OwnedFd,
    pub write: Option<std::os::fd::OwnedFd>,
}

impl Default for Lifeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifeline {
    /// A fresh pipe; the agent's end is passed with [`Lifeline::pass_to`].
    pub fn new() -> Self {
        // Both ends close-on-exec, so no other child of this test process
        // inherits them.
        let (read, write) = std::io::pipe().expect("pipe");
        Self {
            read: read.into(),
            write: Some(write.into()),
        }
    }

    /// The value of `CODEFLY_AGENT_LIFELINE` for the agent.
    pub fn env_value(&self) -> String {
        use std::os::fd::AsRawFd as _;
        self.read.as_raw_fd().to_string()
    }

    /// Lets `cmd`'s child (only it) inherit the read end.
    pub fn pass_to(&self, cmd: &mut Command) {
        use std::os::fd::AsRawFd as _;
        let fd = self.read.as_raw_fd();
        cmd.env("CODEFLY_AGENT_LIFELINE", fd.to_string());
        // SAFETY: fcntl is async-signal-safe; runs in the child between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    /// The host dies: the last write end closes.
    pub fn cut(&mut self) {
        self.write = None;
    }
}

/// Runs `bin` expecting it to fail before any handshake: (status, stdout, stderr).
pub async fn run_to_exit(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let mut cmd = agent_command(bin, args, env);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("exits within the wait")
        .expect("run agent");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The address a handshake names, as a tonic endpoint URI.
pub fn endpoint_uri(handshake: &str) -> String {
    let (version, addr) = handshake.split_once('|').expect("VERSION|ADDR");
    assert!(version == "1" || version == "2", "version in {handshake:?}");
    if let Some(path) = addr.strip_prefix("unix:") {
        assert!(path.starts_with('/'), "absolute unix path in {handshake:?}");
        return format!("unix:{path}");
    }
    if let Some(hostport) = addr.strip_prefix("dns:///") {
        return format!("http://{hostport}");
    }
    let port: u16 = addr.parse().expect("protocol-1 port");
    format!("http://127.0.0.1:{port}")
}

impl Running {
    /// A connected channel to the agent.
    pub async fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(endpoint_uri(&self.handshake)).unwrap();
        tokio::time::timeout(WAIT, endpoint.connect())
            .await
            .expect("connect within the wait")
            .expect("connect")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.pid, sig) };
        assert_eq!(rc, 0, "kill {}", self.pid);
    }

    /// Waits for the process to exit (bounded by [`WAIT`]).
    pub async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("agent exits within the wait")
            .expect("wait")
    }

    /// Everything the agent wrote to stdout after the handshake (reads to EOF).
    pub async fn rest_of_stdout(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("stdout EOF within the wait")
            .expect("read stdout")
        {
            lines.push(line);
        }
        lines
    }

    /// Reads stderr lines until one contains `needle`; returns it.
    pub async fn stderr_line_containing(&mut self, needle: &str) -> String {
        let err = self.stderr.take().expect("stderr not read yet");
        let mut lines = BufReader::new(err).lines();
        loop {
            let line = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("stderr line within the wait")
                .expect("read stderr")
                .unwrap_or_else(|| panic!("stderr ended before a line with {needle:?}"));
            if line.contains(needle) {
                // Keep draining so the agent never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return line;
            }
        }
    }

    /// Everything the agent wrote to stderr (reads to EOF; call after exit).
    pub async fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            tokio::time::timeout(WAIT, e.read_to_string(&mut s))
                .await
                .expect("stderr EOF within the wait")
                .expect("read stderr");
        }
        s
    }
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped yet).
pub fn exited(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    #[allow(unsafe_code)]
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    let stat = std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .expect("ps");
    String::from_utf8_lossy(&stat.stdout)
        .trim()
        .starts_with(['Z', 'X'])
}

/// Polls until `pid` has exited; `false` if it is still running after [`WAIT`].
pub async fn wait_gone(pid: i32) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if exited(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    exited(pid)
}

/// SIGKILLs a pid that is not our child when dropped (cleanup after a failed test).
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !exited(self.0) {
            // SAFETY: plain kill(2).
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
}

/// Starts `bin` under an intermediate `sh` that prints the agent's pid then
/// waits for it: (the shell, the agent's pid, the agent's handshake line).
pub async fn start_under_shell(bin: &Path, env: &[(&str, &str)]) -> (Child, i32, String) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#""$0" & echo "pid=$!"; wait"#)
        .arg(bin)
        .env_remove("CODEFLY_AGENT_UDS_PATH")
        .env_remove("CODEFLY_AGENT_LIFELINE")
        .env("CODEFLY_AGENT_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut shell = cmd.spawn().expect("spawn sh");
    let mut stdout = BufReader::new(shell.stdout.take().unwrap()).lines();
    let (mut pid, mut handshake) = (None, None);
    while pid.is_none() || handshake.is_none() {
        let line = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .expect("lines within the wait")
            .expect("read")
            .expect("two lines before EOF");
        match line.strip_prefix("pid=") {
            Some(p) => pid = Some(p.parse::<i32>().unwrap()),
            None => handshake = Some(line),
        }
    }
    // Keep draining so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    (shell, pid.unwrap(), handshake.unwrap())
}

/// A fresh directory for unix sockets (short path: sun_path is ~108 bytes).
pub fn socket_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("as-")
        .tempdir_in("/tmp")
        .unwrap()
}

pub fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("agent.sock")
}
