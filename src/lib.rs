//! A SockJS server on actix-web: every SockJS transport behind one session API.
//!
//! Mount a service in any actix-web `App` and write one async handler; it runs
//! unchanged whether the client came over WebSocket, XHR streaming, polling,
//! EventSource, htmlfile or JSONP.
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use sockjs_gateway::{Options, Session, SockJs};
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
//!     HttpServer::new(move || App::new().service(echo.clone()))
//!         .bind("127.0.0.1:8081")?
//!         .run()
//!         .await
//! }
//! ```

mod options;
pub mod protocol;
mod server;
mod session;

use std::future::Future;
use std::sync::Arc;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::web;
use futures::FutureExt;

pub use options::{Options, Transports, DEFAULT_SOCKJS_URL};
pub use protocol::session::{CloseReason, SendError};
pub use session::{ConnectionId, Peer, Session};

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

    /// The prefix this service answers under.
    pub fn prefix(&self) -> &str {
        &self.state.prefix
    }

    pub fn options(&self) -> &Options {
        &self.state.options
    }

    /// Sessions of the HTTP transports currently held (WebSockets excluded).
    pub fn session_count(&self) -> usize {
        self.state.registry.len()
    }
}

impl HttpServiceFactory for SockJs {
    fn register(self, config: &mut AppService) {
        let prefix = self.state.prefix.clone();
        web::resource([prefix.clone(), format!("{prefix}/{{tail:.*}}")])
            .app_data(web::Data::from(self.state))
            .route(web::route().to(server::dispatch))
            .register(config);
    }
}
