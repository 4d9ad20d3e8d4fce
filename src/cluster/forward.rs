//! Forwards a whole request to the node that owns its session, and streams
//! the owner's response back as it comes (status, headers, body chunks).

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, Method, StatusCode, Version};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use awc::error::{PayloadError, SendRequestError};
use futures::future::LocalBoxFuture;
use futures::{Stream, StreamExt};

use super::{CLEAN_END, FORWARDED_HEADER};

/// Bound on connecting to the owner: past it, the owner counts as gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle pooled connections are dropped before the owner's keep-alive (5 s by
/// default in actix) would close them under a new request.
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(2);

thread_local! {
    // awc clients are per thread; one per worker keeps a connection pool
    // per owner.
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(
            awc::Connector::new()
                .timeout(CONNECT_TIMEOUT)
                .conn_keep_alive(POOL_KEEP_ALIVE)
                .limit(0),
        )
        // Streaming receivers last as long as the session does.
        .disable_timeout()
        .disable_redirects()
        .no_default_headers()
        .finish();
}

/// Why a forward gave no response.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// The owner could not be reached at all: it is gone.
    Unreachable(String),
    /// The owner was reached but the exchange failed.
    Failed(String),
}

/// How a streamed body ends when the owner's stream breaks (the owner died
/// or the connection to it was cut): given whether any of the body came
/// through, the last bytes to send instead of a truncated response.
pub(crate) type BrokenEnding = Box<dyn FnOnce(bool) -> LocalBoxFuture<'static, Bytes>>;

/// What forwarding a receiver needs beyond a plain forward: an owner that
/// stops answering (hung, or stopped) must not hold its client forever.
pub(crate) struct ReceiverForward {
    /// How the body ends if the owner's stream breaks off or falls silent.
    pub ending: BrokenEnding,
    /// The longest silence of a live owner's stream, which sends heartbeats;
    /// `None` when heartbeats are off.
    pub silence: Option<Duration>,
}

/// An owner answers a receiver's head at once (its body is what waits).
const RECEIVER_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `req` (with `body`, if any) to the owner `owner_id` at `address`
/// and gives back its response, body streaming; a receiver's head must come
/// within [`RECEIVER_HEAD_TIMEOUT`] and its body ends as `receiver` says if
/// it breaks off.
pub(crate) async fn forward(
    req: &HttpRequest,
    body: Option<Bytes>,
    owner_id: &str,
    address: &str,
    scheme: &str,
    receiver: Option<ReceiverForward>,
) -> Result<HttpResponse, ForwardError> {
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path(), |p| p.as_str());
    let url = format!("http://{address}{path}");
    let mut request = CLIENT.with(|client| client.request(req.method().clone(), url));
    copy_request_headers(req.headers(), request.headers_mut());
    let headers = request.headers_mut();
    if let Some(peer) = req.peer_addr() {
        append_forwarded_for(headers, &peer.ip().to_string());
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    if let Ok(owner) = HeaderValue::from_str(owner_id) {
        headers.insert(HeaderName::from_static(FORWARDED_HEADER), owner);
    }
    let sending = async {
        match body {
            Some(body) if *req.method() != Method::GET => request.send_body(body).await,
            _ => request.send().await,
        }
    };
    let sent = match &receiver {
        None => sending.await,
        Some(_) => match tokio::time::timeout(RECEIVER_HEAD_TIMEOUT, sending).await {
            Ok(sent) => sent,
            Err(_) => {
                return Err(ForwardError::Failed(format!(
                    "no answer within {RECEIVER_HEAD_TIMEOUT:?}"
                )))
            }
        },
    };
    let mut upstream = sent.map_err(|error| match error {
        SendRequestError::Connect(e) => ForwardError::Unreachable(e.to_string()),
        other => ForwardError::Failed(other.to_string()),
    })?;
    if upstream.status() == StatusCode::MISDIRECTED_REQUEST {
        // The node there does not hold the session: another process took
        // the owner's address, or the session ended. Not delivered either way.
        return Err(ForwardError::Unreachable(format!(
            "{address} (node {owner_id}) does not hold the session"
        )));
    }
    let mut response = HttpResponse::build(upstream.status());
    for (name, value) in upstream.headers() {
        if !is_hop_by_hop(name) && name != header::CONTENT_LENGTH {
            response.append_header((name.clone(), value.clone()));
        }
    }
    let status = upstream.status();
    let no_body = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if no_body || upstream.headers().contains_key(header::CONTENT_LENGTH) {
        // Sends, errors, 204 and 304: a short body (or none), whole. A
        // streamed body here would put a chunked end on a 204, which has
        // no body: bytes the client reads as the start of its next response.
        let body = upstream
            .body()
            .await
            .map_err(|e| ForwardError::Failed(e.to_string()))?;
        return Ok(response.body(body));
    }
    let mut response = match receiver {
        Some(receiver) => response.streaming(ended_on_break(upstream, receiver)),
        None => response.streaming(upstream),
    };
    if req.version() < Version::HTTP_11 {
        // As the receivers do: no chunks for HTTP/1.0, the body ends with the connection.
        let head = response.head_mut();
        head.set_connection_type(ConnectionType::Close);
        head.no_chunking(true);
    }
    Ok(response)
}

/// The owner's receiver body as it comes, less its [`CLEAN_END`] mark; if
/// it ends without that mark (awc reports a connection closed mid-body as
/// an end, too) or falls silent for longer than a live owner would, the
/// ending's bytes and the end.
fn ended_on_break(
    upstream: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
    receiver: ReceiverForward,
) -> impl Stream<Item = Result<Bytes, PayloadError>> {
    struct Relaying<S> {
        upstream: S,
        receiver: ReceiverForward,
        received: bool,
        clean: bool,
    }
    let start = Relaying {
        upstream,
        receiver,
        received: false,
        clean: false,
    };
    futures::stream::unfold(Some(start), |state| async move {
        let mut state = state?;
        loop {
            let next = match state.receiver.silence {
                None => state.upstream.next().await,
                Some(silence) => match tokio::time::timeout(silence, state.upstream.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        log::debug!("forwarded body silent for {silence:?}");
                        None
                    }
                },
            };
            match next {
                Some(Ok(mut chunk)) => {
                    state.clean = chunk.ends_with(CLEAN_END);
                    if state.clean {
                        chunk.truncate(chunk.len() - CLEAN_END.len());
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    state.received = true;
                    return Some((Ok(chunk), Some(state)));
                }
                Some(Err(error)) => log::debug!("forwarded body broke: {error}"),
                None if state.clean => return None,
                None => {}
            }
            let tail = (state.receiver.ending)(state.received).await;
            return Some((Ok(tail), None));
        }
    })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The client's headers, less the hop-by-hop ones and the body framing
/// (the forward frames its body itself) and any forwarding marker.
fn copy_request_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name) && name != header::CONTENT_LENGTH && name != FORWARDED_HEADER {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Appends the address this node got the request from, as proxies do.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &str) {
    let name = HeaderName::from_static("x-forwarded-for");
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {peer}"),
        None => peer.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_appended() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, "10.0.0.9");
        assert_eq!(headers.get("x-forwarded-for").unwrap(), "10.0.0.9");
        append_forwarded_for(&mut headers, "10.0.0.7");
        assert_eq!(
            headers.get("x-forwarded-for").unwrap(),
            "10.0.0.9, 10.0.0.7"
        );
    }

    #[test]
    fn hop_by_hop_headers_and_framing_stay_behind() {
        let mut from = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive"),
            ("content-length", "7"),
            ("transfer-encoding", "chunked"),
            ("x-sockjs-gateway-forwarded", "spoofed"),
            ("origin", "https://a.example"),
            ("cookie", "JSESSIONID=x"),
        ] {
            from.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let mut to = HeaderMap::new();
        copy_request_headers(&from, &mut to);
        let mut names: Vec<&str> = to.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["cookie", "origin"]);
    }
}
