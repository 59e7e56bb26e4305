use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::{Body, Incoming};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A hyper response body as an [`AsyncRead`], failing with
/// [`io::ErrorKind::TimedOut`] when no bytes arrive for the stall timeout.
/// Transport errors (reset, truncated body) surface as read errors.
pub struct BodyReader {
    body: Incoming,
    chunk: Bytes,
    stall: Duration,
    /// Armed lazily: progress only records the time, the timer is re-armed
    /// when it fires early, so a fast download costs no timer churn.
    timer: Pin<Box<Sleep>>,
    last_progress: Instant,
    done: bool,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("stall", &self.stall)
            .field("buffered", &self.chunk.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl BodyReader {
    /// Wraps `body`; `stall` is the longest wait for the next bytes.
    #[must_use]
    pub fn new(body: Incoming, stall: Duration) -> Self {
        let now = Instant::now();
        BodyReader {
            body,
            chunk: Bytes::new(),
            stall,
            timer: Box::pin(tokio::time::sleep_until(now + stall)),
            last_progress: now,
            done: false,
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.chunk.is_empty() {
                let n = this.chunk.len().min(buf.remaining());
                buf.put_slice(&this.chunk[..n]);
                this.chunk.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.last_progress = Instant::now();
                    if let Ok(data) = frame.into_data() {
                        this.chunk = data;
                    }
                    // Trailers carry no bytes; keep polling.
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Err(io::Error::other(format!("body: {}", chain(&e)))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => loop {
                    let deadline = this.last_progress + this.stall;
                    if this.timer.deadline() != deadline {
                        this.timer.as_mut().reset(deadline);
                    }
                    match this.timer.as_mut().poll(cx) {
                        Poll::Ready(()) if Instant::now() >= deadline => {
                            this.done = true;
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("download stalled: no bytes for {:?}", this.stall),
                            )));
                        }
                        Poll::Ready(()) => {}
                        Poll::Pending => return Poll::Pending,
                    }
                },
            }
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
