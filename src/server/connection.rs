//! A hold on the TCP connection under a request, so the connection of a
//! client that was given up on can be dropped even while actix still waits
//! to flush what that client does not read.
//!
//! actix-http flushes a response with no time limit for as long as the
//! client takes a trickle, and a handler cannot reach the socket. A server
//! that wraps its accepted streams in [`AbortableStream`] and puts
//! [`AbortableStream::handle`] in each connection's data (actix-http's
//! `on_connect_ext`) lets the sessions drop such connections
//! [`CLOSE_GRACE`](crate::protocol::session::CLOSE_GRACE) after giving up on them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_rt::net::TcpStream;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An accepted TCP stream whose connection an [`AbortHandle`] can drop.
/// Reads and writes go straight to the stream; only its drop takes a lock.
pub struct AbortableStream {
    stream: TcpStream,
    socket: Arc<Mutex<Option<RawFd>>>,
}

/// Drops a connection at once, discarding what its socket still holds.
/// Does nothing once the connection has ended by itself.
#[derive(Clone)]
pub struct AbortHandle {
    /// The socket while its stream lives: the stream's drop clears it, under
    /// the lock, before the descriptor is closed and can be reused.
    socket: Arc<Mutex<Option<RawFd>>>,
}

impl AbortableStream {
    pub fn new(stream: TcpStream) -> Self {
        let socket = Arc::new(Mutex::new(Some(stream.as_raw_fd())));
        AbortableStream { stream, socket }
    }

    pub fn handle(&self) -> AbortHandle {
        AbortHandle {
            socket: self.socket.clone(),
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for AbortableStream {
    fn drop(&mut self) {
        *self.socket.lock() = None;
    }
}

impl AbortHandle {
    /// A reset, not a goodbye: unsent data is dropped (`SO_LINGER` 0), and
    /// actix's next read or write on the connection fails, so it lets go of
    /// the connection and closes the socket.
    pub fn abort(&self) {
        let socket = self.socket.lock();
        if let Some(fd) = *socket {
            // SAFETY: the descriptor is open: the stream that owns it clears
            // `socket` under this lock before it closes it.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let _ = socket.set_linger(Some(Duration::ZERO));
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// True while the connection lives.
    pub fn is_alive(&self) -> bool {
        self.socket.lock().is_some()
    }
}

impl AsyncRead for AbortableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AbortableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Drops the connection `grace` from now unless it has ended by then.
pub(crate) fn abort_after(handle: Option<AbortHandle>, grace: Duration) {
    if let Some(handle) = handle.filter(AbortHandle::is_alive) {
        actix_rt::spawn(async move {
            tokio::time::sleep(grace).await;
            if handle.is_alive() {
                log::debug!("a given-up client's connection did not end within {grace:?}; dropped");
                handle.abort();
            }
        });
    }
}
