//! Polling and streaming receivers: one response body per attachment, fed
//! by the protocol session and wrapped per transport.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::{ConnectionType, StatusCode, Version};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use futures::{Stream, StreamExt};

use super::connection::AbortHandle;
use super::shared::SharedSession;
use super::waiting::{Event, ToWake};
use super::{headers, text_response, ServiceState};
use crate::cluster::{CLEAN_END, FORWARDED_HEADER};
use crate::protocol::frame::Frame;
use crate::protocol::route::ReceiverKind;
use crate::protocol::session::{Attach, Detach, ReceiverId, ReceiverMode};
use crate::protocol::wrap::{callback_param, check_callback, Wrapping};

pub async fn respond(
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
    let shared = match state.registry.get(session_id) {
        Some(existing) if state.may_use(&existing, req) => existing,
        Some(_) => return text_response(StatusCode::NOT_FOUND, "Session not found."),
        None => {
            let data = match state.admit_request(req).await {
                Ok(data) => data,
                Err(refusal) => return refusal,
            };
            let mut slot = None;
            let Some((shared, created)) = state.registry.get_or_create(session_id, || {
                let shared = state.new_session(req, transport_name(kind), data);
                slot = state.admit(&shared, Some(session_id));
                slot.is_some().then_some(shared)
            }) else {
                return state.refuse_new_session();
            };
            match (created, slot) {
                (true, Some(slot)) => state.start_registered(&shared, session_id, slot),
                // Another request created it meanwhile.
                _ if !state.may_use(&shared, req) => {
                    return text_response(StatusCode::NOT_FOUND, "Session not found.")
                }
                _ => {}
            }
            shared
        }
    };
    let connection = req.conn_data::<AbortHandle>().cloned();
    let attach = shared.change(|core| {
        let attach = core.attach_receiver(mode(kind), Instant::now());
        let mut to_wake = ToWake::default();
        if let Attach::Attached(id) = &attach {
            core.receiver_connection = connection.map(|connection| (*id, connection));
            if core.take_deadline_moved_earlier() {
                to_wake = core.waiters.happened(Event::Deadline);
            }
        }
        (attach, to_wake)
    });
    let source = match attach {
        Attach::Refused(frame) => Source::Refused(Some(frame)),
        Attach::Attached(id) => {
            shared.used_transport(kind);
            Source::Session(AttachedReceiver {
                shared,
                id,
                ended: false,
            })
        }
    };
    let body = body(source, wrapping);
    let forwarded = state.cluster.is_some() && req.headers().contains_key(FORWARDED_HEADER);
    let mut response = if forwarded {
        let clean_end = futures::stream::once(async { Ok(Bytes::from_static(CLEAN_END)) });
        response_builder(req, kind).streaming(body.chain(clean_end))
    } else {
        response_builder(req, kind).streaming(body)
    };
    if req.version() < Version::HTTP_11 {
        // HTTP/1.0 has no chunked encoding: the body ends when the connection does.
        let head = response.head_mut();
        head.set_connection_type(ConnectionType::Close);
        head.no_chunking(true);
    }
    response
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

pub(crate) fn wrapping_for(
    req: &HttpRequest,
    kind: ReceiverKind,
) -> Result<Wrapping, &'static str> {
    let callback = || {
        check_callback(callback_param(req.query_string()).as_deref())
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

fn response_builder(req: &HttpRequest, kind: ReceiverKind) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    headers::no_cache(&mut builder);
    match kind {
        ReceiverKind::XhrPolling | ReceiverKind::XhrStreaming => {
            builder.content_type(headers::JAVASCRIPT.clone());
            headers::cors(&mut builder, req);
        }
        ReceiverKind::EventSource => {
            builder.content_type("text/event-stream");
            // sockjs-client opens event streams cross-origin, and browsers
            // refuse those without CORS headers.
            headers::cors(&mut builder, req);
        }
        ReceiverKind::HtmlFile => {
            builder.content_type(headers::HTML.clone());
        }
        ReceiverKind::JsonpPolling => {
            builder.content_type(headers::JAVASCRIPT.clone());
            headers::nosniff(&mut builder);
        }
    }
    if mode(kind) == ReceiverMode::Streaming {
        headers::no_proxy_buffering(&mut builder);
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
            let mut core = self.shared.core.lock();
            core.forget_connection(self.id);
            core.detach_receiver(self.id, Detach::Interrupted, Instant::now());
            drop(core);
            self.shared.wake_all();
        }
    }
}

impl AttachedReceiver {
    /// The next frame for this response, once one is ready; `None` after
    /// the frame that ended it.
    async fn next_frame(&mut self) -> Option<Frame> {
        if self.ended {
            return None;
        }
        let shared = self.shared.clone();
        let id = self.id;
        let delivery = shared
            .wait_for(Event::Frames, |core| core.take_delivery(id))
            .await;
        if let Frame::Messages(messages) = &delivery.frame {
            shared.metrics.messages_out(messages);
        }
        self.ended = delivery.end;
        Some(delivery.frame)
    }
}

/// Where a receiver's frames come from.
enum Source {
    Session(AttachedReceiver),
    /// One frame, then the end: the refusal of a second receiver or of a
    /// closed session.
    Refused(Option<Frame>),
}

/// The response body: the transport's prelude, then one frame per chunk, each
/// written as soon as it is ready (clients and proxies read frame by frame).
fn body(source: Source, wrapping: Wrapping) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let prelude = Some(wrapping.prelude()).filter(|p| !p.is_empty());
    futures::stream::unfold(
        (source, wrapping, prelude),
        |(mut source, wrapping, prelude)| async move {
            let chunk = match prelude {
                Some(prelude) => prelude,
                None => {
                    let frame = match &mut source {
                        Source::Session(receiver) => receiver.next_frame().await?,
                        Source::Refused(frame) => frame.take()?,
                    };
                    wrapping.wrap(&frame.encode())
                }
            };
            Some((Ok(Bytes::from(chunk)), (source, wrapping, None)))
        },
    )
}
