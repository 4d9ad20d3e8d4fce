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

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_rt::net::{ActixStream, TcpStream};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, Ready};
use tokio::time::Sleep;

use crate::protocol::session::CLOSE_GRACE;

/// An accepted TCP stream whose connection an [`AbortHandle`] can drop.
/// Reads and writes go straight to the stream; only its drop takes a lock.
pub struct AbortableStream {
    stream: TcpStream,
    socket: Arc<Mutex<Option<RawFd>>>,
    /// How long a write may wait with no byte taken before the connection
    /// is reset; `None` waits for ever.
    stall_limit: Option<Duration>,
    /// Armed while a write waits; made only for connections that ever wait.
    stalled: Option<Pin<Box<Sleep>>>,
    waiting: bool,
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
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream) -> Self {
        let socket = Arc::new(Mutex::new(Some(stream.as_raw_fd())));
        AbortableStream {
            stream,
            socket,
            stall_limit: None,
            stalled: None,
            waiting: false,
        }
    }

    /// Resets the connection once a write has waited `limit` with no byte
    /// taken: a client that stopped reading does not keep its socket, nor
    /// what actix still has to write to it, however a response ended.
    pub fn with_stall_limit(mut self, limit: Option<Duration>) -> Self {
        self.stall_limit = limit;
        self
    }

    /// After a write came back pending: ready once it has waited too long.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(limit) = self.stall_limit else {
            return Poll::Pending;
        };
        if !self.waiting {
            self.waiting = true;
            let deadline = tokio::time::Instant::now() + limit;
            match &mut self.stalled {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.stalled = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let sleep = self.stalled.as_mut().expect("armed above");
        std::task::ready!(sleep.as_mut().poll(cx));
        log::debug!("a client took nothing for {limit:?}; its connection is reset");
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client takes nothing",
        ))
    }

    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            ready => {
                self.waiting = false;
                ready
            }
        }
    }

    /// A handle that drops this stream's connection; put it in the
    /// connection's data (actix-http's `on_connect_ext`).
    pub fn handle(&self) -> AbortHandle {
        AbortHandle {
            socket: self.socket.clone(),
        }
    }

    /// The stream underneath.
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
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.written(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.written(cx, result)
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

/// So a TLS acceptor can run on top: the handle then still reaches the
/// TCP socket under the encryption.
impl ActixStream for AbortableStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_read_ready(&self.stream, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        ActixStream::poll_write_ready(&self.stream, cx)
    }
}

/// Drops the connection [`CLOSE_GRACE`] from now unless it has ended by then.
///
/// Most connections end within moments, so this costs no task and no timer
/// of its own: the handle joins its worker's list of connections due, which
/// one task per worker walks as their times come. With one grace for all,
/// each comes due last, and the walk never waits past an earlier one.
pub(crate) fn abort_after_grace(handle: Option<AbortHandle>) {
    let Some(handle) = handle.filter(AbortHandle::is_alive) else {
        return;
    };
    let due = Instant::now() + CLOSE_GRACE;
    let start_reaper = DUE.with(|list| {
        let mut list = list.borrow_mut();
        list.handles.push_back((due, handle));
        !std::mem::replace(&mut list.reaping, true)
    });
    if start_reaper {
        actix_rt::spawn(reap());
    }
}

/// One worker's connections given up on, by the time each is dropped.
#[derive(Default)]
struct DueList {
    handles: VecDeque<(Instant, AbortHandle)>,
    /// A [`reap`] task runs on this worker.
    reaping: bool,
}

thread_local! {
    static DUE: RefCell<DueList> = RefCell::default();
}

/// Drops each listed connection still alive at its time; ends when the list
/// is empty, and the next [`abort_after_grace`] starts it again.
async fn reap() {
    // Clears `reaping` however the task ends (its runtime may stop first).
    struct Reaping;
    impl Drop for Reaping {
        fn drop(&mut self) {
            let _ = DUE.try_with(|list| list.borrow_mut().reaping = false);
        }
    }
    let _reaping = Reaping;
    loop {
        let now = Instant::now();
        let (expired, next) = DUE.with(|list| {
            let mut list = list.borrow_mut();
            let mut expired = Vec::new();
            while list.handles.front().is_some_and(|(at, _)| *at <= now) {
                expired.extend(list.handles.pop_front().map(|(_, handle)| handle));
            }
            (expired, list.handles.front().map(|(at, _)| *at))
        });
        for handle in expired {
            if handle.is_alive() {
                log::debug!("a given-up client's connection did not end in its grace; dropped");
                handle.abort();
            }
        }
        match next {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream as ClientStream};

    /// Our side of a loopback connection, wrapped, and the client's side.
    async fn connection() -> (AbortableStream, ClientStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = ClientStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (AbortableStream::new(accepted.unwrap().0), client.unwrap())
    }

    /// Waits (at most 5 s) for the client to see its connection end.
    async fn ended(client: &mut ClientStream) -> bool {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    }

    #[actix_rt::test]
    async fn connections_given_up_on_are_dropped_after_the_grace_not_before() {
        let (first, mut first_client) = connection().await;
        let (second, mut second_client) = connection().await;
        let given_up = Instant::now();
        abort_after_grace(Some(first.handle()));
        abort_after_grace(Some(second.handle()));
        let mut byte = [0u8; 1];
        let still_open = first_client.try_read(&mut byte);
        assert!(
            matches!(&still_open, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "open until its grace is over: {still_open:?}"
        );
        assert!(ended(&mut first_client).await, "the first is dropped");
        assert!(given_up.elapsed() >= CLOSE_GRACE, "not before its grace");
        assert!(ended(&mut second_client).await, "the second is dropped too");
        // The list is empty again: a later one starts the walk anew.
        let (again, mut again_client) = connection().await;
        abort_after_grace(Some(again.handle()));
        assert!(ended(&mut again_client).await, "a later one is dropped too");
        drop((first, second, again));
    }
}
