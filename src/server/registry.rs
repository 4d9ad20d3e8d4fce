//! The sessions of one service, by SockJS session id (HTTP transports only:
//! a WebSocket is its own session and never registered).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::shared::SharedSession;

#[derive(Default)]
pub(crate) struct Registry {
    sessions: Mutex<HashMap<Box<str>, Arc<SharedSession>>>,
}

impl Registry {
    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<SharedSession>> {
        self.sessions
            .lock()
            .get(id)
            .filter(|s| !s.core.lock().is_expired())
            .cloned()
    }

    /// The live session with this id, or a new one from `create` (then
    /// `true`); `None` if there was none and `create` declined.
    pub fn get_or_create(
        &self,
        id: &str,
        create: impl FnOnce() -> Option<Arc<SharedSession>>,
    ) -> Option<(Arc<SharedSession>, bool)> {
        let mut sessions = self.sessions.lock();
        if let Some(existing) = sessions.get(id) {
            if !existing.core.lock().is_expired() {
                return Some((existing.clone(), false));
            }
        }
        let session = create()?;
        sessions.insert(id.into(), session.clone());
        Some((session, true))
    }

    /// Forgets `session`, unless the id already names a newer one.
    pub fn remove(&self, id: &str, session: &Arc<SharedSession>) {
        let mut sessions = self.sessions.lock();
        if sessions.get(id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            sessions.remove(id);
        }
    }
}
