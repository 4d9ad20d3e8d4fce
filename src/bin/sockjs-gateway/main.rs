//! `sockjs-gateway`: serves the conventional SockJS services out of the box.

mod cli;
mod services;

use actix_web::{App, HttpServer};
use clap::Parser;
use sockjs_gateway::{Options, OriginPolicy};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = cli::Cli::parse();
    let options = Options {
        heartbeat_delay: cli.heartbeat_delay,
        disconnect_delay: cli.disconnect_delay,
        sockjs_url: cli.sockjs_url.clone(),
        max_queued_bytes: cli.max_queued_bytes,
        max_message_bytes: cli.max_message_bytes,
        send_timeout: cli.send_timeout,
        overflow: cli.overflow,
        max_sessions: cli.max_sessions,
        origins: OriginPolicy::allow_only(&cli.allowed_origins),
        jsonp_with_origin_policy: cli.allow_jsonp,
        ..Options::default()
    };
    let services = services::all(&options);
    let prefixes: Vec<String> = services.iter().map(|s| s.prefix().to_owned()).collect();

    let mut server = HttpServer::new(move || {
        let mut app = App::new().service(sockjs_gateway::client_library());
        for service in &services {
            app = app.service(service.clone());
        }
        app
    })
    // Without this, actix keeps a response going after the client closed its
    // side, and a dropped long-poll would hold its session until a heartbeat.
    .h1_allow_half_closed(false)
    .shutdown_timeout(2);
    if let Some(workers) = cli.workers {
        server = server.workers(workers);
    }
    for addr in &cli.listen {
        server = server.bind(addr)?;
    }
    let addrs: Vec<String> = server
        .addrs()
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    log::info!(
        "sockjs-gateway listening on {}; serving {}",
        addrs.join(", "),
        prefixes.join(", ")
    );
    server.run().await
}
