//! A broadcast chat: `cargo run --example chat`, then open
//! http://127.0.0.1:8080/ in two browser windows.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse};
use parking_lot::Mutex;
use sockjs_gateway::{http_server, ConnectionId, Options, Session, SharedMessage, SockJs};

type Room = Arc<Mutex<HashMap<ConnectionId, Session>>>;

fn say_to_all(room: &Room, line: &str) {
    // One copy of the line for the whole room, escaped once.
    let line = SharedMessage::new(line);
    for member in room.lock().values() {
        // A member whose queue is full misses the line rather than stalling the room.
        let _ = member.try_send_shared(&line);
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let room = Room::default();
    let chat = SockJs::new("/chat", Options::default(), move |session: Session| {
        let room = room.clone();
        async move {
            let name = format!("guest-{}", session.id());
            room.lock().insert(session.id(), session.clone());
            say_to_all(
                &room,
                &format!("{name} joined over {}", session.peer().transport()),
            );
            while let Some(text) = session.recv().await {
                say_to_all(&room, &format!("{name}: {text}"));
            }
            room.lock().remove(&session.id());
            say_to_all(&room, &format!("{name} left"));
        }
    });
    http_server(move || {
        App::new()
            .service(chat.clone())
            .service(sockjs_gateway::client_library())
            .route("/", web::get().to(page))
    })
    .bind("127.0.0.1:8080")?
    .run()
    .await
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=UTF-8")
        .body(
            r#"<!doctype html>
<meta charset="utf-8"><title>SockJS chat</title>
<script src="/lib/sockjs.min.js"></script>
<pre id="log"></pre>
<form id="form"><input id="text" autofocus autocomplete="off"><button>Send</button></form>
<script>
  const log = (line) => { document.getElementById('log').textContent += line + '\n'; };
  const sock = new SockJS('/chat');
  sock.onopen = () => log('[connected over ' + sock.transport + ']');
  sock.onmessage = (e) => log(e.data);
  sock.onclose = (e) => log('[closed: ' + e.code + ' ' + e.reason + ']');
  document.getElementById('form').onsubmit = (e) => {
    e.preventDefault();
    const input = document.getElementById('text');
    if (input.value) { sock.send(input.value); input.value = ''; }
  };
</script>
"#,
        )
}
