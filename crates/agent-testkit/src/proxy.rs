//! A fault-injecting TCP proxy for store tests.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` and forwards every connection to an
//! upstream address (a test HTTP server, the [`LocalRegistry`](crate::registry::LocalRegistry)).
//! Each new connection takes the next queued [`Fault`] ([`FaultProxy::push`])
//! or, when the queue is empty, the standing one ([`FaultProxy::set`]). Faults
//! act on the upstream → client direction (the response bytes), counted from
//! the start of the connection; the only HTTP the proxy reads is the end of a
//! header block (to answer a 5xx, or to rewrite `Content-Length`).
//!
//! Every task (the acceptor and each connection) stops when the proxy is dropped.
//!
//! ```no_run
//! use agent_testkit::proxy::{Fault, FaultProxy};
//!
//! # async fn demo(upstream: std::net::SocketAddr) -> std::io::Result<()> {
//! let proxy = FaultProxy::start(upstream).await?;
//! proxy.push([Fault::status(503), Fault::status(503)]); // a 5xx burst of 2
//! proxy.set(Fault::Truncate { after: 1024 });            // then every connection is cut
//! // point the store at proxy.url() …
//! assert_eq!(proxy.connections(), 0);
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Largest HTTP header block the proxy reads (request or response).
const MAX_HEAD: usize = 64 * 1024;

/// What the proxy does to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    PassThrough,
    /// Forward `after` response bytes, then close the connection cleanly (FIN).
    Truncate {
        /// Response bytes forwarded before the close.
        after: u64,
    },
    /// Forward `after` response bytes, then reset the connection (`SO_LINGER` 0, RST).
    Reset {
        /// Response bytes forwarded before the reset.
        after: u64,
    },
    /// Forward `after` response bytes, then send nothing more while holding
    /// the connection open (until the proxy is dropped).
    Stall {
        /// Response bytes forwarded before the stall.
        after: u64,
    },
    /// Forward everything, sleeping this long before each chunk (≤ 8 KiB) of response.
    Delay {
        /// Pause before each chunk.
        per_chunk: Duration,
    },
    /// Do not contact upstream: read the request head, answer this status with
    /// an empty body and `Connection: close`.
    Status {
        /// The status code (`503`, `500`, …).
        code: u16,
        /// A `Retry-After` header in seconds, if any.
        retry_after: Option<u32>,
    },
    /// Rewrite the first response's `Content-Length` to claim `extra` more
    /// bytes than upstream sends, forward the real body, then close.
    WrongContentLength {
        /// Bytes claimed beyond the real length.
        extra: u64,
    },
}

impl Fault {
    /// A [`Fault::Status`] with `Retry-After: 0` (retry at once).
    #[must_use]
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            retry_after: Some(0),
        }
    }
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    standing: Mutex<Fault>,
    queue: Mutex<VecDeque<Fault>>,
    connections: AtomicUsize,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl State {
    fn next_fault(&self) -> Fault {
        let queued = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        queued.unwrap_or_else(|| {
            self.standing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    fn track(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }
}

/// A TCP proxy on `127.0.0.1:0` in front of one upstream, with per-connection faults.
///
/// Needs a running tokio runtime ([`FaultProxy::start`] spawns onto it).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl FaultProxy {
    /// Starts a pass-through proxy in front of `upstream`.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            standing: Mutex::new(Fault::PassThrough),
            queue: Mutex::new(VecDeque::new()),
            connections: AtomicUsize::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let accept_state = Arc::clone(&state);
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let fault = accept_state.next_fault();
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let conn_state = Arc::clone(&accept_state);
                let task = tokio::spawn(async move {
                    // A connection's I/O error is the fault doing its job, or the client leaving.
                    let _ = serve(client, fault, &conn_state).await;
                });
                accept_state.track(task.abort_handle());
            }
        });
        state.track(acceptor.abort_handle());
        Ok(FaultProxy { addr, state })
    }

    /// The proxy's address (`127.0.0.1:PORT`).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The upstream address.
    #[must_use]
    pub fn upstream(&self) -> SocketAddr {
        self.state.upstream
    }

    /// The standing fault: what every connection gets once the queue is empty.
    /// Clears the queue.
    pub fn set(&self, fault: Fault) {
        self.state
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self
            .state
            .standing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Queues faults for the next connections, one each, before the standing fault.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(faults);
    }

    /// A "5xx burst": the next `count` connections answer `code` with
    /// `Retry-After: 0`; later ones get the standing fault.
    pub fn burst(&self, code: u16, count: usize) {
        self.push(std::iter::repeat_n(Fault::status(code), count));
    }

    /// Back to pass-through, queue cleared, counters zeroed.
    pub fn clear(&self) {
        self.set(Fault::PassThrough);
        self.reset_counters();
    }

    /// Connections accepted since the start (or the last [`FaultProxy::reset_counters`]).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Request bytes forwarded to upstream.
    #[must_use]
    pub fn bytes_up(&self) -> u64 {
        self.state.bytes_up.load(Ordering::SeqCst)
    }

    /// Response bytes sent to clients (synthesised 5xx answers included).
    #[must_use]
    pub fn bytes_down(&self) -> u64 {
        self.state.bytes_down.load(Ordering::SeqCst)
    }

    /// Zeroes the connection and byte counters.
    pub fn reset_counters(&self) {
        self.state.connections.store(0, Ordering::SeqCst);
        self.state.bytes_up.store(0, Ordering::SeqCst);
        self.state.bytes_down.store(0, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let tasks = std::mem::take(
            &mut *self
                .state
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            task.abort();
        }
    }
}

/// Where the header block ends (the index just past `\r\n\r\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads until a whole header block is in `buf` (or EOF, or the cap).
async fn read_head<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(Some(end));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        429 => "Too Many Requests",
        _ => "Fault",
    }
}

/// The head with `Content-Length` raised by `extra` (added when absent), and
/// the original length if there was one.
fn rewrite_content_length(head: &[u8], extra: u64) -> (Vec<u8>, Option<u64>) {
    let text = String::from_utf8_lossy(head);
    let mut original = None;
    let mut lines: Vec<String> = Vec::new();
    for line in text.split("\r\n") {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
            && let Ok(n) = value.trim().parse::<u64>()
        {
            original = Some(n);
            lines.push(format!("Content-Length: {}", n + extra));
        } else {
            lines.push(line.to_owned());
        }
    }
    if original.is_none() && !lines.is_empty() {
        lines.insert(1, format!("Content-Length: {extra}"));
    }
    (lines.join("\r\n").into_bytes(), original)
}

async fn serve(mut client: TcpStream, fault: Fault, state: &State) -> std::io::Result<()> {
    if let Fault::Status { code, retry_after } = fault {
        let mut buf = Vec::new();
        // Bounded: a client that never sends a request still gets its answer.
        let _ =
            tokio::time::timeout(Duration::from_secs(5), read_head(&mut client, &mut buf)).await;
        let mut answer = format!("HTTP/1.1 {code} {}\r\n", reason(code));
        if let Some(s) = retry_after {
            answer.push_str(&format!("Retry-After: {s}\r\n"));
        }
        answer.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        client.write_all(answer.as_bytes()).await?;
        state
            .bytes_down
            .fetch_add(answer.len() as u64, Ordering::SeqCst);
        client.shutdown().await?;
        // Let the client read the answer before the socket goes away.
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        return Ok(());
    }

    let upstream = TcpStream::connect(state.upstream).await?;
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();

    // Requests flow untouched; a fault only cuts them when the whole connection goes.
    let bytes_up = &state.bytes_up;
    let requests = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                let _ = up_write.shutdown().await;
                // Keep the read half alive so the response direction can finish.
                std::future::pending::<()>().await;
            }
            up_write.write_all(&buf[..n]).await?;
            bytes_up.fetch_add(n as u64, Ordering::SeqCst);
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    };

    let responses = async {
        let mut buf = vec![0u8; 8 * 1024];
        // Bytes still allowed before the fault fires (None: unlimited).
        let (mut budget, mut body_left): (Option<u64>, Option<u64>) = match &fault {
            Fault::Truncate { after } | Fault::Reset { after } | Fault::Stall { after } => {
                (Some(*after), None)
            }
            _ => (None, None),
        };
        if let Fault::WrongContentLength { extra } = fault {
            let mut head = Vec::new();
            let Some(end) = read_head(&mut up_read, &mut head).await? else {
                client_write.write_all(&head).await?;
                return Ok(Outcome::Close);
            };
            let (new_head, original) = rewrite_content_length(&head[..end], extra);
            client_write.write_all(&new_head).await?;
            let rest = &head[end..];
            let take = original.map_or(rest.len(), |o| {
                rest.len().min(usize::try_from(o).unwrap_or(usize::MAX))
            });
            client_write.write_all(&rest[..take]).await?;
            state
                .bytes_down
                .fetch_add((new_head.len() + take) as u64, Ordering::SeqCst);
            body_left = original.map(|o| o - take as u64);
            if body_left == Some(0) {
                return Ok(Outcome::Close);
            }
        }
        loop {
            if budget == Some(0) {
                return Ok(match fault {
                    Fault::Reset { .. } => Outcome::Reset,
                    Fault::Stall { .. } => Outcome::Stall,
                    _ => Outcome::Close,
                });
            }
            let n = up_read.read(&mut buf).await?;
            if n == 0 {
                let _ = client_write.shutdown().await;
                return Ok(Outcome::Done);
            }
            let mut n = n as u64;
            if let Some(b) = budget {
                n = n.min(b);
                budget = Some(b - n);
            }
            if let Some(left) = body_left {
                n = n.min(left);
                body_left = Some(left - n);
            }
            if let Fault::Delay { per_chunk } = fault {
                tokio::time::sleep(per_chunk).await;
            }
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            client_write.write_all(&buf[..n]).await?;
            state.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
            if body_left == Some(0) {
                return Ok(Outcome::Close);
            }
        }
        #[allow(unreachable_code)]
        Ok::<Outcome, std::io::Error>(Outcome::Done)
    };

    let outcome = tokio::select! {
        r = requests => { r?; Outcome::Done }
        r = responses => r?,
    };
    match outcome {
        Outcome::Done => {
            // Upstream finished; let the client finish sending (bounded) then close.
            Ok(())
        }
        Outcome::Close => {
            let _ = client_write.shutdown().await;
            Ok(())
        }
        Outcome::Reset => {
            let client = client_read
                .reunite(client_write)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            client.set_zero_linger()?;
            drop(client);
            Ok(())
        }
        Outcome::Stall => {
            // Hold both sockets, send nothing, until the proxy is dropped.
            let _hold = (client_read, client_write, up_read, up_write);
            std::future::pending::<()>().await;
            Ok(())
        }
    }
}

/// How a connection's response direction ended.
enum Outcome {
    /// Upstream closed; everything was forwarded.
    Done,
    /// Close the client connection (FIN).
    Close,
    /// Reset the client connection (RST).
    Reset,
    /// Hold the connection, send nothing.
    Stall,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_raised_or_added() {
        let (h, o) =
            rewrite_content_length(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nX: y\r\n\r\n", 5);
        assert_eq!(o, Some(10));
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nX: y\r\n\r\n"
        );
        let (h, o) = rewrite_content_length(b"HTTP/1.1 200 OK\r\n\r\n", 7);
        assert_eq!(o, None);
        assert!(
            String::from_utf8(h)
                .unwrap()
                .contains("Content-Length: 7\r\n")
        );
    }
}
