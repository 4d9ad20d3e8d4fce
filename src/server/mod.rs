//! actix-web glue: one dispatcher per service that maps a request to the
//! protocol core's route and hands it to the endpoint that serves it.

pub mod connection;
pub(crate) mod headers;
mod pages;
mod receiver;
pub(crate) mod registry;
mod routing;
mod send;
pub(crate) mod shared;
pub(crate) mod waiting;
mod websocket;
mod websocket_control;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::http::{Method as HttpMethod, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::future::LocalBoxFuture;
use parking_lot::{Mutex, RwLock};

use crate::access_log::{SessionEnd, SessionRecord};
use crate::admission::{AdmissionCheck, AdmissionRequest, SessionData};
use crate::cluster::owners::OwnerCache;
use crate::cluster::Cluster;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::options::{Options, SessionBinding};
use crate::peer::Peer;
use crate::protocol::client_addr;
use crate::protocol::route::{self, Method, Route, RouteError, SessionEndpoint};
use crate::protocol::session::SessionConfig;
use crate::session::Session;
use registry::Registry;
use shared::{BindingKey, SharedSession};

/// Told of every ended session ([`crate::SockJs::on_session_end`]).
pub(crate) type SessionEndObserver = Arc<dyn Fn(SessionRecord) + Send + Sync>;

pub(crate) type Handler = Arc<dyn Fn(Session) -> LocalBoxFuture<'static, ()> + Send + Sync>;

/// A service's options and what is derived from them, as of one moment.
/// A session keeps the `session_config` it started with.
pub(crate) struct Configured {
    pub options: Options,
    /// `options.peer_headers`, parsed once (a name that is no header name
    /// can match no header and is left out).
    pub peer_headers: Vec<HeaderName>,
    pub session_config: Arc<SessionConfig>,
    pub iframe: pages::IframePage,
}

impl Configured {
    fn new(options: Options) -> Self {
        Configured {
            peer_headers: options
                .peer_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            session_config: Arc::new(options.session_config()),
            iframe: pages::IframePage::new(&options.sockjs_url, &options.origins),
            options,
        }
    }
}

/// Everything one mounted service needs, shared by all workers.
pub(crate) struct ServiceState {
    pub prefix: String,
    /// The prefix, shared with every session's `Peer`.
    pub path: Arc<str>,
    /// The options new requests and sessions get; swapped whole by
    /// [`ServiceState::update_options`], read once per request.
    current: RwLock<Arc<Configured>>,
    pub registry: Registry,
    /// Sessions alive on every transport, WebSockets included, by connection id.
    pub live: Mutex<HashMap<u64, Weak<SharedSession>>>,
    /// Set once the server is shutting down: new sessions are refused.
    pub shutting_down: AtomicBool,
    pub handler: Handler,
    pub admission: Option<AdmissionCheck>,
    pub metrics: Arc<ServiceMetrics>,
    /// Cluster mode: sessions not found here are looked up in Redis.
    pub cluster: Option<Cluster>,
    /// Cluster mode: owners forwarded to lately.
    pub owners: OwnerCache,
    pub on_session_end: Option<SessionEndObserver>,
}

impl ServiceState {
    pub fn new(prefix: String, options: Options, handler: Handler) -> Self {
        ServiceState {
            path: prefix.as_str().into(),
            prefix: prefix.clone(),
            current: RwLock::new(Arc::new(Configured::new(options))),
            registry: Registry::default(),
            live: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            handler,
            admission: None,
            metrics: Arc::new(Metrics::default().for_service(&prefix)),
            cluster: None,
            owners: OwnerCache::default(),
            on_session_end: None,
        }
    }

    /// The options as they are now: read once per request.
    pub fn current(&self) -> Arc<Configured> {
        self.current.read().clone()
    }

    /// New requests and sessions get `options`; open sessions keep theirs.
    /// The transports stay as they are (routes are not re-decided live).
    pub fn update_options(&self, mut options: Options) {
        let mut current = self.current.write();
        options.transports = current.options.transports.clone();
        *current = Arc::new(Configured::new(options));
    }

    /// The application's handler for a new session, ready to run.
    fn application(&self, shared: &Arc<SharedSession>) -> impl Future<Output = ()> + 'static {
        let handler = (self.handler)(Session {
            shared: shared.clone(),
        });
        shared::run_application(shared.clone(), handler)
    }

    /// Starts a new registered session: its handler, and the timer that
    /// drives its deadlines and forgets it once it expires, in one task.
    fn start_registered(
        self: &Arc<Self>,
        shared: &Arc<SharedSession>,
        session_id: &str,
        slot: SessionSlot,
    ) {
        let state = self.clone();
        let id = session_id.to_owned();
        let session = shared.clone();
        let timer = shared.clone().run_timer(move || {
            state.registry.remove(&id, &session);
            drop(slot);
        });
        let application = self.application(shared);
        match &self.cluster {
            Some(cluster) => {
                let (cluster, prefix, id) =
                    (cluster.clone(), self.prefix.clone(), session_id.to_owned());
                let renewed = self.renewed(session_id);
                actix_rt::spawn(async move {
                    let held = cluster.hold(&prefix, &id, timer, renewed);
                    futures::future::join(application, held).await;
                });
            }
            None => {
                actix_rt::spawn(futures::future::join(application, timer));
            }
        }
    }

    /// In a cluster, a session whose owner node is gone: registered here,
    /// already closed with [`crate::cluster::OWNER_LOST`], so this and later
    /// receivers get that close frame until it expires. No handler runs.
    fn start_lost(self: &Arc<Self>, cluster: &Cluster, req: &HttpRequest, session_id: &str) {
        let (code, reason) = crate::cluster::OWNER_LOST;
        let created = self.registry.get_or_create(session_id, || {
            let shared = self.new_session(req, "lost", None);
            let mut core = shared.core.lock();
            core.handle_opened_elsewhere();
            core.close(code, reason);
            drop(core);
            Some(shared)
        });
        let Some((shared, true)) = created else {
            return;
        };
        log::debug!("{}: session {session_id} lost with its owner", self.prefix);
        let state = self.clone();
        let id = session_id.to_owned();
        let session = shared.clone();
        let timer = shared.run_timer(move || state.registry.remove(&id, &session));
        let (cluster, prefix, id) = (cluster.clone(), self.prefix.clone(), session_id.to_owned());
        let renewed = self.renewed(session_id);
        actix_rt::spawn(async move { cluster.hold(&prefix, &id, timer, renewed).await });
    }

    /// Asked once a session's timer has removed it from the registry:
    /// whether a new session with its id is registered here meanwhile.
    fn renewed(self: &Arc<Self>, session_id: &str) -> impl FnOnce() -> bool {
        let (state, id) = (self.clone(), session_id.to_owned());
        move || state.registry.get(&id).is_some()
    }

    /// Counts a new session among the live ones, if the cap and the server's
    /// state allow it.
    /// `session_id`: the SockJS id, none for a raw WebSocket.
    fn admit(
        self: &Arc<Self>,
        shared: &Arc<SharedSession>,
        session_id: Option<&str>,
    ) -> Option<SessionSlot> {
        let max = self.current().options.max_sessions.unwrap_or(usize::MAX);
        let mut live = self.live.lock();
        if live.len() >= max || self.shutting_down.load(Ordering::Acquire) {
            return None;
        }
        live.insert(shared.connection_id, Arc::downgrade(shared));
        self.metrics.session_opened(shared.peer.transport());
        Some(SessionSlot {
            state: self.clone(),
            session: shared.clone(),
            opened: self.on_session_end.as_ref().map(|_| Opened {
                session_id: session_id.map(Box::from),
                at: SystemTime::now(),
                instant: Instant::now(),
            }),
        })
    }

    /// The answer to a new session that [`ServiceState::admit`] refused.
    fn refuse_new_session(&self) -> HttpResponse {
        if self.shutting_down.load(Ordering::Acquire) {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "Server shutting down.");
        }
        log::debug!("{}: session cap reached, new session refused", self.prefix);
        text_response(StatusCode::SERVICE_UNAVAILABLE, "Too many sessions.")
    }

    fn live_sessions(&self) -> Vec<Arc<SharedSession>> {
        self.live
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Refuses new sessions and closes every live one with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &str) {
        self.shutting_down.store(true, Ordering::Release);
        for session in self.live_sessions() {
            session.close(code, reason);
        }
    }

    /// Bytes queued for clients over every live session.
    pub fn queued_bytes(&self) -> usize {
        self.live_sessions()
            .iter()
            .map(|s| s.core.lock().queued_bytes())
            .sum()
    }

    /// Live sessions with a receiver attached, i.e. with frames still to flush.
    pub(crate) fn sessions_with_receiver(&self) -> Vec<Arc<SharedSession>> {
        let mut sessions = self.live_sessions();
        sessions.retain(|s| s.core.lock().has_receiver());
        sessions
    }

    fn new_session(
        &self,
        req: &HttpRequest,
        transport: &'static str,
        data: Option<SessionData>,
    ) -> Arc<SharedSession> {
        let current = self.current();
        let options = &current.options;
        let peer = Peer {
            transport,
            remote_addr: req.peer_addr(),
            headers: allowed_headers(req.headers(), &current.peer_headers),
            path: self.path.clone(),
            query: req.query_string().to_owned(),
            client_ip: client_ip(options, req),
            scheme: scheme(options, req),
            data,
        };
        SharedSession::new(
            current.session_config.clone(),
            peer,
            binding_key(options, req).map(Box::new),
            self.metrics.clone(),
        )
    }

    /// The client's address, through the trusted proxies.
    fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        client_ip(&self.current().options, req)
    }

    /// `https` or `http` as the client reached us.
    fn scheme(&self, req: &HttpRequest) -> &'static str {
        scheme(&self.current().options, req)
    }

    /// Whether `req` may act on `session` (always, unless sessions are bound).
    fn may_use(&self, session: &SharedSession, req: &HttpRequest) -> bool {
        let allowed =
            session.bound_to.as_deref() == binding_key(&self.current().options, req).as_ref();
        if !allowed {
            log::debug!(
                "{}: request does not match its session's binding",
                req.path()
            );
        }
        allowed
    }

    /// Runs the admission check, if the service has one.
    async fn admit_request(&self, req: &HttpRequest) -> Result<Option<SessionData>, HttpResponse> {
        let Some(check) = &self.admission else {
            return Ok(None);
        };
        let request = AdmissionRequest {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            query: req.query_string().to_owned(),
            headers: req.headers().clone(),
            peer_addr: req.peer_addr(),
            client_ip: self.client_ip(req),
        };
        check(request).await.map_err(|refusal| {
            log::debug!(
                "{}: refused by the admission check: {}",
                req.path(),
                refusal.text
            );
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
            HttpResponse::build(status)
                .content_type(headers::TEXT_PLAIN.clone())
                .body(refusal.text)
        })
    }
}

/// One session's place among the live ones, given back when dropped: the
/// session has ended.
pub(crate) struct SessionSlot {
    state: Arc<ServiceState>,
    session: Arc<SharedSession>,
    /// Kept only for an end observer.
    opened: Option<Opened>,
}

impl SessionSlot {
    /// The session never opened (its WebSocket handshake failed): no end
    /// to report.
    pub fn never_opened(&mut self) {
        self.opened = None;
    }
}

/// What the end observer needs to know of a session's start.
struct Opened {
    session_id: Option<Box<str>>,
    at: SystemTime,
    instant: Instant,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.state.live.lock().remove(&self.session.connection_id);
        let peer = &self.session.peer;
        let observed = self.state.on_session_end.as_ref().zip(self.opened.take());
        let (reason, traffic, closed_at) = {
            let core = self.session.core.lock();
            let reason = core.close_reason();
            self.state.metrics.session_closed(peer.transport, reason);
            // Only an observer needs the reason's text.
            let reason = observed.as_ref().and_then(|_| reason.cloned());
            (reason, core.traffic(), core.closed_at())
        };
        let Some((observer, opened)) = observed else {
            return;
        };
        let ended = closed_at.unwrap_or_else(Instant::now);
        let shutting_down = self.state.shutting_down.load(Ordering::Acquire);
        observer(SessionRecord {
            service: self.state.prefix.clone(),
            session_id: opened.session_id.map(String::from),
            transport: peer.transport,
            transports: self.session.transports_used(),
            client_ip: peer.client_ip(),
            started: opened.at,
            duration: ended.saturating_duration_since(opened.instant),
            traffic,
            end: SessionEnd::from_close(reason.as_ref(), shutting_down),
        });
    }
}

/// The client's address, through the trusted proxies.
fn client_ip(options: &Options, req: &HttpRequest) -> Option<IpAddr> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let peer = req.peer_addr()?.ip();
    Some(client_addr::client_ip(
        peer,
        &options.trusted_proxies,
        header(header::X_FORWARDED_FOR),
        header(header::FORWARDED),
    ))
}

/// `https` or `http` as the client reached us; only a trusted proxy
/// may say so with `X-Forwarded-Proto`.
fn scheme(options: &Options, req: &HttpRequest) -> &'static str {
    let from_trusted_proxy = req.peer_addr().is_some_and(|peer| {
        options
            .trusted_proxies
            .iter()
            .any(|cidr| cidr.contains(peer.ip()))
    });
    let forwarded = req
        .headers()
        .get(header::X_FORWARDED_PROTO)
        .filter(|_| from_trusted_proxy)
        .and_then(|v| v.to_str().ok());
    let secure = match forwarded {
        Some(proto) => proto.trim().eq_ignore_ascii_case("https"),
        None => req.app_config().secure(),
    };
    if secure {
        "https"
    } else {
        "http"
    }
}

fn binding_key(options: &Options, req: &HttpRequest) -> Option<BindingKey> {
    Some(match options.bind_session.as_ref()? {
        SessionBinding::ClientIp => BindingKey::ClientIp(client_ip(options, req)),
        SessionBinding::Cookie(name) => BindingKey::Cookie(headers::request_cookie(req, name)),
    })
}

fn allowed_headers(headers: &HeaderMap, allowed: &[HeaderName]) -> Vec<(HeaderName, String)> {
    allowed
        .iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.clone(), value.to_owned()))
        })
        .collect()
}

/// Every request under a service's prefix comes here.
pub(crate) async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ServiceState>,
) -> HttpResponse {
    let state = state.into_inner();
    if header_bytes(req.headers()) > MAX_HEADER_BYTES {
        log::debug!(
            "{}: request headers over {MAX_HEADER_BYTES} bytes",
            req.path()
        );
        return text_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request header fields too large.",
        );
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let current = state.current();
    let options = &current.options;
    if !options.origins.allows(origin, host) {
        log::debug!("{}: origin {origin:?} not allowed", req.path());
        return text_response(StatusCode::FORBIDDEN, "Origin not allowed.");
    }
    let path = req.path().get(state.prefix.len()..).unwrap_or_default();
    let method = match *req.method() {
        HttpMethod::GET => Method::Get,
        HttpMethod::POST => Method::Post,
        HttpMethod::OPTIONS => Method::Options,
        _ => Method::Other,
    };
    let transports = &options.transports;
    let route = match route::route(method, path) {
        Ok(route) => route,
        Err(RouteError::NotFound) => return not_found(&req),
        Err(RouteError::IdTooLong) => {
            log::debug!("{} {}: id too long", req.method(), truncated(req.path()));
            return text_response(StatusCode::NOT_FOUND, ID_TOO_LONG);
        }
        Err(RouteError::MethodNotAllowed { allow }) => {
            log::debug!("{} {}: method not allowed", req.method(), req.path());
            return HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, allow))
                .finish();
        }
    };
    match route {
        Route::Greeting => pages::greeting(),
        Route::Info => {
            let started = std::time::Instant::now();
            let response = match state.admit_request(&req).await {
                Ok(_) => pages::info(&req, options),
                Err(refusal) => refusal,
            };
            state.metrics.info_answered(started.elapsed().as_secs_f64());
            response
        }
        Route::InfoPreflight => pages::preflight(&req, "OPTIONS, GET"),
        Route::Iframe => current.iframe.respond(&req),
        Route::RawWebsocket if transports.websocket => {
            websocket::open(&req, payload, &state, None).await
        }
        Route::Session {
            session_id,
            endpoint,
        } => {
            let mut response = match endpoint {
                SessionEndpoint::Websocket if transports.websocket => {
                    websocket::open(&req, payload, &state, Some(session_id)).await
                }
                SessionEndpoint::Receiver(kind) if options.receiver_enabled(kind) => {
                    let routed = match &state.cluster {
                        Some(cluster) => {
                            routing::receiver(&req, &state, cluster, session_id, kind).await
                        }
                        None => None,
                    };
                    match routed {
                        Some(answer) => answer,
                        None => receiver::respond(&req, &state, session_id, kind).await,
                    }
                }
                SessionEndpoint::Send(kind) if options.send_enabled(kind) => {
                    let routed = match &state.cluster {
                        Some(cluster) => {
                            routing::send(&req, payload, &state, cluster, session_id, kind).await
                        }
                        None => Ok(send::SendBody::Coming(payload)),
                    };
                    match routed {
                        Ok(body) => send::respond(&req, body, &state, session_id, kind).await,
                        Err(answer) => answer,
                    }
                }
                SessionEndpoint::Preflight { allow } => pages::preflight(&req, allow),
                _ => return not_found(&req),
            };
            if options.cookie_needed {
                headers::set_jsessionid(response.headers_mut(), &req);
            }
            response
        }
        Route::RawWebsocket => not_found(&req),
    }
}

/// Far above what browsers send (cookies included), far below what would let
/// one request pin much memory.
const MAX_HEADER_BYTES: usize = 32 * 1024;

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

const ID_TOO_LONG: &str = "Server or session id longer than 128 bytes.";
const _: () = assert!(route::MAX_ID_BYTES == 128, "ID_TOO_LONG names the cap");

/// The start of a path for a log line.
fn truncated(path: &str) -> &str {
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    log::debug!("{} {}: not found", req.method(), req.path());
    text_response(StatusCode::NOT_FOUND, "Not found.")
}

/// A short `text/plain` answer, for errors.
pub(crate) fn text_response(status: StatusCode, text: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(headers::TEXT_PLAIN.clone())
        .body(text)
}
