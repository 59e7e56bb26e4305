//! The Linux backend: a pidfd per child, in the one reaper thread's epoll set.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::poller::Poller;
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
// The reaper thread: one poller (epoll) holding every watched pidfd. A child
// is added from the thread that spawned it, without waking the reaper; only a
// new SIGKILL deadline wakes it, to shorten its timeout.

pub(crate) fn watch(process: &Arc<AgentProcess>) -> io::Result<()> {
    let reaper = reaper()?;
    let key = reaper.next_key.fetch_add(1, Ordering::Relaxed);
    // In the table before the poller can report it.
    reaper.lock().insert(
        key,
        Watched {
            process: Arc::clone(process),
            kill_at: None,
        },
    );
    if let Err(e) = reaper.poller.add(process.handle.0.as_raw_fd(), key) {
        reaper.lock().remove(&key);
        return Err(e);
    }
    Ok(())
}

pub(crate) fn kill_at(process: &Arc<AgentProcess>, at: Instant) -> io::Result<()> {
    let reaper = reaper()?;
    if let Some(w) = reaper
        .lock()
        .values_mut()
        .find(|w| Arc::ptr_eq(&w.process, process))
    {
        w.kill_at = Some(w.kill_at.map_or(at, |old| old.min(at)));
    }
    reaper.poller.wake();
    Ok(())
}

struct Watched {
    process: Arc<AgentProcess>,
    kill_at: Option<Instant>,
}

struct Reaper {
    poller: Poller,
    next_key: AtomicU64,
    watched: Mutex<HashMap<u64, Watched>>,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static REAPER: OnceLock<io::Result<Reaper>> = OnceLock::new();

fn reaper() -> io::Result<&'static Reaper> {
    REAPER
        .get_or_init(|| {
            let reaper = Reaper {
                poller: Poller::new()?,
                next_key: AtomicU64::new(0),
                watched: Mutex::new(HashMap::new()),
            };
            std::thread::Builder::new()
                .name("agent-reaper".into())
                .stack_size(256 * 1024)
                .spawn(reaper_loop)?;
            Ok(reaper)
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

fn reaper_loop() {
    let reaper = loop {
        match REAPER.get() {
            Some(Ok(r)) => break r,
            Some(Err(_)) => return,
            // This thread starts inside `get_or_init`.
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let mut ready = Vec::new();
    loop {
        let now = Instant::now();
        let timeout = reaper
            .lock()
            .values()
            .filter_map(|w| w.kill_at)
            .min()
            .map(|at| at.saturating_duration_since(now));
        ready.clear();
        if let Err(error) = reaper.poller.wait(timeout, &mut ready) {
            tracing::error!(%error, "reaper wait failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Exits first (a deadline for a process that just exited is moot).
        for &key in &ready {
            let Some(process) = reaper.lock().get(&key).map(|w| Arc::clone(&w.process)) else {
                continue; // the wake-up
            };
            let done = match process.try_reap() {
                Ok(Some(_)) => true,
                Ok(None) => false,
                Err(error) => {
                    tracing::error!(pid = process.pid, %error, "cannot reap");
                    true
                }
            };
            if done {
                // The pidfd stays open with its owner: out of the set, or it
                // would be reported for ever.
                reaper.poller.remove(process.handle.0.as_raw_fd());
                reaper.lock().remove(&key);
            }
        }
        let now = Instant::now();
        let due: Vec<Arc<AgentProcess>> = reaper
            .lock()
            .values_mut()
            .filter(|w| w.kill_at.is_some_and(|at| at <= now))
            .map(|w| {
                w.kill_at = None;
                Arc::clone(&w.process)
            })
            .collect();
        for process in due {
            tracing::debug!(pid = process.pid, "grace period over; killing the group");
            process.kill();
        }
    }
}
