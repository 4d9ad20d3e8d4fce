//! An actix-web `HttpServer` with the two settings SockJS needs, so a
//! library user cannot forget them.

use std::fmt;

use actix_http::body::MessageBody;
use actix_http::{Request, Response};
use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::HttpServer;

/// `HttpServer::new(factory)` with the settings SockJS needs already made:
///
/// - `h1_allow_half_closed(false)`: otherwise actix keeps serving a response
///   after the client has gone, and a long-poll dropped by its client holds
///   its session until the next heartbeat instead of closing it as
///   interrupted at once;
/// - `tcp_nodelay(true)`: SockJS writes small frames one at a time, and
///   Nagle's algorithm would hold each behind the client's delayed ACK
///   (40 ms per polling round trip).
///
/// Everything else is actix-web's `HttpServer`: bind, set workers, run.
///
/// ```no_run
/// use actix_web::App;
/// use sockjs_gateway::{http_server, Options, Session, SockJs};
///
/// # #[actix_web::main]
/// # async fn main() -> std::io::Result<()> {
/// let echo = SockJs::new("/echo", Options::default(), |session: Session| async move {
///     while let Some(message) = session.recv().await {
///         let _ = session.send(message).await;
///     }
/// });
/// http_server(move || App::new().service(echo.clone()))
///     .workers(2)
///     .bind("127.0.0.1:8081")?
///     .run()
///     .await
/// # }
/// ```
pub fn http_server<F, I, S, B>(factory: F) -> HttpServer<F, I, S, B>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    HttpServer::new(factory)
        .h1_allow_half_closed(false)
        .tcp_nodelay(true)
}
