//! `sockjs-gateway`: serves the conventional SockJS services out of the box.

mod backpressure;
mod cli;
mod cluster;
mod config;
mod observability;
mod plain_listener;
mod services;
mod settings;
mod tls;
mod tls_listener;
mod values;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::{web, App, HttpResponse};
use sockjs_gateway::cluster::Cluster;
use sockjs_gateway::{Metrics, SockJs};
use tokio::signal::unix::{signal, SignalKind};

use crate::settings::Settings;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = cli::Cli::from_command_line();
    cli.check().unwrap_or_else(|error| refuse_to_start(error));
    let file = match &cli.config {
        Some(path) => config::load(path).unwrap_or_else(|error| refuse_to_start(error)),
        None => config::ConfigFile::default(),
    };
    let settings = Settings::resolve(&cli, file).unwrap_or_else(|error| refuse_to_start(error));
    let tls = settings
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()
        .unwrap_or_else(|error| refuse_to_start(error));
    cluster::check_tls(settings.redis.as_deref(), tls.is_some())
        .unwrap_or_else(|error| refuse_to_start(error));
    let cluster = settings
        .redis
        .as_deref()
        .map(Cluster::new)
        .transpose()
        .unwrap_or_else(|error| refuse_to_start(error));
    // Every socket is bound before anything is served or logged as
    // listening, so an address in use stops the start naming it.
    let listeners: Vec<TcpListener> = settings.listen.iter().map(|&addr| bind(addr)).collect();
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .map(|listener| listener.local_addr())
        .collect::<Result<_, _>>()?;
    let metrics_listener = settings.metrics.map(bind);
    let metrics = Metrics::new();
    if let Some(cluster) = &cluster {
        metrics.watch_cluster(cluster);
    }
    let health = observability::Health::new(cluster.clone());
    let services: Vec<SockJs> = settings
        .services
        .iter()
        .map(|service| services::build(service, &metrics, cluster.as_ref()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| refuse_to_start(error));
    let prefixes: Vec<String> = services.iter().map(|s| s.prefix().to_owned()).collect();
    let services_to_stop = services.clone();

    let response_metrics = metrics.clone();
    let app = move || {
        let response_metrics = response_metrics.clone();
        let mut app = App::new()
            .wrap_fn(move |request, service| {
                let response = service.call(request);
                let metrics = response_metrics.clone();
                async move {
                    let response = response.await?;
                    metrics.count_response(response.status().as_u16());
                    Ok(response)
                }
            })
            .service(sockjs_gateway::client_library())
            .route("/", web::get().to(demo_page));
        for service in &services {
            app = app.service(service.clone());
        }
        app
    };
    let workers = settings.workers.map(|w| w.get());
    // The longest send timeout of any service, and the grace after it: how
    // long a listener lets a write wait with nothing taken.
    let stall_limit = settings
        .services
        .iter()
        .map(|service| service.options.send_timeout)
        .try_fold(Duration::ZERO, |longest, timeout| {
            (!timeout.is_zero()).then_some(longest.max(timeout))
        })
        .map(|longest| longest + sockjs_gateway::protocol::session::CLOSE_GRACE);
    let (server, scheme) = match tls {
        Some(tls) => (
            tls_listener::serve(listeners, workers, stall_limit, tls, app)?,
            "https",
        ),
        None => (
            plain_listener::serve(listeners, workers, stall_limit, app)?,
            "http",
        ),
    };
    // Checked before the listening line: a node others cannot reach does not start.
    let advertise = cluster.as_ref().map(|_| {
        cluster::advertised_address(settings.advertise.as_deref(), &bound)
            .unwrap_or_else(|error| refuse_to_start(error))
    });
    let addrs: Vec<String> = bound.iter().map(|a| format!("{scheme}://{a}")).collect();
    if let Some(cluster) = &cluster {
        if !cluster.subscribed(Duration::from_secs(5)).await {
            log::warn!(
                "cluster: broadcast channels not subscribed yet; their members wait for them"
            );
        }
    }
    log::info!(
        "sockjs-gateway listening on {}; serving {}",
        addrs.join(", "),
        prefixes.join(", ")
    );
    if let (Some(cluster), Some(advertise)) = (&cluster, advertise) {
        log::info!(
            "cluster node {} advertised at {advertise}, backplane {}",
            cluster.node_id(),
            settings.redis.as_deref().unwrap_or_default()
        );
        cluster.join(advertise);
    }
    let leaving = cluster.clone();
    let handle = server.handle();
    let metrics_server = match metrics_listener {
        Some(listener) => Some(observability::serve(listener, metrics, health.clone())?),
        None => None,
    };
    let metrics_handle = metrics_server.as_ref().map(|s| s.handle());
    let shutdown_timeout = settings.shutdown_timeout;
    actix_rt::spawn(async move {
        let signal = stop_signal().await;
        log::info!("{signal}: closing every session (within {shutdown_timeout:?}), then stopping");
        health.shutting_down();
        handle.pause().await;
        let sessions_time = shutdown_timeout.saturating_sub(Duration::from_secs(1));
        futures::future::join_all(services_to_stop.iter().map(|s| s.shutdown(sessions_time))).await;
        if let Some(cluster) = leaving {
            cluster.leave().await;
        }
        handle.stop(true).await;
        if let Some(metrics) = metrics_handle {
            metrics.stop(true).await;
        }
    });
    match metrics_server {
        Some(metrics_server) => futures::future::try_join(server, metrics_server)
            .await
            .map(drop),
        None => server.await,
    }
}

/// A configuration the gateway cannot start with: said on stderr, exit 2
/// (as for a bad flag), nothing served.
fn refuse_to_start(error: impl std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(2)
}

fn bind(addr: SocketAddr) -> TcpListener {
    TcpListener::bind(addr).unwrap_or_else(|error| refuse_to_start(cannot_listen(addr, &error)))
}

/// `cannot listen on 127.0.0.1:8081: address already in use`: the OS's
/// reason without its `(os error 98)`, as the other start-up errors read.
fn cannot_listen(addr: SocketAddr, error: &std::io::Error) -> String {
    let reason = error.to_string();
    let reason = match reason.rfind(" (os error ") {
        Some(at) => &reason[..at],
        None => &reason,
    };
    let mut chars = reason.chars();
    let reason: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_owned(),
    };
    format!("cannot listen on {addr}: {reason}")
}

/// A page to try every service and transport by hand.
async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=UTF-8")
        .body(include_str!("demo.html"))
}

/// Waits for Ctrl-C or SIGTERM and names it.
async fn stop_signal() -> &'static str {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            log::error!("cannot listen for SIGTERM: {error}");
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = terminate.recv() => "SIGTERM",
    }
}
