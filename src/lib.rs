//! A SockJS server on actix-web: every SockJS transport behind one session API.
//!
//! Mount a service in any actix-web `App` and write one async handler; it runs
//! unchanged whether the client came over WebSocket, XHR streaming, polling,
//! EventSource, htmlfile or JSONP.
//!
//! Serve it with [`http_server`]: actix-web's `HttpServer` with the two
//! settings SockJS needs already made. `h1_allow_half_closed(false)`:
//! otherwise actix keeps serving a response after the client has gone, and a
//! long-poll dropped by its client holds its session until the next heartbeat
//! instead of closing it as interrupted at once. And `tcp_nodelay(true)`:
//! SockJS writes small frames one at a time, and Nagle's algorithm would hold
//! each behind the client's delayed ACK (40 ms per polling round trip). (With
//! `HttpServer::new` of your own, make both calls yourself.)
//!
//! ```no_run
//! use actix_web::App;
//! use sockjs_gateway::{http_server, Options, Session, SockJs};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let echo = SockJs::new("/echo", Options::default(), |session: Session| async move {
//!         while let Some(message) = session.recv().await {
//!             if session.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//!     http_server(move || App::new().service(echo.clone()))
//!         .bind("127.0.0.1:8081")?
//!         .run()
//!         .await
//! }
//! ```
//!
//! Three builder calls add the rest, each before the service is cloned into
//! the workers' `App`s.
//!
//! **Admission** ([`SockJs::with_admission`]): an async check that sees the
//! first request of every session in full and refuses it, or admits it
//! carrying data for the handler.
//!
//! ```
//! use std::sync::Arc;
//! use sockjs_gateway::{Options, Refusal, Session, SockJs};
//!
//! struct User(String);
//! let chat = SockJs::new("/chat", Options::default(), |session: Session| async move {
//!     let name = session.data::<User>().map_or("?", |user| user.0.as_str()).to_owned();
//!     let _ = session.send(format!("hello {name}")).await;
//! })
//! .with_admission(|request| async move {
//!     match request.cookie("token") {
//!         Some("secret") => Ok(Some(Arc::new(User("ada".into())) as _)),
//!         _ => Err(Refusal::new(401, "Log in first.")),
//!     }
//! });
//! # let _ = chat;
//! ```
//!
//! **Metrics** ([`SockJs::with_metrics`]): sessions, messages and bytes per
//! service, in Prometheus form from [`Metrics::render`].
//!
//! ```
//! use actix_web::{web, App};
//! use sockjs_gateway::{Metrics, Options, Session, SockJs};
//!
//! let metrics = Metrics::new();
//! let echo = SockJs::new("/echo", Options::default(), |_session: Session| async {})
//!     .with_metrics(&metrics);
//! let app = move || {
//!     let metrics = metrics.clone();
//!     App::new()
//!         .service(echo.clone())
//!         .route("/metrics", web::get().to(move || {
//!             let metrics = metrics.clone();
//!             async move { metrics.render() }
//!         }))
//! };
//! # let _ = app;
//! ```
//!
//! **Relay** ([`relay::Relay`]): instead of a handler, every session gets its
//! own connection to an upstream WebSocket or line-based TCP server.
//!
//! ```
//! use sockjs_gateway::{relay::Relay, Options};
//!
//! let relay = Relay::new("ws://127.0.0.1:9000/socket")
//!     .expect("an upstream URL")
//!     .forward_header("Cookie");
//! let app = relay.service("/app", Options::default());
//! # let _ = app;
//! ```
//!
//! **Cluster** ([`SockJs::with_cluster`]): several nodes behind a balancer
//! with no stickiness, Redis as the backplane; an HTTP-transport session
//! keeps working whichever node its requests reach.
//!
//! ```no_run
//! use actix_web::App;
//! use sockjs_gateway::{cluster::Cluster, http_server, Options, Session, SockJs};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let cluster = Cluster::new("redis://127.0.0.1:6379").map_err(std::io::Error::other)?;
//!     let echo = SockJs::new("/echo", Options::default(), |session: Session| async move {
//!         while let Some(message) = session.recv().await {
//!             let _ = session.send(message).await;
//!         }
//!     })
//!     .with_cluster(&cluster);
//!     let server = http_server(move || App::new().service(echo.clone()))
//!         .bind("0.0.0.0:8081")?
//!         .run();
//!     // Where the other nodes reach this one.
//!     cluster.join("10.0.0.5:8081".into());
//!     server.await
//! }
//! ```

#![warn(missing_docs)]

pub mod access_log;
mod admission;
mod client_library;
pub mod cluster;
mod http_server;
mod metrics;
mod options;
mod peer;
pub mod protocol;
pub mod relay;
mod server;
mod session;

use std::future::Future;
use std::sync::Arc;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::web;
use futures::FutureExt;

pub use access_log::{AccessLog, AccessLogFormat, SessionEnd, SessionRecord};
pub use admission::{AdmissionRequest, Refusal, SessionData};
pub use client_library::{
    client_library, client_release, ClientRelease, CLIENT_RELEASES, IFRAME_LOADER_JS,
    LATEST_CLIENT_RELEASE, SOCKJS_CLIENT_JS,
};
pub use http_server::http_server;
pub use metrics::Metrics;
pub use options::{Options, SessionBinding, Transports, DEFAULT_SOCKJS_URL};
pub use peer::Peer;
pub use protocol::client_addr::Cidr;
pub use protocol::origin::OriginPolicy;
pub use protocol::session::{CloseReason, Overflow, SendError, Traffic};
pub use server::connection::{AbortHandle, AbortableStream};
pub use session::{ConnectionId, Session, SharedMessage};

use server::ServiceState;

/// One SockJS service at one prefix. Clone it into each worker's `App`: the
/// clones share the same sessions.
#[derive(Clone)]
pub struct SockJs {
    state: Arc<ServiceState>,
}

impl SockJs {
    /// A service at `prefix` (such as `/echo`) that runs `handler` once for
    /// every new session.
    pub fn new<F, Fut>(prefix: &str, options: Options, handler: F) -> Self
    where
        F: Fn(Session) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let prefix = prefix.trim_end_matches('/').to_owned();
        let handler: server::Handler = Arc::new(move |session| handler(session).boxed_local());
        SockJs {
            state: Arc::new(ServiceState::new(prefix, options, handler)),
        }
    }

    /// Adds an admission check, run on `/info` and on the first request of
    /// every session (each transport, WebSocket handshakes included) before
    /// the session exists. It sees the request in full; `Err` refuses it with
    /// that status and text, `Ok(Some(data))` admits it carrying `data` for
    /// the application ([`Session::data`]). Call it before cloning the service.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use sockjs_gateway::{Options, Refusal, Session, SockJs};
    ///
    /// struct User(String);
    /// let service = SockJs::new("/chat", Options::default(), |session: Session| async move {
    ///     let name = session.data::<User>().map(|u| u.0.clone());
    ///     let _ = session.send(format!("hello {name:?}")).await;
    /// })
    /// .with_admission(|request| async move {
    ///     match request.cookie("token") {
    ///         Some("secret") => Ok(Some(Arc::new(User("ada".into())) as _)),
    ///         _ => Err(Refusal::new(401, "Log in first.")),
    ///     }
    /// });
    /// # let _ = service;
    /// ```
    ///
    /// # Panics
    /// If the service was already cloned.
    pub fn with_admission<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(AdmissionRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<SessionData>, Refusal>> + 'static,
    {
        Arc::get_mut(&mut self.state)
            .expect("with_admission must be called before the service is cloned")
            .admission = Some(admission::boxed(check));
        self
    }

    /// Counts this service's sessions, messages and bytes in `metrics`
    /// (which [`Metrics::render`] shows in Prometheus form). Call it before
    /// cloning the service.
    ///
    /// # Panics
    /// If the service was already cloned.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        let state = Arc::get_mut(&mut self.state)
            .expect("with_metrics must be called before the service is cloned");
        state.metrics = Arc::new(metrics.for_service(&state.prefix));
        let weak = Arc::downgrade(&self.state);
        metrics.on_scrape(move || {
            if let Some(state) = weak.upgrade() {
                state.metrics.queued_bytes.set(state.queued_bytes() as i64);
            }
        });
        self
    }

    /// Cluster mode: an HTTP-transport session keeps working when its
    /// requests reach other nodes of `cluster` (README, "Cluster").
    /// WebSocket sessions are unaffected. Call it before cloning the service.
    ///
    /// # Panics
    /// If the service was already cloned.
    pub fn with_cluster(mut self, cluster: &cluster::Cluster) -> Self {
        Arc::get_mut(&mut self.state)
            .expect("with_cluster must be called before the service is cloned")
            .cluster = Some(cluster.clone());
        self
    }

    /// Calls `observer` once for every session of this service when it
    /// ends, on every transport, with what the access log writes about it.
    /// It runs on the thread where the session ended: keep it short and
    /// never block. Call it before cloning the service.
    ///
    /// # Panics
    /// If the service was already cloned.
    pub fn on_session_end(
        mut self,
        observer: impl Fn(SessionRecord) + Send + Sync + 'static,
    ) -> Self {
        Arc::get_mut(&mut self.state)
            .expect("on_session_end must be called before the service is cloned")
            .on_session_end = Some(Arc::new(observer));
        self
    }

    /// Writes one line to `log` for every session of this service when it
    /// ends (an [`SockJs::on_session_end`] observer that queues the record
    /// and never waits). Call it before cloning the service.
    ///
    /// ```
    /// use sockjs_gateway::{AccessLog, AccessLogFormat, Options, Session, SockJs};
    ///
    /// let log = AccessLog::stdout(AccessLogFormat::Json);
    /// let service = SockJs::new("/echo", Options::default(), |_session: Session| async {})
    ///     .with_access_log(&log);
    /// # let _ = service;
    /// ```
    ///
    /// # Panics
    /// If the service was already cloned.
    pub fn with_access_log(self, log: &AccessLog) -> Self {
        let log = log.clone();
        self.on_session_end(move |record| log.record(record))
    }

    /// The prefix this service answers under.
    pub fn prefix(&self) -> &str {
        &self.state.prefix
    }

    /// The options new requests and sessions get now.
    pub fn options(&self) -> Options {
        self.state.current().options.clone()
    }

    /// Changes the options of a running service (every clone of it): new
    /// requests and new sessions get `options` at once, while open sessions
    /// keep the timeouts and limits they started with. The transports are
    /// not changed live: `options.transports` is ignored and the service
    /// keeps the ones it was made with.
    ///
    /// ```
    /// use sockjs_gateway::{Options, OriginPolicy, SockJs};
    ///
    /// let service = SockJs::new("/echo", Options::default(), |_session| async {});
    /// service.update_options(Options {
    ///     origins: OriginPolicy::allow_only(["https://example.com"]),
    ///     ..service.options()
    /// });
    /// ```
    pub fn update_options(&self, options: Options) {
        self.state.update_options(options);
    }

    /// Sessions currently alive, on every transport.
    pub fn session_count(&self) -> usize {
        self.state.live.lock().len()
    }

    /// Stops the service for a server shutdown: new sessions get `503`,
    /// every live session is closed with `1001 "Server shutting down"`, and
    /// this waits (at most `timeout`) until attached receivers have taken
    /// their close frame. Sessions without a receiver keep theirs for the
    /// client's next request until the server stops.
    pub async fn shutdown(&self, timeout: std::time::Duration) {
        self.state.close_all(1001, "Server shutting down");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        // Each tick looks only at the sessions still flushing, not at every
        // live one; once none is left, all are looked at again, as a client
        // may have come for its close frame in the meantime.
        let mut flushing = self.state.sessions_with_receiver();
        while tokio::time::Instant::now() < deadline {
            flushing.retain(|session| session.core.lock().has_receiver());
            if flushing.is_empty() {
                flushing = self.state.sessions_with_receiver();
                if flushing.is_empty() {
                    break;
                }
            }
            tick.tick().await;
        }
    }
}

impl HttpServiceFactory for SockJs {
    fn register(self, config: &mut AppService) {
        // A scope with only a default service: no pattern is matched per
        // request (a `{tail:.*}` resource ran a regex on every one).
        web::scope(&self.state.prefix.clone())
            .app_data(web::Data::from(self.state))
            .default_service(web::to(server::dispatch))
            .register(config);
    }
}
