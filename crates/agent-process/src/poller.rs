//! A readiness poller for one thread that waits on many descriptors (the
//! agents' stdout and stderr pipes), with one backend per platform behind one API:
//!
//! - `epoll` (the pidfd backend, Linux): [`Poller::add`] is one `epoll_ctl`
//!   from the caller's thread and does not wake the waiting thread;
//! - `poll` (the portable backend: macOS, BSD; Linux with `--cfg agent_portable`):
//!   the waiting thread polls a list that [`Poller::add`] appends to, and is
//!   woken to pick each addition up.
//!
//! Level-triggered: a descriptor with unread data is reported again by the
//! next [`Poller::wait`]. One thread waits and removes; any thread adds and wakes.
//!
//! ```
//! use std::io::Write as _;
//! use std::os::fd::AsRawFd as _;
//! use agent_process::poller::{Poller, WAKE};
//!
//! let poller = Poller::new()?;
//! let (r, w) = agent_process::spawn::pipe_cloexec()?;
//! poller.add(r.as_raw_fd(), 7)?;
//! std::fs::File::from(w).write_all(b"x")?;
//! let mut ready = Vec::new();
//! poller.wait(None, &mut ready)?;
//! // On the `poll` backend, `add` also woke the waiting thread.
//! ready.retain(|&token| token != WAKE);
//! assert_eq!(ready, [7]);
//! poller.remove(r.as_raw_fd());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

#[cfg(all(target_os = "linux", not(agent_portable)))]
use self::epoll as imp;
#[cfg(any(not(target_os = "linux"), agent_portable))]
use self::poll as imp;

/// The token [`Poller::wait`] reports when [`Poller::wake`] was called; not
/// available to [`Poller::add`].
pub const WAKE: u64 = u64::MAX;

/// Waits for descriptors to become readable (or hung up). See the [module docs](self).
#[derive(Debug)]
pub struct Poller {
    inner: imp::Poller,
    wake_r: OwnedFd,
    wake_w: OwnedFd,
}

impl Poller {
    /// An empty poller.
    ///
    /// # Errors
    /// Out of descriptors.
    pub fn new() -> io::Result<Self> {
        let (wake_r, wake_w) = wake_pipe()?;
        let inner = imp::Poller::new()?;
        inner.add(wake_r.as_raw_fd(), WAKE)?;
        Ok(Poller {
            inner,
            wake_r,
            wake_w,
        })
    }

    /// Reports `fd` as `token` whenever it is readable or hung up. Any
    /// thread may call it; `fd` must stay open until [`remove`](Self::remove)d.
    ///
    /// # Errors
    /// `token` is [`WAKE`], or the kernel refused (`fd` is not pollable).
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        if token == WAKE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the token is reserved for wake-ups",
            ));
        }
        self.inner.add(fd, token)?;
        if imp::WAKE_ON_ADD {
            self.wake();
        }
        Ok(())
    }

    /// Stops reporting `fd`. Call it before closing `fd`.
    pub fn remove(&self, fd: RawFd) {
        self.inner.remove(fd);
    }

    /// Waits at most `timeout` (`None`: no limit) and appends the tokens of
    /// the descriptors that are ready, [`WAKE`] if [`wake`](Self::wake) was
    /// called. An interrupted wait returns nothing.
    ///
    /// # Errors
    /// The kernel refused the wait.
    pub fn wait(&self, timeout: Option<Duration>, ready: &mut Vec<u64>) -> io::Result<()> {
        let from = ready.len();
        self.inner.wait(timeout_ms(timeout), ready)?;
        if ready[from..].contains(&WAKE) {
            drain(&self.wake_r);
        }
        Ok(())
    }

    /// Makes the current or next [`wait`](Self::wait) return [`WAKE`].
    pub fn wake(&self) {
        let one = [1u8];
        // SAFETY: writing one byte from a valid buffer to our non-blocking
        // pipe; a full pipe already holds a wake-up.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::write(self.wake_w.as_raw_fd(), one.as_ptr().cast(), 1) };
    }
}

/// Milliseconds for `epoll_wait`/`poll`, rounded up; -1 waits for ever.
fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    timeout.map_or(-1, |t| {
        let ms = t.as_millis() + u128::from(t.subsec_nanos() % 1_000_000 != 0);
        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
    })
}

/// A pipe whose ends are close-on-exec and non-blocking.
fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = crate::spawn::pipe_cloexec()?;
    for fd in [&r, &w] {
        // SAFETY: fcntl on descriptors we own.
        #[allow(unsafe_code)]
        let rc = unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((r, w))
}

/// Empties the non-blocking wake-up pipe.
fn drain(fd: &OwnedFd) {
    let mut sink = [0u8; 64];
    // SAFETY: reading into a valid buffer from a non-blocking pipe we own.
    #[allow(unsafe_code)]
    while unsafe { libc::read(fd.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
}

/// An interrupted wait is an empty one.
fn interrupted_is_empty(err: io::Error) -> io::Result<()> {
    if err.kind() == io::ErrorKind::Interrupted {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(all(target_os = "linux", not(agent_portable)))]
mod epoll {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// Descriptors are in the kernel's set: adding needs no wake-up.
    pub(super) const WAKE_ON_ADD: bool = false;

    #[derive(Debug)]
    pub(super) struct Poller {
        epoll: OwnedFd,
    }

    impl Poller {
        pub(super) fn new() -> io::Result<Self> {
            // SAFETY: epoll_create1 returns a new descriptor or -1.
            #[allow(unsafe_code)]
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor we own.
            #[allow(unsafe_code)]
            let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
            Ok(Poller { epoll })
        }

        pub(super) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN.cast_unsigned(),
                u64: token,
            };
            // SAFETY: a valid event; the caller keeps `fd` open while added.
            #[allow(unsafe_code)]
            let rc = unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    fd,
                    &raw mut event,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        pub(super) fn remove(&self, fd: RawFd) {
            // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
            #[allow(unsafe_code)]
            unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                );
            }
        }

        pub(super) fn wait(&self, timeout_ms: libc::c_int, ready: &mut Vec<u64>) -> io::Result<()> {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
            // SAFETY: events is a valid array of 64 entries.
            #[allow(unsafe_code)]
            let n = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, timeout_ms)
            };
            let Ok(n) = usize::try_from(n) else {
                return super::interrupted_is_empty(io::Error::last_os_error());
            };
            ready.extend(events[..n].iter().map(|e| e.u64));
            Ok(())
        }
    }
}

#[cfg(any(not(target_os = "linux"), agent_portable))]
mod poll {
    use std::io;
    use std::os::fd::RawFd;
    use std::sync::{Mutex, PoisonError};

    /// The waiting thread must rebuild its list: adding wakes it.
    pub(super) const WAKE_ON_ADD: bool = true;

    #[derive(Debug)]
    pub(super) struct Poller {
        fds: Mutex<Vec<(RawFd, u64)>>,
    }

    impl Poller {
        pub(super) fn new() -> io::Result<Self> {
            Ok(Poller {
                fds: Mutex::new(Vec::new()),
            })
        }

        fn list(&self) -> std::sync::MutexGuard<'_, Vec<(RawFd, u64)>> {
            self.fds.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub(super) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
            self.list().push((fd, token));
            Ok(())
        }

        pub(super) fn remove(&self, fd: RawFd) {
            self.list().retain(|(f, _)| *f != fd);
        }

        pub(super) fn wait(&self, timeout_ms: libc::c_int, ready: &mut Vec<u64>) -> io::Result<()> {
            let (mut fds, tokens): (Vec<libc::pollfd>, Vec<u64>) = self
                .list()
                .iter()
                .map(|(fd, token)| {
                    (
                        libc::pollfd {
                            fd: *fd,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        *token,
                    )
                })
                .unzip();
            let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
            // SAFETY: fds is a valid array of nfds pollfd.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
            if rc < 0 {
                return super::interrupted_is_empty(io::Error::last_os_error());
            }
            ready.extend(
                fds.iter()
                    .zip(tokens)
                    .filter(|(p, _)| p.revents != 0)
                    .map(|(_, token)| token),
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write as _;
    use std::time::Instant;

    #[test]
    fn reports_data_hangup_and_wake_and_times_out() {
        let poller = Poller::new().unwrap();
        let (r1, w1) = crate::spawn::pipe_cloexec().unwrap();
        let (r2, w2) = crate::spawn::pipe_cloexec().unwrap();
        poller.add(r1.as_raw_fd(), 1).unwrap();
        poller.add(r2.as_raw_fd(), 2).unwrap();
        let mut ready = Vec::new();
        // Nothing to read: the timeout (a wake-up from `add` may come first).
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(20) {
            ready.clear();
            poller
                .wait(Some(Duration::from_millis(20)), &mut ready)
                .unwrap();
            assert!(ready.iter().all(|t| *t == WAKE), "{ready:?}");
        }
        let mut w1 = std::fs::File::from(w1);
        w1.write_all(b"x").unwrap();
        drop(w2); // hang-up
        ready.clear();
        poller.wait(None, &mut ready).unwrap();
        ready.retain(|t| *t != WAKE);
        ready.sort_unstable();
        assert_eq!(ready, [1, 2]);
        poller.remove(r2.as_raw_fd());
        let mut r1 = std::fs::File::from(r1);
        std::io::Read::read_exact(&mut r1, &mut [0u8; 1]).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(10));
                poller.wake();
            });
            ready.clear();
            poller.wait(None, &mut ready).unwrap();
            assert_eq!(ready, [WAKE]);
        });
        assert!(poller.add(r1.as_raw_fd(), WAKE).is_err());
    }
}
