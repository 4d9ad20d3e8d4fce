//! The session state machine shared by every transport (PROTOCOL.md section 3).
//!
//! It owns no sockets and reads no clock: the driver feeds it events
//! (`attach_receiver`, `detach_receiver`, `handle_*`, application commands)
//! with the current time, and takes out what must happen (`poll_delivery`,
//! `take_inbound`, `poll_timeout`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{self, Frame};
use super::message::OutMessage;

/// Per-session timings and bounds.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Idle time after which an attached receiver gets `h`; `None` turns
    /// heartbeats off.
    pub heartbeat_delay: Option<Duration>,
    /// How long a session lives with no receiver before it is closed and forgotten.
    pub disconnect_delay: Duration,
    /// Bytes of frames after which a streaming receiver ends its response.
    pub response_limit: usize,
    /// Bound on messages waiting for a receiver, in bytes of [`message_cost`].
    pub max_queued_bytes: usize,
    /// Bound on messages received but not yet taken by the application, in
    /// bytes of [`message_cost`].
    pub max_inbound_bytes: usize,
    /// How long queued messages may wait for the client to take them before
    /// the session is closed as too slow; `None` waits for ever.
    pub send_timeout: Option<Duration>,
    /// What a full outgoing queue does to a new message.
    pub overflow: Overflow,
}

/// What happens when the application sends into a full outgoing queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The sender waits (`try_send` fails); a client that drains nothing for
    /// `send_timeout` gets its session closed.
    #[default]
    Close,
    /// The oldest queued messages are dropped to make room, and counted:
    /// for feeds where only the latest value matters.
    DropOldest,
}

/// The most one frame carries, in bytes of [`message_cost`] (unless a
/// single message costs more).
pub const MAX_FRAME_BATCH_BYTES: usize = 64 * 1024;

/// A written batch's buffer is reused by the queue only up to this many
/// messages: a burst's large one is let go.
const REUSED_BATCH_MESSAGES: usize = 16;

/// What a queued message costs beyond its text, so that every bound counts
/// memory and not what a message claims: an empty string is no free ride.
/// It covers the `String` header (24 bytes) in its queue slot, the same
/// header again in the `Vec` that carries it on (the decoded payload, the
/// frame's batch), and the allocator's header and rounding of the text's
/// heap block (16).
pub const MESSAGE_OVERHEAD: usize = 64;

/// What a message of `text_len` bytes costs in a queue.
#[inline]
pub const fn message_cost(text_len: usize) -> usize {
    MESSAGE_OVERHEAD + text_len
}

/// What these messages cost in a queue, all together.
#[inline]
pub fn messages_cost<M: AsRef<str>>(messages: &[M]) -> usize {
    messages.len() * MESSAGE_OVERHEAD + messages.iter().map(|m| m.as_ref().len()).sum::<usize>()
}

/// How long a client closed as too slow (4008) has to take its close frame
/// before its receiver is let go; the transport then gives its connection
/// as long again to end before dropping it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The close a session gets when its client takes nothing for `send_timeout`.
pub const SEND_TIMEOUT_CODE: u16 = 4008;
/// The reason that goes with [`SEND_TIMEOUT_CODE`].
pub const SEND_TIMEOUT_REASON: &str = "Send timeout";

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            heartbeat_delay: Some(Duration::from_secs(25)),
            disconnect_delay: Duration::from_secs(5),
            response_limit: 128 * 1024,
            max_queued_bytes: 1024 * 1024,
            max_inbound_bytes: 1024 * 1024,
            send_timeout: Some(Duration::from_secs(10)),
            overflow: Overflow::Close,
        }
    }
}

/// How a receiver carries frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverMode {
    /// One frame, then the response ends (`xhr`, `jsonp`).
    Polling,
    /// Frames until `response_limit` bytes (`xhr_streaming`, `eventsource`, `htmlfile`).
    Streaming,
    /// Frames for as long as the connection lives (both WebSockets).
    Websocket,
}

/// Names one attachment of a receiver, so a stale one cannot act on a newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverId(u64);

/// The answer to a receiver that asks to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// The receiver is the session's one receiver now, under this id.
    Attached(ReceiverId),
    /// Write this frame and end the response; the session is not disturbed.
    Refused(Frame),
}

/// A frame for the attached receiver; after it, `end` says to end the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The frame to write.
    pub frame: Frame,
    /// Whether to end the response after it.
    pub end: bool,
}

/// How a receiver went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// Its response ended normally.
    Finished,
    /// The client's connection dropped under it.
    Interrupted,
}

/// Why a session closed, as the application learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it with this code and reason.
    Application {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The client closed its WebSocket with this code and reason.
    Client {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The client's connection dropped under an attached receiver.
    Interrupted,
    /// No receiver came for `disconnect_delay`.
    Timeout,
    /// The client took none of the queued messages for `send_timeout`.
    SendTimeout,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Open: messages flow both ways.
    Open,
    /// Closed, with messages still to deliver before the close frame.
    Closing,
    /// Closed, with nothing left to deliver but the close frame.
    Closed,
}

/// Why the application's message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The session is closed; the message will never be delivered.
    Closed,
    /// The outgoing queue is at its bound; try again once it drains.
    Full,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "session closed",
            SendError::Full => "outgoing queue full",
        })
    }
}

impl std::error::Error for SendError {}

/// Why inbound messages cannot be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundRefusal {
    /// The session is closed: the messages are dropped, and a send that
    /// brought them is answered as delivered (they raced the close frame,
    /// which the client's receiver brings; a failed send would make
    /// sockjs-client close with 1006 in place of the session's own code).
    Closed,
    /// The application has not taken earlier messages yet; retry when it has.
    Full,
}

/// What the application takes next from the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundEvent {
    /// A message from the client.
    Message(String),
    /// No message is left and the session is closed.
    Closed(CloseReason),
}

/// What a clock tick changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutOutcome {
    /// Nothing is due.
    Nothing,
    /// A heartbeat is ready for the attached receiver.
    Heartbeat,
    /// `disconnect_delay` passed with no receiver: the session is closed and
    /// must now be forgotten.
    Expired,
    /// The client took nothing for `send_timeout`: the session is now closed.
    SendTimedOut,
}

/// Application messages and their bytes (text only, no framing), each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages from the client, handed to the application.
    pub messages_in: u64,
    /// Bytes of those messages.
    pub bytes_in: u64,
    /// Messages to the client, taken out of the queue by a receiver.
    pub messages_out: u64,
    /// Bytes of those messages.
    pub bytes_out: u64,
}

#[derive(Debug)]
struct Receiver {
    id: ReceiverId,
    mode: ReceiverMode,
    bytes_written: usize,
}

#[derive(Debug)]
struct Closure {
    reason: CloseReason,
    frame: Frame,
}

/// One SockJS session, whatever carries it.
#[derive(Debug)]
pub struct Session {
    /// Shared by every session of a service.
    config: Arc<SessionConfig>,
    application_started: bool,
    open_sent: bool,
    outgoing: VecDeque<OutMessage>,
    queued_bytes: usize,
    /// When the outgoing queue last went from empty to non-empty.
    queued_since: Option<Instant>,
    /// The deadline last handed out by `poll_timeout`, which the driver sleeps on.
    armed_deadline: Option<Instant>,
    /// A new deadline came before `armed_deadline`: the driver must look again.
    deadline_moved_earlier: bool,
    /// The send deadline the driver was last asked to look again for, held
    /// in `poll_timeout`'s answer until it passes even if the queue drains
    /// first: the sends after it, whose deadlines come later, then need no
    /// driver at all (a broadcast member's queue drains between messages).
    send_deadline_woken: Option<Instant>,
    /// When the driver first saw the session closed.
    closed_at: Option<Instant>,
    dropped_messages: u64,
    traffic: Traffic,
    inbound: VecDeque<String>,
    inbound_bytes: usize,
    receiver: Option<Receiver>,
    next_receiver_id: u64,
    heartbeat_due: Option<Instant>,
    heartbeat_pending: bool,
    disconnect_at: Option<Instant>,
    /// Boxed: most sessions are open, and every open one would carry its room.
    closure: Option<Box<Closure>>,
    expired: bool,
}

impl Session {
    /// A new session with no receiver yet.
    pub fn new(config: impl Into<Arc<SessionConfig>>, now: Instant) -> Self {
        let config = config.into();
        let disconnect_at = Some(now + config.disconnect_delay);
        Session {
            config,
            application_started: false,
            open_sent: false,
            outgoing: VecDeque::new(),
            queued_bytes: 0,
            queued_since: None,
            armed_deadline: None,
            deadline_moved_earlier: false,
            send_deadline_woken: None,
            closed_at: None,
            dropped_messages: 0,
            traffic: Traffic::default(),
            inbound: VecDeque::new(),
            inbound_bytes: 0,
            receiver: None,
            next_receiver_id: 0,
            heartbeat_due: None,
            heartbeat_pending: false,
            disconnect_at,
            closure: None,
            expired: false,
        }
    }

    /// Where the session is in its life.
    pub fn phase(&self) -> Phase {
        match (&self.closure, self.outgoing.is_empty()) {
            (None, _) => Phase::Open,
            (Some(_), false) => Phase::Closing,
            (Some(_), true) => Phase::Closed,
        }
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closure.as_ref().map(|c| &c.reason)
    }

    /// True once `disconnect_delay` has passed with no receiver.
    pub fn is_expired(&self) -> bool {
        self.expired
    }

    /// Whether a receiver is attached now.
    pub fn has_receiver(&self) -> bool {
        self.receiver.is_some()
    }

    /// What the outgoing messages waiting for a receiver cost, in bytes of
    /// [`message_cost`].
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Messages dropped by [`Overflow::DropOldest`] so far.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages
    }

    /// Messages and bytes carried so far, each way.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// When the driver first saw the session closed (see [`Session::poll_timeout`]).
    pub fn closed_at(&self) -> Option<Instant> {
        self.closed_at
    }

    /// A receiver asks to carry this session's frames.
    pub fn attach_receiver(&mut self, mode: ReceiverMode, now: Instant) -> Attach {
        if self.receiver.is_some() {
            return Attach::Refused(frame::another_connection_open());
        }
        if let Some(closure) = &self.closure {
            if self.open_sent && self.outgoing.is_empty() {
                return Attach::Refused(closure.frame.clone());
            }
        }
        let id = ReceiverId(self.next_receiver_id);
        self.next_receiver_id += 1;
        self.receiver = Some(Receiver {
            id,
            mode,
            bytes_written: 0,
        });
        self.disconnect_at = None;
        self.heartbeat_due = self.config.heartbeat_delay.map(|d| now + d);
        self.heartbeat_pending = false;
        self.note_deadline(self.heartbeat_due);
        Attach::Attached(id)
    }

    /// The receiver `id` went away. A dropped connection closes the session
    /// as interrupted.
    pub fn detach_receiver(&mut self, id: ReceiverId, how: Detach, now: Instant) {
        let Some(mode) = self
            .receiver
            .as_ref()
            .filter(|r| r.id == id)
            .map(|r| r.mode)
        else {
            return;
        };
        self.release_receiver(now);
        if how == Detach::Interrupted || mode == ReceiverMode::Websocket {
            self.close_with(CloseReason::Interrupted, frame::connection_interrupted());
        }
    }

    /// Frees the receiver slot. A WebSocket session has only the one
    /// connection, so it ends with it; others wait `disconnect_delay` for the next.
    fn release_receiver(&mut self, now: Instant) {
        let mode = self.receiver.take().map(|r| r.mode);
        self.heartbeat_due = None;
        self.heartbeat_pending = false;
        if mode == Some(ReceiverMode::Websocket) {
            self.expired = true;
            self.disconnect_at = None;
        } else {
            self.disconnect_at = Some(now + self.config.disconnect_delay);
            self.note_deadline(self.disconnect_at);
        }
    }

    /// A deadline was set. Only one before the armed deadline needs the
    /// driver: a polling client's receivers come and go with every request,
    /// and each sets a deadline later than the one already armed.
    fn note_deadline(&mut self, deadline: Option<Instant>) {
        if let Some(deadline) = deadline {
            if self.armed_deadline.is_none_or(|armed| deadline < armed) {
                self.deadline_moved_earlier = true;
            }
        }
    }

    /// Whether receiver `id` has a frame to take: a cheap look, as a
    /// receiver asks each time its connection could write.
    #[inline]
    pub fn has_delivery(&self, id: ReceiverId) -> bool {
        self.receiver.as_ref().map(|r| r.id) == Some(id)
            && if self.open_sent {
                !self.outgoing.is_empty() || self.closure.is_some() || self.heartbeat_pending
            } else {
                self.application_started
            }
    }

    /// The emptied buffer of a batch the receiver has written, for the
    /// outgoing queue to reuse when it has none: a busy session then needs
    /// no allocation per batch, and an idle one holds one small buffer.
    pub fn reuse_batch_buffer(&mut self, mut spent: Vec<OutMessage>) {
        if self.outgoing.capacity() == 0 && spent.capacity() <= REUSED_BATCH_MESSAGES {
            spent.clear();
            self.outgoing = VecDeque::from(spent);
        }
    }

    /// The next frame for receiver `id`, if one is ready.
    pub fn poll_delivery(&mut self, id: ReceiverId, now: Instant) -> Option<Delivery> {
        if !self.has_delivery(id) {
            return None;
        }
        let frame = if !self.open_sent {
            self.open_sent = true;
            Frame::Open
        } else if !self.outgoing.is_empty() {
            Frame::Messages(self.take_batch(now))
        } else if let Some(closure) = &self.closure {
            closure.frame.clone()
        } else {
            Frame::Heartbeat
        };
        let receiver = self.receiver.as_mut()?;
        let end = matches!(frame, Frame::Close { .. })
            || match receiver.mode {
                ReceiverMode::Polling => true,
                ReceiverMode::Streaming => {
                    receiver.bytes_written += frame.encoded_len();
                    receiver.bytes_written >= self.config.response_limit
                }
                ReceiverMode::Websocket => false,
            };
        self.heartbeat_pending = false;
        if end {
            self.release_receiver(now);
        } else {
            self.heartbeat_due = self.config.heartbeat_delay.map(|d| now + d);
        }
        Some(Delivery { frame, end })
    }

    /// The application has seen the new session (its handler ran up to its
    /// first wait). The open frame waits for this, so an application that
    /// registers the session somewhere has done so before the client hears `o`.
    pub fn handle_application_started(&mut self) {
        self.application_started = true;
    }

    /// The client already had this session's open frame from elsewhere (an
    /// earlier owner in a cluster): no `o` is sent here.
    pub fn handle_opened_elsewhere(&mut self) {
        self.application_started = true;
        self.open_sent = true;
    }

    /// Queued messages for one frame, in order: all of them, or as many as
    /// cost at most [`MAX_FRAME_BATCH_BYTES`] (always at least one).
    /// Transports buffer a few frames each, so this bounds what a stalled
    /// client can hold beyond the queue.
    fn take_batch(&mut self, now: Instant) -> Vec<OutMessage> {
        if self.queued_bytes <= MAX_FRAME_BATCH_BYTES {
            let count = self.outgoing.len();
            self.count_out(count, self.queued_bytes);
            self.queued_bytes = 0;
            self.queued_since = None;
            // The queue's own buffer becomes the batch (no allocation, at
            // most a move in place), until the receiver gives it back
            // (`reuse_batch_buffer`).
            return Vec::from(std::mem::take(&mut self.outgoing));
        }
        let mut taken = 0;
        let mut cost = 0;
        for next in &self.outgoing {
            let next = message_cost(next.len());
            if taken > 0 && cost + next > MAX_FRAME_BATCH_BYTES {
                break;
            }
            cost += next;
            taken += 1;
        }
        self.queued_bytes -= cost;
        self.count_out(taken, cost);
        // What is left has waited since now, as far as the send timeout goes:
        // the client just took something.
        self.queued_since = (taken < self.outgoing.len()).then_some(now);
        self.outgoing.drain(..taken).collect()
    }

    /// Counts `count` messages costing `cost` in all as gone out: their
    /// bytes are the cost less the overhead, so nothing is summed again.
    #[inline]
    fn count_out(&mut self, count: usize, cost: usize) {
        self.traffic.messages_out += count as u64;
        self.traffic.bytes_out += (cost - count * MESSAGE_OVERHEAD) as u64;
    }

    /// The application sends a message; it waits in order for a receiver.
    pub fn send(&mut self, message: OutMessage, now: Instant) -> Result<(), SendError> {
        self.check_outgoing_room(message.len())?;
        let cost = message_cost(message.len());
        if self.config.overflow == Overflow::DropOldest {
            while !self.outgoing.is_empty()
                && self.queued_bytes + cost > self.config.max_queued_bytes
            {
                if let Some(dropped) = self.outgoing.pop_front() {
                    self.queued_bytes -= message_cost(dropped.len());
                    self.dropped_messages += 1;
                }
            }
        }
        if self.outgoing.is_empty() {
            self.queued_since = Some(now);
            // Only the first queued message sets a deadline, and only one
            // earlier than the armed one needs the driver: once per
            // `send_timeout` at most, not once per message.
            if let Some(deadline) = self.send_deadline() {
                if self.armed_deadline.is_none_or(|armed| deadline < armed) {
                    self.deadline_moved_earlier = true;
                    self.send_deadline_woken = Some(deadline);
                }
            }
        }
        self.queued_bytes += cost;
        self.outgoing.push_back(message);
        Ok(())
    }

    /// Whether a message of `text_len` bytes can be queued now (it costs
    /// [`message_cost`]). The queue always takes one message when it is
    /// empty, so a message larger than the bound still goes; under
    /// [`Overflow::DropOldest`] it always takes one.
    pub fn check_outgoing_room(&self, text_len: usize) -> Result<(), SendError> {
        if self.closure.is_some() {
            Err(SendError::Closed)
        } else if self.config.overflow == Overflow::Close
            && !self.outgoing.is_empty()
            && self.queued_bytes + message_cost(text_len) > self.config.max_queued_bytes
        {
            Err(SendError::Full)
        } else {
            Ok(())
        }
    }

    /// The application closes the session. Queued messages still go out,
    /// then `c[code,"reason"]` to this and every later receiver.
    /// Returns false if the session was already closed.
    pub fn close(&mut self, code: u16, reason: &str) -> bool {
        let frame = Frame::Close {
            code,
            reason: reason.to_owned(),
        };
        let reason = CloseReason::Application {
            code,
            reason: reason.to_owned(),
        };
        self.close_with(reason, frame)
    }

    /// The client closed its WebSocket with this code and reason.
    pub fn handle_client_close(&mut self, code: u16, reason: &str) -> bool {
        let frame = Frame::Close {
            code,
            reason: reason.to_owned(),
        };
        let reason = CloseReason::Client {
            code,
            reason: reason.to_owned(),
        };
        self.close_with(reason, frame)
    }

    fn close_with(&mut self, reason: CloseReason, frame: Frame) -> bool {
        if self.closure.is_some() {
            return false;
        }
        self.closure = Some(Box::new(Closure { reason, frame }));
        true
    }

    /// Whether inbound messages costing `cost` (from [`messages_cost`]) can
    /// be taken now. An empty queue takes any one payload.
    pub fn check_inbound_room(&self, cost: usize) -> Result<(), InboundRefusal> {
        if self.closure.is_some() {
            Err(InboundRefusal::Closed)
        } else if self.inbound_bytes > 0
            && self.inbound_bytes + cost > self.config.max_inbound_bytes
        {
            Err(InboundRefusal::Full)
        } else {
            Ok(())
        }
    }

    /// Messages from the client, for the application, in order. Callers check
    /// [`Session::check_inbound_room`] first; a closed session drops them.
    pub fn handle_inbound(&mut self, messages: impl IntoIterator<Item = String>) {
        if self.closure.is_some() {
            return;
        }
        for message in messages {
            self.inbound_bytes += message_cost(message.len());
            self.traffic.messages_in += 1;
            self.traffic.bytes_in += message.len() as u64;
            self.inbound.push_back(message);
        }
    }

    /// The next message for the application; once none is left, the close
    /// reason if the session is closed.
    pub fn take_inbound(&mut self) -> Option<InboundEvent> {
        if let Some(message) = self.inbound.pop_front() {
            self.inbound_bytes -= message_cost(message.len());
            return Some(InboundEvent::Message(message));
        }
        self.close_reason().cloned().map(InboundEvent::Closed)
    }

    /// The clock reached `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> TimeoutOutcome {
        if self.expired {
            return TimeoutOutcome::Nothing;
        }
        if self.disconnect_at.is_some_and(|at| now >= at) {
            self.close_with(CloseReason::Timeout, frame::connection_interrupted());
            self.expired = true;
            return TimeoutOutcome::Expired;
        }
        if self.flush_deadline().is_some_and(|at| now >= at) {
            // The client takes nothing, not even the close: let the receiver
            // go, so the session is forgotten after `disconnect_delay`.
            self.release_receiver(now);
            return TimeoutOutcome::SendTimedOut;
        }
        if self.send_deadline().is_some_and(|at| now >= at) {
            let frame = Frame::Close {
                code: SEND_TIMEOUT_CODE,
                reason: SEND_TIMEOUT_REASON.to_owned(),
            };
            self.close_with(CloseReason::SendTimeout, frame);
            return TimeoutOutcome::SendTimedOut;
        }
        if let (Some(_), None, Some(due), Some(delay)) = (
            &self.receiver,
            &self.closure,
            self.heartbeat_due,
            self.config.heartbeat_delay,
        ) {
            if now >= due {
                // The next deadline is set even if the receiver has not taken
                // the last heartbeat yet, so the clock never stalls or spins.
                self.heartbeat_due = Some(now + delay);
                if !self.heartbeat_pending {
                    self.heartbeat_pending = true;
                    return TimeoutOutcome::Heartbeat;
                }
            }
        }
        TimeoutOutcome::Nothing
    }

    /// When [`Session::handle_timeout`] must next be called (at the latest:
    /// a call at which nothing is due does nothing). The driver sleeps until
    /// then, or until [`Session::take_deadline_moved_earlier`] says to ask
    /// again.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        self.deadline_moved_earlier = false;
        if self.closure.is_some() && self.closed_at.is_none() {
            self.closed_at = Some(now);
        }
        self.armed_deadline = if self.expired {
            None
        } else {
            let heartbeat = match (&self.receiver, &self.closure) {
                (Some(_), None) => self.heartbeat_due,
                _ => None,
            };
            self.send_deadline_woken = self.send_deadline_woken.filter(|&at| at > now);
            [
                heartbeat,
                self.disconnect_at,
                self.send_deadline(),
                self.flush_deadline(),
                self.send_deadline_woken,
            ]
            .into_iter()
            .flatten()
            .min()
        };
        self.armed_deadline
    }

    /// True once, after an application send, a receiver coming or a
    /// receiver going set a deadline earlier than the one last handed out
    /// by [`Session::poll_timeout`].
    pub fn take_deadline_moved_earlier(&mut self) -> bool {
        std::mem::take(&mut self.deadline_moved_earlier)
    }

    /// When a closed session whose receiver still has not taken its close
    /// frame gives up on that receiver.
    fn flush_deadline(&self) -> Option<Instant> {
        match (&self.receiver, self.closed_at, self.config.send_timeout) {
            // It has had its send timeout already.
            (Some(_), Some(closed_at), Some(_))
                if self.close_reason() == Some(&CloseReason::SendTimeout) =>
            {
                Some(closed_at + CLOSE_GRACE)
            }
            (Some(_), Some(closed_at), Some(timeout)) => Some(closed_at + timeout),
            _ => None,
        }
    }

    /// How long a client may take nothing before its session is given up.
    pub fn send_timeout(&self) -> Option<Duration> {
        self.config.send_timeout
    }

    /// When an open session whose client takes nothing is closed as too slow.
    fn send_deadline(&self) -> Option<Instant> {
        match (
            self.closure.is_none(),
            self.queued_since,
            self.config.send_timeout,
        ) {
            (true, Some(since), Some(timeout)) => Some(since + timeout),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARTBEAT: Duration = Duration::from_secs(25);
    const DISCONNECT: Duration = Duration::from_secs(5);

    fn config() -> SessionConfig {
        SessionConfig {
            response_limit: 20,
            // Two 5-byte messages.
            max_queued_bytes: 2 * message_cost(5),
            max_inbound_bytes: 2 * message_cost(5),
            ..SessionConfig::default()
        }
    }

    #[test]
    fn a_session_opened_elsewhere_and_closed_answers_only_its_close_frame() {
        let now = Instant::now();
        let mut session = Session::new(config(), now);
        session.handle_opened_elsewhere();
        session.close(4503, "Session owner lost");
        for _ in 0..2 {
            assert_eq!(
                session.attach_receiver(ReceiverMode::Polling, now),
                Attach::Refused(Frame::Close {
                    code: 4503,
                    reason: "Session owner lost".into()
                })
            );
        }
    }

    fn session() -> (Session, Instant) {
        let now = Instant::now();
        let mut session = Session::new(config(), now);
        session.handle_application_started();
        (session, now)
    }

    fn attach(session: &mut Session, mode: ReceiverMode, now: Instant) -> ReceiverId {
        match session.attach_receiver(mode, now) {
            Attach::Attached(id) => id,
            Attach::Refused(frame) => panic!("refused with {}", frame.encode()),
        }
    }

    fn encoded(delivery: Option<Delivery>) -> Option<(String, bool)> {
        delivery.map(|d| (d.frame.encode(), d.end))
    }

    fn frame(text: &str, end: bool) -> Option<(String, bool)> {
        Some((text.to_owned(), end))
    }

    #[test]
    fn first_receiver_gets_open_and_polling_ends_after_one_frame() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        assert_eq!(encoded(s.poll_delivery(r, now)), frame("o", true));
        assert!(!s.has_receiver());
        assert_eq!(
            s.poll_delivery(r, now),
            None,
            "an ended receiver gets nothing more"
        );
    }

    #[test]
    fn open_frame_waits_for_the_application_to_see_the_session() {
        let now = Instant::now();
        let mut s = Session::new(config(), now);
        let r = attach(&mut s, ReceiverMode::Polling, now);
        assert_eq!(s.poll_delivery(r, now), None);
        s.handle_application_started();
        assert_eq!(encoded(s.poll_delivery(r, now)), frame("o", true));
    }

    #[test]
    fn messages_queued_without_receiver_go_in_order_in_one_frame() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(r, now);
        s.send("a".into(), now).unwrap();
        s.send("b".into(), now).unwrap();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        assert_eq!(
            encoded(s.poll_delivery(r, now)),
            frame(r#"a["a","b"]"#, true)
        );
        assert_eq!(s.queued_bytes(), 0);
    }

    #[test]
    fn a_large_backlog_goes_out_in_bounded_frames_in_order() {
        let now = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                max_queued_bytes: 1024 * 1024,
                ..config()
            },
            now,
        );
        s.handle_application_started();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        let chunk = "x".repeat(10_000);
        for i in 0..20 {
            s.send(format!("{i:02}{chunk}").into(), now).unwrap();
        }
        let mut seen = Vec::new();
        while let Some(Delivery {
            frame: Frame::Messages(batch),
            ..
        }) = s.poll_delivery(r, now)
        {
            assert!(messages_cost(&batch) <= MAX_FRAME_BATCH_BYTES);
            seen.extend(batch.into_iter().map(|m| m.as_str()[..2].to_owned()));
        }
        let expected: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
        assert_eq!(seen, expected);
        assert_eq!(s.queued_bytes(), 0);
        s.send("one message larger than a batch".repeat(5_000).into(), now)
            .unwrap();
        assert!(
            matches!(s.poll_delivery(r, now), Some(Delivery { frame: Frame::Messages(b), .. }) if b.len() == 1)
        );
    }

    #[test]
    fn empty_messages_cost_their_overhead_and_fill_the_queue() {
        let now = Instant::now();
        let bound = 1024 * 1024;
        let mut s = Session::new(
            SessionConfig {
                max_queued_bytes: bound,
                ..config()
            },
            now,
        );
        s.handle_application_started();
        let mut queued = 0;
        while s.send(String::new().into(), now).is_ok() {
            queued += 1;
            assert!(queued <= 1_000_000, "a million empty strings never fill it");
        }
        assert_eq!(queued, bound / MESSAGE_OVERHEAD);
        assert_eq!(s.queued_bytes(), queued * MESSAGE_OVERHEAD);
        assert_eq!(s.check_outgoing_room(0), Err(SendError::Full));
    }

    #[test]
    fn empty_inbound_messages_fill_the_inbound_queue() {
        let (mut s, _) = session();
        let many = vec![String::new(); 349_524];
        assert_eq!(messages_cost(&many), 349_524 * MESSAGE_OVERHEAD);
        assert_eq!(
            s.check_inbound_room(messages_cost(&many)),
            Ok(()),
            "the first payload goes"
        );
        s.handle_inbound(many);
        assert_eq!(
            s.check_inbound_room(messages_cost(&[String::new()])),
            Err(InboundRefusal::Full),
            "and the next waits, however empty"
        );
        while let Some(InboundEvent::Message(_)) = s.take_inbound() {}
        assert_eq!(
            s.check_inbound_room(messages_cost(&[String::new()])),
            Ok(())
        );
    }

    #[test]
    fn a_frame_of_empty_messages_is_bounded_by_their_cost_in_order() {
        let now = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                max_queued_bytes: usize::MAX,
                ..config()
            },
            now,
        );
        s.handle_application_started();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        let total = 100_000;
        for i in 0..total {
            // Every thousandth one is numbered, to check the order.
            let message = if i % 1000 == 0 {
                i.to_string()
            } else {
                String::new()
            };
            s.send(message.into(), now).unwrap();
        }
        let mut seen = 0;
        let mut numbered = Vec::new();
        while let Some(Delivery {
            frame: frame @ Frame::Messages(_),
            ..
        }) = s.poll_delivery(r, now)
        {
            let Frame::Messages(batch) = &frame else {
                unreachable!()
            };
            assert!(messages_cost(batch) <= MAX_FRAME_BATCH_BYTES);
            assert!(frame.encoded_len() <= MAX_FRAME_BATCH_BYTES);
            numbered.extend(
                batch
                    .iter()
                    .filter(|m| !m.is_empty())
                    .map(|m| m.as_str().to_owned()),
            );
            seen += batch.len();
        }
        assert_eq!(seen, total);
        let expected: Vec<String> = (0..total).step_by(1000).map(|i| i.to_string()).collect();
        assert_eq!(numbered, expected);
    }

    #[test]
    fn polling_receiver_with_nothing_queued_waits() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(r, now);
        let r = attach(&mut s, ReceiverMode::Polling, now);
        assert_eq!(s.poll_delivery(r, now), None);
        s.send("x".into(), now).unwrap();
        assert_eq!(encoded(s.poll_delivery(r, now)), frame(r#"a["x"]"#, true));
    }

    #[test]
    fn second_receiver_is_refused_and_first_is_undisturbed() {
        let (mut s, now) = session();
        let first = attach(&mut s, ReceiverMode::Streaming, now);
        assert_eq!(
            s.attach_receiver(ReceiverMode::Polling, now),
            Attach::Refused(frame::another_connection_open())
        );
        assert_eq!(encoded(s.poll_delivery(first, now)), frame("o", false));
        s.send("x".into(), now).unwrap();
        assert_eq!(
            encoded(s.poll_delivery(first, now)),
            frame(r#"a["x"]"#, false)
        );
    }

    #[test]
    fn streaming_ends_once_frames_reach_the_response_limit() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        assert_eq!(encoded(s.poll_delivery(r, now)), frame("o", false)); // 1 byte
        s.send("123456789".into(), now).unwrap(); // a["123456789"] is 15 bytes: 16 < 20
        assert_eq!(s.poll_delivery(r, now).map(|d| d.end), Some(false));
        s.send("x".into(), now).unwrap(); // 7 more bytes: 23 >= 20
        assert_eq!(encoded(s.poll_delivery(r, now)), frame(r#"a["x"]"#, true));
        assert!(!s.has_receiver());
        assert_eq!(s.phase(), Phase::Open, "the session lives on");
    }

    #[test]
    fn response_limit_of_one_makes_streaming_poll() {
        let now = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                response_limit: 1,
                ..config()
            },
            now,
        );
        s.handle_application_started();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        assert_eq!(encoded(s.poll_delivery(r, now)), frame("o", true));
    }

    #[test]
    fn websocket_receiver_never_ends_by_size() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        s.send("a very long message indeed".into(), now).unwrap();
        assert_eq!(s.poll_delivery(r, now).map(|d| d.end), Some(false));
    }

    #[test]
    fn application_close_reaches_the_attached_receiver_after_queued_messages() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        s.poll_delivery(r, now);
        s.send("last".into(), now).unwrap();
        assert!(s.close(3000, "Go away!"));
        assert_eq!(s.phase(), Phase::Closing);
        assert_eq!(s.send("late".into(), now), Err(SendError::Closed));
        assert_eq!(
            encoded(s.poll_delivery(r, now)),
            frame(r#"a["last"]"#, false)
        );
        assert_eq!(
            encoded(s.poll_delivery(r, now)),
            frame(r#"c[3000,"Go away!"]"#, true)
        );
        assert_eq!(s.phase(), Phase::Closed);
    }

    #[test]
    fn closed_session_answers_every_later_receiver_with_its_close_frame() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(r, now);
        s.close(3000, "Go away!");
        let close = Frame::Close {
            code: 3000,
            reason: "Go away!".into(),
        };
        for _ in 0..3 {
            assert_eq!(
                s.attach_receiver(ReceiverMode::Polling, now),
                Attach::Refused(close.clone())
            );
        }
        assert!(!s.close(1000, "again"), "a session closes once");
    }

    #[test]
    fn a_session_closed_before_its_first_receiver_still_opens_first() {
        let (mut s, now) = session();
        s.close(3000, "Go away!");
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        assert_eq!(encoded(s.poll_delivery(r, now)), frame("o", false));
        assert_eq!(
            encoded(s.poll_delivery(r, now)),
            frame(r#"c[3000,"Go away!"]"#, true)
        );
    }

    #[test]
    fn dropped_receiver_interrupts_the_session() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(r, now);
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.detach_receiver(r, Detach::Interrupted, now);
        assert_eq!(s.close_reason(), Some(&CloseReason::Interrupted));
        assert_eq!(
            s.attach_receiver(ReceiverMode::Polling, now),
            Attach::Refused(frame::connection_interrupted())
        );
        assert_eq!(
            s.take_inbound(),
            Some(InboundEvent::Closed(CloseReason::Interrupted))
        );
    }

    #[test]
    fn a_websocket_session_ends_with_its_connection() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        s.detach_receiver(r, Detach::Finished, now);
        assert!(s.is_expired());
        assert_eq!(s.close_reason(), Some(&CloseReason::Interrupted));
        assert_eq!(s.poll_timeout(now), None);

        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        s.close(3000, "Go away!");
        assert_eq!(s.poll_delivery(r, now).map(|d| d.end), Some(true));
        assert!(s.is_expired(), "after its close frame");
    }

    #[test]
    fn a_stale_receiver_cannot_detach_a_newer_one() {
        let (mut s, now) = session();
        let old = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(old, now);
        let new = attach(&mut s, ReceiverMode::Polling, now);
        s.detach_receiver(old, Detach::Interrupted, now);
        assert!(s.has_receiver());
        assert_eq!(s.phase(), Phase::Open);
        assert_eq!(s.poll_delivery(old, now), None);
        s.detach_receiver(new, Detach::Finished, now);
        assert_eq!(s.phase(), Phase::Open, "a normal end does not close");
    }

    #[test]
    fn session_expires_after_disconnect_delay_without_receiver() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        assert_eq!(s.poll_timeout(now), Some(now + HEARTBEAT));
        s.poll_delivery(r, now);
        assert_eq!(s.poll_timeout(now), Some(now + DISCONNECT));
        assert_eq!(
            s.handle_timeout(now + DISCONNECT - Duration::from_millis(1)),
            TimeoutOutcome::Nothing
        );
        assert_eq!(s.handle_timeout(now + DISCONNECT), TimeoutOutcome::Expired);
        assert!(s.is_expired());
        assert_eq!(
            s.take_inbound(),
            Some(InboundEvent::Closed(CloseReason::Timeout))
        );
        assert_eq!(s.poll_timeout(now), None);
    }

    #[test]
    fn an_attached_receiver_holds_off_expiry() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(r, now);
        let later = now + Duration::from_secs(4);
        let _r = attach(&mut s, ReceiverMode::Polling, later);
        assert_eq!(
            s.handle_timeout(now + Duration::from_secs(60)),
            TimeoutOutcome::Heartbeat
        );
        assert!(!s.is_expired());
    }

    #[test]
    fn closed_session_is_forgotten_disconnect_delay_after_its_last_receiver() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(r, now);
        s.close(3000, "Go away!");
        assert_eq!(s.handle_timeout(now + DISCONNECT), TimeoutOutcome::Expired);
        assert_eq!(
            s.take_inbound(),
            Some(InboundEvent::Closed(CloseReason::Application {
                code: 3000,
                reason: "Go away!".into()
            }))
        );
    }

    #[test]
    fn heartbeat_after_idle_delay_only_with_a_receiver() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        s.poll_delivery(r, now);
        assert_eq!(s.poll_delivery(r, now), None);
        assert_eq!(
            s.handle_timeout(now + HEARTBEAT - Duration::from_millis(1)),
            TimeoutOutcome::Nothing
        );
        assert_eq!(s.handle_timeout(now + HEARTBEAT), TimeoutOutcome::Heartbeat);
        assert_eq!(
            encoded(s.poll_delivery(r, now + HEARTBEAT)),
            frame("h", false)
        );
        assert_eq!(s.poll_timeout(now), Some(now + HEARTBEAT + HEARTBEAT));
    }

    #[test]
    fn the_clock_keeps_running_while_a_heartbeat_waits_for_its_receiver() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        s.poll_delivery(r, now);
        let first = now + HEARTBEAT;
        assert_eq!(s.handle_timeout(first), TimeoutOutcome::Heartbeat);
        assert_eq!(
            s.poll_timeout(now),
            Some(first + HEARTBEAT),
            "not stalled before the receiver takes it"
        );
        assert_eq!(
            s.handle_timeout(first + HEARTBEAT),
            TimeoutOutcome::Nothing,
            "one pending heartbeat at a time"
        );
        assert_eq!(
            s.poll_timeout(now),
            Some(first + HEARTBEAT + HEARTBEAT),
            "and no busy loop"
        );
        let later = first + HEARTBEAT + Duration::from_secs(1);
        assert_eq!(encoded(s.poll_delivery(r, later)), frame("h", false));
        assert_eq!(
            s.handle_timeout(later + HEARTBEAT),
            TimeoutOutcome::Heartbeat
        );
    }

    #[test]
    fn any_frame_postpones_the_heartbeat() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        s.poll_delivery(r, now);
        let later = now + Duration::from_secs(20);
        s.send("x".into(), now).unwrap();
        s.poll_delivery(r, later);
        assert_eq!(s.handle_timeout(now + HEARTBEAT), TimeoutOutcome::Nothing);
        assert_eq!(s.poll_timeout(now + HEARTBEAT), Some(later + HEARTBEAT));
    }

    #[test]
    fn zero_heartbeat_delay_means_no_heartbeats() {
        let now = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                heartbeat_delay: None,
                ..config()
            },
            now,
        );
        s.handle_application_started();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        assert_eq!(s.poll_timeout(now), None);
        assert_eq!(
            s.handle_timeout(now + Duration::from_secs(3600)),
            TimeoutOutcome::Nothing
        );
    }

    #[test]
    fn outgoing_queue_is_bounded_but_takes_one_oversized_message() {
        let (mut s, now) = session();
        s.send("this is longer than ten bytes".into(), now).unwrap();
        assert_eq!(s.send("x".into(), now), Err(SendError::Full));
        let (mut s, now) = session();
        s.send("12345".into(), now).unwrap();
        s.send("67890".into(), now).unwrap();
        assert_eq!(s.send("1".into(), now), Err(SendError::Full));
    }

    #[test]
    fn drop_oldest_makes_room_and_counts_every_drop() {
        let now = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                overflow: Overflow::DropOldest,
                ..config()
            },
            now,
        );
        s.handle_application_started();
        for message in ["12345", "67890", "abcde", "fghij"] {
            s.send(message.into(), now).unwrap();
        }
        assert_eq!(s.dropped_messages(), 2);
        assert_eq!(s.check_outgoing_room(100), Ok(()));
        let r = attach(&mut s, ReceiverMode::Polling, now);
        s.poll_delivery(r, now); // o
        let r = attach(&mut s, ReceiverMode::Polling, now);
        assert_eq!(
            encoded(s.poll_delivery(r, now)),
            frame(r#"a["abcde","fghij"]"#, true)
        );
    }

    #[test]
    fn a_client_that_takes_nothing_for_send_timeout_is_closed() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        s.poll_delivery(r, now);
        let queued = now + Duration::from_secs(1);
        s.send("stuck".into(), queued).unwrap();
        let deadline = queued + Duration::from_secs(10);
        assert_eq!(s.poll_timeout(now), Some(deadline));
        assert_eq!(
            s.handle_timeout(deadline - Duration::from_millis(1)),
            TimeoutOutcome::Nothing
        );
        assert_eq!(s.handle_timeout(deadline), TimeoutOutcome::SendTimedOut);
        assert_eq!(s.close_reason(), Some(&CloseReason::SendTimeout));
        assert_eq!(s.send("more".into(), deadline), Err(SendError::Closed));
        assert_eq!(
            encoded(s.poll_delivery(r, deadline)),
            frame(r#"a["stuck"]"#, false)
        );
        assert_eq!(
            encoded(s.poll_delivery(r, deadline)),
            frame(r#"c[4008,"Send timeout"]"#, true)
        );
    }

    #[test]
    fn a_send_deadline_earlier_than_the_armed_one_asks_the_driver_to_look_again() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        s.poll_delivery(r, now);
        assert_eq!(s.poll_timeout(now), Some(now + HEARTBEAT));
        s.send("a".into(), now).unwrap();
        assert!(s.take_deadline_moved_earlier());
        assert!(!s.take_deadline_moved_earlier(), "once");
        s.send("b".into(), now).unwrap();
        assert!(!s.take_deadline_moved_earlier(), "the queue was not empty");
        assert_eq!(s.poll_timeout(now), Some(now + Duration::from_secs(10)));
        s.poll_delivery(r, now);
        s.send("c".into(), now + Duration::from_secs(1)).unwrap();
        assert!(
            !s.take_deadline_moved_earlier(),
            "later than the armed deadline"
        );
    }

    #[test]
    fn polling_receivers_coming_and_going_need_no_driver_before_the_armed_deadline() {
        let (mut s, now) = session();
        assert_eq!(s.poll_timeout(now), Some(now + DISCONNECT));
        let mut at = now;
        for _ in 0..3 {
            at += Duration::from_millis(100);
            let r = attach(&mut s, ReceiverMode::Polling, at);
            assert!(
                !s.take_deadline_moved_earlier(),
                "its heartbeat comes later"
            );
            s.send("echo".into(), at).unwrap();
            assert!(!s.take_deadline_moved_earlier(), "its send deadline too");
            assert!(s.poll_delivery(r, at).is_some_and(|d| d.end));
            assert!(
                !s.take_deadline_moved_earlier(),
                "its disconnect comes later"
            );
        }
        let armed = now + DISCONNECT;
        assert_eq!(s.handle_timeout(armed), TimeoutOutcome::Nothing);
        assert_eq!(s.poll_timeout(armed), Some(at + DISCONNECT), "asked anew");
        assert_eq!(s.handle_timeout(at + DISCONNECT), TimeoutOutcome::Expired);
    }

    #[test]
    fn a_receiver_deadline_before_the_armed_one_asks_the_driver_to_look_again() {
        let (mut s, now) = session();
        // No deadline armed yet: any one is earlier.
        attach(&mut s, ReceiverMode::Polling, now);
        assert!(s.take_deadline_moved_earlier());
        assert_eq!(s.poll_timeout(now), Some(now + HEARTBEAT));
        let later = now + Duration::from_secs(1);
        s.detach_receiver(ReceiverId(0), Detach::Finished, later);
        assert!(
            s.take_deadline_moved_earlier(),
            "the disconnect comes before the heartbeat"
        );
        assert_eq!(s.poll_timeout(later), Some(later + DISCONNECT));
    }

    #[test]
    fn sends_after_a_drained_one_need_no_driver_until_its_deadline_passes() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        assert_eq!(s.poll_timeout(now), Some(now + HEARTBEAT));
        s.send("a".into(), now).unwrap();
        assert!(s.take_deadline_moved_earlier());
        // The receiver takes it before the driver looks.
        s.poll_delivery(r, now);
        let held = now + Duration::from_secs(10);
        assert_eq!(
            s.poll_timeout(now),
            Some(held),
            "held though the queue drained"
        );
        let mut at = now;
        for _ in 0..4 {
            at += Duration::from_millis(5);
            s.send("b".into(), at).unwrap();
            assert!(!s.take_deadline_moved_earlier(), "its deadline comes later");
            s.poll_delivery(r, at);
        }
        assert_eq!(s.handle_timeout(held), TimeoutOutcome::Nothing);
        assert_eq!(
            s.poll_timeout(held),
            Some(at + HEARTBEAT),
            "let go once passed"
        );
        s.send("c".into(), held).unwrap();
        assert!(s.take_deadline_moved_earlier(), "the next one asks again");
    }

    #[test]
    fn a_written_batch_buffer_is_queued_into_again_and_a_large_one_let_go() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        s.send("a".into(), now).unwrap();
        let Some(Delivery {
            frame: Frame::Messages(batch),
            ..
        }) = s.poll_delivery(r, now)
        else {
            panic!("a batch");
        };
        assert_eq!(s.outgoing.capacity(), 0, "the queue gave its buffer away");
        let buffer = batch.as_ptr();
        s.reuse_batch_buffer(batch);
        s.send("b".into(), now).unwrap();
        s.send("c".into(), now).unwrap();
        let Some(Delivery {
            frame: Frame::Messages(batch),
            ..
        }) = s.poll_delivery(r, now)
        else {
            panic!("a batch");
        };
        assert_eq!(batch.as_ptr(), buffer, "the same buffer, no new one");
        let texts: Vec<&str> = batch.iter().map(OutMessage::as_str).collect();
        assert_eq!(texts, ["b", "c"]);
        s.reuse_batch_buffer(Vec::with_capacity(REUSED_BATCH_MESSAGES + 1));
        assert_eq!(s.outgoing.capacity(), 0, "a large buffer is not kept");
    }

    #[test]
    fn a_receiver_that_never_takes_its_close_frame_is_let_go() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        s.poll_delivery(r, now);
        s.close(4009, "Too slow to keep up");
        let deadline = now + Duration::from_secs(10);
        assert_eq!(s.poll_timeout(now), Some(deadline));
        assert_eq!(s.handle_timeout(deadline), TimeoutOutcome::SendTimedOut);
        assert!(!s.has_receiver());
        assert_eq!(
            s.handle_timeout(deadline + DISCONNECT),
            TimeoutOutcome::Expired
        );
    }

    #[test]
    fn a_client_that_keeps_taking_is_never_timed_out() {
        let (mut s, now) = session();
        let r = attach(&mut s, ReceiverMode::Websocket, now);
        s.poll_delivery(r, now);
        for second in 1..100 {
            let t = now + Duration::from_secs(second);
            s.send("tick".into(), t).unwrap();
            assert_eq!(s.handle_timeout(t), TimeoutOutcome::Nothing);
            s.poll_delivery(r, t).unwrap();
        }
        assert_eq!(s.phase(), Phase::Open);
    }

    #[test]
    fn inbound_messages_reach_the_application_in_order_then_the_close() {
        let (mut s, _) = session();
        s.check_inbound_room(2).unwrap();
        s.handle_inbound(vec!["a".into(), "b".into()]);
        assert_eq!(s.check_inbound_room(9), Err(InboundRefusal::Full));
        s.handle_client_close(1000, "bye");
        assert_eq!(s.take_inbound(), Some(InboundEvent::Message("a".into())));
        assert_eq!(s.take_inbound(), Some(InboundEvent::Message("b".into())));
        let closed = InboundEvent::Closed(CloseReason::Client {
            code: 1000,
            reason: "bye".into(),
        });
        assert_eq!(s.take_inbound(), Some(closed.clone()));
        assert_eq!(s.take_inbound(), Some(closed));
        assert_eq!(s.check_inbound_room(1), Err(InboundRefusal::Closed));
    }

    #[test]
    fn open_session_with_no_inbound_has_nothing_for_the_application() {
        let (mut s, _) = session();
        assert_eq!(s.take_inbound(), None);
        assert_eq!(
            s.check_inbound_room(usize::MAX),
            Ok(()),
            "an empty queue takes any one payload"
        );
    }

    #[test]
    fn traffic_counts_messages_and_their_bytes_each_way() {
        let (mut s, now) = session();
        s.handle_inbound(vec!["ab".into(), "".into(), "cde".into()]);
        s.send("hello".into(), now).unwrap();
        s.send("x".into(), now).unwrap();
        let r = attach(&mut s, ReceiverMode::Streaming, now);
        while s.poll_delivery(r, now).is_some() {}
        assert_eq!(
            s.traffic(),
            Traffic {
                messages_in: 3,
                bytes_in: 5,
                messages_out: 2,
                bytes_out: 6,
            }
        );
    }
}
