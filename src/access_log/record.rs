//! What the access log says about one ended session.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::protocol::session::{CloseReason, Traffic};

/// One ended session, as a [`crate::SockJs::on_session_end`] observer and
/// the [`crate::AccessLog`] see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The service's prefix, such as `/echo`.
    pub service: String,
    /// The SockJS session id the client chose; `None` for a raw WebSocket.
    pub session_id: Option<String>,
    /// The transport that opened the session (as [`crate::Peer::transport`] names it).
    pub transport: &'static str,
    /// Every receiver transport the session used, the opening one first
    /// (HTTP sessions only; a WebSocket session uses only its own).
    pub transports: Vec<&'static str>,
    /// The client's address, through the trusted proxies ([`crate::Peer::client_ip`]).
    pub client_ip: Option<IpAddr>,
    /// When the session opened.
    pub started: SystemTime,
    /// How long it lived: from its first request until it closed (an HTTP
    /// session that timed out lived until its `disconnect_delay` ran out).
    pub duration: Duration,
    /// Application messages and their bytes, each way.
    pub traffic: Traffic,
    /// How it ended.
    pub end: SessionEnd,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Closed by the application, or by the server on its behalf (a relay's
    /// 45xx, a handler that returned: 1000, or panicked: 1011).
    Closed {
        /// The close code the client was sent.
        code: u16,
        /// The close reason the client was sent.
        reason: String,
    },
    /// The client closed its WebSocket with this code and reason.
    ClientClosed {
        /// The client's close code (1005 if it gave none).
        code: u16,
        /// The client's close reason.
        reason: String,
    },
    /// The client's connection dropped under an attached receiver (1002).
    Interrupted,
    /// No receiver came for `disconnect_delay`.
    Timeout,
    /// The client took nothing for `send_timeout` (4008).
    SendTimeout,
    /// The server shut down (1001).
    Shutdown,
}

impl SessionEnd {
    pub(crate) fn from_close(reason: Option<&CloseReason>, shutting_down: bool) -> Self {
        match reason {
            Some(CloseReason::Application { code: 1001, .. }) if shutting_down => {
                SessionEnd::Shutdown
            }
            Some(CloseReason::Application { code, reason }) => SessionEnd::Closed {
                code: *code,
                reason: reason.clone(),
            },
            Some(CloseReason::Client { code, reason }) => SessionEnd::ClientClosed {
                code: *code,
                reason: reason.clone(),
            },
            Some(CloseReason::Interrupted) => SessionEnd::Interrupted,
            Some(CloseReason::Timeout) => SessionEnd::Timeout,
            Some(CloseReason::SendTimeout) => SessionEnd::SendTimeout,
            // Still open when the server stopped and dropped it.
            None => SessionEnd::Shutdown,
        }
    }

    /// The word the log uses: `closed`, `client`, `interrupted`, `timeout`,
    /// `send_timeout` or `shutdown`.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionEnd::Closed { .. } => "closed",
            SessionEnd::ClientClosed { .. } => "client",
            SessionEnd::Interrupted => "interrupted",
            SessionEnd::Timeout => "timeout",
            SessionEnd::SendTimeout => "send_timeout",
            SessionEnd::Shutdown => "shutdown",
        }
    }

    /// The close code and reason the session ended with; none for a timeout
    /// (no client was there to hear one).
    pub fn code_and_reason(&self) -> Option<(u16, &str)> {
        match self {
            SessionEnd::Closed { code, reason } | SessionEnd::ClientClosed { code, reason } => {
                Some((*code, reason))
            }
            SessionEnd::Interrupted => Some((1002, "Connection interrupted")),
            SessionEnd::SendTimeout => Some((4008, "Send timeout")),
            SessionEnd::Shutdown => Some((1001, "Server shutting down")),
            SessionEnd::Timeout => None,
        }
    }
}
