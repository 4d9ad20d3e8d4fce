//! Read backpressure for HTTP/1 connections.
//!
//! actix-http's HTTP/1 dispatcher reads and answers pipelined requests
//! however much of its answers the client has left unread: it stops reading
//! only on its read buffer (128 KiB of requests) and at most 16 queued
//! requests per read, and every answer goes into a write buffer with no
//! bound. A client that pipelines `/info` requests and reads nothing had
//! 41 MiB buffered for it after 103,000 of them.
//!
//! [`Gated`] wraps the socket under the dispatcher: while the socket has not
//! taken everything the dispatcher last wrote, it reads nothing more, and it
//! reads at most [`READ_BURST`] bytes before the dispatcher has had a turn to
//! answer them. So what one connection can make the gateway hold is the
//! answers to one burst of requests, whatever the client sends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much is read between two turns of the dispatcher: 16 KiB of
/// requests, a few hundred pipelined ones at most.
pub const READ_BURST: usize = 16 * 1024;

pub struct Gated<T> {
    inner: T,
    /// Bytes the dispatcher offered in its last write that the socket has
    /// not taken.
    unflushed: usize,
    /// Bytes read since the dispatcher last had a turn.
    burst: usize,
    /// Off: reads and writes go straight through.
    gating: bool,
}

impl<T> Gated<T> {
    pub fn new(inner: T) -> Self {
        Gated {
            inner,
            unflushed: 0,
            burst: 0,
            gating: true,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The same type without the gate, for HTTP/2 beside HTTP/1 on a TLS
    /// listener.
    pub fn passthrough(inner: T) -> Self {
        Gated {
            gating: false,
            ..Gated::new(inner)
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gated<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.gating {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if self.unflushed > 0 {
            // The pending write woke-up is registered: the write that empties
            // it wakes the task again (see `poll_write`).
            return Poll::Pending;
        }
        if self.burst >= READ_BURST {
            self.burst = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let room = READ_BURST - self.burst;
        let (result, n) = if buf.remaining() <= room {
            let before = buf.filled().len();
            let result = Pin::new(&mut self.inner).poll_read(cx, buf);
            (result, buf.filled().len() - before)
        } else {
            // A view of the first `room` bytes of what is left, not zeroed
            // first (as tokio's `Take` reads).
            let mut limited = buf.take(room);
            let start = limited.filled().as_ptr();
            let result = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
            assert_eq!(
                start,
                limited.filled().as_ptr(),
                "the reader swapped the buffer"
            );
            let n = limited.filled().len();
            // SAFETY: the reader filled, and so initialized, these `n` bytes.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            (result, n)
        };
        self.burst += n;
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gated<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if !self.gating {
            return result;
        }
        let was_blocked = self.unflushed > 0;
        self.unflushed = match &result {
            Poll::Ready(Ok(n)) => data.len() - n,
            Poll::Ready(Err(_)) => 0,
            Poll::Pending => data.len(),
        };
        if was_blocked && self.unflushed == 0 {
            // Reading stopped while this was pending; the dispatcher reads
            // before it writes, so it must be polled again to read.
            cx.waker().wake_by_ref();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
