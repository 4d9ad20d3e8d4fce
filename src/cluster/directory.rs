//! The records in Redis: node leases and session ownership.
//!
//! - `sockjs:node:{id}` = the node's advertised address, expiring after
//!   [`NODE_LEASE`] unless refreshed: the node is alive while it exists.
//! - `sockjs:session:{prefix}:{sid}` = the owner's node id. Claimed atomically
//!   with the lookup (one script per request that misses the local registry),
//!   held by the owner while the session lives, deleted when it ends.
//!
//! A single Redis (or a primary with replicas), not Redis Cluster: the
//! routing script reads the owner's lease, whose key it cannot declare.

use std::future::Future;
use std::sync::LazyLock;

use redis::Script;

use super::{
    Cluster, Unavailable, CLAIM_TTL, NODE_LEASE, SESSION_RECORD_REFRESH, SESSION_RECORD_TTL,
};

const NODE_KEY_PREFIX: &str = "sockjs:node:";

pub(crate) fn node_key(node: &str) -> String {
    format!("{NODE_KEY_PREFIX}{node}")
}

pub(crate) fn session_key(prefix: &str, session_id: &str) -> String {
    format!("sockjs:session:{prefix}:{session_id}")
}

pub(crate) fn broadcast_channel(prefix: &str) -> String {
    format!("sockjs:broadcast:{prefix}")
}

/// Where a request for a session that is not in the local registry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Serve it here: the record names this node, or there was none (a
    /// receiver has just claimed it; a send finds no session).
    Here,
    /// The owner is alive at this address.
    Forward { node: String, address: String },
    /// The owner's lease is gone; the record now names this node, which
    /// answers with the owner-lost close frame.
    OwnerLost,
}

/// KEYS[1]: the session record. ARGV: this node's id, the claim's TTL in
/// seconds, the node key prefix, "1" to claim a missing record, this node's
/// address, the lease in seconds. A claim also renews this node's lease, so
/// right after Redis came back empty a new session is not declared lost
/// before the next lease refresh.
static ROUTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  return {'mine'}
end
if not owner then
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    redis.call('SET', ARGV[3] .. ARGV[1], ARGV[5], 'EX', ARGV[6])
    return {'claimed'}
  end
  return {'none'}
end
local address = redis.call('GET', ARGV[3] .. owner)
if address then
  return {'forward', owner, address}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', ARGV[3] .. ARGV[1], ARGV[5], 'EX', ARGV[6])
return {'lost', owner}
",
    )
});

/// KEYS[1]: the session record. ARGV: the owner that failed, this node, TTL.
static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
",
    )
});

/// KEYS[1]: the session record. ARGV: this node, TTL. Keeps or restores the
/// record while it names this node or nobody; 0 if another node has it.
static HOLD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
",
    )
});

/// KEYS[1]: the session record. ARGV: this node.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// Reads the routing script's answer.
fn parse_route(reply: &[String]) -> Result<Route, String> {
    match reply {
        [kind] if kind == "mine" || kind == "claimed" || kind == "none" => Ok(Route::Here),
        [kind, _] if kind == "lost" => Ok(Route::OwnerLost),
        [kind, node, address] if kind == "forward" => Ok(Route::Forward {
            node: node.clone(),
            address: address.clone(),
        }),
        other => Err(format!("unexpected routing answer {other:?}")),
    }
}

impl Cluster {
    /// Looks up the owner of a session that is not in the local registry;
    /// `claim` (a receiver) records this node as the owner if there is none.
    pub(crate) async fn route(
        &self,
        prefix: &str,
        session_id: &str,
        claim: bool,
    ) -> Result<Route, Unavailable> {
        let key = session_key(prefix, session_id);
        let address = self.advertised().unwrap_or_default().to_owned();
        let reply = self
            .run_idempotent(|mut connection| {
                let mut invocation = ROUTE.key(&key);
                invocation
                    .arg(self.node_id())
                    .arg(CLAIM_TTL.as_secs())
                    .arg(NODE_KEY_PREFIX)
                    .arg(if claim { "1" } else { "0" })
                    .arg(&address)
                    .arg(NODE_LEASE.as_secs());
                async move {
                    invocation
                        .invoke_async::<Vec<String>>(&mut connection)
                        .await
                }
            })
            .await?;
        parse_route(&reply).map_err(|error| {
            log::error!("cluster: {error}");
            Unavailable
        })
    }

    /// After a forward to `dead_node` could not connect: records this node
    /// as the owner if the record still names `dead_node`.
    pub(crate) async fn take_over(
        &self,
        prefix: &str,
        session_id: &str,
        dead_node: &str,
    ) -> Result<bool, Unavailable> {
        let key = session_key(prefix, session_id);
        let taken = self
            .run_idempotent(|mut connection| {
                let mut invocation = TAKE_OVER.key(&key);
                invocation
                    .arg(dead_node)
                    .arg(self.node_id())
                    .arg(CLAIM_TTL.as_secs());
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await?;
        Ok(taken == 1)
    }

    /// Holds the session's record while `session` (the session's timer,
    /// which ends when it expires) runs, then deletes it, unless
    /// `renewed()`: a new session with the same id (a request that raced
    /// the expiry) lives here and holds the record now.
    pub(crate) async fn hold(
        &self,
        prefix: &str,
        session_id: &str,
        session: impl Future<Output = ()>,
        renewed: impl FnOnce() -> bool,
    ) {
        let key = session_key(prefix, session_id);
        let refresh = async {
            let mut tick = tokio::time::interval(SESSION_RECORD_REFRESH);
            loop {
                // Also as soon as Redis is back from an outage, which it may
                // have restarted from empty.
                tokio::select! {
                    _ = tick.tick() => {}
                    () = self.inner.reachability.reached() => {}
                }
                self.hold_once(&key).await;
            }
        };
        tokio::select! {
            () = session => {}
            () = refresh => {}
        }
        if renewed() {
            return;
        }
        let _ = self
            .run_idempotent(|mut connection| {
                let mut invocation = RELEASE.key(&key);
                invocation.arg(self.node_id());
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
    }

    async fn hold_once(&self, key: &str) {
        let held = self
            .run_idempotent(|mut connection| {
                let mut invocation = HOLD.key(key);
                invocation
                    .arg(self.node_id())
                    .arg(SESSION_RECORD_TTL.as_secs());
                async move { invocation.invoke_async::<i64>(&mut connection).await }
            })
            .await;
        if held == Ok(0) {
            log::warn!("cluster: {key} is recorded for another node; keeping the local session");
        }
    }

    /// Sets this node's lease to its advertised address.
    pub(crate) async fn refresh_lease(&self) -> Result<(), Unavailable> {
        let Some(address) = self.advertised() else {
            return Ok(());
        };
        let key = node_key(self.node_id());
        self.run_idempotent(|mut connection| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key)
                .arg(address)
                .arg("EX")
                .arg(NODE_LEASE.as_secs());
            async move { cmd.query_async::<()>(&mut connection).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn key_names() {
        assert_eq!(node_key("ab12"), "sockjs:node:ab12");
        assert_eq!(session_key("/echo", "x_y"), "sockjs:session:/echo:x_y");
        assert_eq!(
            broadcast_channel("/broadcast"),
            "sockjs:broadcast:/broadcast"
        );
    }

    #[test]
    fn routing_answers() {
        for here in ["mine", "claimed", "none"] {
            assert_eq!(parse_route(&reply(&[here])), Ok(Route::Here));
        }
        assert_eq!(
            parse_route(&reply(&["forward", "n1", "10.0.0.1:8081"])),
            Ok(Route::Forward {
                node: "n1".into(),
                address: "10.0.0.1:8081".into()
            })
        );
        assert_eq!(parse_route(&reply(&["lost", "n1"])), Ok(Route::OwnerLost));
        assert!(parse_route(&reply(&["forward", "n1"])).is_err());
        assert!(parse_route(&[]).is_err());
    }
}
