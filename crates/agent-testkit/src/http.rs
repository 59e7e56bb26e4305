//! A real HTTP/1.1 server (hyper) on 127.0.0.1 for the tests: files held in
//! memory by exact path, or read from a directory at request time; scripted
//! faults per request; counters of requests, downloads and the
//! `Authorization` header each request carried.
//!
//! It runs on a runtime of its own, so sync tests (the CLI run as a process)
//! and async tests use it alike; dropping it stops it and every connection.
//!
//! ```no_run
//! use agent_testkit::http::{Fault, TestServer};
//!
//! let server = TestServer::start();
//! server.put("/store/file", b"bytes".to_vec());
//! server.fault("/store/file", &[Fault::Status(503, Some("1"))]);
//! let url = format!("{}/store/file", server.url());
//! # let _ = url;
//! ```

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, mpsc};

/// What the server does for one request of a path.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` if given), empty body.
    Status(u16, Option<&'static str>),
    /// Declare the full length, send half, then end the body early.
    Truncate,
    /// Declare the full length, send half, then fail the body (with a server
    /// built with [`Builder::reset_on_error`], the kernel sends RST).
    Reset,
    /// Declare the full length, send this many bytes, then send nothing more.
    StallAfter(usize),
    /// Redirect (302) to this path.
    Redirect(&'static str),
}

#[derive(Debug, Default)]
struct Route {
    body: Bytes,
    faults: VecDeque<Fault>,
    /// Send the body one byte at a time, this long apart.
    trickle: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    /// Served when no route matches: files below this directory.
    root: Option<PathBuf>,
    hits: Mutex<HashMap<String, usize>>,
    downloads: Mutex<HashMap<String, usize>>,
    auth: Mutex<HashMap<String, Vec<Option<String>>>>,
    /// Pause between 64 KiB chunks of full bodies (to make downloads overlap).
    throttle: Mutex<Option<Duration>>,
    /// Notified when a `StallAfter` response has sent its bytes.
    stalled: Notify,
}

/// Locks a mutex, whether or not a panicking test poisoned it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How to start a [`TestServer`].
#[derive(Debug, Default)]
pub struct Builder {
    reset: bool,
    close: bool,
    root: Option<PathBuf>,
}

impl Builder {
    /// Sockets close with RST (`SO_LINGER` 0) when a body fails.
    pub fn reset_on_error(mut self) -> Self {
        self.reset = true;
        self
    }

    /// One request per connection (`Connection: close`), so a proxy in front
    /// counts requests by connections.
    pub fn one_request_per_connection(mut self) -> Self {
        self.close = true;
        self
    }

    /// Paths with no route are files below `root` (read at request time:
    /// GET and HEAD, 404 for anything else or outside `root`).
    pub fn files_from(mut self, root: &Path) -> Self {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Binds a loopback port and serves.
    pub fn start(self) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testkit-http")
            .enable_all()
            .build()
            .expect("a runtime for the test server");
        // Bound without blocking on the runtime: the caller may be inside one.
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std_listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = std_listener.local_addr().expect("the bound address");
        let listener = {
            let _in_runtime = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).expect("a tokio listener")
        };
        let state = Arc::new(State {
            root: self.root,
            ..State::default()
        });
        let st = Arc::clone(&state);
        let Builder { reset, close, .. } = self;
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if reset {
                    let _ = stream.set_zero_linger();
                }
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = Arc::clone(&st);
                        async move { Ok::<_, Infallible>(handle(&st, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            state,
            runtime: Some(runtime),
        }
    }
}

/// The server; see the [module](self) documentation.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl TestServer {
    /// A server with no files yet, keep-alive on, closing sockets gracefully.
    pub fn start() -> TestServer {
        Builder::default().start()
    }

    /// Options for [`TestServer`] before it starts.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A server serving `files` (exact path → body).
    pub fn with_files(files: HashMap<String, Vec<u8>>) -> TestServer {
        let server = TestServer::start();
        for (path, body) in files {
            server.put(&path, body);
        }
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `body` at `path` (replacing what was there, queued faults included).
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        let route = Route {
            body: body.into(),
            ..Route::default()
        };
        lock(&self.state.routes).insert(path.to_owned(), route);
    }

    /// Stops serving `path` (404 from then on).
    pub fn remove(&self, path: &str) {
        lock(&self.state.routes).remove(path);
    }

    /// Queues faults for the next requests of `path` (then it serves normally).
    pub fn fault(&self, path: &str, faults: &[Fault]) {
        let mut routes = lock(&self.state.routes);
        let r = routes.entry(path.to_owned()).or_default();
        r.faults.extend(faults.iter().copied());
    }

    /// Drops the faults still queued for `path`.
    pub fn clear_faults(&self, path: &str) {
        if let Some(r) = lock(&self.state.routes).get_mut(path) {
            r.faults.clear();
        }
    }

    /// Sends the body of `path` one byte at a time, `pause` apart (each byte
    /// resets a client's stall timer; the whole body takes long).
    pub fn trickle(&self, path: &str, pause: Duration) {
        lock(&self.state.routes)
            .entry(path.to_owned())
            .or_default()
            .trickle = Some(pause);
    }

    /// Pauses between 64 KiB chunks of every full body (`None`: no pause).
    pub fn throttle(&self, pause: Option<Duration>) {
        *lock(&self.state.throttle) = pause;
    }

    /// Notified when a [`Fault::StallAfter`] response has sent its bytes.
    pub fn stalled(&self) -> &Notify {
        &self.state.stalled
    }

    /// Requests of any kind for `path`.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.state.hits).get(path).copied().unwrap_or(0)
    }

    /// The `Authorization` header each request of `path` carried.
    pub fn authorizations(&self, path: &str) -> Vec<Option<String>> {
        lock(&self.state.auth)
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// GET requests of `path` answered 200 with a body.
    pub fn downloads(&self, path: &str) -> usize {
        lock(&self.state.downloads).get(path).copied().unwrap_or(0)
    }
}

/// A body fed from a channel, so the server can stall, truncate or fail it.
struct ChanBody {
    rx: Option<mpsc::Receiver<Result<Bytes, io::Error>>>,
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        rx.poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none()
    }
}

fn empty(status: u16) -> Response<ChanBody> {
    let mut resp = Response::new(ChanBody { rx: None });
    *resp.status_mut() = StatusCode::from_u16(status).expect("a valid status code");
    resp
}

/// A file below `root` named by a URL path, if it is one (no `..`, no absolute parts).
fn file_below(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let p = root.join(rel);
    p.is_file().then_some(p)
}

fn handle(st: &Arc<State>, req: &Request<Incoming>) -> Response<ChanBody> {
    let path = req.uri().path().to_owned();
    *lock(&st.hits).entry(path.clone()).or_default() += 1;
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    lock(&st.auth).entry(path.clone()).or_default().push(auth);
    let routed = {
        let mut routes = lock(&st.routes);
        routes
            .get_mut(&path)
            .map(|r| (r.body.clone(), r.faults.pop_front(), r.trickle))
    };
    let from_disk = || {
        let file = file_below(st.root.as_deref()?, &path)?;
        std::fs::read(file)
            .ok()
            .map(|b| (Bytes::from(b), None, None))
    };
    let Some((body, fault, trickle)) = routed.or_else(from_disk) else {
        return empty(404);
    };
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            let mut resp = empty(code);
            if let Some(ra) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static(ra));
            }
            return resp;
        }
        Some(Fault::Redirect(to)) => {
            let mut resp = empty(302);
            resp.headers_mut()
                .insert(header::LOCATION, header::HeaderValue::from_static(to));
            return resp;
        }
        _ => {}
    }
    let len = body.len();
    let with_length = |mut resp: Response<ChanBody>| {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
        resp
    };
    if req.method() == http::Method::HEAD {
        return with_length(empty(200));
    }
    *lock(&st.downloads).entry(path).or_default() += 1;
    let (tx, rx) = mpsc::channel(4);
    let (chunk, pause) = match trickle {
        Some(pause) => (1, Some(pause)),
        None => (64 * 1024, *lock(&st.throttle)),
    };
    let st = Arc::clone(st);
    tokio::spawn(async move {
        let (send_upto, end) = match &fault {
            Some(Fault::Truncate | Fault::Reset) => (len / 2, fault),
            Some(Fault::StallAfter(n)) => ((*n).min(len), fault),
            _ => (len, None),
        };
        let mut pos = 0;
        while pos < send_upto {
            let end_at = (pos + chunk).min(send_upto);
            if tx.send(Ok(body.slice(pos..end_at))).await.is_err() {
                return;
            }
            pos = end_at;
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
        match end {
            Some(Fault::Reset) => {
                let _ = tx
                    .send(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")))
                    .await;
            }
            Some(Fault::StallAfter(_)) => {
                // Give the client time to receive what was sent, then say so.
                tokio::time::sleep(Duration::from_millis(50)).await;
                st.stalled.notify_waiters();
                st.stalled.notify_one();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            }
            // Truncate: dropping the sender ends the body short of its length.
            _ => {}
        }
    });
    let mut resp = Response::new(ChanBody { rx: Some(rx) });
    *resp.status_mut() = StatusCode::OK;
    with_length(resp)
}

/// The lowercase hex SHA-256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `n` bytes of a fixed pseudo-random sequence (xorshift), the same every run.
pub fn payload(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut x: u32 = 0x1234_5678;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}
