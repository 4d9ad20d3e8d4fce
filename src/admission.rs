//! Who may connect: the application's admission check, run before any
//! session exists.

use std::any::Any;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use futures::future::LocalBoxFuture;
use futures::FutureExt;

/// The first request of a would-be session (or an `/info` request), in full.
#[derive(Debug, Clone)]
pub struct AdmissionRequest {
    /// The HTTP method, such as `GET` or `POST`.
    pub method: String,
    /// The request path, such as `/echo/000/abc/xhr`.
    pub path: String,
    /// The query string without its `?` (empty if there is none).
    pub query: String,
    /// Every request header, as the client sent it.
    pub headers: HeaderMap,
    /// The TCP peer (a proxy, if there is one in between).
    pub peer_addr: Option<SocketAddr>,
    /// The client's address, through trusted proxies (see `Options::trusted_proxies`).
    pub client_ip: Option<IpAddr>,
}

impl AdmissionRequest {
    /// A header's value, by name, if it is present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A cookie's value, by name.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// An admission check's refusal: the status and text the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status, such as 401 or 403.
    pub status: u16,
    /// The response body, as plain text.
    pub text: String,
}

impl Refusal {
    /// A refusal with this status and text.
    pub fn new(status: u16, text: impl Into<String>) -> Self {
        Refusal {
            status,
            text: text.into(),
        }
    }
}

/// What an admitted session carries for the application (say, the
/// authenticated user); read it back with [`crate::Session::data`].
pub type SessionData = Arc<dyn Any + Send + Sync>;

pub(crate) type AdmissionCheck = Arc<
    dyn Fn(AdmissionRequest) -> LocalBoxFuture<'static, Result<Option<SessionData>, Refusal>>
        + Send
        + Sync,
>;

pub(crate) fn boxed<F, Fut>(check: F) -> AdmissionCheck
where
    F: Fn(AdmissionRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<SessionData>, Refusal>> + 'static,
{
    Arc::new(move |request| check(request).boxed_local())
}
