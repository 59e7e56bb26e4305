//! The connection under an agent's channel: tracked, and never dialled after the agent's exit.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::ExitInfo;

/// The socket under a channel, so that closing an agent can end our side of
/// the connection before the agent is asked to stop (as the Go loader's
/// `cc.Close()` before SIGTERM): a graceful server then has no open
/// connection to drain and exits at once.
///
/// Holds the descriptor number of the newest connection the channel made,
/// not a duplicate (a host holding 200 agents keeps no extra descriptor per
/// agent): the connection's [`Tracked`] wrapper clears the entry, under the
/// same lock, before its socket closes, so the number is never stale. Two
/// connections alive at once have different numbers, so a wrapper clears
/// the entry only if it still names its own socket.
///
/// It also refuses to dial once the agent has exited: tonic reconnects to
/// the same address after any error, and after the agent's exit whoever
/// binds its port next would receive the call and its token.
#[derive(Clone, Default)]
pub(crate) struct Transport {
    fd: Arc<Mutex<Option<RawFd>>>,
    exit: Option<watch::Receiver<Option<ExitInfo>>>,
}

impl Transport {
    /// A transport that stops dialling once `exit` holds the agent's exit.
    pub(crate) fn watching(exit: watch::Receiver<Option<ExitInfo>>) -> Self {
        Transport {
            fd: Arc::default(),
            exit: Some(exit),
        }
    }

    /// `agent-exited` when the agent is known to have exited: no connection
    /// may be attempted then.
    pub(crate) fn dial_allowed(&self) -> io::Result<()> {
        match self.exit.as_ref().and_then(|rx| *rx.borrow()) {
            Some(status) => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "agent-exited: the agent exited ({status}); its address is not dialled again"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Makes `stream` the connection that [`Transport::shutdown`] ends.
    pub(crate) fn track<S: AsRawFd>(&self, stream: S) -> Tracked<S> {
        *self.fd.lock().unwrap_or_else(PoisonError::into_inner) = Some(stream.as_raw_fd());
        Tracked {
            stream,
            transport: self.clone(),
        }
    }

    /// Shuts the connection down (both directions): calls in flight fail
    /// with `UNAVAILABLE`, the agent reads end-of-file.
    #[allow(unsafe_code)]
    pub(crate) fn shutdown(&self) {
        let slot = self.fd.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fd) = *slot {
            // SAFETY: while the entry is set (and we hold the lock) its
            // `Tracked` is alive, so `fd` is its open socket; shutdown only
            // changes the socket's state, the descriptor stays valid.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// A connection registered in a [`Transport`] while it is open.
pub(crate) struct Tracked<S: AsRawFd> {
    stream: S,
    transport: Transport,
}

impl<S: AsRawFd> Drop for Tracked<S> {
    fn drop(&mut self) {
        // Runs before `stream` (and its descriptor) is dropped.
        let mut slot = self
            .transport
            .fd
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *slot == Some(self.stream.as_raw_fd()) {
            *slot = None;
        }
    }
}

impl<S: AsRawFd + tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsRawFd + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
