//! The agents' stdio, drained by one process-wide I/O thread.
//!
//! Every agent's stdout and stderr pipes are registered with one poller
//! (`epoll` on Linux, `poll` on the portable backend) that a single plain OS
//! thread, started on first use, waits on: the handshake line from stdout
//! (then stdout is discarded, so a chatty agent never blocks on a full pipe),
//! stderr into the ring, the sink and the log forwarding. Registering an agent
//! costs a few system calls on the caller's thread and no thread of its own;
//! with `epoll` the I/O thread is not even woken for it.
//!
//! After an agent has exited, its pipes are drained for at most
//! [`DRAIN_LINGER`] more: a process outside its group may hold them open.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use agent_process::poller::{Poller, WAKE};
use tokio::sync::{oneshot, watch};

use crate::logs::AgentLogger;
use crate::{MAX_HANDSHAKE_LEN, StderrRing, StderrSink};

/// How long the I/O thread keeps draining after the agent exited, for output
/// still buffered or held by a process outside its group.
const DRAIN_LINGER: Duration = Duration::from_secs(2);

/// What the I/O thread read as the first stdout line: the bytes, or "too long".
pub(crate) type FirstLine = Result<Vec<u8>, Vec<u8>>;

/// One agent's stdio and where its bytes go.
pub(crate) struct AgentIo {
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    pub(crate) ring: StderrRing,
    pub(crate) sink: Option<StderrSink>,
    pub(crate) logs: AgentLogger,
    /// Receives the first stdout line.
    pub(crate) line: Option<oneshot::Sender<FirstLine>>,
    /// Turns true once stderr reached EOF (or the drain gave up).
    pub(crate) eof: watch::Sender<bool>,
}

/// An agent registered with the I/O thread: tell it when the agent exited.
pub(crate) struct Registration {
    id: u64,
    open: Arc<AtomicBool>,
}

impl Registration {
    /// The agent has exited: its pipes get [`DRAIN_LINGER`] more. Cheap once
    /// they are closed (the usual case: exit closes them first).
    pub(crate) fn exited(&self) {
        if !self.open.load(Ordering::Acquire) {
            return;
        }
        if let Ok(shared) = shared() {
            shared
                .exits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((self.id, Instant::now() + DRAIN_LINGER));
            shared.poller.wake();
        }
    }
}

/// Hands the agent's pipes to the I/O thread (started on first use).
pub(crate) fn register(io: AgentIo) -> io::Result<Registration> {
    let shared = shared()?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let open = Arc::new(AtomicBool::new(true));
    let (out, err) = (io.stdout.as_raw_fd(), io.stderr.as_raw_fd());
    // In the table before the poller can report it: the thread looks there
    // for an id it does not know yet.
    shared
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((
            id,
            Entry {
                io,
                open: Arc::clone(&open),
                first: Vec::new(),
                out_open: true,
                err_open: true,
            },
        ));
    let added = shared
        .poller
        .add(out, token(id, STDOUT))
        .and_then(|()| shared.poller.add(err, token(id, STDERR)));
    if let Err(e) = added {
        // The thread may already have taken it: let it drop the entry.
        shared
            .exits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, Instant::now()));
        shared.poller.wake();
        return Err(e);
    }
    Ok(Registration { id, open })
}

const STDOUT: u64 = 0;
const STDERR: u64 = 1;

fn token(id: u64, stream: u64) -> u64 {
    (id << 1) | stream
}

struct Shared {
    poller: Poller,
    next_id: AtomicU64,
    pending: Mutex<Vec<(u64, Entry)>>,
    /// Agents that exited, and until when their pipes are drained.
    exits: Mutex<Vec<(u64, Instant)>>,
}

static SHARED: OnceLock<io::Result<Shared>> = OnceLock::new();

fn shared() -> io::Result<&'static Shared> {
    SHARED
        .get_or_init(|| {
            let shared = Shared {
                poller: Poller::new()?,
                next_id: AtomicU64::new(0),
                pending: Mutex::new(Vec::new()),
                exits: Mutex::new(Vec::new()),
            };
            std::thread::Builder::new()
                .name("agent-io".into())
                .stack_size(256 * 1024)
                .spawn(run)?;
            Ok(shared)
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
}

/// One agent as the I/O thread holds it.
struct Entry {
    io: AgentIo,
    open: Arc<AtomicBool>,
    first: Vec<u8>,
    out_open: bool,
    err_open: bool,
}

impl Entry {
    /// Reads one chunk of stdout; `false` at EOF.
    fn stdout(&mut self, buf: &mut [u8]) -> bool {
        match read(&self.io.stdout, buf) {
            Read::Closed => false,
            Read::Again => true,
            Read::Data(n) => {
                self.stdout_chunk(n, buf);
                true
            }
        }
    }

    fn stdout_chunk(&mut self, n: usize, buf: &[u8]) {
        if self.io.line.is_none() {
            return; // after the handshake: discarded
        }
        let data = &buf[..n];
        let newline = data.iter().position(|&b| b == b'\n');
        self.first
            .extend_from_slice(&data[..newline.unwrap_or(data.len())]);
        let answer = if self.first.len() > MAX_HANDSHAKE_LEN + 1 {
            Err(std::mem::take(&mut self.first))
        } else if newline.is_some() {
            Ok(std::mem::take(&mut self.first))
        } else {
            return;
        };
        if let Some(tx) = self.io.line.take() {
            let _ = tx.send(answer);
        }
    }

    /// Reads one chunk of stderr into the ring, the sink and the logs; `false` at EOF.
    fn stderr(&mut self, buf: &mut [u8]) -> bool {
        match read(&self.io.stderr, buf) {
            Read::Closed => false,
            Read::Again => true,
            Read::Data(n) => {
                let chunk = &buf[..n];
                self.io.ring.push(chunk);
                if let Some(sink) = &self.io.sink {
                    sink(chunk);
                }
                self.io.logs.feed(chunk);
                true
            }
        }
    }

    /// Out of the poller without another call into the sink or the logs
    /// (after one of them panicked); EOF is still announced.
    fn forget(self, poller: &Poller) {
        self.open.store(false, Ordering::Release);
        poller.remove(self.io.stdout.as_raw_fd());
        poller.remove(self.io.stderr.as_raw_fd());
        let _ = self.io.eof.send(true);
    }

    /// Both pipes done (or given up on): the last log line, then EOF.
    fn finish(mut self, poller: &Poller) {
        self.open.store(false, Ordering::Release);
        if self.out_open {
            poller.remove(self.io.stdout.as_raw_fd());
        }
        if self.err_open {
            poller.remove(self.io.stderr.as_raw_fd());
        }
        self.io.logs.finish();
        let _ = self.io.eof.send(true);
    }
}

fn run() {
    let shared = loop {
        match SHARED.get() {
            Some(Ok(shared)) => break shared,
            Some(Err(_)) => return,
            // The thread starts inside `get_or_init`.
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let mut agents: HashMap<u64, Entry> = HashMap::new();
    let mut lingering: Vec<(u64, Instant)> = Vec::new();
    let mut ready: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let timeout = lingering
            .iter()
            .map(|(_, at)| *at)
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
        ready.clear();
        if let Err(error) = shared.poller.wait(timeout, &mut ready) {
            tracing::error!(%error, "agent I/O poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut unknown = false;
        for &t in &ready {
            if t != WAKE && !agents.contains_key(&(t >> 1)) {
                unknown = true;
            }
        }
        if unknown || ready.contains(&WAKE) {
            let pending = std::mem::take(
                &mut *shared
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            agents.extend(pending);
        }
        if ready.contains(&WAKE) {
            let exits =
                std::mem::take(&mut *shared.exits.lock().unwrap_or_else(PoisonError::into_inner));
            lingering.extend(exits.into_iter().filter(|(id, _)| agents.contains_key(id)));
        }
        for &t in &ready {
            if t == WAKE {
                continue;
            }
            let id = t >> 1;
            let Some(entry) = agents.get_mut(&id) else {
                continue;
            };
            // A panicking sink (or subscriber) loses its own agent's output,
            // as it did with a thread per agent, not every agent's.
            let step = std::panic::catch_unwind(AssertUnwindSafe(|| {
                if t & 1 == STDOUT {
                    if entry.out_open && !entry.stdout(&mut buf) {
                        entry.out_open = false;
                        shared.poller.remove(entry.io.stdout.as_raw_fd());
                    }
                } else if entry.err_open && !entry.stderr(&mut buf) {
                    entry.err_open = false;
                    shared.poller.remove(entry.io.stderr.as_raw_fd());
                }
            }));
            if step.is_err() {
                tracing::error!("reading an agent's output panicked; its output is no longer read");
                entry.out_open = false;
                entry.err_open = false;
                if let Some(entry) = agents.remove(&id) {
                    entry.forget(&shared.poller);
                }
                continue;
            }
            if !entry.out_open
                && !entry.err_open
                && let Some(entry) = agents.remove(&id)
            {
                entry.finish(&shared.poller);
            }
        }
        if !lingering.is_empty() {
            let now = Instant::now();
            lingering.retain(|(id, at)| {
                if *at > now {
                    return agents.contains_key(id);
                }
                // Something outside the group holds the pipes: stop here.
                if let Some(entry) = agents.remove(id) {
                    entry.finish(&shared.poller);
                }
                false
            });
        }
    }
}

enum Read {
    Data(usize),
    Closed,
    Again,
}

/// One `read`, retried on EINTR. The poller said the pipe is readable and
/// only this thread reads it, so a blocking descriptor does not block here.
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
