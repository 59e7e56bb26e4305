//! The Linux backend: a pidfd per child, polled by the one reaper thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::{AgentProcess, Exit};

pub(crate) const NAME: &str = "pidfd";

/// What the backend keeps per child: its pidfd, and pidfds of the
/// descendants found when it was told to stop (see [`pin_descendants`]).
pub(crate) struct Handle(OwnedFd, Mutex<Vec<OwnedFd>>);

impl Handle {
    /// A pidfd for `pid`, our unreaped child.
    pub(crate) fn open(pid: libc::pid_t) -> io::Result<Self> {
        pidfd_open(pid).map(Self::from_pidfd)
    }

    /// The pidfd `clone(CLONE_PIDFD)` gave us.
    pub(crate) fn from_pidfd(pidfd: OwnedFd) -> Self {
        Handle(pidfd, Mutex::new(Vec::new()))
    }
}

/// Most descendants pinned per process.
const MAX_DESCENDANTS: usize = 1024;

/// Pins every current descendant of the (unreaped) leader with a pidfd, so
/// that those which left the group (`setsid`, `setpgid`) can be signalled
/// too, and only they: a pidfd never reaches a recycled pid. Walks
/// `/proc/<pid>/task/<tid>/children`; a descendant forked after the walk is
/// not seen. Must be called while the leader is alive: once it has exited,
/// its children belong to another parent.
pub(crate) fn pin_descendants(process: &AgentProcess) {
    let mut pinned = process
        .handle
        .1
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut queue = vec![process.pid];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if pinned.len() >= MAX_DESCENDANTS {
                    return;
                }
                if let Ok(fd) = pidfd_open(child) {
                    pinned.push(fd);
                    queue.push(child);
                }
            }
        }
    }
}

/// Signals the descendants pinned by [`pin_descendants`] (each through its pidfd).
pub(crate) fn signal_descendants(process: &AgentProcess, signal: libc::c_int) {
    let pinned = process
        .handle
        .1
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for fd in pinned.iter() {
        // SAFETY: a syscall on a pidfd we own; null siginfo is allowed.
        #[allow(unsafe_code)]
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            );
        }
    }
}

pub(crate) fn send_leader(process: &AgentProcess, signal: libc::c_int) -> bool {
    // SAFETY: a syscall on a pidfd we own; null siginfo is allowed.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            process.handle.0.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    rc == 0
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
pub(crate) fn wait(process: &AgentProcess, flags: libc::c_int) -> io::Result<Option<Exit>> {
    let id = libc::id_t::try_from(process.handle.0.as_raw_fd())
        .map_err(|_| io::Error::other("bad fd"))?;
    loop {
        // SAFETY: siginfo_t is plain data, zeroed is a valid value.
        #[allow(unsafe_code)]
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
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
        return Ok(crate::exit_of(&info));
    }
}

/// Watches any process (not only a child) with a pidfd, from a small thread.
pub(crate) fn on_pid_exit(pid: libc::pid_t, callback: Box<dyn FnOnce() + Send>) -> io::Result<()> {
    let fd = pidfd_open(pid)?;
    std::thread::Builder::new()
        .name("agent-pid-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            #[allow(unsafe_code)]
            while unsafe { libc::poll(&raw mut p, 1, -1) } < 0
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
            callback();
        })?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The reaper thread.

enum Cmd {
    Watch(Arc<AgentProcess>),
    KillAt(Arc<AgentProcess>, Instant),
}

pub(crate) fn watch(process: &Arc<AgentProcess>) -> io::Result<()> {
    reaper()?.send(Cmd::Watch(Arc::clone(process)));
    Ok(())
}

pub(crate) fn kill_at(process: &Arc<AgentProcess>, at: Instant) -> io::Result<()> {
    reaper()?.send(Cmd::KillAt(Arc::clone(process), at));
    Ok(())
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
            fd: w.process.handle.0.as_raw_fd(),
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
