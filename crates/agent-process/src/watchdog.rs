//! The host's watchdog: when the host dies, every registered process group dies.
//!
//! `PR_SET_PDEATHSIG` kills an agent when its host dies, but only the agent:
//! its own children (a grpcio agent's helper, a shell's pipeline) are
//! reparented and live on. The watchdog covers them: forked once, on first
//! use, it holds one end of a socket pair whose other end only the host holds.
//! The host sends `register(pgid)` after each spawn and `forget(pgid)` when it
//! reaps. When the host dies, for whatever reason (SIGKILL included), the
//! kernel closes the host's end, the watchdog reads EOF and SIGKILLs every
//! group still registered, then exits. It works for any agent, foreign ones
//! included, and needs no privilege. Why a watchdog rather than a subreaper
//! or a pid namespace: ARCHITECTURE.md, "Nothing outlives the host".
//!
//! The watchdog runs without exec: it is a fork of the host that only makes
//! async-signal-safe calls (`recv`, `killpg`, `close`, `_exit`) on memory
//! allocated before the fork. It leaves the host's process group (so a
//! terminal's Ctrl-C that kills the host does not kill it first), ignores the
//! usual termination signals and closes every descriptor but its socket.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// Most groups one watchdog tracks at once (more are not guarded, and say so).
const MAX_GROUPS: usize = 16 * 1024;

const OP_REGISTER: i32 = 1;
const OP_FORGET: i32 = 2;

static HOST_END: OnceLock<io::Result<OwnedFd>> = OnceLock::new();

fn host_end() -> io::Result<&'static OwnedFd> {
    HOST_END
        .get_or_init(start)
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

/// Starts the watchdog now (it otherwise starts on the first registration).
///
/// # Errors
/// `socketpair` or `fork` failed.
pub fn arm() -> io::Result<()> {
    host_end().map(|_| ())
}

/// Whether the watchdog runs (was started and has not failed to start).
#[must_use]
pub fn is_armed() -> bool {
    matches!(HOST_END.get(), Some(Ok(_)))
}

/// Asks the watchdog to SIGKILL group `pgid` if the host dies.
///
/// # Errors
/// The watchdog could not be started or is gone.
pub(crate) fn register(pgid: libc::pid_t) -> io::Result<()> {
    send(host_end()?, OP_REGISTER, pgid)
}

/// The group is gone (reaped): the watchdog must not kill that id any more.
pub(crate) fn forget(pgid: libc::pid_t) {
    if let Some(Ok(fd)) = HOST_END.get()
        && let Err(error) = send(fd, OP_FORGET, pgid)
    {
        tracing::warn!(pgid, %error, "cannot tell the watchdog a group is gone");
    }
}

/// No SIGPIPE if the watchdog is gone (elsewhere `SO_NOSIGPIPE` on the socket does it).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Linux keeps message boundaries (`SOCK_SEQPACKET`); macOS has no unix
/// seqpacket sockets, so a stream carries fixed 8-byte records there.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SOCK_TYPE: libc::c_int = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SOCK_TYPE: libc::c_int = libc::SOCK_STREAM;

fn send(fd: &OwnedFd, op: i32, pgid: libc::pid_t) -> io::Result<()> {
    let msg = [op, pgid];
    // SAFETY: sending 8 bytes from a valid array.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::send(
            fd.as_raw_fd(),
            msg.as_ptr().cast::<libc::c_void>(),
            std::mem::size_of_val(&msg),
            SEND_FLAGS,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn start() -> io::Result<OwnedFd> {
    let mut pair: [RawFd; 2] = [-1, -1];
    // SAFETY: pair is a valid out-array of two fds.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, SOCK_TYPE, 0, pair.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds we own.
    let (host, dog) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        crate::spawn::set_cloexec(&host)?;
        crate::spawn::set_cloexec(&dog)?;
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid int option value.
        let rc = unsafe {
            libc::setsockopt(
                host.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&raw const one).cast::<libc::c_void>(),
                libc::socklen_t::try_from(std::mem::size_of_val(&one)).unwrap_or(4),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Everything the child touches is allocated before the fork.
    let mut table = vec![0 as libc::pid_t; MAX_GROUPS];
    // SAFETY: the child only calls async-signal-safe functions (below) and
    // never returns into Rust code of the parent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe { watchdog_main(dog.as_raw_fd(), &mut table) }
    }
    drop(dog);
    drop(table);
    tracing::debug!(watchdog = pid, "host watchdog started");
    Ok(host)
}

/// The watchdog process. Async-signal-safe calls only; never returns.
#[allow(unsafe_code)]
unsafe fn watchdog_main(fd: RawFd, table: &mut [libc::pid_t]) -> ! {
    // SAFETY: plain syscalls on our own fds and memory (the whole function).
    unsafe {
        libc::setpgid(0, 0);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        close_all_but(fd);
        let mut msg = [0i32; 2];
        let size = std::mem::size_of_val(&msg);
        let mut got = 0usize;
        loop {
            // A record may arrive in pieces on a stream socket: read on
            // until it is whole.
            let n = libc::recv(
                fd,
                msg.as_mut_ptr()
                    .cast::<u8>()
                    .add(got)
                    .cast::<libc::c_void>(),
                size - got,
                0,
            );
            if n < 0 && crate::errno() == libc::EINTR {
                continue;
            }
            if n > 0 {
                got += n.unsigned_abs();
                if got < size {
                    continue;
                }
                got = 0;
            }
            if n <= 0 {
                // EOF: the host is gone.
                for &pgid in table.iter() {
                    if pgid > 1 {
                        libc::killpg(pgid, libc::SIGKILL);
                    }
                }
                libc::_exit(0);
            }
            let [op, pgid] = msg;
            if pgid <= 1 {
                continue;
            }
            if op == OP_REGISTER {
                if let Some(slot) = table.iter_mut().find(|s| **s == 0) {
                    *slot = pgid;
                }
            } else if op == OP_FORGET
                && let Some(slot) = table.iter_mut().find(|s| **s == pgid)
            {
                *slot = 0;
            }
        }
    }
}

/// Closes every descriptor but `keep` (async-signal-safe).
#[allow(unsafe_code)]
unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: close_range on our own descriptor table.
    unsafe {
        #[cfg(target_os = "linux")]
        let ok = {
            let keep_u = libc::c_uint::try_from(keep).unwrap_or(0);
            (keep_u == 0 || libc::syscall(libc::SYS_close_range, 0u32, keep_u - 1, 0u32) == 0)
                && libc::syscall(libc::SYS_close_range, keep_u + 1, u32::MAX, 0u32) == 0
        };
        #[cfg(not(target_os = "linux"))]
        let ok = false;
        if !ok {
            for fd in 0..4096 {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}
