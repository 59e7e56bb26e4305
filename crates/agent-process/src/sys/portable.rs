//! The portable Unix backend (macOS, BSD; Linux with `--cfg agent_portable`):
//! plain pids, made safe by the same invariant as the pidfd backend — a pid is
//! only signalled while its process is our unreaped child, under the lock that
//! reaping takes, so the zombie pins it. Each child gets one small waiter
//! thread blocked in `waitid(WEXITED | WNOWAIT)`, which leaves the child a
//! zombie and hands over to [`AgentProcess::try_reap`]; one deadline thread
//! keeps the SIGKILL deadlines of `terminate`.

use std::io;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::{AgentProcess, Exit};

pub(crate) const NAME: &str = "portable";

/// Nothing beyond the pid: the lock and the unreaped zombie are the guarantee.
pub(crate) struct Handle;

impl Handle {
    pub(crate) fn open(_pid: libc::pid_t) -> io::Result<Self> {
        Ok(Handle)
    }
}

/// Not available here (no pidfd to pin a process that is not our child):
/// a descendant that left the group is not reached.
pub(crate) fn pin_descendants(_process: &AgentProcess) {}

/// See [`pin_descendants`].
pub(crate) fn signal_descendants(_process: &AgentProcess, _signal: libc::c_int) {}

pub(crate) fn send_leader(process: &AgentProcess, signal: libc::c_int) -> bool {
    // SAFETY: kill has no memory effects; callers hold the state lock and have
    // seen the child unreaped, so the pid is still ours.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(process.pid, signal) };
    rc == 0
}

/// `waitid(P_PID, pid, flags)`: `None` when WNOHANG found nothing.
pub(crate) fn wait(process: &AgentProcess, flags: libc::c_int) -> io::Result<Option<Exit>> {
    wait_pid(process.pid, flags)
}

fn wait_pid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<Exit>> {
    let id = libc::id_t::try_from(pid).map_err(|_| io::Error::other("bad pid"))?;
    loop {
        // SAFETY: siginfo_t is plain data, zeroed is a valid value.
        #[allow(unsafe_code)]
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out-pointer.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::waitid(libc::P_PID, id, &raw mut info, flags) };
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

/// Starts the child's waiter thread: it blocks until the child exits (leaving
/// it a zombie), then reaps it through its owner.
pub(crate) fn watch(process: &Arc<AgentProcess>) -> io::Result<()> {
    let process = Arc::clone(process);
    std::thread::Builder::new()
        .name("agent-waiter".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            if let Err(error) = wait_pid(process.pid, libc::WEXITED | libc::WNOWAIT) {
                if process.has_exited() {
                    return; // reaped by its owner meanwhile
                }
                if error.raw_os_error() != Some(libc::ECHILD) {
                    tracing::error!(pid = process.pid, %error, "cannot wait for the child");
                    return;
                }
                // Reaped by something else: try_reap records it as gone.
            }
            if let Err(error) = process.try_reap() {
                tracing::error!(pid = process.pid, %error, "cannot reap");
            }
        })?;
    Ok(())
}

struct Deadlines {
    due: Mutex<Vec<(Arc<AgentProcess>, Instant)>>,
    changed: Condvar,
}

static DEADLINES: OnceLock<io::Result<Deadlines>> = OnceLock::new();

fn deadlines() -> io::Result<&'static Deadlines> {
    DEADLINES
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("agent-deadlines".into())
                .stack_size(256 * 1024)
                .spawn(deadline_loop)?;
            Ok(Deadlines {
                due: Mutex::new(Vec::new()),
                changed: Condvar::new(),
            })
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

pub(crate) fn kill_at(process: &Arc<AgentProcess>, at: Instant) -> io::Result<()> {
    let d = deadlines()?;
    d.due
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((Arc::clone(process), at));
    d.changed.notify_one();
    Ok(())
}

fn deadline_loop() {
    let d = loop {
        match DEADLINES.get() {
            Some(Ok(d)) => break d,
            Some(Err(_)) => return,
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let mut due = d.due.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        let mut fired = Vec::new();
        due.retain(|(p, at)| {
            if p.has_exited() {
                return false;
            }
            if *at <= now {
                fired.push(Arc::clone(p));
                return false;
            }
            true
        });
        let next = due.iter().map(|(_, at)| *at).min();
        drop(due);
        for p in fired {
            tracing::debug!(pid = p.pid, "grace period over; killing the group");
            p.kill();
        }
        due = d.due.lock().unwrap_or_else(PoisonError::into_inner);
        due = match next {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                d.changed
                    .wait_timeout(due, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None if due.is_empty() => d.changed.wait(due).unwrap_or_else(PoisonError::into_inner),
            None => due,
        };
    }
}

/// Watches any process by probing it with signal 0 (no pidfd here): the
/// callback runs once it is gone. A pid recycled within one probe interval
/// would be missed; it is only used for attached agents' exit notices.
pub(crate) fn on_pid_exit(pid: libc::pid_t, callback: Box<dyn FnOnce() + Send>) -> io::Result<()> {
    if !alive(pid) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    std::thread::Builder::new()
        .name("agent-pid-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            while alive(pid) {
                std::thread::sleep(Duration::from_millis(100));
            }
            callback();
        })?;
    Ok(())
}

fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || crate::errno() == libc::EPERM
}
