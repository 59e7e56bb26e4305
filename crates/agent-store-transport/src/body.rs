//! A response body as [`AsyncRead`], with a stall timer that counts bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use agent_ref::error_chain;

/// A response body as an [`AsyncRead`], failing with
/// [`io::ErrorKind::TimedOut`] when no **bytes** arrive for the stall
/// timeout. Only data counts as progress: empty DATA frames, trailers and
/// other frames do not reset the timer, so a server cannot hold a download
/// open forever by sending frames with nothing in them. Transport errors
/// (reset, truncated body) surface as read errors carrying their cause chain.
pub struct BodyReader<B> {
    body: B,
    chunk: Bytes,
    stall: Duration,
    /// Armed lazily: progress only records the time, the timer is re-armed
    /// when it fires early, so a fast download costs no timer churn.
    timer: Pin<Box<Sleep>>,
    last_progress: Instant,
    done: bool,
}

impl<B> std::fmt::Debug for BodyReader<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("stall", &self.stall)
            .field("buffered", &self.chunk.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B> BodyReader<B> {
    /// Wraps `body`; `stall` is the longest wait for the next bytes.
    #[must_use]
    pub fn new(body: B, stall: Duration) -> Self {
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

    fn stalled(&mut self) -> io::Error {
        self.done = true;
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("download stalled: no bytes for {:?}", self.stall),
        )
    }
}

impl<B> AsyncRead for BodyReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
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
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => {
                            this.last_progress = Instant::now();
                            this.chunk = data;
                        }
                        // An empty DATA frame or trailers: no bytes, no
                        // progress. A body that only ever sends those still
                        // runs into the stall deadline.
                        _ => {
                            if Instant::now() >= this.last_progress + this.stall {
                                return Poll::Ready(Err(this.stalled()));
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Err(io::Error::other(format!(
                        "body: {}",
                        error_chain(&e)
                    ))));
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
                            return Poll::Ready(Err(this.stalled()));
                        }
                        Poll::Ready(()) => {}
                        Poll::Pending => return Poll::Pending,
                    }
                },
            }
        }
    }
}

/// Why a small body could not be read whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No bytes for the stall timeout.
    #[error("stalled: no bytes for {0:?}")]
    Stalled(Duration),
    /// More than the limit.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// The connection failed mid-body.
    #[error("{0}")]
    Transport(String),
}

/// Reads a small body (JSON, a digest, a signature) whole, at most `max`
/// bytes, failing when it stalls for `stall`.
///
/// # Errors
/// [`ReadError`].
pub async fn read_to_end<B>(body: B, stall: Duration, max: u64) -> Result<Vec<u8>, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error,
{
    let mut out = Vec::new();
    let mut reader = BodyReader::new(body, stall).take(max.saturating_add(1));
    match reader.read_to_end(&mut out).await {
        Ok(_) if out.len() as u64 > max => Err(ReadError::TooLarge(max)),
        Ok(_) => Ok(out),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(ReadError::Stalled(stall)),
        Err(e) => Err(ReadError::Transport(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;
    use tokio::sync::mpsc;

    /// A body fed from a channel: `Some(bytes)` is a DATA frame (possibly empty).
    struct Chan(mpsc::Receiver<Bytes>);

    impl Body for Chan {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    /// Sends `first`, then an empty DATA frame every 20 ms, forever.
    fn empty_frames_after(first: &'static [u8]) -> Chan {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(first)).await;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if tx.send(Bytes::new()).await.is_err() {
                    return;
                }
            }
        });
        Chan(rx)
    }

    #[tokio::test]
    async fn empty_frames_are_no_progress() {
        let mut reader = BodyReader::new(empty_frames_after(b"abc"), Duration::from_millis(300));
        let mut out = Vec::new();
        // Hang guard only: the stall timeout must end this long before.
        let got = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut out))
            .await
            .expect("a body of empty frames must stall, not hang");
        let err = got.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(out, b"abc");
    }

    #[tokio::test]
    async fn small_bodies_are_bounded() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
        drop(tx);
        let err = read_to_end(Chan(rx), Duration::from_secs(5), 4)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::TooLarge(4)), "{err}");
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"0123")).await.unwrap();
        drop(tx);
        assert_eq!(
            read_to_end(Chan(rx), Duration::from_secs(5), 4)
                .await
                .unwrap(),
            b"0123"
        );
        let err = read_to_end(empty_frames_after(b""), Duration::from_millis(200), 4)
            .await
            .unwrap_err();
        assert!(matches!(err, ReadError::Stalled(_)), "{err}");
    }
}
