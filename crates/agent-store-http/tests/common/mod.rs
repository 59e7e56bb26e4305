#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    dead_code,
    unreachable_pub
)]
//! A real hyper HTTP/1.1 server on 127.0.0.1 serving the store layout from
//! memory, with scripted faults per request and download counters.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// What the server does for one request of a route.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` if given), empty body.
    Status(u16, Option<&'static str>),
    /// Declare the full length, send half, then end the body early.
    Truncate,
    /// Declare the full length, send half, then fail the body (with a server
    /// started by `start_resetting`, the kernel sends RST).
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
}

#[derive(Debug, Default)]
pub struct State {
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<HashMap<String, usize>>,
    downloads: Mutex<HashMap<String, usize>>,
    /// The `Authorization` header of each request, per path.
    auth: Mutex<HashMap<String, Vec<Option<String>>>>,
    /// Pause between 64 KiB chunks of full bodies (to make downloads overlap).
    throttle: Mutex<Option<Duration>>,
    /// Notified when a `StallAfter` response has sent its bytes.
    pub stalled: Notify,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A body fed from a channel, so the server can stall, truncate or fail it.
struct ChanBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    empty: bool,
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.empty {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.empty
    }
}

fn empty_body() -> ChanBody {
    let (_tx, rx) = mpsc::channel(1);
    ChanBody { rx, empty: true }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(false).await
    }

    /// A server whose sockets close with RST (SO_LINGER 0) when a body fails.
    pub async fn start_resetting() -> TestServer {
        Self::start_with(true).await
    }

    async fn start_with(reset: bool) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (st, cs) = (state.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if reset {
                    stream.set_zero_linger().unwrap();
                }
                let st = st.clone();
                let task = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                cs.lock().unwrap().push(task.abort_handle());
            }
        });
        TestServer {
            addr,
            state,
            accept,
            conns,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}/store", self.addr)
    }

    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        self.state.routes.lock().unwrap().insert(
            path.to_owned(),
            Route {
                body: body.into(),
                faults: VecDeque::new(),
            },
        );
    }

    pub fn remove(&self, path: &str) {
        self.state.routes.lock().unwrap().remove(path);
    }

    /// Queues faults for the next requests of `path` (then it serves normally).
    pub fn fault(&self, path: &str, faults: &[Fault]) {
        let mut routes = self.state.routes.lock().unwrap();
        let r = routes.entry(path.to_owned()).or_default();
        r.faults.extend(faults.iter().copied());
    }

    pub fn clear_faults(&self, path: &str) {
        if let Some(r) = self.state.routes.lock().unwrap().get_mut(path) {
            r.faults.clear();
        }
    }

    pub fn throttle(&self, pause: Option<Duration>) {
        *self.state.throttle.lock().unwrap() = pause;
    }

    /// Requests of any kind for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The `Authorization` header each request of `path` carried.
    pub fn authorizations(&self, path: &str) -> Vec<Option<String>> {
        self.state
            .auth
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// GET requests of `path` answered 200 with a body.
    pub fn downloads(&self, path: &str) -> usize {
        self.state
            .downloads
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

fn handle(st: &Arc<State>, req: &Request<Incoming>) -> Response<ChanBody> {
    let path = req.uri().path().to_owned();
    *st.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned());
    st.auth
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push(auth);
    let (body, fault) = {
        let mut routes = st.routes.lock().unwrap();
        match routes.get_mut(&path) {
            Some(r) => (r.body.clone(), r.faults.pop_front()),
            None => {
                return Response::builder().status(404).body(empty_body()).unwrap();
            }
        }
    };
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            let mut b = Response::builder().status(code);
            if let Some(ra) = retry_after {
                b = b.header(header::RETRY_AFTER, ra);
            }
            return b.body(empty_body()).unwrap();
        }
        Some(Fault::Redirect(to)) => {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, to)
                .body(empty_body())
                .unwrap();
        }
        _ => {}
    }
    let len = body.len();
    let resp = Response::builder()
        .status(200)
        .header(header::CONTENT_LENGTH, len);
    if req.method() == http::Method::HEAD {
        return resp.body(empty_body()).unwrap();
    }
    *st.downloads.lock().unwrap().entry(path).or_default() += 1;
    let (tx, rx) = mpsc::channel(4);
    let throttle = *st.throttle.lock().unwrap();
    let st = st.clone();
    tokio::spawn(async move {
        let (send_upto, end) = match &fault {
            Some(Fault::Truncate | Fault::Reset) => (len / 2, fault),
            Some(Fault::StallAfter(n)) => ((*n).min(len), fault),
            _ => (len, None),
        };
        let mut pos = 0;
        while pos < send_upto {
            let end_at = (pos + 64 * 1024).min(send_upto);
            if tx.send(Ok(body.slice(pos..end_at))).await.is_err() {
                return;
            }
            pos = end_at;
            if let Some(p) = throttle {
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
    resp.body(ChanBody { rx, empty: false }).unwrap()
}

pub fn sha256_hex(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

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

/// The path of an artifact under `/store` for this platform.
pub fn artifact_path(publisher: &str, name: &str, version: &str) -> String {
    format!(
        "/store/{publisher}/{name}/{version}/service-{name}_{}",
        agent_ref::Platform::current().suffix()
    )
}

/// Serves `bytes` as `codefly.dev/{name}:{version}` with a correct sidecar.
/// Returns the binary's path on the server.
pub fn publish(server: &TestServer, name: &str, version: &str, bytes: &[u8]) -> String {
    let path = artifact_path("codefly.dev", name, version);
    server.put(&path, bytes.to_vec());
    server.put(
        &format!("{path}.sha256"),
        format!("{}  service-{name}\n", sha256_hex(bytes)),
    );
    path
}
