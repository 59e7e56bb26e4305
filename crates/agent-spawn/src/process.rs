//! Starting agent processes from one long-lived thread, with exactly the
//! descriptors we mean to give them, and handing each to its one owner
//! ([`AgentProcess`]).
//!
//! Linux's `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//! exits, not the process. Tokio's worker and blocking threads come and go, so
//! every fork happens on a process-wide "spawner" thread that never exits;
//! the child then dies with the host, and only with the host.
//!
//! Between fork and exec the child also marks every descriptor above 2
//! close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`, or a walk of
//! `/proc/self/fd`, or of every number below `RLIMIT_NOFILE`), so a descriptor
//! the host inherited or opened without `O_CLOEXEC` never reaches an agent.
//! The one exception is the lifeline's read end ([`LIFELINE_ENV`](crate::LIFELINE_ENV)).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use agent_process::AgentProcess;
use tokio::sync::oneshot;

/// What the spawner hands back: the owner of the process and its pipes.
pub(crate) struct Spawned {
    pub(crate) process: Arc<AgentProcess>,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

struct Request {
    command: Command,
    reply: oneshot::Sender<io::Result<Spawned>>,
}

static SPAWNER: OnceLock<io::Result<mpsc::Sender<Request>>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<Request>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("agent-spawner".into())
                .spawn(move || spawner_loop(&rx))?;
            Ok(tx)
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

fn spawner_loop(rx: &mpsc::Receiver<Request>) {
    // The sender lives in a static, so this loop runs as long as the process.
    while let Ok(mut req) = rx.recv() {
        let result = start(&mut req.command);
        if let Err(Ok(spawned)) = req.reply.send(result) {
            // The caller gave up (its future was dropped): leave nothing behind.
            spawned.process.kill();
        }
    }
}

fn start(command: &mut Command) -> io::Result<Spawned> {
    let mut child = command.spawn()?;
    let pipes = (child.stdout.take(), child.stderr.take());
    let process = AgentProcess::adopt(child, true)?;
    let (Some(stdout), Some(stderr)) = pipes else {
        process.kill();
        return Err(io::Error::other("the agent's pipes are missing"));
    };
    if let Err(error) = process.guard_with_watchdog() {
        tracing::warn!(%error, "no host watchdog: the agent's children may outlive a killed host");
    }
    Ok(Spawned {
        process,
        stdout: stdout.into(),
        stderr: stderr.into(),
    })
}

/// Spawns `command` in its own process group, from the spawner thread, with
/// `PR_SET_PDEATHSIG(SIGKILL)`, every descriptor but 0, 1, 2 and `keep_fd`
/// closed on exec.
pub(crate) async fn spawn_in_group(
    mut command: Command,
    keep_fd: Option<RawFd>,
) -> io::Result<Spawned> {
    let parent = libc::pid_t::try_from(std::process::id())
        .map_err(|_| io::Error::other("pid out of range"))?;
    command.process_group(0);
    prepare_child(&mut command, parent, keep_fd);
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send(Request { command, reply })
        .map_err(|_| io::Error::other("the agent spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the agent spawner thread dropped the request"))?
}

#[allow(unsafe_code)]
fn prepare_child(command: &mut Command, parent: libc::pid_t, keep_fd: Option<RawFd>) {
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (prctl, getppid, close_range, open,
    // getdents64, fcntl, getrlimit, _exit); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                let sig = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or(9);
                if libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // The host may have died between fork and prctl: then nobody would
            // ever signal us, so do not start at all.
            if libc::getppid() != parent {
                libc::_exit(127);
            }
            cloexec_from_3();
            if let Some(fd) = keep_fd
                && libc::fcntl(fd, libc::F_SETFD, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Marks every descriptor from 3 up close-on-exec. Async-signal-safe.
#[allow(unsafe_code)]
fn cloexec_from_3() {
    // SAFETY: syscalls on our own descriptor table, a stack buffer for getdents.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        // Fallback 1 (kernel < 5.11): the descriptors that exist.
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir >= 0 {
            let mut buf = [0u8; 2048];
            loop {
                let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
                let Ok(n) = usize::try_from(n) else { break };
                if n == 0 {
                    break;
                }
                let mut off = 0;
                // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                while off + 19 < n {
                    let reclen = usize::from(u16::from_ne_bytes([buf[off + 16], buf[off + 17]]));
                    if reclen == 0 {
                        break;
                    }
                    let mut fd: RawFd = 0;
                    let mut digits = false;
                    for &b in &buf[off + 19..(off + reclen).min(n)] {
                        if !b.is_ascii_digit() {
                            break;
                        }
                        digits = true;
                        fd = fd.saturating_mul(10).saturating_add(RawFd::from(b - b'0'));
                    }
                    if digits && fd >= 3 && fd != dir {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                    off += reclen;
                }
            }
            libc::close(dir);
            return;
        }
        // Fallback 2: every possible number.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            RawFd::try_from(limit.rlim_cur.min(1 << 20)).unwrap_or(1 << 20)
        } else {
            1 << 16
        };
        for fd in 3..max {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// The host's lifeline: a pipe whose write end only this process holds
/// (close-on-exec, never given to anyone). Agents get the read end; EOF on it
/// means the host is gone. One pipe serves every agent of the host.
pub(crate) fn lifeline_read_end() -> io::Result<RawFd> {
    static LIFELINE: OnceLock<io::Result<(OwnedFd, OwnedFd)>> = OnceLock::new();
    LIFELINE
        .get_or_init(|| {
            let mut fds: [RawFd; 2] = [-1, -1];
            // SAFETY: fds is a valid out-array.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh fds we own; kept for the life of the process.
            #[allow(unsafe_code)]
            Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
        })
        .as_ref()
        .map(|(read, _write)| read.as_raw_fd())
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}
