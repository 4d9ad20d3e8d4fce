//! A WebSocket upstream: one text message per SockJS message.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{
    connect_async_tls_with_config, Connector, MaybeTlsStream, WebSocketStream,
};

use super::rules::{close_to_upstream, handshake_headers, ClientFacts};
use super::{ConnectError, Ending, RelayConfig};
use crate::Session;

pub(super) type UpstreamSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the upstream has to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Opens the upstream connection, its handshake naming the client and
/// asking for the configured subprotocols.
pub(super) async fn connect(
    url: &str,
    config: &RelayConfig,
    session: &Session,
) -> Result<UpstreamSocket, ConnectError> {
    let unavailable = |e: String| ConnectError::Unavailable(e);
    let mut request = url
        .into_client_request()
        .map_err(|e| unavailable(e.to_string()))?;
    let peer = session.peer();
    let facts = ClientFacts {
        client_ip: peer.client_ip(),
        scheme: peer.scheme(),
    };
    let forwarded = config
        .forward_headers
        .iter()
        .filter_map(|name| Some((name.clone(), peer.header(name)?.to_owned())));
    for (name, value) in handshake_headers(&facts, forwarded) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    if !config.subprotocols.is_empty() {
        let offered = HeaderValue::from_str(&config.subprotocols.join(", "))
            .map_err(|e| unavailable(format!("subprotocol: {e}")))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", offered);
    }
    let limits = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let connector = config.tls.clone().map(Connector::Rustls);
    let handshake = connect_async_tls_with_config(request, Some(limits), true, connector);
    let (socket, _response) = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| unavailable(format!("no answer within {:?}", config.connect_timeout)))?
        .map_err(|error| match error {
            // tungstenite checks the answer: no subprotocol, or one not asked for.
            Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(e)) => {
                ConnectError::Subprotocol(e.to_string())
            }
            other => unavailable(other.to_string()),
        })?;
    Ok(socket)
}

/// Moves messages both ways until one side ends; then ends the other.
pub(super) async fn relay(socket: UpstreamSocket, session: &Session) -> Ending {
    let (mut sink, mut stream) = socket.split();
    let ending = {
        // Each direction waits only on itself: a full client queue stops
        // reads from the upstream, a slow upstream stops reads from the client.
        let to_upstream = async {
            while let Some(message) = session.recv().await {
                if let Err(error) = sink.send(Message::text(message)).await {
                    return failure(error);
                }
            }
            Ending::SessionClosed
        };
        let to_client = async {
            while let Some(item) = stream.next().await {
                let text = match item {
                    Ok(Message::Text(text)) => text.as_str().to_owned(),
                    Ok(Message::Binary(bytes)) => match String::from_utf8(bytes.into()) {
                        Ok(text) => text,
                        Err(_) => {
                            return Ending::UpstreamFailed(
                                "Upstream sent binary data",
                                "a binary message that is not UTF-8".to_owned(),
                            )
                        }
                    },
                    Ok(Message::Close(frame)) => {
                        return match frame {
                            Some(frame) => Ending::UpstreamClosed(
                                Some(frame.code.into()),
                                frame.reason.as_str().to_owned(),
                            ),
                            None => Ending::UpstreamClosed(None, String::new()),
                        }
                    }
                    Ok(_) => continue,
                    Err(error) => return failure(error),
                };
                if session.send(text).await.is_err() {
                    return Ending::SessionClosed;
                }
            }
            Ending::UpstreamFailed("Upstream connection lost", "ended without a close".into())
        };
        futures::pin_mut!(to_upstream, to_client);
        match futures::future::select(to_upstream, to_client).await {
            futures::future::Either::Left((ending, _)) => ending,
            futures::future::Either::Right((ending, _)) => ending,
        }
    };
    let goodbye = async {
        match &ending {
            Ending::SessionClosed => {
                let (code, reason) = close_to_upstream(session.close_reason().as_ref());
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: truncate_reason(&reason).into(),
                };
                if sink.send(Message::Close(Some(frame))).await.is_ok() {
                    while let Some(Ok(_)) = stream.next().await {}
                }
            }
            // Sends tungstenite's reply to the upstream's close frame.
            Ending::UpstreamClosed(..) => drop(sink.close().await),
            Ending::UpstreamFailed(..) => {}
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
    ending
}

fn failure(error: Error) -> Ending {
    let reason = match &error {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => "Upstream message too large",
        Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_) => "Upstream connection lost",
        Error::Protocol(_) => "Upstream connection lost",
        _ => "Upstream error",
    };
    Ending::UpstreamFailed(reason, error.to_string())
}

/// A close reason fits in 123 bytes (RFC 6455 section 5.5).
fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
