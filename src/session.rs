//! The application's side of a session: the same on every transport.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::peer::Peer;
use crate::protocol::message::{OutMessage, SharedText};
use crate::protocol::session::{CloseReason, InboundEvent, SendError};
use crate::server::shared::{LockedSession, SharedSession};
use crate::server::waiting::{Event, ToWake};

/// A message for many sessions, such as a broadcast: its text is stored
/// once and escaped once, however many sessions it is queued in. Cheap to
/// clone.
#[derive(Clone)]
pub struct SharedMessage(Arc<SharedText>);

impl SharedMessage {
    /// A message of `text`, to send with [`Session::send_shared`] or
    /// [`Session::try_send_shared`].
    pub fn new(text: impl Into<String>) -> Self {
        SharedMessage(SharedText::new(text.into()))
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for SharedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One client connection, whatever transport carries it. Cheap to clone:
/// clones are handles to the same session (keep one in a broadcast list, say).
#[derive(Clone)]
pub struct Session {
    pub(crate) shared: Arc<SharedSession>,
}

impl Session {
    /// The next message from the client, or `None` once the session is
    /// closed and every message received before the close has been taken.
    pub async fn recv(&self) -> Option<String> {
        let event = self
            .shared
            .wait_for(Event::Inbound, |core| {
                let event = core.take_inbound()?;
                Some((event, core.waiters.happened(Event::InboundRoom)))
            })
            .await;
        match event {
            InboundEvent::Message(message) => Some(message),
            InboundEvent::Closed(_) => None,
        }
    }

    /// Sends a message, waiting while the session's outgoing queue is full.
    /// Messages queue, in order, while no receiver is attached.
    pub async fn send(&self, message: impl Into<String>) -> Result<(), SendError> {
        self.send_out(OutMessage::Owned(message.into())).await
    }

    /// Sends a message if the outgoing queue has room now; never waits.
    pub fn try_send(&self, message: impl Into<String>) -> Result<(), SendError> {
        self.try_send_out(OutMessage::Owned(message.into()))
    }

    /// [`Session::send`] for a message that goes to many sessions: they
    /// share its one copy, and its frame text is escaped once for all.
    pub async fn send_shared(&self, message: &SharedMessage) -> Result<(), SendError> {
        self.send_out(OutMessage::Shared(message.0.clone())).await
    }

    /// [`Session::try_send`] for a message that goes to many sessions.
    pub fn try_send_shared(&self, message: &SharedMessage) -> Result<(), SendError> {
        self.try_send_out(OutMessage::Shared(message.0.clone()))
    }

    async fn send_out(&self, message: OutMessage) -> Result<(), SendError> {
        let mut message = Some(message);
        let offered = self
            .shared
            .wait_for(Event::OutgoingRoom, |core| offer(core, &mut message))
            .await;
        self.count_drops(offered)
    }

    fn try_send_out(&self, message: OutMessage) -> Result<(), SendError> {
        let mut message = Some(message);
        let offered = self.shared.change(|core| {
            let (offered, to_wake) = offer(core, &mut message).unzip();
            (offered, to_wake.unwrap_or_default())
        });
        offered.map_or(Err(SendError::Full), |offered| self.count_drops(offered))
    }

    fn count_drops(&self, offered: Offered) -> Result<(), SendError> {
        if offered.dropped > 0 {
            self.shared.metrics.dropped.inc_by(offered.dropped);
        }
        offered.result
    }

    /// Closes the session: queued messages still go out, then the client
    /// sees `code` and `reason` (use 3000-4999 for application codes).
    pub fn close(&self, code: u16, reason: &str) {
        self.shared.close(code, reason);
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.core.lock().close_reason().cloned()
    }

    /// Waits until the session is closed and returns why.
    pub async fn closed(&self) -> CloseReason {
        self.shared
            .wait_for(Event::Inbound, |core| {
                Some((core.close_reason().cloned()?, ToWake::default()))
            })
            .await
    }

    /// What the service's admission check attached to this session, if it
    /// is a `T` (see [`crate::SockJs::with_admission`]).
    pub fn data<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.shared.peer.data.as_ref()?.downcast_ref()
    }

    /// What is known about the client.
    pub fn peer(&self) -> &Peer {
        &self.shared.peer
    }

    /// An opaque id, unique in this process; never the SockJS session id.
    pub fn id(&self) -> ConnectionId {
        ConnectionId(self.shared.connection_id)
    }
}

/// What an offer to the outgoing queue did.
struct Offered {
    result: Result<(), SendError>,
    dropped: u64,
}

/// Queues `message` unless the queue is full (`None`: it is kept), with the
/// waiters that concern: the receiver, and the timer when the send
/// deadline moved earlier.
fn offer(core: &mut LockedSession, message: &mut Option<OutMessage>) -> Option<(Offered, ToWake)> {
    let len = message.as_ref().map_or(0, OutMessage::len);
    let dropped_before = core.dropped_messages();
    let result = match core.check_outgoing_room(len) {
        Err(SendError::Full) => return None,
        Err(error) => Err(error),
        Ok(()) => core.send(message.take()?, Instant::now()),
    };
    let dropped = core.dropped_messages() - dropped_before;
    let mut to_wake = ToWake::default();
    if result.is_ok() {
        to_wake = core.waiters.happened(Event::Frames);
    }
    if core.take_deadline_moved_earlier() {
        to_wake = to_wake.and(core.waiters.happened(Event::Deadline));
    }
    Some((Offered { result, dropped }, to_wake))
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id())
            .field("transport", &self.peer().transport())
            .finish()
    }
}

/// An opaque connection id for the application's own bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
