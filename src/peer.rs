//! What the application may know about the client that opened a session.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::http::header::HeaderName;

use crate::admission::SessionData;

/// What the application may know about the client that opened a session.
#[derive(Clone)]
pub struct Peer {
    pub(crate) transport: &'static str,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) headers: Vec<(HeaderName, String)>,
    pub(crate) path: Arc<str>,
    pub(crate) query: String,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) scheme: &'static str,
    pub(crate) data: Option<SessionData>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("transport", &self.transport)
            .field("remote_addr", &self.remote_addr)
            .field("client_ip", &self.client_ip)
            .field("path", &self.path)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// The transport that opened the session: `websocket`, `websocket-raw`,
    /// `xhr-polling`, `xhr-streaming`, `eventsource`, `htmlfile` or `jsonp-polling`.
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// The address of the TCP peer (a proxy, if there is one in between).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The client's address: the TCP peer's, or the one a trusted proxy
    /// named (see [`crate::Options::trusted_proxies`]).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// `https` if the client reached the gateway over TLS (directly, or as a
    /// trusted proxy says with `X-Forwarded-Proto`), else `http`.
    pub fn scheme(&self) -> &str {
        self.scheme
    }

    /// A request header from the service's allow-list
    /// ([`crate::Options::peer_headers`]), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The service path the client connected to (its SockJS URL's path; the
    /// transport's own suffix, which holds the session id, is left out).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string of the client's SockJS URL, without the `?`.
    pub fn query(&self) -> &str {
        &self.query
    }
}
