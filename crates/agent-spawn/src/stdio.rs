//! The agent's stdout and stderr, drained off the async runtime.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::logs::AgentLogger;
use crate::{ExitInfo, MAX_HANDSHAKE_LEN, StderrRing, StderrSink};

/// How long the I/O thread keeps draining after the agent exited, for output
/// still buffered or held by a process outside its group.
const DRAIN_LINGER: Duration = Duration::from_secs(2);

/// What the I/O thread read as the first stdout line: the bytes, or "too long".
pub(crate) type FirstLine = Result<Vec<u8>, Vec<u8>>;

/// The agent's stdio, drained by one plain OS thread: the handshake line
/// from stdout (then stdout is discarded, so a chatty agent never blocks on a
/// full pipe), stderr into the ring and the sink.
pub(crate) struct AgentIo {
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    pub(crate) ring: StderrRing,
    pub(crate) sink: Option<StderrSink>,
    pub(crate) logs: AgentLogger,
    pub(crate) line: Option<oneshot::Sender<FirstLine>>,
    pub(crate) exit: watch::Receiver<Option<ExitInfo>>,
    pub(crate) eof: watch::Sender<bool>,
}

impl AgentIo {
    #[allow(unsafe_code)]
    pub(crate) fn run(mut self) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut first = Vec::with_capacity(128);
        let (mut out_open, mut err_open) = (true, true);
        let mut exited_at: Option<std::time::Instant> = None;
        while out_open || err_open {
            if exited_at.is_none() && self.exit.borrow().is_some() {
                exited_at = Some(std::time::Instant::now());
            }
            if exited_at.is_some_and(|t| t.elapsed() > DRAIN_LINGER) {
                break; // something outside the group holds the pipes
            }
            let mut fds = [
                libc::pollfd {
                    fd: if out_open {
                        self.stdout.as_raw_fd()
                    } else {
                        -1
                    },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if err_open {
                        self.stderr.as_raw_fd()
                    } else {
                        -1
                    },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: a valid array of two pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, 200) };
            if rc < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[0].revents != 0 {
                match read(&self.stdout, &mut buf) {
                    Read::Closed => out_open = false,
                    Read::Again => {}
                    Read::Data(n) => self.stdout_chunk(&buf[..n], &mut first),
                }
            }
            if fds[1].revents != 0 {
                match read(&self.stderr, &mut buf) {
                    Read::Closed => err_open = false,
                    Read::Again => {}
                    Read::Data(n) => {
                        let chunk = &buf[..n];
                        self.ring.push(chunk);
                        if let Some(sink) = &self.sink {
                            sink(chunk);
                        }
                        self.logs.feed(chunk);
                    }
                }
            }
        }
        self.logs.finish();
        let _ = self.eof.send(true);
    }

    fn stdout_chunk(&mut self, data: &[u8], first: &mut Vec<u8>) {
        if self.line.is_none() {
            return; // after the handshake: discarded
        }
        let newline = data.iter().position(|&b| b == b'\n');
        first.extend_from_slice(&data[..newline.unwrap_or(data.len())]);
        let answer = if first.len() > MAX_HANDSHAKE_LEN + 1 {
            Err(std::mem::take(first))
        } else if newline.is_some() {
            Ok(std::mem::take(first))
        } else {
            return;
        };
        if let Some(tx) = self.line.take() {
            let _ = tx.send(answer);
        }
    }
}

enum Read {
    Data(usize),
    Closed,
    Again,
}

/// One `read`, retried on EINTR.
#[allow(unsafe_code)]
fn read(fd: &OwnedFd, buf: &mut [u8]) -> Read {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) => return Read::Closed,
            Ok(n) => return Read::Data(n),
            Err(_) => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return Read::Again,
                _ => return Read::Closed,
            },
        }
    }
}
