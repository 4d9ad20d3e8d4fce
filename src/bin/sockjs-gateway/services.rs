//! The services the gateway can run: the conventional SockJS test services
//! (PROTOCOL.md section 10) and relays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sockjs_gateway::cluster::{Cluster, BACKPLANE_UNAVAILABLE};
use sockjs_gateway::relay::{LiveRelay, Relay};
use sockjs_gateway::{
    AccessLog, ConnectionId, Metrics, Options, SendError, Session, SharedMessage, SockJs,
};

use crate::settings::{Handler, RelaySpec, ServiceKind, ServiceSettings};

/// A running service, with what a reload may change of it.
pub struct Built {
    pub service: SockJs,
    /// A relay service's relay, swappable for new sessions.
    pub relay: Option<LiveRelay>,
}

/// The service described by `settings`, counting into `metrics` and
/// writing its ended sessions to `access_log`. In cluster mode (`cluster`),
/// every service's HTTP sessions work across nodes and broadcasts reach
/// every node.
pub fn build(
    settings: &ServiceSettings,
    metrics: &Metrics,
    cluster: Option<&Cluster>,
    access_log: Option<&AccessLog>,
) -> Result<Built, String> {
    let options = settings.options.clone();
    let mut live_relay = None;
    let service = match &settings.kind {
        ServiceKind::Relay(spec) => {
            let relay = relay(spec)?;
            log_relay(spec, &relay);
            let (service, live) = relay.live_service(&spec.prefix, options);
            live_relay = Some(live);
            service
        }
        ServiceKind::Local { prefix, handler } => match handler {
            Handler::Echo => SockJs::new(prefix, options, echo),
            Handler::Close => SockJs::new(prefix, options, close),
            Handler::Ticker => SockJs::new(prefix, options, ticker),
            Handler::Amplify => SockJs::new(prefix, options, amplify),
            Handler::Broadcast => broadcast(prefix, options, cluster),
        },
    };
    // Before `with_metrics`, which keeps a weak reference to the service.
    let service = match cluster {
        Some(cluster) => service.with_cluster(cluster),
        None => service,
    };
    let service = match access_log {
        Some(log) => service.with_access_log(log),
        None => service,
    };
    Ok(Built {
        service: service.with_metrics(metrics),
        relay: live_relay,
    })
}

/// The relay of a relay service: each session gets its own connection to
/// the upstream.
pub fn relay(spec: &RelaySpec) -> Result<Relay, String> {
    let mut relay = Relay::new(&spec.upstream)?;
    for header in &spec.forward_headers {
        relay = relay.forward_header(header);
    }
    for protocol in &spec.subprotocols {
        relay = relay.subprotocol(protocol);
    }
    if let Some(ca) = &spec.trusted_ca {
        relay = relay.trust_pem_file(ca)?;
    }
    if let Some(timeout) = spec.connect_timeout {
        relay = relay.connect_timeout(timeout);
    }
    Ok(relay)
}

/// `relay /app -> ws://…`, when a relay starts or changes.
pub fn log_relay(spec: &RelaySpec, relay: &Relay) {
    match spec.subprotocols.as_slice() {
        [] => log::info!("relay {} -> {}", spec.prefix, relay.upstream()),
        protocols => log::info!(
            "relay {} -> {} (subprotocol {})",
            spec.prefix,
            relay.upstream(),
            protocols.join(", ")
        ),
    }
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

/// The close of a broadcast member whose outgoing queue is full: it is closed
/// rather than allowed to hold up the others (with `--overflow drop-oldest`
/// its oldest messages are dropped instead).
pub const TOO_SLOW: (u16, &str) = (4009, "Too slow to keep up");

type Members = Arc<Mutex<HashMap<ConnectionId, Session>>>;

/// Every message goes to every open session of the service; in cluster
/// mode, of every node, all in the one order of the cluster's channel.
fn broadcast(prefix: &str, options: Options, cluster: Option<&Cluster>) -> SockJs {
    let members: Members = Arc::default();
    let fanout = cluster.map(|cluster| {
        let (to, lost) = (members.clone(), members.clone());
        cluster.fanout(
            prefix,
            move |message| deliver(&to, message),
            // Members would miss what is published while the subscription
            // is down: they are closed rather than left to miss it silently.
            move || close_all(&lost, BACKPLANE_UNAVAILABLE),
        )
    });
    SockJs::new(prefix, options, move |session: Session| {
        let members = members.clone();
        let fanout = fanout.clone();
        async move {
            // A member first, then the wait: a subscription lost after the
            // wait but before the insert would close the others and leave
            // this one to miss messages silently.
            members.lock().insert(session.id(), session.clone());
            if let Some(fanout) = &fanout {
                if !fanout.ready().await {
                    members.lock().remove(&session.id());
                    session.close(BACKPLANE_UNAVAILABLE.0, BACKPLANE_UNAVAILABLE.1);
                    return;
                }
            }
            while let Some(message) = session.recv().await {
                match &fanout {
                    None => deliver(&members, message),
                    Some(fanout) => {
                        if fanout.publish(&message).await.is_err() {
                            session.close(BACKPLANE_UNAVAILABLE.0, BACKPLANE_UNAVAILABLE.1);
                            break;
                        }
                    }
                }
            }
            members.lock().remove(&session.id());
        }
    })
}

fn deliver(members: &Members, message: String) {
    let message = SharedMessage::new(message);
    let recipients: Vec<Session> = members.lock().values().cloned().collect();
    for recipient in recipients {
        if let Err(SendError::Full) = recipient.try_send_shared(&message) {
            log::debug!("broadcast: session {} too slow, closing it", recipient.id());
            recipient.close(TOO_SLOW.0, TOO_SLOW.1);
        }
    }
}

fn close_all(members: &Members, (code, reason): (u16, &str)) {
    let recipients: Vec<Session> = members.lock().values().cloned().collect();
    for recipient in recipients {
        recipient.close(code, reason);
    }
}
