//! Cluster mode: where a request for an HTTP-transport session that is not
//! in the local registry is served. Only called with a cluster, and only on
//! a registry miss: a session's requests that reach its owner cost nothing.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{send, text_response, ServiceState};
use crate::cluster::directory::Route;
use crate::cluster::forward::{self, ForwardError};
use crate::cluster::{Cluster, FORWARDED_HEADER};
use crate::protocol::route::SendKind;

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
) -> Option<HttpResponse> {
    if served_here(req, state, session_id) {
        return None;
    }
    for _ in 0..ATTEMPTS {
        let (node, address) = match cluster.route(&state.prefix, session_id, true).await {
            Err(_) => return Some(unavailable(req)),
            Ok(Route::Here) => return None,
            Ok(Route::OwnerLost) => {
                state.start_lost(cluster, req, session_id);
                return None;
            }
            Ok(Route::Forward { node, address }) => (node, address),
        };
        let scheme = state.scheme(req);
        match forward::forward(req, None, &address, cluster.node_id(), scheme).await {
            Ok(response) => return Some(response),
            Err(ForwardError::Failed(error)) => return Some(unanswered(req, &node, &error)),
            Err(ForwardError::Unreachable(error)) => {
                log::debug!(
                    "{}: owner {node} at {address} unreachable: {error}",
                    req.path()
                );
                match cluster.take_over(&state.prefix, session_id, &node).await {
                    Err(_) => return Some(unavailable(req)),
                    Ok(true) => {
                        state.start_lost(cluster, req, session_id);
                        return None;
                    }
                    // Someone else changed the record: look again.
                    Ok(false) => continue,
                }
            }
        }
    }
    Some(unavailable(req))
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
    if served_here(req, state, session_id) {
        return Ok(payload);
    }
    let (node, address) = match cluster.route(&state.prefix, session_id, false).await {
        Err(_) => return Err(unavailable(req)),
        Ok(Route::Here) => return Ok(payload),
        Ok(Route::OwnerLost) => {
            state.start_lost(cluster, req, session_id);
            return Err(send::session_not_found(req, kind));
        }
        Ok(Route::Forward { node, address }) => (node, address),
    };
    let scheme = state.scheme(req);
    match forward::forward(req, Some(payload), &address, cluster.node_id(), scheme).await {
        Ok(response) => Err(response),
        Err(ForwardError::Failed(error)) => Err(unanswered(req, &node, &error)),
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
            Err(send::session_not_found(req, kind))
        }
    }
}

/// The session is here, or another node forwarded the request: serve it
/// here, as a single node would.
fn served_here(req: &HttpRequest, state: &ServiceState, session_id: &str) -> bool {
    req.headers().contains_key(FORWARDED_HEADER) || state.registry.get(session_id).is_some()
}

fn unavailable(req: &HttpRequest) -> HttpResponse {
    log::debug!("{}: refused, Redis unreachable", req.path());
    text_response(StatusCode::SERVICE_UNAVAILABLE, BACKPLANE_UNAVAILABLE)
}

fn unanswered(req: &HttpRequest, node: &str, error: &str) -> HttpResponse {
    log::warn!("{}: forward to node {node} failed: {error}", req.path());
    text_response(StatusCode::BAD_GATEWAY, OWNER_UNANSWERED)
}
