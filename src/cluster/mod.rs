//! Cluster mode: several gateway nodes behind one balancer, with Redis as the
//! backplane (README, "Cluster").
//!
//! The node that creates an HTTP-transport session owns it: its state and its
//! handler stay there. Redis holds who owns which session id and which nodes
//! are alive; a request for a session owned elsewhere is forwarded to the
//! owner whole, its response streamed back unchanged. Nothing here runs
//! without a [`Cluster`], and nothing runs per message.

mod backplane;
mod broadcast;
pub(crate) mod directory;
pub(crate) mod forward;
mod health;
pub(crate) mod owners;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use backplane::Backplane;
pub use backplane::SENTINEL_SCHEME;
pub use broadcast::Fanout;
use health::Reachability;

/// How long a node's lease lives without a refresh: a node that dies has its
/// sessions declared lost at most this long after its last refresh.
pub const NODE_LEASE: Duration = Duration::from_secs(5);
/// How often a node refreshes its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(1);
/// How long a session's ownership record lives without a refresh. The owner
/// refreshes it every [`SESSION_RECORD_REFRESH`] while the session lives and
/// deletes it when the session ends; a dead node's records go by themselves.
pub const SESSION_RECORD_TTL: Duration = Duration::from_secs(600);
/// How often the owner refreshes a live session's ownership record.
pub const SESSION_RECORD_REFRESH: Duration = Duration::from_secs(200);
/// The record's life between its claim and the session's start: a request
/// refused after the claim (admission, session cap) leaves it this long.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// Bound on one Redis command, connection included.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The close frame of a session whose owner node is gone.
pub const OWNER_LOST: (u16, &str) = (4503, "Session owner lost");
/// The close of a broadcast member whose messages cannot reach the cluster.
pub const BACKPLANE_UNAVAILABLE: (u16, &str) = (4504, "Cluster backplane unavailable");
/// Marks a request forwarded by another node, naming the node it was meant
/// for. A node that holds the session serves it, as a single node would;
/// one that does not (a node restarted on a dead owner's address, or the
/// owner after the session ended) answers [`MISDIRECTED`], and the
/// forwarder looks again. A client that sets it gets no further than the
/// node it reached.
pub const FORWARDED_HEADER: &str = "x-sockjs-gateway-forwarded";
/// The last byte of a forwarded receiver's body that its owner ended on
/// purpose (never in a frame: not UTF-8). The forwarding node strips it;
/// a body that ends without it was cut off, the owner most likely dead.
/// Nodes of one cluster therefore run the same version.
pub const CLEAN_END: &[u8] = &[0xFF];
/// The answer to a forward for a session this node does not hold.
pub const MISDIRECTED: &str = "Not the session's owner.";

thread_local! {
    /// Per node id (a process may hold several clusters, as the tests do),
    /// with the generation of the primary it connects to.
    static THREAD_CONNECTIONS: RefCell<HashMap<String, (u64, ConnectionManager)>> =
        RefCell::default();
}

/// This node's place in a cluster. Clone it freely: clones share everything.
///
/// ```no_run
/// # async fn run() -> Result<(), String> {
/// use sockjs_gateway::{cluster::Cluster, Options, Session, SockJs};
/// let cluster = Cluster::new("redis://127.0.0.1:6379")?;
/// let echo = SockJs::new("/echo", Options::default(), |_session: Session| async {})
///     .with_cluster(&cluster);
/// // ... bind the server, then, with the address other nodes reach it at:
/// cluster.join("10.0.0.5:8081".into());
/// # let _ = echo; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    backplane: Backplane,
    config: ConnectionManagerConfig,
    advertise: OnceLock<String>,
    reachability: Reachability,
    /// Each broadcast channel's subscription state, for [`Cluster::subscribed`].
    subscriptions: parking_lot::Mutex<Vec<tokio::sync::watch::Receiver<bool>>>,
}

impl Cluster {
    /// A node of the cluster whose backplane is at `redis_url`: one Redis
    /// (`redis://HOST:PORT[/DB]`), or the primary that Redis Sentinel names
    /// (`redis+sentinel://HOST:PORT,HOST:PORT,.../MASTER[/DB]`, sentinels'
    /// port 26379 by default), followed through failovers. It connects
    /// lazily: an unreachable Redis is reported by [`Cluster::is_reachable`]
    /// and the logs, not here.
    pub fn new(redis_url: &str) -> Result<Cluster, String> {
        let url = check_redis_url(redis_url)?;
        let backplane = Backplane::open(&url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            // Each command is its own probe: fail it fast and let the next
            // one reconnect, rather than queue work behind retries.
            .set_number_of_retries(1);
        Ok(Cluster {
            inner: Arc::new(Inner {
                node_id: new_node_id(),
                backplane,
                config,
                advertise: OnceLock::new(),
                reachability: Reachability::new(url),
                subscriptions: Default::default(),
            }),
        })
    }

    /// Waits (at most `timeout`) until every broadcast channel of this node
    /// is subscribed; false if one is not. The gateway waits for this before
    /// it serves: a member that heard `o` before its node subscribed would
    /// miss what other nodes publish meanwhile.
    pub async fn subscribed(&self, timeout: Duration) -> bool {
        let subscriptions = self.inner.subscriptions.lock().clone();
        let all = futures::future::join_all(
            subscriptions
                .into_iter()
                .map(|mut s| async move { s.wait_for(|up| *up).await.is_ok() }),
        );
        tokio::time::timeout(timeout, all)
            .await
            .is_ok_and(|ready| ready.into_iter().all(|up| up))
    }

    /// This node's random id, new at every start.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The address other nodes forward to, once [`Cluster::join`] set it.
    pub fn advertised(&self) -> Option<&str> {
        self.inner.advertise.get().map(String::as_str)
    }

    /// Whether the last Redis command succeeded.
    pub fn is_reachable(&self) -> bool {
        self.inner.reachability.is_reachable()
    }

    /// Announces this node at `advertise` (`HOST:PORT`, plain HTTP, as the
    /// other nodes reach it) and keeps its lease until the process ends.
    /// Call it once the server is bound, from within the actix runtime.
    pub fn join(&self, advertise: String) {
        if self.inner.advertise.set(advertise).is_err() {
            return;
        }
        let cluster = self.clone();
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_REFRESH);
            loop {
                // Also at once when Redis is back, or a new primary answers.
                tokio::select! {
                    _ = tick.tick() => {}
                    () = cluster.inner.reachability.reached() => {}
                }
                let _ = cluster.refresh_lease().await;
            }
        });
    }

    /// Gives up this node's lease at once (on shutdown), so the other nodes
    /// declare its sessions lost without waiting for the lease to run out.
    pub async fn leave(&self) {
        let key = directory::node_key(self.node_id());
        let _ = self
            .run_idempotent(|mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("DEL")
                        .arg(key)
                        .query_async::<()>(&mut connection)
                        .await
                }
            })
            .await;
    }

    /// This thread's connection to the primary in use, with the primary's
    /// generation: a command is written, and its reply read, by the worker
    /// that awaits it. One connection shared by every worker lives on the
    /// thread that opened it, and each command would cross to that thread
    /// and back.
    async fn connection(&self) -> Result<(u64, ConnectionManager), String> {
        let inner = &self.inner;
        let primary = inner.backplane.primary().await?;
        THREAD_CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            if let Some((generation, connection)) = connections.get(&inner.node_id) {
                if *generation == primary.generation {
                    return Ok((*generation, connection.clone()));
                }
            }
            let connection =
                ConnectionManager::new_lazy_with_config(primary.client, inner.config.clone())
                    .map_err(|e| e.to_string())?;
            connections.insert(
                inner.node_id.clone(),
                (primary.generation, connection.clone()),
            );
            Ok((primary.generation, connection))
        })
    }

    /// One command, bounded by [`REDIS_TIMEOUT`].
    async fn attempt<T, F, Fut>(&self, attempt: &F) -> Attempt<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (generation, connection) = match self.connection().await {
            Ok(connection) => connection,
            Err(error) => return Attempt::Lost(error, None),
        };
        match tokio::time::timeout(REDIS_TIMEOUT, attempt(connection)).await {
            Ok(Ok(value)) => Attempt::Done(value),
            Ok(Err(error)) if connection_lost(&error) => {
                Attempt::Lost(error.to_string(), Some(generation))
            }
            Ok(Err(error)) => Attempt::Failed(error.to_string()),
            Err(_) => Attempt::TimedOut(Some(generation)),
        }
    }

    /// After an attempt on `generation` lost its primary: asks Sentinel
    /// again (nothing for a fixed address); true if the primary changed,
    /// in which case this node's records are re-asserted on the new one.
    async fn rediscover(&self, generation: Option<u64>) -> bool {
        let changed = self.inner.backplane.rediscover(generation).await;
        if changed {
            self.inner.reachability.primary_changed();
        }
        changed
    }

    /// Runs one command, noting reachability. Not retried: for commands
    /// that must not run twice (PUBLISH).
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unavailable> {
        let attempt = |mut connection: ConnectionManager| async move {
            cmd.query_async(&mut connection).await
        };
        let outcome = self.attempt(&attempt).await;
        if let Attempt::Lost(_, generation) | Attempt::TimedOut(generation) = &outcome {
            self.rediscover(*generation).await;
        }
        self.observe(outcome)
    }

    /// Runs an idempotent command or script, once more if the connection
    /// was found broken (the first command after Redis came back meets the
    /// old connection, and the manager reconnects only then) or the
    /// primary changed.
    async fn run_idempotent<T, F, Fut>(&self, attempt: F) -> Result<T, Unavailable>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut outcome = self.attempt(&attempt).await;
        let again = match &outcome {
            Attempt::Lost(_, generation) => {
                self.rediscover(*generation).await;
                true
            }
            // A primary that hangs is not tried twice, unless it was replaced.
            Attempt::TimedOut(generation) => self.rediscover(*generation).await,
            Attempt::Done(_) | Attempt::Failed(_) => false,
        };
        if again {
            outcome = self.attempt(&attempt).await;
        }
        self.observe(outcome)
    }

    fn observe<T>(&self, outcome: Attempt<T>) -> Result<T, Unavailable> {
        let result = match outcome {
            Attempt::Done(value) => Ok(value),
            Attempt::Failed(error) | Attempt::Lost(error, _) => Err(error),
            Attempt::TimedOut(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
        };
        self.inner.reachability.observe(result).ok_or(Unavailable)
    }
}

/// How one command went.
enum Attempt<T> {
    Done(T),
    /// Redis answered with an error.
    Failed(String),
    /// The connection broke, could not be made, or reached a replica
    /// (`READONLY`), on the primary of this generation (`None`: none known).
    Lost(String, Option<u64>),
    TimedOut(Option<u64>),
}

/// Whether `error` means the Redis in use is gone or no longer the primary:
/// a write to a replica (a demoted primary) is refused with `READONLY`.
fn connection_lost(error: &redis::RedisError) -> bool {
    error.is_connection_dropped()
        || error.is_io_error()
        || error.is_unrecoverable_error()
        || error.code() == Some("READONLY")
        || error.to_string().contains("READONLY")
}

/// Redis did not answer: the work that needs it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cluster backplane unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// A `redis://HOST[:PORT][/DB]` or
/// `redis+sentinel://HOST[:PORT],HOST[:PORT],.../MASTER[/DB]` URL, as given;
/// other schemes are refused (no TLS or sockets: the backplane is on the
/// nodes' private network).
pub fn check_redis_url(url: &str) -> Result<String, String> {
    if url.starts_with(SENTINEL_SCHEME) {
        backplane::SentinelUrl::parse(url)?;
        return Ok(url.to_owned());
    }
    let rest = url.strip_prefix("redis://").ok_or_else(|| {
        format!("`{url}`: the Redis URL must start with redis:// or {SENTINEL_SCHEME}")
    })?;
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
        return Err(format!("`{url}`: the Redis URL needs a host"));
    }
    redis::Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
    Ok(url.to_owned())
}

/// 64 random bits in hex, from the standard library's per-process random
/// hasher keys: enough to tell the nodes of one cluster apart.
fn new_node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_arithmetic() {
        // Several refreshes fit in one lease, so one late refresh (a busy
        // node, a slow Redis) does not declare a live node dead.
        assert!(NODE_LEASE >= LEASE_REFRESH * 4);
        assert!(SESSION_RECORD_TTL >= SESSION_RECORD_REFRESH * 3);
        assert!(CLAIM_TTL < SESSION_RECORD_TTL);
        assert!(REDIS_TIMEOUT <= LEASE_REFRESH);
    }

    #[test]
    fn redis_urls() {
        assert!(check_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_redis_url("redis://redis.internal/2").is_ok());
        assert!(check_redis_url("rediss://h:6379").is_err());
        assert!(check_redis_url("127.0.0.1:6379").is_err());
        assert!(check_redis_url("redis://").is_err());
        assert!(check_redis_url("redis://:6379").is_err());
        assert!(check_redis_url("redis+sentinel://10.0.0.1,10.0.0.2:26380/main").is_ok());
        assert!(check_redis_url("redis+sentinel://10.0.0.1").is_err());
    }

    #[test]
    fn node_ids_differ() {
        let a = new_node_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, new_node_id());
    }
}
