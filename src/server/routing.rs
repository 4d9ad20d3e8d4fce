//! Cluster mode: where a request for an HTTP-transport session that is not
//! in the local registry is served. Only called with a cluster, and only on
//! a registry miss: a session's requests that reach its owner cost nothing.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};

use super::receiver::wrapping_for;
use super::{send, text_response, ServiceState};
use crate::cluster::directory::Route;
use crate::cluster::forward::{self, BrokenEnding, ForwardError};
use crate::cluster::{Cluster, Unavailable, FORWARDED_HEADER, MISDIRECTED, OWNER_LOST};
use crate::protocol::frame::Frame;
use crate::protocol::route::{ReceiverKind, SendKind};
use crate::protocol::wrap::Wrapping;

/// Routing attempts when the record changes under a failed forward.
const ATTEMPTS: usize = 3;

const BACKPLANE_UNAVAILABLE: &str = "Cluster backplane unavailable.";
const OWNER_UNANSWERED: &str = "Cluster node did not answer.";

/// A receiver: `Some(answer)` when it was answered elsewhere (or refused),
/// `None` to serve it here.
pub(crate) async fn receiver(
    req: &HttpRequest,
    state: &Arc<ServiceState>,
    cluster: &Cluster,
    session_id: &str,
    kind: ReceiverKind,
) -> Option<HttpResponse> {
    match served_here(req, state, cluster, session_id) {
        Here::Yes => return None,
        Here::Misdirected => return Some(misdirected(req, state)),
        Here::No => {}
    }
    let mut last_failure = None;
    for _ in 0..ATTEMPTS {
        let (node, address) = match route(state, cluster, session_id, true).await {
            Err(_) => return Some(unavailable(req, state)),
            Ok(Route::Here) => {
                state.metrics.cluster_routed("here");
                return None;
            }
            Ok(Route::OwnerLost) => {
                state.start_lost(cluster, req, session_id);
                state.metrics.cluster_routed("owner_lost");
                return None;
            }
            Ok(Route::Forward { node, address }) => (node, address),
        };
        let scheme = state.scheme(req);
        let broken = wrapping_for(req, kind)
            .ok()
            .map(|wrapping| owner_broke_off(req, state, &node, &address, wrapping));
        match forward::forward(req, None, &node, &address, scheme, broken).await {
            Ok(response) => {
                state.metrics.cluster_routed("forwarded");
                return Some(response);
            }
            // The owner took the connection but gave no answer: most likely
            // it is dying. Route again: a dead owner's session is then
            // declared lost, a live one answers as to any receiver.
            Err(ForwardError::Failed(error)) => {
                log::debug!("{}: forward to node {node} failed: {error}", req.path());
                last_failure = Some((node, error));
                continue;
            }
            Err(ForwardError::Unreachable(error)) => {
                log::debug!(
                    "{}: owner {node} at {address} unreachable: {error}",
                    req.path()
                );
                match cluster.take_over(&state.prefix, session_id, &node).await {
                    Err(_) => return Some(unavailable(req, state)),
                    Ok(true) => {
                        state.start_lost(cluster, req, session_id);
                        state.metrics.cluster_routed("owner_lost");
                        return None;
                    }
                    // Someone else changed the record: look again.
                    Ok(false) => continue,
                }
            }
        }
    }
    Some(match last_failure {
        Some((node, error)) => unanswered(req, state, &node, &error),
        None => unavailable(req, state),
    })
}

/// How a receiver forwarded to `node` ends if the owner's stream breaks
/// off: with the owner-lost close, so sockjs-client closes at once with a
/// code instead of a network error. The owner is most likely dead; if it
/// is alive, it saw its receiver drop and closed the session (`1002`), so
/// the session is over either way. The record is left alone: the next
/// request for it finds out which, as any request does.
fn owner_broke_off(
    req: &HttpRequest,
    state: &ServiceState,
    node: &str,
    address: &str,
    wrapping: Wrapping,
) -> BrokenEnding {
    let (path, node, address) = (req.path().to_owned(), node.to_owned(), address.to_owned());
    let metrics = state.metrics.clone();
    Box::new(move |received_any| {
        Box::pin(async move {
            metrics.cluster_stream_broken();
            let (code, reason) = OWNER_LOST;
            let frame = Frame::Close {
                code,
                reason: reason.to_owned(),
            }
            .encode();
            log::warn!("{path}: the stream from node {node} at {address} broke off; ending it with {frame}");
            let mut out = if received_any {
                String::new()
            } else {
                wrapping.prelude()
            };
            wrapping.wrap_into(&frame, &mut out);
            Bytes::from(out)
        })
    })
}

/// A send: `Ok(payload)` to serve it here, `Err(answer)` when it was
/// answered elsewhere (or refused).
pub(crate) async fn send(
    req: &HttpRequest,
    payload: web::Payload,
    state: &Arc<ServiceState>,
    cluster: &Cluster,
    session_id: &str,
    kind: SendKind,
) -> Result<web::Payload, HttpResponse> {
    match served_here(req, state, cluster, session_id) {
        Here::Yes => return Ok(payload),
        Here::Misdirected => return Err(misdirected(req, state)),
        Here::No => {}
    }
    let (node, address) = match route(state, cluster, session_id, false).await {
        Err(_) => return Err(unavailable(req, state)),
        Ok(Route::Here) => {
            state.metrics.cluster_routed("here");
            return Ok(payload);
        }
        Ok(Route::OwnerLost) => {
            state.start_lost(cluster, req, session_id);
            state.metrics.cluster_routed("owner_lost");
            return Err(send::session_not_found(req, kind));
        }
        Ok(Route::Forward { node, address }) => (node, address),
    };
    let scheme = state.scheme(req);
    match forward::forward(req, Some(payload), &node, &address, scheme, None).await {
        Ok(response) => {
            state.metrics.cluster_routed("forwarded");
            Err(response)
        }
        Err(ForwardError::Failed(error)) => Err(unanswered(req, state, &node, &error)),
        Err(ForwardError::Unreachable(error)) => {
            log::debug!(
                "{}: owner {node} at {address} unreachable: {error}",
                req.path()
            );
            // Whoever holds the record now, the session this send was for
            // is gone with its owner.
            if let Ok(true) = cluster.take_over(&state.prefix, session_id, &node).await {
                state.start_lost(cluster, req, session_id);
            }
            state.metrics.cluster_routed("owner_lost");
            Err(send::session_not_found(req, kind))
        }
    }
}

enum Here {
    /// Serve it here, as a single node would.
    Yes,
    /// Forwarded to another node id, for a session not here.
    Misdirected,
    /// Route it.
    No,
}

/// The session is here, or another node forwarded the request to this
/// node: serve it here. Forwarded to a node id that is not this one's (a
/// node restarted on a dead owner's address), for a session not here: the
/// forwarder must count its owner as gone.
fn served_here(
    req: &HttpRequest,
    state: &ServiceState,
    cluster: &Cluster,
    session_id: &str,
) -> Here {
    let local = state.registry.get(session_id).is_some();
    match req.headers().get(FORWARDED_HEADER) {
        _ if local => Here::Yes,
        Some(owner) if owner.as_bytes() != cluster.node_id().as_bytes() => Here::Misdirected,
        Some(_) => Here::Yes,
        None => Here::No,
    }
}

/// The session's owner from Redis, timed.
async fn route(
    state: &ServiceState,
    cluster: &Cluster,
    session_id: &str,
    claim: bool,
) -> Result<Route, Unavailable> {
    let started = Instant::now();
    let route = cluster.route(&state.prefix, session_id, claim).await;
    if route.is_ok() {
        state
            .metrics
            .cluster_route_answered(started.elapsed().as_secs_f64());
    }
    route
}

fn misdirected(req: &HttpRequest, state: &ServiceState) -> HttpResponse {
    state.metrics.cluster_routed("misdirected");
    log::debug!("{}: forwarded here for a node this is not", req.path());
    text_response(StatusCode::MISDIRECTED_REQUEST, MISDIRECTED)
}

fn unavailable(req: &HttpRequest, state: &ServiceState) -> HttpResponse {
    state.metrics.cluster_routed("refused");
    log::debug!("{}: refused, Redis unreachable", req.path());
    text_response(StatusCode::SERVICE_UNAVAILABLE, BACKPLANE_UNAVAILABLE)
}

fn unanswered(req: &HttpRequest, state: &ServiceState, node: &str, error: &str) -> HttpResponse {
    state.metrics.cluster_routed("unanswered");
    log::warn!("{}: forward to node {node} failed: {error}", req.path());
    text_response(StatusCode::BAD_GATEWAY, OWNER_UNANSWERED)
}
