//! A protocol session shared between its receivers, its application handler
//! and its timer, with the wake-ups that connect them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::metrics::ServiceMetrics;
use crate::protocol::session::{Session as ProtocolSession, SessionConfig, TimeoutOutcome};
use crate::session::Peer;

pub(crate) struct SharedSession {
    pub core: Mutex<ProtocolSession>,
    /// Frames may be ready for the attached receiver. Woken with `notify_one`:
    /// there is at most one receiver, and a permit kept while it is busy
    /// means it never misses a frame.
    pub to_receiver: Notify,
    /// Inbound messages or the close may be ready for the application.
    pub to_application: Notify,
    /// The outgoing queue drained or the session closed.
    pub outgoing_room: Notify,
    /// The application took inbound messages or the session closed.
    pub inbound_room: Notify,
    /// A deadline may have moved earlier (`notify_one`, like `to_receiver`).
    pub to_timer: Notify,
    pub peer: Peer,
    pub connection_id: u64,
    /// What later requests must match (`Options::bind_session`).
    pub bound_to: Option<BindingKey>,
    pub metrics: Arc<ServiceMetrics>,
}

/// What a session's first request came with, when sessions are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindingKey {
    ClientIp(Option<std::net::IpAddr>),
    Cookie(Option<String>),
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

impl SharedSession {
    pub fn new(
        config: Arc<SessionConfig>,
        peer: Peer,
        bound_to: Option<BindingKey>,
        metrics: Arc<ServiceMetrics>,
    ) -> Arc<Self> {
        Arc::new(SharedSession {
            core: Mutex::new(ProtocolSession::new(config, Instant::now())),
            to_receiver: Notify::new(),
            to_application: Notify::new(),
            outgoing_room: Notify::new(),
            inbound_room: Notify::new(),
            to_timer: Notify::new(),
            peer,
            connection_id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            bound_to,
            metrics,
        })
    }

    /// Wakes everyone after a change that may concern all of them (a close,
    /// a receiver coming or going).
    pub fn wake_all(&self) {
        self.to_receiver.notify_one();
        self.to_application.notify_waiters();
        self.outgoing_room.notify_waiters();
        self.inbound_room.notify_waiters();
        self.to_timer.notify_one();
    }

    /// Closes the session from the application side.
    pub fn close(&self, code: u16, reason: &str) {
        if self.core.lock().close(code, reason) {
            self.wake_all();
        }
    }

    /// Drives the session's deadlines until it expires; `on_expired` then
    /// removes it from wherever it is registered.
    pub async fn run_timer(self: Arc<Self>, on_expired: impl FnOnce()) {
        loop {
            let woken = self.to_timer.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let deadline = self.core.lock().poll_timeout(Instant::now());
            match deadline {
                Some(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                        _ = woken => continue,
                    }
                }
                None if self.core.lock().is_expired() => break,
                None => {
                    woken.await;
                    continue;
                }
            }
            if self.handle_timeout() == TimeoutOutcome::Expired {
                break;
            }
        }
        on_expired();
    }

    /// Feeds the clock to the session and wakes whoever must act on it.
    pub fn handle_timeout(&self) -> TimeoutOutcome {
        let outcome = self.core.lock().handle_timeout(Instant::now());
        match outcome {
            TimeoutOutcome::Nothing => {}
            TimeoutOutcome::Heartbeat => self.to_receiver.notify_one(),
            TimeoutOutcome::Expired | TimeoutOutcome::SendTimedOut => self.wake_all(),
        }
        outcome
    }
}

/// Waits until `check` returns a value, re-checking after each wake-up of
/// `notify`. The waiter is registered before the second check, so no wake-up
/// is missed; the first check spares the registration when a value is there.
pub(crate) async fn wait_for<T>(notify: &Notify, mut check: impl FnMut() -> Option<T>) -> T {
    if let Some(value) = check() {
        return value;
    }
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(value) = check() {
            return value;
        }
        notified.await;
    }
}

/// The application's handler for a new session, wrapped: the client gets
/// `o` only once the handler has run up to its first wait, and when the
/// handler returns, or panics, a session it left open is closed. The caller
/// decides which task runs it.
pub(crate) async fn run_application<F>(shared: Arc<SharedSession>, run: F)
where
    F: Future<Output = ()>,
{
    let mut run = std::pin::pin!(AssertUnwindSafe(run).catch_unwind());
    let first = futures::poll!(run.as_mut());
    shared.core.lock().handle_application_started();
    shared.to_receiver.notify_one();
    let result = match first {
        Poll::Ready(result) => result,
        Poll::Pending => run.await,
    };
    match result {
        Ok(()) => shared.close(1000, "Normal closure"),
        Err(_) => {
            log::error!("a session handler panicked; its session is closed with 1011");
            shared.close(1011, "Internal error");
        }
    }
}
