//! Running the `nix` CLI: its own process group, both pipes drained
//! concurrently (so neither can fill up and block nix), bounded output, and a
//! timeout that stops the whole build.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agent_process::{AgentProcess, Exit};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;

use crate::NixError;

/// How much of nix's stderr is kept for error messages (the end of it).
pub(crate) const STDERR_TAIL: usize = 4096;
/// A cap on the stdout we keep (JSON answers are small; this bounds memory
/// whatever a flake evaluates to).
const STDOUT_CAP: usize = 16 * 1024 * 1024;

/// What a finished nix command left.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stdout_truncated: bool,
    pub(crate) stderr_tail: String,
}

/// How to run nix.
#[derive(Debug)]
pub(crate) struct Runner<'a> {
    pub(crate) program: &'a Path,
    pub(crate) nix_config: Option<&'a str>,
    pub(crate) timeout: Duration,
    pub(crate) kill_grace: Duration,
}

impl Runner<'_> {
    /// Runs `nix {args}` to completion or until the timeout.
    ///
    /// nix runs in its own process group, owned by an [`AgentProcess`] (a
    /// pidfd; signals reach the group only while nix is unreaped, so never a
    /// recycled id). On timeout (or when the returned future is dropped) the
    /// group gets SIGTERM first: nix then kills its builders, which it started
    /// in their own sessions and which a SIGKILL of nix would orphan. SIGKILL
    /// follows after the grace period, from the process-wide reaper thread
    /// (no detached timer thread).
    pub(crate) async fn run(&self, args: &[OsString]) -> Result<Output, NixError> {
        let command_line = display_command(self.program, args);
        let io_err = |context: String| move |source| NixError::Io { context, source };
        let mut cmd = Command::new(self.program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(config) = self.nix_config {
            cmd.env("NIX_CONFIG", config);
        }
        tracing::debug!(command = %command_line, "running nix");
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NixError::NotInstalled {
                    program: self.program.display().to_string(),
                }
            } else {
                NixError::Io {
                    context: format!("starting {command_line}"),
                    source,
                }
            }
        })?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let process =
            AgentProcess::adopt(child, true).map_err(io_err(format!("watching {command_line}")))?;
        let guard = GroupGuard {
            process: Arc::clone(&process),
            grace: self.kill_grace,
            armed: true,
        };
        if let Err(error) = process.guard_with_watchdog() {
            tracing::debug!(%error, "no host watchdog for nix");
        }
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<Exit>();
        process.on_exit(move |exit| {
            let _ = exit_tx.send(exit);
        });
        let stdout = stdout
            .map(|p| pipe::Receiver::from_owned_fd(p.into()))
            .transpose()
            .map_err(io_err(format!("reading {command_line}")))?;
        let stderr = stderr
            .map(|p| pipe::Receiver::from_owned_fd(p.into()))
            .transpose()
            .map_err(io_err(format!("reading {command_line}")))?;

        let finished = tokio::time::timeout(self.timeout, async {
            tokio::join!(
                async { exit_rx.await.unwrap_or_default() },
                read_capped(stdout),
                read_tail(stderr)
            )
        })
        .await;

        match finished {
            Ok((exit, (stdout, stdout_truncated), stderr_tail)) => {
                // Reaped: the reaper SIGKILLed what was left of the group
                // first (a builder nix leaked would be in another session).
                let mut guard = guard;
                guard.armed = false;
                Ok(Output {
                    status: exit_status(exit),
                    stdout,
                    stdout_truncated,
                    stderr_tail,
                })
            }
            Err(_elapsed) => {
                tracing::warn!(command = %command_line, timeout = ?self.timeout, "nix timed out; stopping it");
                drop(guard); // SIGTERM now, SIGKILL after the grace period
                let (tx, rx) = tokio::sync::oneshot::channel();
                process.on_exit(move |exit| {
                    let _ = tx.send(exit);
                });
                let _ = rx.await;
                Err(NixError::Timeout {
                    command: command_line,
                    after: self.timeout,
                })
            }
        }
    }
}

/// The `ExitStatus` of a reaped process, rebuilt from its exit.
fn exit_status(exit: Exit) -> ExitStatus {
    match (exit.code, exit.signal) {
        (Some(code), _) => ExitStatus::from_raw((code & 0xff) << 8),
        (None, Some(signal)) => ExitStatus::from_raw(signal & 0x7f),
        (None, None) => ExitStatus::from_raw(0xff << 8),
    }
}

/// Stops the group if the run is abandoned (its future dropped) or timed out
/// before nix exited: SIGTERM now, SIGKILL from the reaper thread after the
/// grace period, both only while nix is unreaped.
struct GroupGuard {
    process: Arc<AgentProcess>,
    grace: Duration,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.process.terminate(self.grace);
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(reader: Option<R>) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let Some(mut reader) = reader else {
        return (kept, truncated);
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = STDOUT_CAP.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

async fn read_tail<R: AsyncRead + Unpin>(reader: Option<R>) -> String {
    let mut tail: Vec<u8> = Vec::with_capacity(2 * STDERR_TAIL);
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut buf = vec![0u8; 8 * 1024];
    let mut dropped = false;
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    let cut = tail.len() - STDERR_TAIL;
                    tail.drain(..cut);
                    dropped = true;
                }
            }
        }
    }
    if tail.len() > STDERR_TAIL {
        tail.drain(..tail.len() - STDERR_TAIL);
        dropped = true;
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim();
    if dropped {
        // Start at a line boundary so the message does not open mid-word.
        let text = text.split_once('\n').map_or(text, |(_, rest)| rest);
        format!("…\n{text}")
    } else {
        text.to_owned()
    }
}

pub(crate) fn display_command(program: &Path, args: &[OsString]) -> String {
    let mut s = program.display().to_string();
    for a in args {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '"', '\'']) {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_keeps_the_end_bounded() {
        let data: Vec<u8> = (0..10_000)
            .map(|i| format!("line {i}\n"))
            .collect::<String>()
            .into_bytes();
        let tail = read_tail(Some(&data[..])).await;
        assert!(tail.len() <= STDERR_TAIL + 8, "{}", tail.len());
        assert!(tail.ends_with("line 9999"));
        assert!(tail.starts_with("…\nline "));
    }

    #[tokio::test]
    async fn short_stderr_is_kept_whole() {
        let tail = read_tail(Some(&b"error: boom\n"[..])).await;
        assert_eq!(tail, "error: boom");
    }

    #[test]
    fn command_display_quotes_what_a_shell_would_split() {
        let args: Vec<OsString> = [
            "build",
            "--extra-experimental-features",
            "nix-command flakes",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            display_command(Path::new("nix"), &args),
            "nix build --extra-experimental-features 'nix-command flakes'"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_not_installed() {
        let runner = Runner {
            program: Path::new("/nonexistent/nix"),
            nix_config: None,
            timeout: Duration::from_secs(5),
            kill_grace: Duration::from_secs(1),
        };
        let err = runner.run(&[]).await.unwrap_err();
        assert!(matches!(err, NixError::NotInstalled { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let runner = Runner {
            program: Path::new("/bin/sh"),
            nix_config: None,
            timeout: Duration::from_millis(500),
            kill_grace: Duration::from_secs(2),
        };
        let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
        let err = runner.run(&["-c".into(), script.into()]).await.unwrap_err();
        assert!(matches!(err, NixError::Timeout { .. }), "{err:?}");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The background sleep shared the group: it must be gone (or a zombie
        // awaiting its reaper, which runs no code) once the signal lands.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = alive();
        assert!(!alive, "sleep {pid} survived the timeout");
    }

    #[tokio::test]
    async fn chatty_stderr_and_stdout_do_not_deadlock() {
        let runner = Runner {
            program: Path::new("/bin/sh"),
            nix_config: None,
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(1),
        };
        // 1 MiB on each pipe at once: far past a pipe buffer.
        let script = "head -c 1048576 /dev/zero >&2 & head -c 1048576 /dev/zero; wait";
        let out = runner.run(&["-c".into(), script.into()]).await.unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 1024 * 1024);
        assert!(out.stderr_tail.len() <= STDERR_TAIL + 8);
    }
}
