//! TLS listeners, built as actix-web's `HttpServer` builds them (rustls,
//! ALPN `h2` then `http/1.1`), with one difference: HTTP/1 connections read
//! through [`Gated`], as the plain listeners do, so a client pipelining
//! requests it never reads is not buffered for; and under the encryption
//! the TCP stream is an [`AbortableStream`], as on plain listeners, so a
//! client given up on loses its connection within a bound.

use std::fmt;
use std::net::TcpListener;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, Protocol, Request, Response};
use actix_rt::net::TcpStream;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_tls::accept::TlsError;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server};
use futures::future::ready;
use rustls::ServerConfig;
use sockjs_gateway::AbortableStream;

use crate::backpressure::Gated;
use crate::plain_listener::{server_builder, CLIENT_DISCONNECT_TIMEOUT, CLIENT_REQUEST_TIMEOUT};

type Tls = TlsStream<AbortableStream>;

/// A server on `listeners` (already bound) serving `app` over TLS.
/// `stall_limit` as for plain listeners.
pub fn serve<F, I, S, B>(
    listeners: Vec<TcpListener>,
    workers: Option<usize>,
    stall_limit: Option<Duration>,
    mut tls: ServerConfig,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error>,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut builder = server_builder(workers);
    for listener in listeners {
        let local = listener.local_addr()?;
        let app = app.clone();
        let tls = tls.clone();
        builder = builder.listen(format!("sockjs-gateway-tls-{local}"), listener, move || {
            let app = app()
                .into_factory()
                .map_err(|error| error.into().error_response());
            // Over TLS `secure()` must say so: the JSESSIONID cookie is then
            // `SameSite=None; Secure`. actix-web builds this config only in
            // its own `HttpServer`; this is the constructor it exposes for
            // that (actix-test uses it).
            let config = move |()| AppConfig::__priv_test_new(true, local.to_string(), local);
            let http = HttpService::build()
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // As over plain TCP: see plain_listener.rs.
                .h1_allow_half_closed(false)
                .local_addr(local)
                // An HTTP/2 connection carries other requests beside a
                // given-up one: only HTTP/1 connections may be dropped for
                // one session.
                .on_connect_ext(|io: &Gated<Tls>, data: &mut Extensions| {
                    let (tcp, tls) = io.get_ref().get_ref();
                    if tls.alpn_protocol() != Some(b"h2") {
                        data.insert(tcp.handle());
                    }
                })
                .finish(map_config(app, config));
            fn_service(move |io: TcpStream| {
                // See plain_listener: Nagle's algorithm against small frames.
                let _ = io.set_nodelay(true);
                let io = AbortableStream::new(io).with_stall_limit(stall_limit);
                ready(Ok::<_, TlsError<std::io::Error, DispatchError>>(io))
            })
            .and_then(
                Acceptor::new(tls.clone())
                    .map_init_err(|_| unreachable!("the TLS acceptor has no init error"))
                    .map_err(TlsError::into_service_error),
            )
            .and_then(|io: Tls| {
                let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
                let peer = io.get_ref().0.get_ref().peer_addr().ok();
                // HTTP/2 bounds what it buffers with its own flow control.
                let (io, protocol) = if h2 {
                    (Gated::passthrough(io), Protocol::Http2)
                } else {
                    (Gated::new(io), Protocol::Http1)
                };
                ready(Ok((io, protocol, peer)))
            })
            .and_then(http.map_err(TlsError::Service))
        })?;
    }
    Ok(builder.run())
}
