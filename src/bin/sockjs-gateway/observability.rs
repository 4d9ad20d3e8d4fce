//! `--metrics ADDR`: Prometheus text at `/metrics` and a health check at
//! `/healthz`, on their own address.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use sockjs_gateway::cluster::Cluster;
use sockjs_gateway::Metrics;

/// Whether the gateway still accepts work: `/healthz` says 200 until
/// shutdown starts. In cluster mode it also says whether Redis answers, and
/// stays 200 without it: the node still serves WebSocket sessions and its
/// own HTTP sessions, and every node shares the one Redis, so a 503 would
/// have the balancer drop the whole cluster at once.
#[derive(Clone)]
pub struct Health {
    stopping: Arc<AtomicBool>,
    cluster: Option<Cluster>,
}

impl Health {
    pub fn new(cluster: Option<Cluster>) -> Self {
        Health {
            stopping: Arc::default(),
            cluster,
        }
    }

    pub fn shutting_down(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn is_accepting(&self) -> bool {
        !self.stopping.load(Ordering::Acquire)
    }

    fn body(&self) -> String {
        let state = if self.is_accepting() {
            "ok"
        } else {
            "shutting down"
        };
        match &self.cluster {
            None => format!("{state}\n"),
            Some(cluster) if cluster.is_reachable() => format!("{state}\nredis: reachable\n"),
            Some(_) => format!("{state}\nredis: unreachable\n"),
        }
    }
}

/// Serves on `listener`, already bound.
pub fn serve(listener: TcpListener, metrics: Metrics, health: Health) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(metrics.clone()))
            .app_data(web::Data::new(health.clone()))
            .route("/metrics", web::get().to(scrape))
            .route("/healthz", web::get().to(healthz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?;
    for addr in server.addrs() {
        log::info!("metrics on http://{addr}/metrics, health on http://{addr}/healthz");
    }
    Ok(server.run())
}

async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

async fn healthz(health: web::Data<Health>) -> HttpResponse {
    let mut response = if health.is_accepting() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response.content_type("text/plain").body(health.body())
}
