//! Whether Redis answers, logged once when it stops and once when it is back.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

const UNKNOWN: u8 = 0;
const REACHABLE: u8 = 1;
const UNREACHABLE: u8 = 2;

pub(super) struct Reachability {
    state: AtomicU8,
    url: String,
    /// Woken when Redis answers again after an outage.
    back: Notify,
}

impl Reachability {
    pub fn new(url: String) -> Self {
        Reachability {
            state: AtomicU8::new(UNKNOWN),
            url,
            back: Notify::new(),
        }
    }

    /// Resolves when Redis answers again after an outage.
    pub async fn reached(&self) {
        self.back.notified().await;
    }

    /// A new primary is in use: the next command that succeeds counts as
    /// Redis being back (logged, and this node's records re-asserted there).
    pub fn primary_changed(&self) {
        self.state.store(UNREACHABLE, Ordering::Release);
    }

    pub fn is_reachable(&self) -> bool {
        self.state.load(Ordering::Acquire) == REACHABLE
    }

    /// Notes a command's outcome; the value if it succeeded.
    pub fn observe<T>(&self, result: Result<T, String>) -> Option<T> {
        let next = if result.is_ok() {
            REACHABLE
        } else {
            UNREACHABLE
        };
        let previous = self.state.swap(next, Ordering::AcqRel);
        match (&result, transition(previous, next)) {
            (Err(error), Some(Transition::Lost)) => log::error!(
                "cluster: Redis at {} is unreachable ({error}); new HTTP-transport sessions, \
                 forwards and broadcasts are refused until it is back",
                self.url
            ),
            (_, Some(Transition::Reached)) => {
                log::info!("cluster: Redis at {} is reachable", self.url);
                if previous == UNREACHABLE {
                    self.back.notify_waiters();
                }
            }
            _ => {}
        }
        result.ok()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Transition {
    Reached,
    Lost,
}

/// What to log when the state goes from `previous` to `next`: only changes,
/// so an outage is one line however many commands fail during it.
fn transition(previous: u8, next: u8) -> Option<Transition> {
    match (previous, next) {
        (REACHABLE, REACHABLE) | (UNREACHABLE, UNREACHABLE) => None,
        (_, REACHABLE) => Some(Transition::Reached),
        _ => Some(Transition::Lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_change() {
        assert_eq!(transition(UNKNOWN, REACHABLE), Some(Transition::Reached));
        assert_eq!(transition(UNKNOWN, UNREACHABLE), Some(Transition::Lost));
        assert_eq!(transition(REACHABLE, UNREACHABLE), Some(Transition::Lost));
        assert_eq!(
            transition(UNREACHABLE, REACHABLE),
            Some(Transition::Reached)
        );
        assert_eq!(transition(REACHABLE, REACHABLE), None);
        assert_eq!(transition(UNREACHABLE, UNREACHABLE), None);
    }

    #[test]
    fn observe_returns_the_value() {
        let r = Reachability::new("redis://x".into());
        assert!(!r.is_reachable());
        assert_eq!(r.observe::<u8>(Err("down".into())), None);
        assert!(!r.is_reachable());
        assert_eq!(r.observe(Ok(3)), Some(3));
        assert!(r.is_reachable());
    }
}
