//! The framed (`/SERVER/SESSION/websocket`) and raw (`/websocket`)
//! WebSocket transports (PROTOCOL.md section 4). actix-ws reads the client's
//! messages; the session's frames go out through [`body::FrameBody`].

mod body;
mod payload;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use futures::future::Fuse;
use futures::FutureExt;
use tokio::time::Sleep;

use self::body::FrameBody;
use self::payload::{is_too_large, limit_frames};
use super::connection::{abort_after_grace, AbortHandle};
use super::shared::SharedSession;
use super::waiting::{Event, PolledWhenWoken, RepolledUntilIdle, Signal, ToWake};
use super::websocket_control::{WebsocketControl, WriterEnd};
use super::{text_response, ServiceState, SessionSlot};
use crate::protocol::inbound::{self, Messages};
use crate::protocol::route;
use crate::protocol::session::{
    messages_cost, Attach, Detach, InboundRefusal, ReceiverId, ReceiverMode, TimeoutOutcome,
};

/// How frames and messages travel over the WebSocket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// SockJS frames, one per text message.
    Sockjs,
    /// One application message per text message; pings as heartbeats.
    Raw,
}

/// A WebSocket session: framed with its SockJS `session_id`, raw without one.
pub async fn open(
    req: &HttpRequest,
    payload: web::Payload,
    state: &Arc<ServiceState>,
    session_id: Option<&str>,
) -> HttpResponse {
    let framing = match session_id {
        Some(_) => Framing::Sockjs,
        None => Framing::Raw,
    };
    if let Err(text) = check_upgrade_headers(req) {
        log::debug!("{}: {text}", req.path());
        return text_response(StatusCode::BAD_REQUEST, text);
    }
    let transport = match framing {
        Framing::Sockjs => "websocket",
        Framing::Raw => "websocket-raw",
    };
    let data = match state.admit_request(req).await {
        Ok(data) => data,
        Err(refusal) => return refusal,
    };
    let shared = state.new_session(req, transport, data);
    let Some(mut slot) = state.admit(&shared, session_id) else {
        return state.refuse_new_session();
    };
    let max_message_bytes = state.current().options.max_message_bytes;
    let payload = limit_frames(req, payload, max_message_bytes);
    // actix-ws reads; its writer, a channel to its own body, is replaced.
    let (response, _writer, stream) = match actix_ws::handle(req, payload) {
        Ok(parts) => parts,
        Err(error) => {
            log::debug!("{}: WebSocket handshake refused: {error}", req.path());
            slot.never_opened();
            return error.error_response();
        }
    };
    let abort = req.conn_data::<AbortHandle>().cloned();
    let id = {
        let mut core = shared.core.lock();
        let Attach::Attached(id) = core.attach_receiver(ReceiverMode::Websocket, Instant::now())
        else {
            unreachable!("a new session always takes its first receiver");
        };
        // Dropped if the client takes nothing, not even its close.
        core.receiver_connection = abort.clone().map(|abort| (id, abort));
        id
    };
    let application: Pin<Box<dyn Future<Output = ()>>> = Box::pin(state.application(&shared));
    let stream = stream
        .max_frame_size(max_message_bytes)
        .aggregate_continuations()
        .max_continuation_size(max_message_bytes);
    let response = response
        .set_body(FrameBody::new(shared.clone(), id, framing))
        .map_into_boxed_body();
    let connection = Connection {
        abort,
        shared,
        id,
        framing,
        awaiting_pong: false,
        _slot: slot,
    };
    actix_rt::spawn(RepolledUntilIdle::new(
        connection.run(stream, PolledWhenWoken::new(application).fuse()),
    ));
    response
}

/// The request's `Upgrade` and `Connection` headers, for the core's check.
fn check_upgrade_headers(req: &HttpRequest) -> Result<(), &'static str> {
    let values =
        |name: header::HeaderName| req.headers().get_all(name).filter_map(|v| v.to_str().ok());
    route::check_websocket_upgrade(values(header::UPGRADE), values(header::CONNECTION))
}

/// The connection's reader: it drives the session's clock and the
/// application's handler, and hands the client's messages to the session.
/// The session's frames go out through the response body.
struct Connection {
    shared: Arc<SharedSession>,
    id: ReceiverId,
    framing: Framing,
    /// A raw WebSocket's ping went out and nothing came back since.
    awaiting_pong: bool,
    /// Drops the connection if it outlives the session by
    /// [`CLOSE_GRACE`](crate::protocol::session::CLOSE_GRACE).
    abort: Option<AbortHandle>,
    /// Counts this connection against the service's session cap while it lives.
    _slot: SessionSlot,
}

/// Why the connection loop stopped.
enum End {
    /// The session closed and the body took its close frame.
    Closed,
    /// The client closed the WebSocket.
    ClientClosed,
    /// The connection broke, or the client broke the protocol.
    Interrupted(Option<CloseReason>),
    /// The client took nothing, not even its close, for the grace it had.
    Stalled,
}

impl Connection {
    /// Drives the connection, and the application's handler in the same
    /// task: no task switch between a message and the handler that answers it.
    ///
    /// Not an `async fn`, and its arguments are used where they are captured:
    /// an `async fn` keeps each argument twice (rust-lang/rust#62958), which
    /// every idle connection would pay for.
    #[allow(clippy::manual_async_fn)]
    fn run(
        mut self,
        mut stream: actix_ws::AggregatedMessageStream,
        mut application: Fuse<PolledWhenWoken<Pin<Box<dyn Future<Output = ()>>>>>,
    ) -> impl Future<Output = ()> {
        async move {
            let shared = self.shared.clone();
            let mut waiting_inbound: Option<(Messages, usize)> = None;
            let mut clock = Clock::new();
            // Raised when a deadline may have moved earlier, or the body
            // took the session's last frame.
            let deadline = Signal::new();
            // Whether the session must be looked at again; a pass that
            // only carried a message need not.
            let mut look = true;
            let mut room_seen = 0;
            let end = loop {
                if look || waiting_inbound.is_some() {
                    look = false;
                    let mut core = shared.core.lock();
                    // A WebSocket session drives its own deadlines: no timer
                    // task per connection.
                    clock.arm(core.poll_timeout(Instant::now()));
                    core.waiters.register(Event::Deadline, deadline.waker());
                    // Seen before the offer below: room made after it ends the wait.
                    room_seen = core.waiters.count(Event::InboundRoom);
                    // The receiver goes only with a close, which raises the signal.
                    if !core.has_receiver() {
                        break End::Closed;
                    }
                }
                if let Some((messages, cost)) = waiting_inbound.take() {
                    waiting_inbound = self.offer_inbound(messages, cost);
                }
                tokio::select! {
                    biased;
                    _ = &mut application => {}
                    _ = clock.fired() => {
                        look = true;
                        if let Some(end) = self.handle_timeout() {
                            break end;
                        }
                    }
                    _ = deadline.raised() => look = true,
                    _ = shared.changed(Event::InboundRoom, room_seen), if waiting_inbound.is_some() => {}
                    message = stream.recv(), if waiting_inbound.is_none() => {
                        match self.handle_message(message) {
                            Ok(None) => {}
                            Ok(Some(kept)) => waiting_inbound = Some(kept),
                            Err(end) => break end,
                        }
                        // The handler shares this task: it takes what arrived and
                        // answers now, so the answer is ready when the body looks.
                        let _ = futures::poll!(&mut application);
                    }
                }
            };
            self.finish(end);
            // The handler sees the close and ends in its own time.
            application.await;
        }
    }

    /// The clock fired: `Some` once the loop must stop.
    fn handle_timeout(&mut self) -> Option<End> {
        match self.shared.handle_timeout() {
            TimeoutOutcome::SendTimedOut if !self.shared.core.lock().has_receiver() => {
                log::debug!("a WebSocket client took nothing, not even its close");
                Some(End::Stalled)
            }
            TimeoutOutcome::Heartbeat if self.framing == Framing::Raw => {
                if std::mem::replace(&mut self.awaiting_pong, true) {
                    log::debug!("raw WebSocket peer missed its pong; closing");
                    self.shared.metrics.heartbeat_timeouts.inc();
                    return Some(End::Interrupted(None));
                }
                None
            }
            _ => None,
        }
    }

    /// One event from the client. `Ok(Some(..))` holds messages that wait
    /// for the application to make room.
    fn handle_message(
        &mut self,
        message: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
    ) -> Result<Option<(Messages, usize)>, End> {
        self.awaiting_pong = false;
        let messages = match message {
            None => return Err(End::Interrupted(None)),
            Some(Err(error)) => {
                log::debug!("WebSocket protocol error: {error}");
                let code = if is_too_large(&error) {
                    CloseCode::Size
                } else {
                    CloseCode::Protocol
                };
                return Err(End::Interrupted(Some(code.into())));
            }
            Some(Ok(AggregatedMessage::Text(text))) => match self.framing {
                Framing::Raw => Messages::One(String::from(&*text)),
                Framing::Sockjs => match inbound::decode_websocket_message(&text) {
                    Ok(messages) => messages,
                    Err(error) => {
                        log::debug!("framed WebSocket message refused: {error}");
                        return Err(End::Interrupted(Some(CloseReason {
                            code: CloseCode::Unsupported,
                            description: Some(error.text().to_owned()),
                        })));
                    }
                },
            },
            Some(Ok(AggregatedMessage::Binary(_))) => {
                log::debug!("binary WebSocket message refused");
                return Err(End::Interrupted(Some(CloseReason {
                    code: CloseCode::Unsupported,
                    description: Some("Binary messages are not supported.".to_owned()),
                })));
            }
            Some(Ok(AggregatedMessage::Ping(payload))) => {
                self.shared.change(|core| {
                    core.websocket_control.get_or_insert_with(Box::default).pong = Some(payload);
                    ((), core.waiters.happened(Event::Frames))
                });
                return Ok(None);
            }
            Some(Ok(AggregatedMessage::Pong(_))) => return Ok(None),
            Some(Ok(AggregatedMessage::Close(reason))) => {
                let (code, text) = reason
                    .as_ref()
                    .map(|r| (u16::from(r.code), r.description.clone().unwrap_or_default()))
                    .unwrap_or((1005, String::new()));
                self.shared.core.lock().handle_client_close(code, &text);
                return Err(End::ClientClosed);
            }
        };
        if messages.as_slice().is_empty() {
            return Ok(None);
        }
        let cost = messages_cost(messages.as_slice());
        Ok(self.offer_inbound(messages, cost))
    }

    /// Hands messages to the application, or keeps them while its queue is full.
    fn offer_inbound(&self, messages: Messages, cost: usize) -> Option<(Messages, usize)> {
        self.shared
            .change(|core| match core.check_inbound_room(cost) {
                Ok(()) => {
                    self.shared.metrics.messages_in(messages.as_slice());
                    core.handle_inbound(messages);
                    (None, core.waiters.happened(Event::Inbound))
                }
                Err(InboundRefusal::Full) => (Some((messages, cost)), ToWake::default()),
                Err(InboundRefusal::Closed) => (None, ToWake::default()),
            })
    }

    /// Lets the session go, and tells the body how the output ends. This
    /// runs before the task next yields: the body takes no frame of the
    /// session after a client's close or a broken connection.
    fn finish(self, end: End) {
        let stalled = matches!(end, End::Stalled);
        let how = match end {
            End::Interrupted(_) | End::Stalled => Detach::Interrupted,
            End::Closed | End::ClientClosed => Detach::Finished,
        };
        let writer_end = match end {
            // The body wrote the close and ended.
            End::Closed => None,
            End::ClientClosed => Some(WriterEnd::Close(None)),
            End::Interrupted(reason) => Some(WriterEnd::Close(reason)),
            End::Stalled => Some(WriterEnd::Abandon),
        };
        self.shared.change(|core| {
            core.forget_connection(self.id);
            core.detach_receiver(self.id, how, Instant::now());
            if let Some(writer_end) = writer_end {
                core.websocket_control
                    .get_or_insert_with(Box::<WebsocketControl>::default)
                    .end = Some(writer_end);
            }
            ((), core.waiters.all_happened())
        });
        // A close waits behind what the client does not read: it gets
        // `CLOSE_GRACE` to go out, and the connection as long to end. A
        // stalled client has had its grace already.
        match (stalled, self.abort.clone()) {
            (true, Some(abort)) => abort.abort(),
            (_, abort) => abort_after_grace(abort),
        }
    }
}

/// One timer for the life of a connection, re-armed only when a deadline
/// comes earlier than the armed one: a later deadline (the heartbeat moves on
/// with every frame) is picked up when the armed one fires and the session
/// is asked again. No timer is created or moved per message.
struct Clock {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// The timer has the task's waker for the armed deadline.
    registered: bool,
}

impl Clock {
    fn new() -> Self {
        Clock {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
            armed: None,
            registered: false,
        }
    }

    fn arm(&mut self, deadline: Option<Instant>) {
        if let Some(deadline) = deadline {
            if self.armed.is_none_or(|armed| deadline < armed) {
                self.sleep.as_mut().reset(deadline.into());
                self.armed = Some(deadline);
                self.registered = false;
            }
        }
    }

    /// Completes when the armed deadline passes; never if none is armed.
    /// The connection looks at it on every pass: once the timer has the
    /// task's waker, a look at whether it went off is enough.
    fn fired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.armed.is_none() || (self.registered && !self.sleep.is_elapsed()) {
                return Poll::Pending;
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.armed = None;
                    self.registered = false;
                    Poll::Ready(())
                }
                Poll::Pending => {
                    self.registered = true;
                    Poll::Pending
                }
            }
        })
    }
}
