//! A SockJS echo server: `cargo run --example echo`, then connect
//! `new SockJS("http://127.0.0.1:8080/echo")` from any page.

use actix_web::App;
use sockjs_gateway::{http_server, Options, Session, SockJs};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let echo = SockJs::new("/echo", Options::default(), |session: Session| async move {
        while let Some(message) = session.recv().await {
            if session.send(message).await.is_err() {
                break;
            }
        }
    });
    http_server(move || App::new().service(echo.clone()))
        .bind("127.0.0.1:8080")?
        .run()
        .await
}
