//! `baseline-echo`: a bare actix-ws echo server, no SockJS at all.
//!
//! It stands for the ceiling of the gateway's own stack (the same actix-web,
//! release profile and `HttpServer` settings, on the current actix-ws): every
//! path upgrades to a WebSocket that echoes each text message as it is. The
//! load generator compares the gateway against it scenario by scenario.
//!
//! ```text
//! baseline-echo --listen 127.0.0.1:0 --workers 1
//! ```
//! prints `baseline-echo listening on http://127.0.0.1:PORT` to stderr once bound.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::AggregatedMessage;

/// The same bound the gateway puts on one message (its `max_message_bytes`).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

async fn echo(req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let (response, mut session, stream) = match actix_ws::handle(&req, payload) {
        Ok(parts) => parts,
        Err(error) => return error.error_response(),
    };
    let mut stream = stream
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    actix_rt::spawn(async move {
        let reason = loop {
            match stream.recv().await {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Some(Ok(AggregatedMessage::Binary(bytes))) => {
                    if session.binary(bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(AggregatedMessage::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Close(reason))) => break reason,
                Some(Err(_)) | None => break None,
            }
        };
        let _ = session.close(reason).await;
    });
    response
}

struct Args {
    listen: Vec<String>,
    workers: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: Vec::new(),
        workers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen.push(value()?),
            "--workers" => {
                let v = value()?;
                args.workers = Some(v.parse().map_err(|_| format!("bad --workers {v}"))?);
            }
            "-h" | "--help" => {
                println!("usage: baseline-echo [--listen ADDR]... [--workers N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.listen.is_empty() {
        args.listen.push("127.0.0.1:8082".to_owned());
    }
    Ok(args)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("baseline-echo: {error}");
            std::process::exit(2);
        }
    };
    // Same settings as the gateway binary, so the stacks differ only in SockJS.
    let mut server = HttpServer::new(|| App::new().default_service(web::to(echo)))
        .h1_allow_half_closed(false)
        .shutdown_timeout(2);
    if let Some(workers) = args.workers {
        server = server.workers(workers);
    }
    for addr in &args.listen {
        server = server.bind(addr)?;
    }
    let addrs: Vec<String> = server
        .addrs()
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    eprintln!("baseline-echo listening on {}", addrs.join(", "));
    server.run().await
}
