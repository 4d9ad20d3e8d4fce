//! Plain-TCP listeners: HTTP/1 only, through actix-http directly.
//!
//! actix-web's `HttpServer::bind` serves plain TCP with a connection task
//! that can also speak HTTP/2, and with the `http2` feature (needed for
//! HTTP/2 over TLS) that task carries the HTTP/2 state inline: about 1.8 KiB
//! more for every idle WebSocket. Browsers never speak cleartext HTTP/2, so
//! plain listeners are built here with an HTTP/1 service instead, reading
//! through [`Gated`] (see `backpressure.rs`).

use std::fmt;
use std::net::TcpListener;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, Request, Response};
use actix_rt::net::TcpStream;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server};
use futures::future::ready;
use sockjs_gateway::AbortableStream;

use crate::backpressure::Gated;

/// actix-web's defaults for the request head and the client's goodbye.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
pub const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The server both kinds of listener are built on: signals are ours, so
/// sessions get their close frames before actix stops.
pub fn server_builder(workers: Option<usize>) -> actix_server::ServerBuilder {
    let builder = Server::build().disable_signals().shutdown_timeout(1);
    match workers {
        Some(workers) => builder.workers(workers),
        None => builder,
    }
}

/// A server on `listeners` (already bound) running `app` on every worker.
/// `stall_limit`: how long a write to a client may wait with nothing taken
/// before its connection is reset.
pub fn serve<F, I, S, B>(
    listeners: Vec<TcpListener>,
    workers: Option<usize>,
    stall_limit: Option<Duration>,
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
    let mut builder = server_builder(workers);
    for listener in listeners {
        let local = listener.local_addr()?;
        let app = app.clone();
        builder = builder.listen(format!("sockjs-gateway-{local}"), listener, move || {
            let app = app()
                .into_factory()
                .map_err(|error| error.into().error_response());
            let http1 = HttpService::build()
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // Without this, actix keeps a response going after the
                // client closed its side, and a dropped long-poll would hold
                // its session until a heartbeat.
                .h1_allow_half_closed(false)
                .local_addr(local)
                // Lets sessions drop the connection of a client they gave
                // up on, which actix would otherwise flush for ever.
                .on_connect_ext(|io: &Gated<AbortableStream>, data: &mut Extensions| {
                    data.insert(io.get_ref().handle());
                })
                .h1(map_config(app, |_| AppConfig::default()));
            // The HTTP/1 service's own `tcp()` ignores `tcp_nodelay`, and
            // Nagle's algorithm would hold each small frame behind the
            // client's delayed ACK (40 ms per polling round trip).
            fn_service(move |io: TcpStream| {
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                let io = AbortableStream::new(io).with_stall_limit(stall_limit);
                ready(Ok::<_, DispatchError>((Gated::new(io), peer)))
            })
            .and_then(http1)
        })?;
    }
    Ok(builder.run())
}
