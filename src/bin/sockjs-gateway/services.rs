//! The conventional SockJS test services (PROTOCOL.md section 10).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sockjs_gateway::relay::Relay;
use sockjs_gateway::{ConnectionId, Metrics, Options, SendError, Session, SockJs};

use crate::cli::Cli;

pub fn all(base: &Options, metrics: &Metrics) -> Vec<SockJs> {
    let mut disabled_websocket = base.clone();
    disabled_websocket.transports.websocket = false;
    let cookie_needed = Options {
        cookie_needed: true,
        ..base.clone()
    };
    let echo_options = Options {
        response_limit: 4096,
        ..base.clone()
    };
    vec![
        SockJs::new("/echo", echo_options, echo),
        SockJs::new("/disabled_websocket_echo", disabled_websocket, echo),
        SockJs::new("/cookie_needed_echo", cookie_needed, echo),
        SockJs::new("/close", base.clone(), close),
        SockJs::new("/ticker", base.clone(), ticker),
        SockJs::new("/amplify", base.clone(), amplify),
        broadcast(base.clone()),
    ]
    .into_iter()
    .map(|service| service.with_metrics(metrics))
    .collect()
}

async fn echo(session: Session) {
    while let Some(message) = session.recv().await {
        if session.send(message).await.is_err() {
            break;
        }
    }
}

async fn close(session: Session) {
    session.close(3000, "Go away!");
}

async fn ticker(session: Session) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if session.send("tick!").await.is_err() {
                    break;
                }
            }
            message = session.recv() => {
                if message.is_none() {
                    break;
                }
            }
        }
    }
}

/// Message `n` (1..=18) is answered with 2^n `x`s; anything else counts as 1.
async fn amplify(session: Session) {
    while let Some(message) = session.recv().await {
        let n = message
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=18).contains(n))
            .unwrap_or(1);
        if session.send("x".repeat(1 << n)).await.is_err() {
            break;
        }
    }
}

/// The `--relay` services, each counted in `metrics`.
pub fn relays(cli: &Cli, base: &Options, metrics: &Metrics) -> Result<Vec<SockJs>, String> {
    cli.relays
        .iter()
        .map(|spec| {
            let mut relay = Relay::new(&spec.upstream)?;
            for header in &cli.relay_forward_headers {
                relay = relay.forward_header(header);
            }
            if let Some(ca) = &cli.relay_ca {
                relay = relay.trust_pem_file(ca)?;
            }
            Ok(relay
                .service(&spec.prefix, base.clone())
                .with_metrics(metrics))
        })
        .collect()
}

/// `services` with those at the same prefix as one of `replacements`
/// replaced by it.
pub fn replace_by_prefix(services: Vec<SockJs>, replacements: Vec<SockJs>) -> Vec<SockJs> {
    let mut services: Vec<SockJs> = services
        .into_iter()
        .filter(|s| !replacements.iter().any(|r| r.prefix() == s.prefix()))
        .collect();
    services.extend(replacements);
    services
}

/// The close of a broadcast member whose outgoing queue is full: it is closed
/// rather than allowed to hold up the others (with `--overflow drop-oldest`
/// its oldest messages are dropped instead).
pub const TOO_SLOW: (u16, &str) = (4009, "Too slow to keep up");

/// Every message goes to every open session of the service.
fn broadcast(options: Options) -> SockJs {
    let members: Arc<Mutex<HashMap<ConnectionId, Session>>> = Arc::default();
    SockJs::new("/broadcast", options, move |session: Session| {
        let members = members.clone();
        async move {
            members.lock().insert(session.id(), session.clone());
            while let Some(message) = session.recv().await {
                let recipients: Vec<Session> = members.lock().values().cloned().collect();
                for recipient in recipients {
                    if let Err(SendError::Full) = recipient.try_send(message.clone()) {
                        log::debug!("broadcast: session {} too slow, closing it", recipient.id());
                        recipient.close(TOO_SLOW.0, TOO_SLOW.1);
                    }
                }
            }
            members.lock().remove(&session.id());
        }
    })
}
