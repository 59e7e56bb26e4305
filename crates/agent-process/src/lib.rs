//! `agent-process`: one owner of a child process, so signals only ever reach
//! our own processes.
//!
//! A pid is only a number: once a child is reaped, its pid (and the id of the
//! process group it led) can be handed to any new process. Code that checks
//! "has it exited?" and then calls `kill`/`killpg` can therefore signal an
//! unrelated process. [`AgentProcess`] closes that hole:
//!
//! - it holds a **pidfd** of the child (`pidfd_open` right after spawn, while
//!   the child cannot have been reaped: [`AgentProcess::adopt`] consumes the
//!   [`std::process::Child`], so nothing else can wait for it);
//! - the leader is signalled with `pidfd_send_signal`, which can never reach
//!   another process;
//! - the **group** is signalled only while the leader is not reaped (alive or a
//!   zombie): a zombie leader keeps its pid, and so the group id, allocated. The
//!   check and the `killpg` happen under the same lock that reaping takes;
//! - reaping is done in one place, a process-wide **reaper thread** (plain OS
//!   thread, no async runtime) polling every pidfd: when a leader exits it
//!   confirms with `waitid(P_PIDFD, WEXITED | WNOWAIT)`, SIGKILLs the rest of the
//!   group (grandchildren), then reaps. It also keeps the SIGKILL deadlines of
//!   [`AgentProcess::terminate`], so escalation happens even when the caller's
//!   runtime has shut down or the caller went away.
//!
//! [`watchdog`] adds the other half of the lifecycle: a tiny per-host process
//! that kills the registered process groups when the host dies (see its docs
//! for the mechanisms weighed).
//!
//! Linux ≥ 5.3 (pidfd); `waitid(P_PIDFD)` needs 5.4.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

pub mod watchdog;

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
    pidfd: OwnedFd,
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
    /// Takes ownership of a freshly spawned child: opens its pidfd and hands it
    /// to the reaper thread.
    ///
    /// `group` says the child leads its own process group (it was spawned with
    /// `process_group(0)`), so group signals are allowed. Take the child's stdio
    /// handles before calling this; the [`std::process::Child`] is consumed so
    /// that nothing else can reap it. The process must not call `waitpid(-1)`
    /// elsewhere either.
    ///
    /// # Errors
    /// `pidfd_open` failed (kernel older than 5.3, or a seccomp policy); the
    /// child is then SIGKILLed and reaped before the error returns.
    pub fn adopt(child: std::process::Child, group: bool) -> io::Result<Arc<AgentProcess>> {
        let pid =
            libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        drop(child); // a std Child does nothing on drop: it is now ours alone
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // Still our unreaped child: the pid cannot have been reused.
                // SAFETY: kill and waitpid on our own unreaped child.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        };
        Self::watched(pid, pidfd, group)
    }

    /// Takes ownership of a child started without `std::process` (e.g. by
    /// `clone(CLONE_PIDFD | CLONE_VM | CLONE_VFORK)`), from its pid and pidfd,
    /// and hands it to the reaper thread.
    ///
    /// # Safety
    /// `pid` must be a child of this process that nothing else will reap,
    /// not reaped yet, and `pidfd` must refer to it. (Not memory safety: a
    /// wrong pid breaks the one guarantee this type exists for.)
    ///
    /// # Errors
    /// The reaper thread could not be started.
    #[allow(unsafe_code)]
    pub unsafe fn from_pidfd(
        pid: u32,
        pidfd: OwnedFd,
        group: bool,
    ) -> io::Result<Arc<AgentProcess>> {
        let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        Self::watched(pid, pidfd, group)
    }

    /// The one place an `AgentProcess` is made: owned, then handed to the reaper thread.
    fn watched(pid: libc::pid_t, pidfd: OwnedFd, group: bool) -> io::Result<Arc<AgentProcess>> {
        let process = Arc::new(AgentProcess {
            pid,
            pidfd,
            group,
            in_watchdog: AtomicBool::new(false),
            state: Mutex::new(State {
                exit: None,
                callbacks: Vec::new(),
            }),
            exited: Condvar::new(),
        });
        reaper()?.send(Cmd::Watch(Arc::clone(&process)));
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

    /// Sends `signal` to the leader only (`pidfd_send_signal`: never another
    /// process). `false` once it is reaped or when the kernel refused.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        let state = self.lock();
        if state.exit.is_some() {
            return false;
        }
        self.send_leader(signal)
    }

    fn send_leader(&self, signal: libc::c_int) -> bool {
        // SAFETY: a syscall on a pidfd we own; null siginfo is allowed.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        rc == 0
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

    /// SIGKILL to the group (or the leader), if not reaped yet. The reaper reaps it.
    pub fn kill(&self) -> bool {
        self.signal_group(libc::SIGKILL)
    }

    /// SIGTERM to the group now and SIGKILL at `now + grace` if the leader has
    /// not exited by then. The deadline is kept by the reaper thread: it holds
    /// whether or not anyone waits, and whatever async runtime is (not) running.
    pub fn terminate(self: &Arc<Self>, grace: Duration) {
        if !self.signal_group(libc::SIGTERM) {
            return;
        }
        match reaper() {
            Ok(r) => r.send(Cmd::KillAt(Arc::clone(self), Instant::now() + grace)),
            Err(_) => {
                self.kill();
            }
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
        if waitid(&self.pidfd, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)?.is_none() {
            return Ok(None);
        }
        if self.group {
            // SAFETY: as in signal_group: the zombie leader pins the id.
            #[allow(unsafe_code)]
            unsafe {
                libc::killpg(self.pid, libc::SIGKILL);
            }
        }
        let exit = waitid(&self.pidfd, libc::WEXITED)?.unwrap_or_default();
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

impl AsFd for AgentProcess {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd we then own.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just gave us this fd (O_CLOEXEC is implied for pidfds).
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `waitid(P_PIDFD, fd, flags)`: `None` when WNOHANG found nothing.
fn waitid(pidfd: &OwnedFd, flags: libc::c_int) -> io::Result<Option<Exit>> {
    loop {
        // SAFETY: siginfo_t is plain data, zeroed is a valid value.
        #[allow(unsafe_code)]
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let id = libc::id_t::try_from(pidfd.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?;
        // SAFETY: info is a valid out-pointer.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::waitid(libc::P_PIDFD, id, &raw mut info, flags) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: filled by waitid (si_pid 0 = nothing to report under WNOHANG).
        #[allow(unsafe_code)]
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        let exit = match info.si_code {
            libc::CLD_EXITED => Exit {
                code: Some(status),
                signal: None,
            },
            libc::CLD_KILLED | libc::CLD_DUMPED => Exit {
                code: None,
                signal: Some(status),
            },
            _ => Exit::default(),
        };
        return Ok(Some(exit));
    }
}

// ---------------------------------------------------------------------------
// The reaper thread.

enum Cmd {
    Watch(Arc<AgentProcess>),
    KillAt(Arc<AgentProcess>, Instant),
}

struct Reaper {
    queue: Mutex<Vec<Cmd>>,
    wake: OwnedFd,
}

impl Reaper {
    fn send(&self, cmd: Cmd) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cmd);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our eventfd.
        #[allow(unsafe_code)]
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&raw const one).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

static REAPER: OnceLock<io::Result<Reaper>> = OnceLock::new();

fn reaper() -> io::Result<&'static Reaper> {
    REAPER
        .get_or_init(|| {
            // SAFETY: eventfd returns a new fd or -1.
            #[allow(unsafe_code)]
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd we own.
            #[allow(unsafe_code)]
            let wake = unsafe { OwnedFd::from_raw_fd(fd) };
            let thread_fd = wake.try_clone()?;
            std::thread::Builder::new()
                .name("agent-reaper".into())
                .stack_size(256 * 1024)
                .spawn(move || reaper_loop(&thread_fd))?;
            Ok(Reaper {
                queue: Mutex::new(Vec::new()),
                wake,
            })
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

struct Watched {
    process: Arc<AgentProcess>,
    kill_at: Option<Instant>,
}

fn reaper_loop(wake: &OwnedFd) {
    let mut watched: Vec<Watched> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        fds.clear();
        fds.push(libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(watched.iter().map(|w| libc::pollfd {
            fd: w.process.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        let now = Instant::now();
        let timeout = watched
            .iter()
            .filter_map(|w| w.kill_at)
            .min()
            .map_or(-1, |at| {
                let ms = at.saturating_duration_since(now).as_millis() + 1;
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            });
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: fds is a valid array of nfds pollfd.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout) };
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            tracing::error!(error = %io::Error::last_os_error(), "reaper poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Exits first (a deadline for a process that just exited is moot).
        let ready: Vec<bool> = fds[1..].iter().map(|p| p.revents != 0).collect();
        let mut i = 0;
        watched.retain(|w| {
            let keep = if ready.get(i).copied().unwrap_or(false) {
                match w.process.try_reap() {
                    Ok(Some(_)) => false,
                    Ok(None) => true,
                    Err(error) => {
                        tracing::error!(pid = w.process.pid, %error, "cannot reap");
                        false
                    }
                }
            } else {
                true
            };
            i += 1;
            keep
        });
        let now = Instant::now();
        for w in &mut watched {
            if w.kill_at.is_some_and(|at| at <= now) {
                w.kill_at = None;
                tracing::debug!(pid = w.process.pid, "grace period over; killing the group");
                w.process.kill();
            }
        }
        if fds[0].revents != 0 {
            let mut count: u64 = 0;
            // SAFETY: reading 8 bytes into a valid u64 from our eventfd.
            #[allow(unsafe_code)]
            let _ = unsafe {
                libc::read(
                    wake.as_raw_fd(),
                    (&raw mut count).cast::<libc::c_void>(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
        let cmds = match REAPER.get() {
            Some(Ok(r)) => {
                std::mem::take(&mut *r.queue.lock().unwrap_or_else(PoisonError::into_inner))
            }
            _ => Vec::new(),
        };
        for cmd in cmds {
            match cmd {
                Cmd::Watch(process) => {
                    if !process.has_exited() {
                        watched.push(Watched {
                            process,
                            kill_at: None,
                        });
                    }
                }
                Cmd::KillAt(process, at) => {
                    if let Some(w) = watched
                        .iter_mut()
                        .find(|w| Arc::ptr_eq(&w.process, &process))
                    {
                        w.kill_at = Some(w.kill_at.map_or(at, |old| old.min(at)));
                    }
                }
            }
        }
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
