//! Running the `nix` CLI: its own process group, both pipes drained
//! concurrently (so neither can fill up and block nix), bounded output, and a
//! timeout that stops the whole build.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

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
    /// On timeout (or when the returned future is dropped) the process group
    /// gets SIGTERM first: nix then kills its builders, which it started in
    /// their own sessions and which a SIGKILL of nix would orphan. SIGKILL
    /// follows after the grace period.
    pub(crate) async fn run(&self, args: &[OsString]) -> Result<Output, NixError> {
        let command_line = display_command(self.program, args);
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
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| NixError::Io {
                context: format!("starting {command_line}"),
                source: std::io::Error::other("the nix process has no pid"),
            })?;
        let mut guard = GroupGuard {
            pgid,
            grace: self.kill_grace,
            armed: true,
        };
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let finished = tokio::time::timeout(self.timeout, async {
            let (status, out, err) =
                tokio::join!(child.wait(), read_capped(stdout), read_tail(stderr));
            (status, out, err)
        })
        .await;

        match finished {
            Ok((status, (stdout, stdout_truncated), stderr_tail)) => {
                // nix has exited; a builder it leaked would be in another
                // session, so there is nothing left in our group to signal.
                guard.armed = false;
                let status = status.map_err(|source| NixError::Io {
                    context: format!("waiting for {command_line}"),
                    source,
                })?;
                Ok(Output {
                    status,
                    stdout,
                    stdout_truncated,
                    stderr_tail,
                })
            }
            Err(_elapsed) => {
                tracing::warn!(command = %command_line, timeout = ?self.timeout, "nix timed out; stopping it");
                guard.armed = false;
                killpg(pgid, libc::SIGTERM);
                if tokio::time::timeout(self.kill_grace, child.wait())
                    .await
                    .is_err()
                {
                    killpg(pgid, libc::SIGKILL);
                    let _ = child.wait().await;
                }
                // Stragglers that ignored SIGTERM but share the group.
                killpg(pgid, libc::SIGKILL);
                Err(NixError::Timeout {
                    command: command_line,
                    after: self.timeout,
                })
            }
        }
    }
}

/// Signals the group if the run is abandoned (its future dropped) before nix exited.
struct GroupGuard {
    pgid: i32,
    grace: Duration,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (pgid, grace) = (self.pgid, self.grace);
        killpg(pgid, libc::SIGTERM);
        // Drop cannot wait; a short-lived thread delivers the SIGKILL.
        let _ = std::thread::Builder::new()
            .name("nix-killer".into())
            .spawn(move || {
                std::thread::sleep(grace);
                killpg(pgid, libc::SIGKILL);
            });
    }
}

#[allow(unsafe_code)]
fn killpg(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory effects; a stale or empty group only
    // yields ESRCH, which is ignored.
    let _ = unsafe { libc::killpg(pgid, signal) };
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
