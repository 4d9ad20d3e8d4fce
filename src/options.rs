//! Per-service options, with the defaults of PROTOCOL.md section 11.

use std::time::Duration;

use crate::protocol::client_addr::Cidr;
use crate::protocol::origin::OriginPolicy;
use crate::protocol::route::{ReceiverKind, SendKind};
use crate::protocol::session::{Overflow, SessionConfig};

/// Where the iframe page loads the client library from by default: the
/// loader [`crate::client_library`] serves, which runs the bundle of the
/// release the parent page speaks (sockjs-client refuses an iframe of any
/// other release), so the iframe transports work offline for every release.
pub const DEFAULT_SOCKJS_URL: &str = "/lib/sockjs-iframe-loader.js";

/// How one SockJS service behaves.
///
/// ```
/// use std::time::Duration;
/// let options = sockjs_gateway::Options {
///     response_limit: 4096,
///     heartbeat_delay: Duration::ZERO, // the application pings on its own
///     ..Default::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// Idle time before a heartbeat frame; zero turns heartbeats off.
    pub heartbeat_delay: Duration,
    /// How long a session without a receiver lives before it is closed.
    pub disconnect_delay: Duration,
    /// Bytes after which a streaming response ends and the client reconnects.
    pub response_limit: usize,
    /// The client library URL written into the iframe page. The default
    /// loader picks the parent page's release; a URL of one bundle pins
    /// the iframe to that release, and parents of any other are refused.
    pub sockjs_url: String,
    /// Set the `JSESSIONID` cookie for load balancers that stick by it.
    pub cookie_needed: bool,
    /// Which transports this service offers.
    pub transports: Transports,
    /// Bound on a session's messages waiting for the client, in bytes: each
    /// counts its text plus [`crate::protocol::session::MESSAGE_OVERHEAD`].
    pub max_queued_bytes: usize,
    /// Bound on one inbound request body or WebSocket message, in bytes; also
    /// the bound on messages waiting for the application (counted as
    /// `max_queued_bytes` is).
    pub max_message_bytes: usize,
    /// How long queued messages may wait for the client before the session
    /// is closed with `4008 "Send timeout"`; zero waits for ever.
    pub send_timeout: Duration,
    /// What sending into a full outgoing queue does.
    pub overflow: Overflow,
    /// How long an `xhr_send`/`jsonp_send` body may take to arrive; slower
    /// ones get `408`. (Request heads are bounded by actix's own timeout.)
    pub body_timeout: Duration,
    /// Which pages may use the service; every origin by default.
    pub origins: OriginPolicy,
    /// Keep jsonp-polling on under an origin allow-list. JSONP requests carry
    /// no `Origin`, so by default an allow-list turns that transport off.
    pub jsonp_with_origin_policy: bool,
    /// Proxies allowed to name the client's address with `X-Forwarded-For`
    /// or `Forwarded`; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<Cidr>,
    /// Bind each session to what its first request came with; a later
    /// request that does not match gets `404`. Off by default.
    pub bind_session: Option<SessionBinding>,
    /// At most this many live sessions (every transport); new ones beyond it
    /// get `503`. `None`: no cap.
    pub max_sessions: Option<usize>,
    /// Request headers the application may read through [`crate::Peer::header`].
    pub peer_headers: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            heartbeat_delay: Duration::from_secs(25),
            disconnect_delay: Duration::from_secs(5),
            response_limit: 128 * 1024,
            sockjs_url: DEFAULT_SOCKJS_URL.to_owned(),
            cookie_needed: false,
            transports: Transports::default(),
            max_queued_bytes: 1024 * 1024,
            max_message_bytes: 1024 * 1024,
            send_timeout: Duration::from_secs(10),
            overflow: Overflow::Close,
            body_timeout: Duration::from_secs(10),
            origins: OriginPolicy::default(),
            jsonp_with_origin_policy: false,
            trusted_proxies: Vec::new(),
            bind_session: None,
            max_sessions: None,
            peer_headers: [
                "user-agent",
                "origin",
                "referer",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-real-ip",
                "accept-language",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl Options {
    /// Whether a transport is on, the origin policy taken into account.
    pub(crate) fn receiver_enabled(&self, kind: ReceiverKind) -> bool {
        self.transports.receiver_enabled(kind)
            && (kind != ReceiverKind::JsonpPolling || self.jsonp_allowed_by_origins())
    }

    pub(crate) fn send_enabled(&self, kind: SendKind) -> bool {
        self.transports.send_enabled(kind)
            && (kind != SendKind::Jsonp || self.jsonp_allowed_by_origins())
    }

    fn jsonp_allowed_by_origins(&self) -> bool {
        self.origins.allows_all() || self.jsonp_with_origin_policy
    }

    pub(crate) fn session_config(&self) -> SessionConfig {
        SessionConfig {
            heartbeat_delay: Some(self.heartbeat_delay).filter(|d| !d.is_zero()),
            disconnect_delay: self.disconnect_delay,
            response_limit: self.response_limit,
            max_queued_bytes: self.max_queued_bytes,
            max_inbound_bytes: self.max_message_bytes,
            send_timeout: Some(self.send_timeout).filter(|d| !d.is_zero()),
            overflow: self.overflow,
        }
    }
}

/// What a session is bound to (session ids are chosen by clients, so anyone
/// who learns one could otherwise attach a receiver to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionBinding {
    /// The client's address (without port), through trusted proxies.
    ClientIp,
    /// The value of this cookie.
    Cookie(String),
}

/// A switch per transport; all on by default.
#[derive(Debug, Clone)]
pub struct Transports {
    /// Both the framed (`/SERVER/SESSION/websocket`) and raw (`/websocket`) WebSocket.
    pub websocket: bool,
    /// `xhr` (long-polling) with `xhr_send`.
    pub xhr_polling: bool,
    /// `xhr_streaming`.
    pub xhr_streaming: bool,
    /// `eventsource`.
    pub eventsource: bool,
    /// `htmlfile`.
    pub htmlfile: bool,
    /// `jsonp` (polling) with `jsonp_send`.
    pub jsonp_polling: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            websocket: true,
            xhr_polling: true,
            xhr_streaming: true,
            eventsource: true,
            htmlfile: true,
            jsonp_polling: true,
        }
    }
}

impl Transports {
    pub(crate) fn receiver_enabled(&self, kind: ReceiverKind) -> bool {
        match kind {
            ReceiverKind::XhrPolling => self.xhr_polling,
            ReceiverKind::XhrStreaming => self.xhr_streaming,
            ReceiverKind::EventSource => self.eventsource,
            ReceiverKind::HtmlFile => self.htmlfile,
            ReceiverKind::JsonpPolling => self.jsonp_polling,
        }
    }

    /// `xhr_send` carries the messages of every receiver but jsonp's.
    pub(crate) fn send_enabled(&self, kind: SendKind) -> bool {
        match kind {
            SendKind::Xhr => {
                self.xhr_polling || self.xhr_streaming || self.eventsource || self.htmlfile
            }
            SendKind::Jsonp => self.jsonp_polling,
        }
    }
}
