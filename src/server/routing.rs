//! Cluster mode: where a request for an HTTP-transport session that is not
//! in the local registry is served. Only called with a cluster, and only on
//! a registry miss: a session's requests that reach its owner cost nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};

use super::receiver::wrapping_for;
use super::send::{self, SendBody};
use super::{text_response, ServiceState};
use crate::cluster::directory::Route;
use crate::cluster::forward::{self, BrokenEnding, ForwardError, ReceiverForward};
use crate::cluster::owners::Owner;
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
    match served_here(req, state, session_id) {
        Here::Yes => return None,
        Here::Misdirected => return Some(misdirected(req, state)),
        Here::No => {}
    }
    let mut last_failure = None;
    for _ in 0..ATTEMPTS {
        let (owner, cached) = match locate(state, cluster, session_id, true).await {
            Err(_) => return Some(unavailable(req, state)),
            Ok(Located::Here) => {
                state.metrics.cluster_routed("here");
                return None;
            }
            Ok(Located::Lost) => {
                state.start_lost(cluster, req, session_id);
                state.metrics.cluster_routed("owner_lost");
                return None;
            }
            Ok(Located::At { owner, cached }) => (owner, cached),
        };
        let receiver = wrapping_for(req, kind)
            .ok()
            .map(|wrapping| ReceiverForward {
                ending: owner_broke_off(req, state, &owner, wrapping),
                silence: owner_silence(state),
            });
        let error = match forward_to(req, state, session_id, &owner, None, receiver).await {
            Ok(response) => return Some(response),
            Err(error) => error,
        };
        match error {
            // A cached owner may be stale: ask Redis.
            _ if cached => continue,
            // The owner took the connection but gave no answer: most likely
            // it is dying. Route again: a dead owner's session is then
            // declared lost, a live one answers as to any receiver.
            ForwardError::Failed(error) => {
                log::debug!(
                    "{}: forward to node {} failed: {error}",
                    req.path(),
                    owner.node
                );
                last_failure = Some((owner.node, error));
            }
            ForwardError::Unreachable(error) => {
                log_unreachable(req, &owner, &error);
                match cluster
                    .take_over(&state.prefix, session_id, &owner.node)
                    .await
                {
                    Err(_) => return Some(unavailable(req, state)),
                    Ok(true) => {
                        state.start_lost(cluster, req, session_id);
                        state.metrics.cluster_routed("owner_lost");
                        return None;
                    }
                    // Someone else changed the record: look again.
                    Ok(false) => {}
                }
            }
        }
    }
    Some(match last_failure {
        Some((node, error)) => unanswered(req, state, &node, &error),
        None => unavailable(req, state),
    })
}

/// How long a live owner's receiver stream can be silent: it sends a
/// heartbeat every `heartbeat_delay`. Twice that and a second: past it the
/// owner is hung or stopped.
fn owner_silence(state: &ServiceState) -> Option<Duration> {
    let heartbeat = state.current().options.heartbeat_delay;
    (!heartbeat.is_zero()).then(|| heartbeat * 2 + Duration::from_secs(1))
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
    owner: &Owner,
    wrapping: Wrapping,
) -> BrokenEnding {
    let (path, node, address) = (
        req.path().to_owned(),
        owner.node.clone(),
        owner.address.clone(),
    );
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

/// A send: `Ok(body)` to serve it here, `Err(answer)` when it was answered
/// elsewhere (or refused). A forwarded send's body is read here first, so
/// that it can go to the owner Redis names when a cached one is gone.
pub(crate) async fn send(
    req: &HttpRequest,
    payload: web::Payload,
    state: &Arc<ServiceState>,
    cluster: &Cluster,
    session_id: &str,
    kind: SendKind,
) -> Result<SendBody, HttpResponse> {
    match served_here(req, state, session_id) {
        Here::Yes => return Ok(SendBody::Coming(payload)),
        Here::Misdirected => return Err(misdirected(req, state)),
        Here::No => {}
    }
    let mut body = SendBody::Coming(payload);
    for _ in 0..2 {
        let (owner, cached) = match locate(state, cluster, session_id, false).await {
            Err(_) => return Err(unavailable(req, state)),
            Ok(Located::Here) => {
                state.metrics.cluster_routed("here");
                return Ok(body);
            }
            Ok(Located::Lost) => {
                state.start_lost(cluster, req, session_id);
                state.metrics.cluster_routed("owner_lost");
                return Err(send::dropped_after_close(req, kind));
            }
            Ok(Located::At { owner, cached }) => (owner, cached),
        };
        let bytes = body.read_for_forward(req, state, kind).await?;
        let error = match forward_to(req, state, session_id, &owner, Some(bytes), None).await {
            Ok(response) => return Err(response),
            Err(error) => error,
        };
        match error {
            // The owner may have taken it: never sent twice.
            ForwardError::Failed(error) => return Err(unanswered(req, state, &owner.node, &error)),
            // Not delivered: a cached owner may be stale, ask Redis.
            ForwardError::Unreachable(_) if cached => continue,
            ForwardError::Unreachable(error) => {
                log_unreachable(req, &owner, &error);
                // Whoever holds the record now, the session this send was
                // for is closed, lost with its owner: its receiver brings
                // the close.
                if let Ok(true) = cluster
                    .take_over(&state.prefix, session_id, &owner.node)
                    .await
                {
                    state.start_lost(cluster, req, session_id);
                }
                state.metrics.cluster_routed("owner_lost");
                return Err(send::dropped_after_close(req, kind));
            }
        }
    }
    Err(unavailable(req, state))
}

/// Forwards the request to `owner`: remembered for the session's next
/// requests if it answered, forgotten if not.
async fn forward_to(
    req: &HttpRequest,
    state: &ServiceState,
    session_id: &str,
    owner: &Owner,
    body: Option<Bytes>,
    receiver: Option<ReceiverForward>,
) -> Result<HttpResponse, ForwardError> {
    let scheme = state.scheme(req);
    let forwarded =
        forward::forward(req, body, &owner.node, &owner.address, scheme, receiver).await;
    match &forwarded {
        Ok(_) => {
            state.metrics.cluster_routed("forwarded");
            state.owners.put(session_id, owner.clone(), Instant::now());
        }
        Err(_) => state.owners.forget(session_id),
    }
    forwarded
}

fn log_unreachable(req: &HttpRequest, owner: &Owner, error: &str) {
    log::debug!(
        "{}: owner {} at {} unreachable: {error}",
        req.path(),
        owner.node,
        owner.address
    );
}

enum Here {
    /// Serve it here, as a single node would.
    Yes,
    /// Forwarded here, for a session not here.
    Misdirected,
    /// Route it.
    No,
}

/// The session is here: serve it here, as a single node would. Not here
/// but forwarded by another node: the owner it was meant for is gone (a
/// node restarted on its address) or no longer holds the session (it
/// ended), and the forwarder must look again.
fn served_here(req: &HttpRequest, state: &ServiceState, session_id: &str) -> Here {
    if state.registry.get(session_id).is_some() {
        Here::Yes
    } else if req.headers().contains_key(FORWARDED_HEADER) {
        Here::Misdirected
    } else {
        Here::No
    }
}

enum Located {
    /// Serve it here: recorded here, or just claimed (a receiver).
    Here,
    /// The owner's lease is gone; the record now names this node.
    Lost,
    /// Forward it to `owner`, from the cache or from Redis.
    At { owner: Owner, cached: bool },
}

/// Where the session lives: the owner this node forwarded to lately, else
/// what Redis says.
async fn locate(
    state: &ServiceState,
    cluster: &Cluster,
    session_id: &str,
    claim: bool,
) -> Result<Located, Unavailable> {
    if let Some(owner) = state.owners.get(session_id, Instant::now()) {
        return Ok(Located::At {
            owner,
            cached: true,
        });
    }
    Ok(match route(state, cluster, session_id, claim).await? {
        Route::Here => Located::Here,
        Route::OwnerLost => Located::Lost,
        Route::Forward { node, address } => Located::At {
            owner: Owner { node, address },
            cached: false,
        },
    })
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
    log::debug!("{}: forwarded here for a session not here", req.path());
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
