//! Counters and gauges in Prometheus form, through `prometheus-client`.
//! Every per-message figure is a pre-resolved counter: one atomic add.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::access_log::AccessLog;
use crate::cluster::Cluster;
use crate::protocol::session::CloseReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    service: String,
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    service: String,
    reason: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    service: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    service: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    service: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

/// The gateway's metrics. Cheap to clone; every clone shares the registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

struct Families {
    registry: Mutex<Registry>,
    sessions_open: Family<TransportLabels, Gauge>,
    sessions_opened: Family<TransportLabels, Counter>,
    sessions_closed: Family<CloseLabels, Counter>,
    messages: Family<DirectionLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    queued_bytes: Family<ServiceLabels, Gauge>,
    dropped: Family<ServiceLabels, Counter>,
    heartbeat_timeouts: Family<ServiceLabels, Counter>,
    info_latency: Family<ServiceLabels, Histogram>,
    http_responses: Family<StatusLabels, Counter>,
    responses_by_status: Resolved<u16, Counter>,
    relay_connects: Family<ServiceLabels, Counter>,
    relay_failures: Family<StageLabels, Counter>,
    relay_connect_latency: Family<ServiceLabels, Histogram>,
    cluster_routes: Family<OutcomeLabels, Counter>,
    cluster_route_latency: Family<ServiceLabels, Histogram>,
    cluster_streams_broken: Family<ServiceLabels, Counter>,
    cluster_backplane_up: Gauge,
    resident_memory: Gauge,
    /// Figures read at scrape time (queue depth), one per service.
    scrape_hooks: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let families = Families {
            registry: Mutex::new(Registry::default()),
            sessions_open: Family::default(),
            sessions_opened: Family::default(),
            sessions_closed: Family::default(),
            messages: Family::default(),
            bytes: Family::default(),
            queued_bytes: Family::default(),
            dropped: Family::default(),
            heartbeat_timeouts: Family::default(),
            info_latency: Family::new_with_constructor(info_latency_constructor),
            http_responses: Family::default(),
            responses_by_status: Resolved::default(),
            relay_connects: Family::default(),
            relay_failures: Family::default(),
            relay_connect_latency: Family::new_with_constructor(relay_latency_constructor),
            cluster_routes: Family::default(),
            cluster_route_latency: Family::new_with_constructor(route_latency_constructor),
            cluster_streams_broken: Family::default(),
            cluster_backplane_up: Gauge::default(),
            resident_memory: Gauge::default(),
            scrape_hooks: Mutex::new(Vec::new()),
        };
        {
            let mut r = families.registry.lock();
            let f = &families;
            r.register(
                "sockjs_sessions_open",
                "Sessions open now",
                f.sessions_open.clone(),
            );
            r.register(
                "sockjs_sessions_opened",
                "Sessions opened",
                f.sessions_opened.clone(),
            );
            r.register(
                "sockjs_sessions_closed",
                "Sessions closed, by why and close code",
                f.sessions_closed.clone(),
            );
            r.register(
                "sockjs_messages",
                "Application messages, in (from clients) and out",
                f.messages.clone(),
            );
            r.register(
                "sockjs_bytes",
                "Application message bytes, in and out",
                f.bytes.clone(),
            );
            r.register(
                "sockjs_outgoing_queue_bytes",
                "Bytes queued for clients, all sessions",
                f.queued_bytes.clone(),
            );
            r.register(
                "sockjs_dropped_messages",
                "Messages dropped by --overflow drop-oldest",
                f.dropped.clone(),
            );
            r.register(
                "sockjs_heartbeat_timeouts",
                "Raw WebSocket peers that missed their pong",
                f.heartbeat_timeouts.clone(),
            );
            r.register(
                "sockjs_info_latency_seconds",
                "Time to answer /info",
                f.info_latency.clone(),
            );
            r.register(
                "sockjs_http_responses",
                "HTTP responses, by status",
                f.http_responses.clone(),
            );
            r.register(
                "sockjs_relay_upstream_connects",
                "Upstream connections a relay opened",
                f.relay_connects.clone(),
            );
            r.register(
                "sockjs_relay_upstream_failures",
                "Upstream connections that failed, at connect or while relaying",
                f.relay_failures.clone(),
            );
            r.register(
                "sockjs_relay_upstream_connect_seconds",
                "Time to open an upstream connection (TCP, TLS and handshake)",
                f.relay_connect_latency.clone(),
            );
            r.register(
                "process_resident_memory_bytes",
                "Resident memory of the process",
                f.resident_memory.clone(),
            );
        }
        Metrics {
            inner: Arc::new(families),
        }
    }
}

fn info_latency_constructor() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn relay_latency_constructor() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

fn route_latency_constructor() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// An empty registry; share it between services with
    /// [`crate::SockJs::with_metrics`] and show it with [`Metrics::render`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The Prometheus text exposition of every metric, read now.
    pub fn render(&self) -> String {
        for hook in self.inner.scrape_hooks.lock().iter() {
            hook();
        }
        if let Some(rss) = resident_memory_bytes() {
            self.inner.resident_memory.set(rss as i64);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.inner.registry.lock());
        out
    }

    /// Counts one HTTP response by status (for a middleware).
    pub fn count_response(&self, status: u16) {
        let f = &self.inner;
        let counter = f.responses_by_status.get(status, || {
            let labels = StatusLabels {
                status: status.to_string(),
            };
            f.http_responses.get_or_create(&labels).clone()
        });
        counter.inc();
    }

    pub(crate) fn for_service(&self, service: &str) -> ServiceMetrics {
        let direction = |direction: &str| DirectionLabels {
            service: service.to_owned(),
            direction: direction.to_owned(),
        };
        let labels = ServiceLabels {
            service: service.to_owned(),
        };
        let f = &self.inner;
        // One statement each: a family's read guard must be gone before the
        // next `get_or_create` may need its write lock.
        let messages_in = f.messages.get_or_create(&direction("in")).clone();
        let messages_out = f.messages.get_or_create(&direction("out")).clone();
        let bytes_in = f.bytes.get_or_create(&direction("in")).clone();
        let bytes_out = f.bytes.get_or_create(&direction("out")).clone();
        let dropped = f.dropped.get_or_create(&labels).clone();
        let heartbeat_timeouts = f.heartbeat_timeouts.get_or_create(&labels).clone();
        let queued_bytes = f.queued_bytes.get_or_create(&labels).clone();
        ServiceMetrics {
            metrics: self.clone(),
            service: service.to_owned(),
            messages_in,
            messages_out,
            bytes_in,
            bytes_out,
            dropped,
            heartbeat_timeouts,
            queued_bytes,
            by_transport: Arc::default(),
            by_close: Arc::default(),
        }
    }

    /// Adds the cluster figures: how requests for sessions held elsewhere
    /// were routed, and whether `cluster`'s Redis answers. Once per
    /// [`Metrics`]; only for a gateway in cluster mode.
    pub fn watch_cluster(&self, cluster: &Cluster) {
        let f = &self.inner;
        {
            let mut r = f.registry.lock();
            r.register(
                "sockjs_cluster_routes",
                "Requests for a session not held here, by outcome: here (claimed or \
                 recorded here), forwarded, owner_lost, misdirected (421), refused (503, \
                 Redis unreachable), unanswered (502)",
                f.cluster_routes.clone(),
            );
            r.register(
                "sockjs_cluster_route_seconds",
                "Time to look up a session's owner in Redis",
                f.cluster_route_latency.clone(),
            );
            r.register(
                "sockjs_cluster_streams_broken",
                "Forwarded receivers whose owner's stream broke off (ended with 4503)",
                f.cluster_streams_broken.clone(),
            );
            r.register(
                "sockjs_cluster_backplane_up",
                "1 while the last Redis command succeeded, else 0",
                f.cluster_backplane_up.clone(),
            );
        }
        let (cluster, up) = (cluster.clone(), f.cluster_backplane_up.clone());
        self.on_scrape(move || {
            up.set(i64::from(cluster.is_reachable()));
        });
    }

    /// Adds `log`'s figures: `sockjs_access_log_lines_total` (lines
    /// written) and `sockjs_access_log_dropped_total` (lines dropped because
    /// the writer fell behind). Once per [`AccessLog`].
    pub fn watch_access_log(&self, log: &AccessLog) {
        let (written, dropped) = log.counters();
        let mut r = self.inner.registry.lock();
        r.register(
            "sockjs_access_log_lines",
            "Access log lines written",
            written,
        );
        r.register(
            "sockjs_access_log_dropped",
            "Access log lines dropped: the writer fell behind and its queue was full",
            dropped,
        );
    }

    pub(crate) fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.inner.scrape_hooks.lock().push(Box::new(hook));
    }
}

/// One service's handles: the hot-path figures are plain atomic counters.
#[derive(Clone)]
pub(crate) struct ServiceMetrics {
    metrics: Metrics,
    service: String,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub dropped: Counter,
    pub heartbeat_timeouts: Counter,
    pub queued_bytes: Gauge,
    /// `sessions_opened` and `sessions_open` of each transport.
    by_transport: Arc<Resolved<&'static str, (Counter, Gauge)>>,
    /// `sessions_closed` of each close reason and code.
    by_close: Arc<Resolved<(&'static str, Option<u16>), Counter>>,
}

impl ServiceMetrics {
    /// The opened counter and the open gauge of `transport`.
    fn transport_handles(&self, transport: &'static str) -> (Counter, Gauge) {
        let families = &self.metrics.inner;
        self.by_transport.get(transport, || {
            let labels = TransportLabels {
                service: self.service.clone(),
                transport: transport.to_owned(),
            };
            let opened = families.sessions_opened.get_or_create(&labels).clone();
            let open = families.sessions_open.get_or_create(&labels).clone();
            (opened, open)
        })
    }

    pub fn session_opened(&self, transport: &'static str) {
        let (opened, open) = self.transport_handles(transport);
        opened.inc();
        open.inc();
    }

    pub fn session_closed(&self, transport: &'static str, reason: Option<&CloseReason>) {
        self.transport_handles(transport).1.dec();
        let key = match reason {
            Some(CloseReason::Application { code, .. }) => ("application", Some(*code)),
            Some(CloseReason::Client { code, .. }) => ("client", Some(*code)),
            Some(CloseReason::Interrupted) => ("interrupted", Some(1002)),
            Some(CloseReason::Timeout) => ("timeout", None),
            Some(CloseReason::SendTimeout) => ("send_timeout", Some(4008)),
            None => ("unknown", None),
        };
        let closed = self.by_close.get(key, || {
            let labels = CloseLabels {
                service: self.service.clone(),
                reason: key.0.to_owned(),
                code: key.1.map(|code| code.to_string()).unwrap_or_default(),
            };
            self.metrics
                .inner
                .sessions_closed
                .get_or_create(&labels)
                .clone()
        });
        closed.inc();
    }

    pub fn info_answered(&self, seconds: f64) {
        self.metrics
            .inner
            .info_latency
            .get_or_create(&ServiceLabels {
                service: self.service.clone(),
            })
            .observe(seconds);
    }

    /// A relay opened its upstream connection in `seconds`.
    pub fn relay_connected(&self, seconds: f64) {
        let labels = ServiceLabels {
            service: self.service.clone(),
        };
        let f = &self.metrics.inner;
        f.relay_connects.get_or_create(&labels).inc();
        f.relay_connect_latency
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// A request for a session not held here was routed with `outcome`.
    pub fn cluster_routed(&self, outcome: &str) {
        self.metrics
            .inner
            .cluster_routes
            .get_or_create(&OutcomeLabels {
                service: self.service.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Redis answered an owner lookup in `seconds`.
    pub fn cluster_route_answered(&self, seconds: f64) {
        self.metrics
            .inner
            .cluster_route_latency
            .get_or_create(&ServiceLabels {
                service: self.service.clone(),
            })
            .observe(seconds);
    }

    /// A forwarded receiver's stream from its owner broke off.
    pub fn cluster_stream_broken(&self) {
        self.metrics
            .inner
            .cluster_streams_broken
            .get_or_create(&ServiceLabels {
                service: self.service.clone(),
            })
            .inc();
    }

    /// A relay's upstream connection failed at `stage` (`connect` or `relay`).
    pub fn relay_failed(&self, stage: &str) {
        self.metrics
            .inner
            .relay_failures
            .get_or_create(&StageLabels {
                service: self.service.clone(),
                stage: stage.to_owned(),
            })
            .inc();
    }

    pub fn messages_in(&self, messages: &[String]) {
        self.messages_in.inc_by(messages.len() as u64);
        self.bytes_in
            .inc_by(messages.iter().map(|m| m.len() as u64).sum());
    }

    pub fn messages_out<M: AsRef<str>>(&self, messages: &[M]) {
        self.messages_out.inc_by(messages.len() as u64);
        self.bytes_out
            .inc_by(messages.iter().map(|m| m.as_ref().len() as u64).sum());
    }
}

/// Metric handles resolved once per label set: a session's open and close
/// and a response's status then cost a short scan and an atomic add, not
/// label strings built, hashed and looked up under the family's lock. The
/// first [`RESOLVED_SETS`] label sets are kept (a client picks its close
/// code, so there could be thousands); any later one goes to the family.
struct Resolved<K, M> {
    handles: Mutex<Vec<(K, M)>>,
}

const RESOLVED_SETS: usize = 32;

impl<K, M> Default for Resolved<K, M> {
    fn default() -> Self {
        Resolved {
            handles: Mutex::new(Vec::new()),
        }
    }
}

impl<K: Copy + PartialEq, M: Clone> Resolved<K, M> {
    /// The handle of `key`, made by `resolve` the first time.
    fn get(&self, key: K, resolve: impl FnOnce() -> M) -> M {
        let mut handles = self.handles.lock();
        if let Some((_, handle)) = handles.iter().find(|(k, _)| *k == key) {
            return handle.clone();
        }
        let handle = resolve();
        if handles.len() < RESOLVED_SETS {
            handles.push((key, handle.clone()));
        }
        handle
    }
}

/// VmRSS from /proc/self/status, where there is one.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_by_client(metrics: &Metrics, code: u16) -> Option<u64> {
        let line = format!(
            "sockjs_sessions_closed_total{{service=\"/echo\",reason=\"client\",code=\"{code}\"}} "
        );
        let text = metrics.render();
        let value = text.lines().find_map(|l| l.strip_prefix(line.as_str()))?;
        value.trim().parse().ok()
    }

    #[test]
    fn label_sets_past_the_resolved_ones_are_counted_all_the_same() {
        let metrics = Metrics::default();
        let service = metrics.for_service("/echo");
        let codes: Vec<u16> = (0..RESOLVED_SETS as u16 + 8).map(|i| 4000 + i).collect();
        for _ in 0..2 {
            for &code in &codes {
                service.session_opened("websocket");
                let reason = CloseReason::Client {
                    code,
                    reason: String::new(),
                };
                service.session_closed("websocket", Some(&reason));
            }
        }
        for &code in &codes {
            assert_eq!(closed_by_client(&metrics, code), Some(2), "code {code}");
        }
        let open = "sockjs_sessions_open{service=\"/echo\",transport=\"websocket\"} 0";
        assert!(metrics.render().lines().any(|l| l == open));
    }
}
