//! `--metrics ADDR`: Prometheus text at `/metrics` and a health check at
//! `/healthz`, on their own address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpResponse, HttpServer};
use sockjs_gateway::Metrics;

/// Whether the gateway still accepts work: `/healthz` says 200 until shutdown starts.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn shutting_down(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_accepting(&self) -> bool {
        !self.0.load(Ordering::Acquire)
    }
}

pub fn serve(addr: SocketAddr, metrics: Metrics, health: Health) -> std::io::Result<Server> {
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
    .bind(addr)?;
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
    if health.is_accepting() {
        HttpResponse::Ok().content_type("text/plain").body("ok\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("shutting down\n")
    }
}
