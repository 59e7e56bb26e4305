//! `agent-process`: one owner of a child process, so signals only ever reach
//! our own processes, and the one place agents are started.
//!
//! A pid is only a number: once a child is reaped, its pid (and the id of the
//! process group it led) can be handed to any new process. Code that checks
//! "has it exited?" and then calls `kill`/`killpg` can therefore signal an
//! unrelated process. [`AgentProcess`] closes that hole:
//!
//! - nothing but its owner can reap the child ([`AgentProcess::adopt`]
//!   consumes the [`std::process::Child`]; [`spawn`] hands out only the owner);
//! - the leader and the **group** are signalled only while the leader is not
//!   reaped (alive or a zombie): a zombie leader keeps its pid, and so the
//!   group id, allocated. The check and the signal happen under the same lock
//!   that reaping takes;
//! - reaping is done in one place, a process-wide **reaper thread** (plain OS
//!   thread, no async runtime): when a leader exits it confirms with
//!   `waitid(WEXITED | WNOWAIT)` (the child stays a zombie), SIGKILLs the rest
//!   of the group (grandchildren), then reaps. It also keeps the SIGKILL
//!   deadlines of [`AgentProcess::terminate`], so escalation happens even when
//!   the caller's runtime has shut down or the caller went away.
//!
//! [`watchdog`] adds the other half of the lifecycle: a tiny per-host process
//! that kills the registered process groups when the host dies
//! (ARCHITECTURE.md weighs the alternatives). [`spawn`] starts agents: its own
//! group, only the descriptors named, optionally the very file that was checked.
//!
//! ```
//! use std::os::unix::process::CommandExt as _;
//! use std::process::Command;
//! use std::time::Duration;
//!
//! use agent_process::AgentProcess;
//!
//! // A child that leads its own process group, owned from here on.
//! let child = Command::new("sleep").arg("30").process_group(0).spawn()?;
//! let process = AgentProcess::adopt(child, true)?;
//! // SIGTERM to the group; SIGKILL 5 s later to whatever is left of it.
//! process.terminate(Duration::from_secs(5));
//! let exit = process.wait_timeout(Duration::from_secs(30)).expect("reaped");
//! assert_eq!(exit.signal, Some(libc::SIGTERM));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## Platforms: two backends behind this one API
//!
//! | | `pidfd` (Linux) | `portable` (macOS, BSD; Linux with `--cfg agent_portable`) |
//! |---|---|---|
//! | start | `clone(CLONE_VM\|CLONE_VFORK\|CLONE_PIDFD)` from one spawner thread | `posix_spawn` (`POSIX_SPAWN_SETPGROUP`) from the same thread |
//! | descriptors kept | 0–2 and the lifeline (`close_range(CLOEXEC)` in the child) | the same: `POSIX_SPAWN_CLOEXEC_DEFAULT` + `addinherit_np` on macOS, `addclosefrom_np` on glibc |
//! | leader signal | `pidfd_send_signal` | `kill` while unreaped (the zombie pins the pid) |
//! | exit detection | every pidfd in the one reaper thread's epoll set (added without waking it) | one small waiter thread per child blocked in `waitid(WNOWAIT)` |
//! | host death | `PR_SET_PDEATHSIG` + lifeline + [`watchdog`] | lifeline + [`watchdog`] (no death signal exists) |
//! | checked file executed | `execveat(fd, "", AT_EMPTY_PATH)` | a copy (or hard link) of the descriptor's file in a private 0700 directory |
//! | [`ChildSetup`] hook | runs between fork and exec | refused with `Unsupported` (use `sandbox-exec`) |
//!
//! [`backend`] names the one compiled in. Linux needs ≥ 5.3 for the pidfd
//! backend (`waitid(P_PIDFD)` 5.4).
//!
//! An agent's helper that leaves the group (`setsid`) is out of reach of group
//! signals. On the pidfd backend, [`AgentProcess::terminate`] and
//! [`AgentProcess::kill`] first pin every current descendant of the leader
//! with a pidfd (a walk of `/proc/<pid>/task/*/children`, so only while the
//! leader is alive) and signal them with the group. Not covered: descendants
//! of an agent that exits on its own (they are reparented before anyone
//! looks), one forked during the walk, the portable backend, and the host's
//! death (the watchdog kills registered groups only). A subreaper would catch
//! more, but `PR_SET_CHILD_SUBREAPER` changes the whole host process's
//! semantics (every orphan of any library becomes its child to reap), which a
//! library inside someone else's application must not impose.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub mod poller;
pub mod spawn;
pub mod watchdog;

#[cfg(all(target_os = "linux", not(agent_portable)))]
#[path = "sys/pidfd.rs"]
mod sys;
#[cfg(any(not(target_os = "linux"), agent_portable))]
#[path = "sys/portable.rs"]
mod sys;

pub use spawn::{ChildSetup, Exec, Spawned, spawn_in_group, spawn_in_group_blocking};

/// The process backend compiled in: `"pidfd"` (Linux) or `"portable"`
/// (`posix_spawn` and waiter threads: macOS, BSD, or Linux built with
/// `RUSTFLAGS="--cfg agent_portable"`).
#[must_use]
pub fn backend() -> &'static str {
    sys::NAME
}

/// Calls `callback` once, from a background thread, when process `pid` (any
/// process, not only a child) has exited.
///
/// # Errors
/// No process `pid` exists (or it cannot be watched).
pub fn on_pid_exit(pid: u32, callback: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a pid"));
    }
    sys::on_pid_exit(pid, Box::new(callback))
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exit {
    /// The exit code, when it exited normally.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

type Callback = Box<dyn FnOnce(Exit) + Send>;

struct State {
    exit: Option<Exit>,
    callbacks: Vec<Callback>,
}

/// The one owner of a child process (and, optionally, of the process group it leads).
///
/// Shared as `Arc<AgentProcess>`; the reaper thread holds one reference until
/// the child is reaped, so a child is never left a zombie.
pub struct AgentProcess {
    pid: libc::pid_t,
    #[cfg_attr(any(not(target_os = "linux"), agent_portable), allow(dead_code))]
    handle: sys::Handle,
    group: bool,
    in_watchdog: AtomicBool,
    state: Mutex<State>,
    exited: Condvar,
}

impl fmt::Debug for AgentProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentProcess")
            .field("pid", &self.pid)
            .field("group", &self.group)
            .field("exit", &self.exit())
            .finish_non_exhaustive()
    }
}

impl AgentProcess {
    /// Takes ownership of a freshly spawned child and hands it to the reaper thread.
    ///
    /// `group` says the child leads its own process group (it was spawned with
    /// `process_group(0)`), so group signals are allowed. Take the child's stdio
    /// handles before calling this; the [`std::process::Child`] is consumed so
    /// that nothing else can reap it. A `waitpid(-1)` elsewhere in the process,
    /// or SIGCHLD set to `SIG_IGN`, still can: the child is then seen to exit
    /// with an unknown status.
    ///
    /// # Errors
    /// The child could not be watched (`pidfd_open` failed: kernel older than
    /// 5.3, or a seccomp policy; or no thread could be started); the child is
    /// then SIGKILLed and reaped before the error returns.
    pub fn adopt(child: std::process::Child, group: bool) -> io::Result<Arc<AgentProcess>> {
        let pid =
            libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        drop(child); // a std Child does nothing on drop: it is now ours alone
        let handle = match sys::Handle::open(pid) {
            Ok(handle) => handle,
            Err(e) => {
                kill_and_reap(pid);
                return Err(e);
            }
        };
        Self::watched(pid, handle, group)
    }

    /// The one place an `AgentProcess` is made: owned, then handed to the reaper thread.
    fn watched(
        pid: libc::pid_t,
        handle: sys::Handle,
        group: bool,
    ) -> io::Result<Arc<AgentProcess>> {
        let process = Arc::new(AgentProcess {
            pid,
            handle,
            group,
            in_watchdog: AtomicBool::new(false),
            state: Mutex::new(State {
                exit: None,
                callbacks: Vec::new(),
            }),
            exited: Condvar::new(),
        });
        if let Err(e) = sys::watch(&process) {
            kill_and_reap(pid);
            return Err(e);
        }
        Ok(process)
    }

    /// The child's pid (its process-group id too when it leads a group).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// How it ended, once it is reaped.
    #[must_use]
    pub fn exit(&self) -> Option<Exit> {
        self.lock().exit
    }

    /// Whether it has been reaped.
    #[must_use]
    pub fn has_exited(&self) -> bool {
        self.exit().is_some()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `signal` to the leader only (never another process: a pidfd, or
    /// `kill` while the leader is unreaped). `false` once it is reaped or when the kernel refused.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        let state = self.lock();
        if state.exit.is_some() {
            return false;
        }
        self.send_leader(signal)
    }

    fn send_leader(&self, signal: libc::c_int) -> bool {
        sys::send_leader(self, signal)
    }

    /// Sends `signal` to the whole group while the leader is not reaped (its
    /// zombie pins the group id), else does nothing and returns `false`.
    /// Without a group, signals the leader.
    pub fn signal_group(&self, signal: libc::c_int) -> bool {
        let state = self.lock();
        if state.exit.is_some() {
            return false;
        }
        if !self.group {
            return self.send_leader(signal);
        }
        // SAFETY: killpg has no memory effects; the id is pinned by our unreaped leader.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::killpg(self.pid, signal) };
        drop(state);
        rc == 0
    }

    /// SIGKILL to the group (or the leader), if not reaped yet, and to the
    /// descendants that left the group (pidfd backend). The reaper reaps it.
    pub fn kill(&self) -> bool {
        self.pin_descendants();
        sys::signal_descendants(self, libc::SIGKILL);
        self.signal_group(libc::SIGKILL)
    }

    /// Pins the descendants (pidfd backend), only while the leader is unreaped.
    fn pin_descendants(&self) {
        let state = self.lock();
        if state.exit.is_none() && self.group {
            sys::pin_descendants(self);
        }
    }

    /// SIGTERM to the group now and SIGKILL at `now + grace` if the leader has
    /// not exited by then. The deadline is kept by the reaper thread: it holds
    /// whether or not anyone waits, and whatever async runtime is (not) running.
    ///
    /// On the pidfd backend the leader's descendants that left the group
    /// (`setsid`) are found now, while the leader still has them, and get the
    /// same SIGTERM and SIGKILL; on the portable backend they are not reached.
    pub fn terminate(self: &Arc<Self>, grace: Duration) {
        self.pin_descendants();
        sys::signal_descendants(self, libc::SIGTERM);
        if !self.signal_group(libc::SIGTERM) {
            return;
        }
        if sys::kill_at(self, Instant::now() + grace).is_err() {
            self.kill();
        }
    }

    /// Reaps it if it has exited (never blocks). When the leader has exited,
    /// whatever is left of its group is SIGKILLed first, while the zombie still
    /// pins the group id.
    ///
    /// # Errors
    /// `waitid` failed for another reason than "not exited yet".
    pub fn try_reap(&self) -> io::Result<Option<Exit>> {
        let mut state = self.lock();
        if let Some(exit) = state.exit {
            return Ok(Some(exit));
        }
        // Either wait may find the child gone: something else in the host
        // reaped it (a `waitpid(-1)`, or SIGCHLD set to SIG_IGN, which makes
        // the kernel reap at exit), before the first or between the two.
        let exit = match sys::wait(self, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) {
            Ok(None) => return Ok(None),
            Ok(Some(_)) => {
                if self.group {
                    // SAFETY: as in signal_group: the zombie leader pins the id.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::killpg(self.pid, libc::SIGKILL);
                    }
                    sys::signal_descendants(self, libc::SIGKILL);
                }
                match sys::wait(self, libc::WEXITED) {
                    Ok(exit) => exit.unwrap_or_default(),
                    Err(e) if e.raw_os_error() == Some(libc::ECHILD) => self.reaped_elsewhere(),
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => self.reaped_elsewhere(),
            Err(e) => return Err(e),
        };
        state.exit = Some(exit);
        let callbacks = std::mem::take(&mut state.callbacks);
        drop(state);
        self.exited.notify_all();
        if self.in_watchdog.load(Ordering::Relaxed) {
            watchdog::forget(self.pid);
        }
        tracing::debug!(pid = self.pid, %exit, "reaped");
        for callback in callbacks {
            callback(exit);
        }
        Ok(Some(exit))
    }

    /// The exit of a child that is no longer ours to wait for: gone, its
    /// status with it. Its group id may already be reused, so only the pinned
    /// descendants are signalled.
    fn reaped_elsewhere(&self) -> Exit {
        tracing::warn!(
            pid = self.pid,
            "the agent was reaped by something else in this process \
             (is SIGCHLD ignored, or does a library call waitpid(-1)?): \
             its exit status is unknown"
        );
        sys::signal_descendants(self, libc::SIGKILL);
        Exit::default()
    }

    /// Calls `callback` once with the exit (right away if already reaped). It
    /// runs on the reaper thread: keep it short and never block in it.
    pub fn on_exit(&self, callback: impl FnOnce(Exit) + Send + 'static) {
        let mut state = self.lock();
        if let Some(exit) = state.exit {
            drop(state);
            callback(exit);
        } else {
            state.callbacks.push(Box::new(callback));
        }
    }

    /// Blocks until it is reaped (by the reaper thread), at most `timeout`.
    #[must_use]
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(exit) = state.exit {
                return Some(exit);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .exited
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Registers the group with the host's [`watchdog`] (started on first use),
    /// so it is killed if the host dies; forgotten again when reaped.
    ///
    /// # Errors
    /// The watchdog could not be started.
    pub fn guard_with_watchdog(&self) -> io::Result<()> {
        if !self.group {
            return Ok(());
        }
        let state = self.lock();
        if state.exit.is_some() {
            return Ok(());
        }
        watchdog::register(self.pid)?;
        self.in_watchdog.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// SIGKILLs and reaps our own unreaped child that could not be watched.
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: kill and waitpid on our own unreaped child: the pid cannot have been reused.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Decodes what `waitid` filled in: `None` when `WNOHANG` found nothing.
#[allow(unsafe_code)]
fn exit_of(info: &libc::siginfo_t) -> Option<Exit> {
    // SAFETY: filled by waitid (si_pid 0 = nothing to report under WNOHANG).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return None;
    }
    Some(match info.si_code {
        libc::CLD_EXITED => Exit {
            code: Some(status),
            signal: None,
        },
        libc::CLD_KILLED | libc::CLD_DUMPED => Exit {
            code: None,
            signal: Some(status),
        },
        _ => Exit::default(),
    })
}

/// The calling thread's `errno` (async-signal-safe: a read of thread-local memory).
#[allow(unsafe_code)]
pub(crate) fn errno() -> libc::c_int {
    // SAFETY: the libc's errno location is valid for the calling thread.
    unsafe {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let p = libc::__errno_location();
        #[cfg(any(
            target_vendor = "apple",
            target_os = "freebsd",
            target_os = "dragonfly"
        ))]
        let p = libc::__error();
        #[cfg(any(target_os = "netbsd", target_os = "openbsd"))]
        let p = libc::__errno();
        *p
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::process::Command;

    fn sleeper(group: bool) -> Arc<AgentProcess> {
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("1000");
        if group {
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0);
        }
        AgentProcess::adopt(cmd.spawn().unwrap(), group).unwrap()
    }

    #[test]
    fn kill_then_reaped_by_the_reaper() {
        let p = sleeper(true);
        assert!(p.exit().is_none());
        assert!(p.kill());
        let exit = p.wait_timeout(Duration::from_secs(30)).expect("reaped");
        assert_eq!(exit.signal, Some(libc::SIGKILL));
        // Once reaped, nothing is ever signalled again.
        assert!(!p.kill() && !p.signal(libc::SIGTERM) && !p.signal_group(0));
    }

    #[test]
    fn exit_code_and_callback() {
        let child = Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let p = AgentProcess::adopt(child, false).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        p.on_exit(move |e| tx.send(e).unwrap());
        let exit = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(exit.code, Some(7));
        assert_eq!(p.exit(), Some(exit));
    }

    #[test]
    fn terminate_escalates_without_anyone_waiting() {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; sleep 1000 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let p = AgentProcess::adopt(child, true).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        p.terminate(Duration::from_millis(200));
        let exit = p
            .wait_timeout(Duration::from_secs(30))
            .expect("killed at the deadline");
        assert_eq!(exit.signal, Some(libc::SIGKILL));
    }
}
