//! A relay: every SockJS session of a service gets its own connection to an
//! upstream server (WebSocket or newline-delimited TCP), and messages flow
//! both ways in order. The browser keeps SockJS; the backend speaks plain
//! WebSocket or lines of text.
//!
//! ```no_run
//! use sockjs_gateway::{relay::Relay, Options};
//!
//! let relay = Relay::new("ws://127.0.0.1:9000/socket")
//!     .expect("an upstream URL")
//!     .forward_header("Cookie");
//! let service = relay.service("/app", Options::default());
//! # let _ = service;
//! ```
//!
//! Closes: an upstream close with a code in 3000-4999 reaches the browser
//! as it is; other closes and failures become [`UPSTREAM_CLOSED`],
//! [`UPSTREAM_ERROR`] or [`UPSTREAM_UNAVAILABLE`]. When the session ends
//! (the client closed, vanished or was too slow), the upstream connection is
//! closed too.

mod rules;
mod tcp;
mod tls;
mod websocket;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

pub use rules::{
    close_from_upstream, close_to_upstream, Upstream, UPSTREAM_CLOSED, UPSTREAM_ERROR,
    UPSTREAM_UNAVAILABLE,
};

use crate::{Options, Session, SockJs};

/// How one relay service reaches its upstream.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<RelayConfig>,
}

#[derive(Clone)]
struct RelayConfig {
    upstream: Upstream,
    forward_headers: Vec<String>,
    subprotocols: Vec<String>,
    connect_timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_message_bytes: usize,
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// The relay of a running relay service ([`Relay::live_service`]).
#[derive(Clone)]
pub struct LiveRelay {
    current: Arc<RwLock<Relay>>,
}

impl LiveRelay {
    /// New sessions are relayed by `relay`. Returns `options` with the
    /// relay's forwarded headers kept, to give the service with
    /// [`SockJs::update_options`].
    pub fn replace(&self, relay: Relay, mut options: Options) -> Options {
        *self.current.write() = relay.prepared(&mut options);
        options
    }

    /// The same relay under new `options` (its message bound follows
    /// them); returns them with the forwarded headers kept, as
    /// [`LiveRelay::replace`] does.
    pub fn reoptioned(&self, options: Options) -> Options {
        let relay = self.current.read().clone();
        self.replace(relay, options)
    }

    /// The upstream new sessions are relayed to.
    pub fn upstream(&self) -> Upstream {
        self.current.read().upstream().clone()
    }
}

/// How a relayed session ended, for the logs.
enum Ending {
    /// The session closed first (client closed, vanished, or too slow).
    SessionClosed,
    /// The upstream closed with this code (if any) and reason.
    UpstreamClosed(Option<u16>, String),
    /// The upstream connection failed: what the client is told, and the
    /// details for the log.
    UpstreamFailed(&'static str, String),
}

/// Why no upstream connection was made.
enum ConnectError {
    /// Down, refusing, unreachable, handshake rejected or timed out.
    Unavailable(String),
    /// The handshake succeeded without one of the subprotocols asked for.
    Subprotocol(String),
}

impl Relay {
    /// A relay to `upstream`: `ws://HOST[:PORT]/PATH`, `wss://...` or
    /// `tcp://HOST:PORT`.
    pub fn new(upstream: &str) -> Result<Relay, String> {
        Ok(Relay {
            inner: Arc::new(RelayConfig {
                upstream: Upstream::parse(upstream)?,
                forward_headers: Vec::new(),
                subprotocols: Vec::new(),
                connect_timeout: Duration::from_secs(10),
                tls: None,
                max_message_bytes: Options::default().max_message_bytes,
                extra_roots: Vec::new(),
            }),
        })
    }

    fn config_mut(&mut self) -> &mut RelayConfig {
        Arc::make_mut(&mut self.inner)
    }

    /// Passes this request header (such as `Cookie` or `Authorization`) from
    /// the client's first request on to the upstream WebSocket handshake.
    pub fn forward_header(mut self, name: &str) -> Self {
        self.config_mut().forward_headers.push(name.to_owned());
        self
    }

    /// Asks a WebSocket upstream for this subprotocol (such as `v12.stomp`)
    /// in `Sec-WebSocket-Protocol`; several calls offer several, in order.
    /// An upstream that selects none of them closes the session with
    /// [`UPSTREAM_ERROR`] `"Upstream refused subprotocol NAME"`.
    pub fn subprotocol(mut self, name: &str) -> Self {
        self.config_mut().subprotocols.push(name.to_owned());
        self
    }

    /// How long connecting to the upstream (TCP, TLS and handshake) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().connect_timeout = timeout;
        self
    }

    /// Trusts the certificate authorities in this PEM file for `wss://`
    /// upstreams, beside the usual public ones.
    pub fn trust_pem_file(mut self, path: &str) -> Result<Self, String> {
        let certs = tls::read_pem_certificates(path)?;
        self.config_mut().extra_roots.extend(certs);
        Ok(self)
    }

    /// The upstream this relay connects to.
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// A SockJS service at `prefix` whose every session is relayed. The
    /// forwarded headers are added to what the service keeps of a request.
    pub fn service(self, prefix: &str, options: Options) -> SockJs {
        self.live_service(prefix, options).0
    }

    /// As [`Relay::service`], with a handle to change the relay of the
    /// running service (its upstream, headers, subprotocols...) for new
    /// sessions; open sessions keep their upstream connection.
    pub fn live_service(self, prefix: &str, mut options: Options) -> (SockJs, LiveRelay) {
        let live = LiveRelay {
            current: Arc::new(RwLock::new(self.prepared(&mut options))),
        };
        let current = live.current.clone();
        let service = SockJs::new(prefix, options, move |session| {
            let relay = current.read().clone();
            async move { relay.run(session).await }
        });
        (service, live)
    }

    /// Ready to relay under `options`, which gain the forwarded headers.
    fn prepared(mut self, options: &mut Options) -> Relay {
        if matches!(
            self.inner.upstream,
            Upstream::WebSocket { secure: true, .. }
        ) {
            let roots = self.inner.extra_roots.clone();
            self.config_mut().tls = Some(tls::client_config(roots));
        }
        self.config_mut().max_message_bytes = options.max_message_bytes;
        for name in &self.inner.forward_headers {
            if !options
                .peer_headers
                .iter()
                .any(|kept| kept.eq_ignore_ascii_case(name))
            {
                options.peer_headers.push(name.to_ascii_lowercase());
            }
        }
        self
    }

    fn connect_failed(&self, session: &Session, error: &ConnectError) {
        session.shared.metrics.relay_failed("connect");
        match error {
            ConnectError::Unavailable(detail) => {
                log::warn!(
                    "relay {}: cannot reach {}: {detail}",
                    session.peer().path(),
                    self.inner.upstream
                );
                session.close(UPSTREAM_UNAVAILABLE, "Upstream unavailable");
            }
            ConnectError::Subprotocol(detail) => {
                let offered = self.inner.subprotocols.join(", ");
                log::warn!(
                    "relay {}: {} selected none of the subprotocols asked for ({offered}): {detail}",
                    session.peer().path(),
                    self.inner.upstream
                );
                session.close(
                    UPSTREAM_ERROR,
                    &format!("Upstream refused subprotocol {offered}"),
                );
            }
        }
    }

    /// Relays one session until either side ends it.
    async fn run(self, session: Session) {
        let config = &self.inner;
        let started = Instant::now();
        let metrics = &session.shared.metrics;
        let connected = |started: Instant| metrics.relay_connected(started.elapsed().as_secs_f64());
        let ending = match &config.upstream {
            Upstream::WebSocket { url, .. } => {
                match websocket::connect(url, config, &session).await {
                    Ok(socket) => {
                        connected(started);
                        websocket::relay(socket, &session).await
                    }
                    Err(error) => return self.connect_failed(&session, &error),
                }
            }
            Upstream::Tcp { address } => {
                match tcp::connect(address, config.connect_timeout).await {
                    Ok(stream) => {
                        connected(started);
                        tcp::relay(stream, &session, config.max_message_bytes).await
                    }
                    Err(error) => {
                        return self.connect_failed(&session, &ConnectError::Unavailable(error))
                    }
                }
            }
        };
        match ending {
            Ending::SessionClosed => log::debug!(
                "relay {}: session {} closed ({:?}); upstream closed",
                session.peer().path(),
                session.id(),
                session.close_reason()
            ),
            Ending::UpstreamClosed(code, reason) => {
                let (code, reason) = close_from_upstream(code, &reason);
                session.close(code, &reason);
            }
            Ending::UpstreamFailed(reason, detail) => {
                metrics.relay_failed("relay");
                log::warn!(
                    "relay {}: connection to {} failed: {detail}",
                    session.peer().path(),
                    config.upstream
                );
                session.close(UPSTREAM_ERROR, reason);
            }
        }
    }
}
