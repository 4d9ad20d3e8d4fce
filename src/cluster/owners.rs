//! Owners this node forwarded to lately, so that a session's next requests
//! skip the routing script: Redis is shared by every node, and each request
//! that crosses nodes would otherwise cost it one script.
//!
//! An entry may be stale (the owner died, or the session ended there). That
//! is safe: a forward to a dead owner fails to connect, and an owner that no
//! longer holds the session answers `421`; either way the entry is
//! forgotten and the request is routed through Redis again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long an owner is trusted without asking Redis.
pub const OWNER_CACHE_TTL: Duration = Duration::from_secs(2);
/// Bound on the entries of one service.
pub const OWNER_CACHE_MAX: usize = 65_536;

/// Where a session lives: the owner's node id and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub address: String,
}

#[derive(Default)]
pub struct OwnerCache {
    entries: Mutex<HashMap<String, (Owner, Instant)>>,
}

impl OwnerCache {
    /// The owner of `session_id` if it was learned less than
    /// [`OWNER_CACHE_TTL`] before `now`.
    pub fn get(&self, session_id: &str, now: Instant) -> Option<Owner> {
        let entries = self.entries.lock();
        let (owner, learned) = entries.get(session_id)?;
        (now.saturating_duration_since(*learned) < OWNER_CACHE_TTL).then(|| owner.clone())
    }

    /// Notes `owner` for `session_id`, learned at `now`. When full, stale
    /// entries go first, then all of them.
    pub fn put(&self, session_id: &str, owner: Owner, now: Instant) {
        let mut entries = self.entries.lock();
        if entries.len() >= OWNER_CACHE_MAX && !entries.contains_key(session_id) {
            entries.retain(|_, (_, learned)| {
                now.saturating_duration_since(*learned) < OWNER_CACHE_TTL
            });
            if entries.len() >= OWNER_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(session_id.to_owned(), (owner, now));
    }

    pub fn forget(&self, session_id: &str) {
        self.entries.lock().remove(session_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(node: &str) -> Owner {
        Owner {
            node: node.into(),
            address: format!("10.0.0.1:{}", node.len()),
        }
    }

    #[test]
    fn an_owner_is_trusted_for_the_ttl_only() {
        let cache = OwnerCache::default();
        let t0 = Instant::now();
        assert_eq!(cache.get("s", t0), None);
        cache.put("s", owner("a"), t0);
        assert_eq!(cache.get("s", t0), Some(owner("a")));
        assert_eq!(
            cache.get("s", t0 + OWNER_CACHE_TTL - Duration::from_millis(1)),
            Some(owner("a"))
        );
        assert_eq!(cache.get("s", t0 + OWNER_CACHE_TTL), None);
        assert_eq!(cache.get("other", t0), None);
    }

    #[test]
    fn a_new_owner_replaces_the_old_and_forget_removes_it() {
        let cache = OwnerCache::default();
        let t0 = Instant::now();
        cache.put("s", owner("a"), t0);
        cache.put("s", owner("bb"), t0);
        assert_eq!(cache.get("s", t0), Some(owner("bb")));
        cache.forget("s");
        assert_eq!(cache.get("s", t0), None);
    }

    #[test]
    fn a_full_cache_drops_stale_entries_first_then_everything() {
        let cache = OwnerCache::default();
        let t0 = Instant::now();
        for i in 0..OWNER_CACHE_MAX - 1 {
            cache.put(&format!("old{i}"), owner("a"), t0);
        }
        let t1 = t0 + OWNER_CACHE_TTL;
        cache.put("fresh", owner("a"), t1);
        assert_eq!(cache.len(), OWNER_CACHE_MAX);
        // Full: the stale ones go, the fresh one stays.
        cache.put("new", owner("a"), t1);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("fresh", t1), Some(owner("a")));

        for i in 0..OWNER_CACHE_MAX - 2 {
            cache.put(&format!("live{i}"), owner("a"), t1);
        }
        assert_eq!(cache.len(), OWNER_CACHE_MAX);
        // Full of fresh entries: bounded all the same.
        cache.put("one more", owner("a"), t1);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get("one more", t1), Some(owner("a")));
    }
}
