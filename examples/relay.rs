//! SockJS in front of a plain WebSocket backend:
//! `cargo run --example relay -- ws://127.0.0.1:9000/socket`, then connect
//! `new SockJS("http://127.0.0.1:8080/app")` from any page. Every SockJS
//! session gets its own connection to the backend, which sees the browser's
//! cookie and address in its handshake.

use actix_web::App;
use sockjs_gateway::relay::Relay;
use sockjs_gateway::{http_server, Options};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let upstream = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/socket".to_owned());
    let relay = Relay::new(&upstream)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?
        .forward_header("Cookie");
    let app = relay.service("/app", Options::default());
    http_server(move || App::new().service(app.clone()))
        .bind("127.0.0.1:8080")?
        .run()
        .await
}
