//! A protocol session shared between its receivers, its application handler
//! and its timer, with the wake-ups that connect them.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::FutureExt;
use parking_lot::Mutex;

use super::connection::AbortHandle;
use super::receiver::transport_name;
use super::waiting::{Event, ToWake, Waiters};
use super::websocket_control::WebsocketControl;
use crate::metrics::ServiceMetrics;
use crate::peer::Peer;
use crate::protocol::frame::Frame;
use crate::protocol::route::ReceiverKind;
use crate::protocol::session::{
    Delivery, ReceiverId, Session as ProtocolSession, SessionConfig, TimeoutOutcome,
};

pub(crate) struct SharedSession {
    /// The protocol session and who waits on it, under one lock.
    pub core: Mutex<LockedSession>,
    pub peer: Peer,
    pub connection_id: u64,
    /// What later requests must match (`Options::bind_session`); boxed,
    /// as few services bind sessions.
    pub bound_to: Option<Box<BindingKey>>,
    pub metrics: Arc<ServiceMetrics>,
    /// The receiver transports that attached, one bit per [`ReceiverKind`].
    transports_used: AtomicU8,
}

/// What the session lock guards: the protocol session (its methods are
/// reached through `Deref`) and its waiters.
pub(crate) struct LockedSession {
    protocol: ProtocolSession,
    pub waiters: Waiters,
    /// The connection of the attached HTTP receiver, dropped if the session
    /// gives up on that receiver.
    pub receiver_connection: Option<(ReceiverId, AbortHandle)>,
    /// A WebSocket reader's requests to its writer (a pong, the end of the
    /// output); rare, so boxed.
    pub websocket_control: Option<Box<WebsocketControl>>,
}

impl Deref for LockedSession {
    type Target = ProtocolSession;

    fn deref(&self) -> &ProtocolSession {
        &self.protocol
    }
}

impl DerefMut for LockedSession {
    fn deref_mut(&mut self) -> &mut ProtocolSession {
        &mut self.protocol
    }
}

impl LockedSession {
    /// The next frame for receiver `id`, with the waiters it concerns: a
    /// batch of messages makes room in the outgoing queue, and a receiver's
    /// last frame changes the session's deadlines.
    #[inline]
    pub fn take_delivery(&mut self, id: ReceiverId) -> Option<(Delivery, ToWake)> {
        // Most looks find nothing: they need no clock.
        if !self.protocol.has_delivery(id) {
            return None;
        }
        let delivery = self.protocol.poll_delivery(id, Instant::now())?;
        if delivery.end {
            self.forget_connection(id);
        }
        let mut to_wake = ToWake::default();
        if matches!(delivery.frame, Frame::Messages(_)) {
            to_wake = self.waiters.happened(Event::OutgoingRoom);
        }
        // A receiver's last frame ends a WebSocket session, which its reader
        // must see; a polling receiver's moves the deadline only now and then.
        if delivery.end
            && (self.protocol.take_deadline_moved_earlier() || self.protocol.is_expired())
        {
            to_wake = to_wake.and(self.waiters.happened(Event::Deadline));
        }
        Some((delivery, to_wake))
    }

    /// Receiver `id` is done with its connection, which may now carry other requests.
    pub fn forget_connection(&mut self, id: ReceiverId) {
        if self
            .receiver_connection
            .as_ref()
            .is_some_and(|(r, _)| *r == id)
        {
            self.receiver_connection = None;
        }
    }
}

const RECEIVER_KINDS: [ReceiverKind; 5] = [
    ReceiverKind::XhrStreaming,
    ReceiverKind::XhrPolling,
    ReceiverKind::EventSource,
    ReceiverKind::HtmlFile,
    ReceiverKind::JsonpPolling,
];

fn kind_bit(kind: ReceiverKind) -> u8 {
    match kind {
        ReceiverKind::XhrStreaming => 0,
        ReceiverKind::XhrPolling => 1,
        ReceiverKind::EventSource => 2,
        ReceiverKind::HtmlFile => 3,
        ReceiverKind::JsonpPolling => 4,
    }
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
        bound_to: Option<Box<BindingKey>>,
        metrics: Arc<ServiceMetrics>,
    ) -> Arc<Self> {
        Arc::new(SharedSession {
            core: Mutex::new(LockedSession {
                protocol: ProtocolSession::new(config, Instant::now()),
                waiters: Waiters::default(),
                receiver_connection: None,
                websocket_control: None,
            }),
            peer,
            connection_id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            bound_to,
            metrics,
            transports_used: AtomicU8::new(0),
        })
    }

    /// A receiver of `kind` attached (once per request, not per message).
    pub fn used_transport(&self, kind: ReceiverKind) {
        self.transports_used
            .fetch_or(1 << kind_bit(kind), Ordering::Relaxed);
    }

    /// The transport that opened the session, then every other receiver
    /// transport that attached.
    pub fn transports_used(&self) -> Vec<&'static str> {
        let used = self.transports_used.load(Ordering::Relaxed);
        let mut names = vec![self.peer.transport];
        names.extend(
            RECEIVER_KINDS
                .iter()
                .filter(|&&kind| used & (1 << kind_bit(kind)) != 0)
                .map(|&kind| transport_name(kind))
                .filter(|&name| name != self.peer.transport),
        );
        names
    }

    /// Runs `change` under the session lock, then wakes the waiters it
    /// names once the lock is released.
    #[inline]
    pub fn change<T>(&self, change: impl FnOnce(&mut LockedSession) -> (T, ToWake)) -> T {
        let (value, to_wake) = change(&mut self.core.lock());
        to_wake.wake();
        value
    }

    /// Wakes everyone after a change that may concern all of them (a close,
    /// a receiver coming or going).
    pub fn wake_all(&self) {
        self.change(|core| ((), core.waiters.all_happened()));
    }

    /// Closes the session from the application side.
    pub fn close(&self, code: u16, reason: &str) {
        self.change(|core| match core.close(code, reason) {
            true => ((), core.waiters.all_happened()),
            false => ((), ToWake::default()),
        });
    }

    /// Waits until `check`, run under the session lock, returns a value; it
    /// runs again each time `event` happens. The waiters `check` names are
    /// woken once the lock is released.
    pub fn wait_for<'a, T: 'a>(
        &'a self,
        event: Event,
        mut check: impl FnMut(&mut LockedSession) -> Option<(T, ToWake)> + 'a,
    ) -> impl Future<Output = T> + 'a {
        std::future::poll_fn(move |cx| {
            let mut core = self.core.lock();
            match check(&mut core) {
                Some((value, to_wake)) => {
                    drop(core);
                    to_wake.wake();
                    Poll::Ready(value)
                }
                None => {
                    core.waiters.register(event, cx.waker());
                    Poll::Pending
                }
            }
        })
    }

    /// Completes once `event` has happened after the count `seen`
    /// (from `waiters.count(event)`, read when the session was last looked at).
    pub fn changed(&self, event: Event, seen: u32) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.core.lock().waiters.poll_changed(event, seen, cx))
    }

    /// Drives the session's deadlines until it expires; `on_expired` then
    /// removes it from wherever it is registered.
    pub async fn run_timer(self: Arc<Self>, on_expired: impl FnOnce()) {
        loop {
            let (deadline, expired, seen) = {
                let mut core = self.core.lock();
                let seen = core.waiters.count(Event::Deadline);
                (core.poll_timeout(Instant::now()), core.is_expired(), seen)
            };
            match deadline {
                Some(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                        _ = self.changed(Event::Deadline, seen) => continue,
                    }
                }
                None if expired => break,
                None => {
                    self.changed(Event::Deadline, seen).await;
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
        let mut given_up = None;
        let outcome = self.change(|core| {
            let outcome = core.handle_timeout(Instant::now());
            if outcome == TimeoutOutcome::SendTimedOut && !core.has_receiver() {
                // The receiver had its time to take the close frame.
                given_up = core.receiver_connection.take();
            }
            let to_wake = match outcome {
                TimeoutOutcome::Nothing => ToWake::default(),
                TimeoutOutcome::Heartbeat => core.waiters.happened(Event::Frames),
                TimeoutOutcome::Expired | TimeoutOutcome::SendTimedOut => {
                    core.waiters.all_happened()
                }
            };
            (outcome, to_wake)
        });
        if let Some((_, connection)) = given_up {
            log::debug!("a client that took nothing, not even its close, is dropped");
            connection.abort();
        }
        outcome
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
    shared.change(|core| {
        core.handle_application_started();
        ((), core.waiters.happened(Event::Frames))
    });
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
