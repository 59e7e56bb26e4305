//! Noticing that the host died, on a plain OS thread (so a wedged runtime
//! still notices), and taking the agent's process group down with it.
//!
//! Two signals of the host's death:
//! - the lifeline (`CODEFLY_AGENT_LIFELINE=FD`): the read end of a pipe whose
//!   write end only the host holds; EOF means every holder is gone;
//! - a `getppid()` that no longer is the original parent (re-parented to init
//!   or a subreaper), checked every [`PARENT_POLL`]: the last resort for hosts
//!   that give no lifeline.
//!
//! No `PR_SET_PDEATHSIG`: it fires when the parent *thread* that forked us
//! ends, so an agent started from a short-lived thread of a long-lived host
//! (Go, Python) would die while its host lives on.
//!
//! When the host is gone: SIGTERM to our group (we and our children start a
//! graceful stop), then after [`HOST_GONE_GRACE`] SIGKILL to the group. The
//! group is only ours to signal when we lead it (`getpgrp() == getpid()`, as a
//! host that spawns each agent in its own group arranges); otherwise the group
//! is our parent's, and we only signal ourselves.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the thread looks at the parent pid.
pub(crate) const PARENT_POLL: Duration = Duration::from_millis(500);

/// Longest the agent drains after its host died before its group is killed.
pub(crate) const HOST_GONE_GRACE: Duration = Duration::from_millis(500);

/// Set once the host is known to be gone (the stop path then kills the group).
static HOST_GONE: AtomicBool = AtomicBool::new(false);

/// Whether the host watcher saw the host die.
pub(crate) fn host_gone() -> bool {
    HOST_GONE.load(Ordering::SeqCst)
}

/// The current parent pid.
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::getppid()
    }
}

/// Whether this process leads its own process group (so killing the group
/// kills only us and our descendants that stayed in it).
pub(crate) fn leads_own_group() -> bool {
    // SAFETY: getpgrp/getpid have no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::getpgrp() == libc::getpid()
    }
}

/// Takes the lifeline fd named by `value` (the variable's value): checks it is
/// an open pipe and marks it close-on-exec, so our own children do not
/// inherit it.
///
/// The variable is inherited by our children's environment while the
/// descriptor is not, so a program started by an agent may see a number that
/// names nothing, or an unrelated descriptor: anything but an open pipe is
/// refused (the caller then relies on the parent poll).
pub(crate) fn take_lifeline(value: &str) -> Result<OwnedFd, String> {
    let fd: i32 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a file descriptor number"))?;
    if fd < 3 {
        return Err(format!("{fd} is stdin, stdout or stderr"));
    }
    // SAFETY: fstat into a zeroed local struct, F_GETFD/F_SETFD on an integer;
    // a descriptor that is not open fails with EBADF and is not taken.
    #[allow(unsafe_code)]
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &raw mut st) != 0 {
            return Err(format!(
                "descriptor {fd} is not open: {}",
                std::io::Error::last_os_error()
            ));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(format!("descriptor {fd} is not a pipe"));
        }
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
        // The host handed this descriptor to us alone; we own it from now on.
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Starts the host watcher thread. `lifeline` is the lifeline's read end, if
/// the host gave one; `original_parent` the parent pid at start.
pub(crate) fn watch(lifeline: Option<OwnedFd>, original_parent: i32, grace: Duration) {
    let grace = grace.min(HOST_GONE_GRACE);
    let leader = leads_own_group();
    let spawned = std::thread::Builder::new()
        .name("agent-serve-host-watch".into())
        .spawn(move || {
            let why = wait_for_host_death(lifeline.as_ref(), original_parent);
            HOST_GONE.store(true, Ordering::SeqCst);
            tracing::info!(why, "host is gone: stopping");
            // Graceful first: our SIGTERM handler (and our children's) run.
            signal_group(leader, libc::SIGTERM);
            // Then the hard deadline, whatever the runtime is doing.
            let deadline = Instant::now() + grace;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
            tracing::warn!(?grace, "still running after the host died; killing");
            kill_now(leader);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the host watcher thread");
    }
}

/// Blocks until the lifeline reads EOF (or fails) or the parent pid changes.
fn wait_for_host_death(lifeline: Option<&OwnedFd>, original_parent: i32) -> &'static str {
    let timeout_ms = i32::try_from(PARENT_POLL.as_millis()).unwrap_or(500);
    loop {
        if parent_pid() != original_parent {
            return "parent pid changed";
        }
        let Some(fd) = lifeline else {
            std::thread::sleep(PARENT_POLL);
            continue;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, the count says so.
        #[allow(unsafe_code)]
        let n = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return "lifeline poll failed";
        }
        if n == 0 {
            continue;
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
            && pfd.revents & libc::POLLIN == 0
        {
            return "lifeline closed";
        }
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local buffer of the given length.
        #[allow(unsafe_code)]
        let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match got {
            0 => return "lifeline closed",
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) {
                    return "lifeline read failed";
                }
            }
            // Bytes mean nothing: the host is alive.
            _ => {}
        }
    }
}

/// Signals our group when we lead it, else only ourselves.
fn signal_group(leader: bool, sig: i32) {
    // SAFETY: kill/killpg with our own pid/pgid; no memory is touched.
    #[allow(unsafe_code)]
    unsafe {
        if leader {
            libc::killpg(libc::getpgrp(), sig);
        } else {
            libc::kill(libc::getpid(), sig);
        }
    }
}

/// SIGKILLs our group (we lead it) or exits at once: the host is gone.
pub(crate) fn kill_now(leader: bool) -> ! {
    if leader {
        signal_group(true, libc::SIGKILL);
    }
    // Not the leader (or the kill did not take us): leave without running
    // destructors that a wedged runtime may never let finish.
    std::process::exit(1)
}

/// Called when serving stopped because the host is gone: children in our
/// group that outlived the SIGTERM go now, and so do we.
pub(crate) fn finish_host_gone() {
    if leads_own_group() {
        kill_now(true);
    }
}
