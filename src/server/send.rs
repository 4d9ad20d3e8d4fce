//! `xhr_send` and `jsonp_send`: messages from the client into a session.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;

use super::waiting::{Event, ToWake};
use super::{headers, ServiceState};
use crate::protocol::inbound::{self, InboundError};
use crate::protocol::route::SendKind;
use crate::protocol::session::{messages_cost, InboundRefusal};

/// A send's body: still coming, or read already by a node that was about
/// to forward it.
pub(crate) enum SendBody {
    Coming(web::Payload),
    Read(Bytes),
}

impl SendBody {
    /// The whole body, read as the owner would read it (the same time and
    /// size bounds); the answer the owner would give if it cannot be.
    pub(crate) async fn read_for_forward(
        &mut self,
        req: &HttpRequest,
        state: &ServiceState,
        kind: SendKind,
    ) -> Result<Bytes, HttpResponse> {
        let body = match std::mem::replace(self, SendBody::Read(Bytes::new())) {
            SendBody::Read(body) => body,
            SendBody::Coming(payload) => match read_bounded(payload, state).await {
                Ok(body) => body.freeze(),
                Err(refusal) => return Err(answer(req, kind, Err(refusal))),
            },
        };
        *self = SendBody::Read(body.clone());
        Ok(body)
    }
}

pub async fn respond(
    req: &HttpRequest,
    body: SendBody,
    state: &Arc<ServiceState>,
    session_id: &str,
    kind: SendKind,
) -> HttpResponse {
    let result = deliver(req, body, state, session_id, kind).await;
    answer(req, kind, result)
}

/// The answer to a send for a session that is closed but remembered: its
/// messages are dropped (see `deliver`).
pub(crate) fn dropped_after_close(req: &HttpRequest, kind: SendKind) -> HttpResponse {
    answer(req, kind, Ok(()))
}

fn answer(req: &HttpRequest, kind: SendKind, result: Result<(), Refusal>) -> HttpResponse {
    let mut builder = match (&result, kind) {
        (Ok(()), SendKind::Xhr) => HttpResponse::NoContent(),
        (Ok(()), SendKind::Jsonp) => HttpResponse::Ok(),
        (Err((status, _)), _) => HttpResponse::build(*status),
    };
    builder.content_type(headers::TEXT_PLAIN.clone());
    headers::no_cache(&mut builder);
    if kind == SendKind::Xhr {
        headers::cors(&mut builder, req);
    }
    match (result, kind) {
        (Ok(()), SendKind::Xhr) => builder.finish(),
        (Ok(()), SendKind::Jsonp) => builder.body("ok"),
        (Err((_, text)), _) => {
            log::debug!("{}: {text}", req.path());
            builder.body(text)
        }
    }
}

type Refusal = (StatusCode, &'static str);

const SESSION_NOT_FOUND: Refusal = (StatusCode::NOT_FOUND, "Session not found.");

async fn deliver(
    req: &HttpRequest,
    body: SendBody,
    state: &ServiceState,
    session_id: &str,
    kind: SendKind,
) -> Result<(), Refusal> {
    let shared = state
        .registry
        .get(session_id)
        .filter(|session| state.may_use(session, req))
        .ok_or(SESSION_NOT_FOUND)?;
    let body = match body {
        SendBody::Coming(payload) => read_bounded(payload, state).await?.freeze(),
        SendBody::Read(body) => body,
    };
    let decode = || match kind {
        SendKind::Xhr => inbound::decode_array(&body),
        SendKind::Jsonp => inbound::decode_jsonp_send(&body, is_form(req)),
    };
    let mut messages = decode().map_err(refused)?;
    let cost = messages_cost(&messages);
    // Waits while the application has not taken earlier messages: the
    // client's next send waits for this answer, so memory stays bounded.
    // A send that waits keeps only its body, which may cost far less than
    // its decoded messages (a million empty strings), and decodes it again
    // (outside the lock) once there is room.
    loop {
        let offered = shared.change(|core| match core.check_inbound_room(cost) {
            Ok(()) => {
                let messages = std::mem::take(&mut messages);
                shared.metrics.messages_in(&messages);
                core.handle_inbound(messages);
                (Some(Ok(())), core.waiters.happened(Event::Inbound))
            }
            Err(InboundRefusal::Full) => (None, ToWake::default()),
            // Sent while the close frame was on its way to the client, as
            // on a WebSocket: dropped, and answered as delivered, because a
            // failed send makes sockjs-client close with 1006 in place of
            // the code the application chose (its receiver brings that).
            Err(InboundRefusal::Closed) => {
                log::debug!(
                    "{}: {} messages after the close dropped",
                    req.path(),
                    messages.len()
                );
                (Some(Ok(())), ToWake::default())
            }
        });
        if let Some(result) = offered {
            return result;
        }
        drop(std::mem::take(&mut messages));
        shared
            .wait_for(Event::InboundRoom, |core| {
                match core.check_inbound_room(cost) {
                    Err(InboundRefusal::Full) => None,
                    _ => Some(((), ToWake::default())),
                }
            })
            .await;
        messages = decode().unwrap_or_default();
    }
}

/// The whole body: a body trickling in a byte at a time must not hold the
/// request, nor a large one memory.
async fn read_bounded(payload: web::Payload, state: &ServiceState) -> Result<BytesMut, Refusal> {
    let current = state.current();
    tokio::time::timeout(
        current.options.body_timeout,
        read_body(payload, current.options.max_message_bytes),
    )
    .await
    .map_err(|_| (StatusCode::REQUEST_TIMEOUT, "Request body timeout."))?
    .map_err(refused)
}

fn refused(error: InboundError) -> Refusal {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, error.text())
}

fn is_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// Reads the whole body, refusing it once it passes `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<BytesMut, InboundError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| InboundError::BrokenJson)?;
        if body.len() + chunk.len() > limit {
            return Err(InboundError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
