//! The client's bytes on their way to actix-ws, cut where a frame passes
//! the message bound.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::{web, FromRequest, HttpRequest};
use futures::FutureExt;

use crate::protocol::frame_limit::{FrameLimit, TooLarge};

/// The client's bytes, cut where a frame header announces more than `max`
/// payload bytes, or a fragmented message passes `max` in all: no more of
/// such a frame reaches actix-ws, which would buffer all of it first.
pub(super) fn limit_frames(req: &HttpRequest, payload: web::Payload, max: usize) -> web::Payload {
    let limited = LimitedPayload {
        inner: payload,
        limit: FrameLimit::new(max),
        cut: Cut::No,
    };
    let mut payload: actix_web::dev::Payload = actix_web::dev::Payload::Stream {
        payload: Box::pin(limited),
    };
    // The extractor only takes the payload out: it is ready at once.
    web::Payload::from_request(req, &mut payload)
        .now_or_never()
        .and_then(Result::ok)
        .expect("the payload extractor is infallible")
}

pin_project_lite::pin_project! {
    struct LimitedPayload {
        #[pin]
        inner: web::Payload,
        limit: FrameLimit,
        cut: Cut,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    No,
    /// The whole frames before the cut have been passed on; the reader is
    /// given one turn to take them before it hears of the overflow.
    Announced,
    Overflowed,
    Ended,
}

impl futures::Stream for LimitedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        match *this.cut {
            Cut::No => {}
            Cut::Announced => {
                *this.cut = Cut::Overflowed;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Cut::Overflowed => {
                *this.cut = Cut::Ended;
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
            Cut::Ended => return Poll::Ready(None),
        }
        let chunk = match std::task::ready!(this.inner.poll_next(cx)) {
            Some(Ok(chunk)) => chunk,
            other => return Poll::Ready(other),
        };
        match this.limit.scan(&chunk) {
            Ok(()) => Poll::Ready(Some(Ok(chunk))),
            Err(TooLarge { at }) => {
                *this.cut = Cut::Announced;
                Poll::Ready(Some(Ok(chunk.slice(..at))))
            }
        }
    }
}

/// A frame or message over the bound, as actix-http, actix-ws or
/// [`limit_frames`] reports it.
pub(super) fn is_too_large(error: &actix_ws::ProtocolError) -> bool {
    match error {
        actix_ws::ProtocolError::Overflow => true,
        actix_ws::ProtocolError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<PayloadError>())
            .is_some_and(|e| matches!(e, PayloadError::Overflow)),
        _ => false,
    }
}
