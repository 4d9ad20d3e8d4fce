//! Polling and streaming receivers: one response body per attachment, fed
//! by the protocol session and wrapped per transport.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::{header, StatusCode, Version};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use futures::Stream;

use super::shared::{wait_for, SharedSession};
use super::{headers, text_response, ServiceState};
use crate::protocol::frame::Frame;
use crate::protocol::route::ReceiverKind;
use crate::protocol::session::{Attach, Detach, ReceiverId, ReceiverMode};
use crate::protocol::wrap::{check_callback, Wrapping};

pub fn respond(
    req: &HttpRequest,
    state: &Arc<ServiceState>,
    session_id: &str,
    kind: ReceiverKind,
) -> HttpResponse {
    let wrapping = match wrapping_for(req, kind) {
        Ok(wrapping) => wrapping,
        Err(text) => {
            log::debug!("{}: {text}", req.path());
            return text_response(StatusCode::INTERNAL_SERVER_ERROR, text);
        }
    };
    let (shared, created) = state
        .registry
        .get_or_create(session_id, || state.new_session(req, transport_name(kind)));
    if created {
        state.start_session(&shared, Some(session_id));
    }
    let attach = shared
        .core
        .lock()
        .attach_receiver(mode(kind), Instant::now());
    let mut builder = response_builder(req, kind);
    match attach {
        Attach::Refused(frame) => {
            let mut body = wrapping.prelude();
            wrapping.wrap_into(&frame.encode(), &mut body);
            builder.body(body)
        }
        Attach::Attached(id) => {
            shared.to_timer.notify_waiters();
            let receiver = AttachedReceiver {
                shared,
                id,
                ended: false,
            };
            let mut response = builder.streaming(frames(receiver, wrapping));
            if req.version() < Version::HTTP_11 {
                // HTTP/1.0 has no chunked encoding: the body ends when the connection does.
                response
                    .head_mut()
                    .set_connection_type(actix_web::http::ConnectionType::Close);
                response.head_mut().no_chunking(true);
            }
            response
        }
    }
}

fn mode(kind: ReceiverKind) -> ReceiverMode {
    match kind {
        ReceiverKind::XhrPolling | ReceiverKind::JsonpPolling => ReceiverMode::Polling,
        ReceiverKind::XhrStreaming | ReceiverKind::EventSource | ReceiverKind::HtmlFile => {
            ReceiverMode::Streaming
        }
    }
}

pub(crate) fn transport_name(kind: ReceiverKind) -> &'static str {
    match kind {
        ReceiverKind::XhrPolling => "xhr-polling",
        ReceiverKind::XhrStreaming => "xhr-streaming",
        ReceiverKind::EventSource => "eventsource",
        ReceiverKind::HtmlFile => "htmlfile",
        ReceiverKind::JsonpPolling => "jsonp-polling",
    }
}

fn wrapping_for(req: &HttpRequest, kind: ReceiverKind) -> Result<Wrapping, &'static str> {
    let callback = || {
        let query = req.query_string();
        let value = query_param(query, "c").or_else(|| query_param(query, "callback"));
        check_callback(value.as_deref())
            .map(str::to_owned)
            .map_err(|e| e.text())
    };
    Ok(match kind {
        ReceiverKind::XhrPolling => Wrapping::XhrPolling,
        ReceiverKind::XhrStreaming => Wrapping::XhrStreaming,
        ReceiverKind::EventSource => Wrapping::EventSource,
        ReceiverKind::HtmlFile => Wrapping::HtmlFile {
            callback: callback()?,
        },
        ReceiverKind::JsonpPolling => Wrapping::Jsonp {
            callback: callback()?,
        },
    })
}

/// The first value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response_builder(req: &HttpRequest, kind: ReceiverKind) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    headers::no_cache(&mut builder);
    match kind {
        ReceiverKind::XhrPolling | ReceiverKind::XhrStreaming => {
            builder.content_type(headers::JAVASCRIPT);
            headers::cors(&mut builder, req);
        }
        ReceiverKind::EventSource => {
            builder.content_type("text/event-stream");
        }
        ReceiverKind::HtmlFile => {
            builder.content_type(headers::HTML);
        }
        ReceiverKind::JsonpPolling => {
            builder
                .content_type(headers::JAVASCRIPT)
                .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        }
    }
    if mode(kind) == ReceiverMode::Streaming {
        // Tells nginx and similar proxies not to buffer this response.
        builder.insert_header(("X-Accel-Buffering", "no"));
    }
    builder
}

/// The receiver's hold on its session. Dropped before the response ended
/// normally means the client's connection went away under it.
struct AttachedReceiver {
    shared: Arc<SharedSession>,
    id: ReceiverId,
    ended: bool,
}

impl Drop for AttachedReceiver {
    fn drop(&mut self) {
        if !self.ended {
            self.shared
                .core
                .lock()
                .detach_receiver(self.id, Detach::Interrupted, Instant::now());
            self.shared.wake_all();
        }
    }
}

impl AttachedReceiver {
    /// Waits for at least one frame, then takes every frame ready now,
    /// wrapped, into one write.
    async fn next_chunk(&mut self, wrapping: &Wrapping, out: &mut String) {
        let shared = self.shared.clone();
        let id = self.id;
        let first = wait_for(&shared.to_receiver, || {
            shared.core.lock().poll_delivery(id, Instant::now())
        })
        .await;
        let mut delivery = Some(first);
        let mut drained = false;
        while let Some(d) = delivery.take() {
            drained |= matches!(d.frame, Frame::Messages(_));
            wrapping.wrap_into(&d.frame.encode(), out);
            if d.end {
                self.ended = true;
                shared.to_timer.notify_waiters();
                break;
            }
            delivery = shared.core.lock().poll_delivery(id, Instant::now());
        }
        if drained {
            shared.outgoing_room.notify_waiters();
        }
    }
}

fn frames(
    receiver: AttachedReceiver,
    wrapping: Wrapping,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let prelude = wrapping.prelude();
    futures::stream::unfold(
        (receiver, wrapping, prelude),
        |(mut receiver, wrapping, prelude)| async move {
            if receiver.ended {
                return None;
            }
            let mut chunk = prelude;
            if chunk.is_empty() {
                receiver.next_chunk(&wrapping, &mut chunk).await;
            }
            Some((Ok(Bytes::from(chunk)), (receiver, wrapping, String::new())))
        },
    )
}
