//! The framed (`/SERVER/SESSION/websocket`) and raw (`/websocket`)
//! WebSocket transports (PROTOCOL.md section 4), over actix-ws.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::error::PayloadError;
use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use futures::future::{Fuse, FusedFuture};
use futures::FutureExt;
use tokio::time::Sleep;

use super::connection::{abort_after, AbortHandle};
use super::shared::SharedSession;
use super::waiting::{Event, RepolledUntilIdle, ToWake};
use super::{text_response, ServiceState, SessionSlot};
use crate::protocol::frame::Frame;
use crate::protocol::frame_limit::{FrameLimit, TooLarge};
use crate::protocol::session::{
    messages_cost, Attach, Detach, InboundRefusal, ReceiverId, ReceiverMode, TimeoutOutcome,
    CLOSE_GRACE,
};
use crate::protocol::{inbound, route};

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
    let (response, ws, stream) = match actix_ws::handle(req, payload) {
        Ok(parts) => parts,
        Err(error) => {
            log::debug!("{}: WebSocket handshake refused: {error}", req.path());
            slot.never_opened();
            return error.error_response();
        }
    };
    let Attach::Attached(id) = shared
        .core
        .lock()
        .attach_receiver(ReceiverMode::Websocket, Instant::now())
    else {
        unreachable!("a new session always takes its first receiver");
    };
    let application: Pin<Box<dyn Future<Output = ()>>> = Box::pin(state.application(&shared));
    let stream = stream
        .max_frame_size(max_message_bytes)
        .aggregate_continuations()
        .max_continuation_size(max_message_bytes);
    let connection = Connection {
        abort: req.conn_data::<AbortHandle>().cloned(),
        shared,
        id,
        ws,
        framing,
        awaiting_pong: false,
        _slot: slot,
    };
    actix_rt::spawn(RepolledUntilIdle::new(
        connection.run(stream, application.fuse()),
    ));
    response
}

/// The request's `Upgrade` and `Connection` headers, for the core's check.
fn check_upgrade_headers(req: &HttpRequest) -> Result<(), &'static str> {
    let values = |name: header::HeaderName| -> Vec<&str> {
        req.headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    route::check_websocket_upgrade(&values(header::UPGRADE), &values(header::CONNECTION))
}

struct Connection {
    shared: Arc<SharedSession>,
    id: ReceiverId,
    ws: actix_ws::Session,
    framing: Framing,
    awaiting_pong: bool,
    /// Drops the connection if it outlives the session by [`CLOSE_GRACE`].
    abort: Option<AbortHandle>,
    /// Counts this connection against the service's session cap while it lives.
    _slot: SessionSlot,
}

/// Why the connection loop stopped.
enum End {
    /// The session closed and its close went out.
    Closed,
    /// The client closed the WebSocket.
    ClientClosed,
    /// The connection broke, or the client broke the protocol.
    Interrupted(Option<CloseReason>),
    /// The client stopped reading: nothing more can be written to it.
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
        mut application: Fuse<Pin<Box<dyn Future<Output = ()>>>>,
    ) -> impl Future<Output = ()> {
        async move {
            let shared = self.shared.clone();
            let mut waiting_inbound: Option<(Vec<String>, usize)> = None;
            let mut clock = Clock::new();
            let end = loop {
                // Counts seen before the session is looked at: whatever happens
                // from here on ends the wait below.
                let (frames_seen, room_seen) = {
                    let core = shared.core.lock();
                    (
                        core.waiters.count(Event::Frames),
                        core.waiters.count(Event::InboundRoom),
                    )
                };
                if let Some(end) = self
                    .write_keeping_the_clock(&mut clock, &mut application)
                    .await
                {
                    break end;
                }
                if let Some((messages, cost)) = waiting_inbound.take() {
                    waiting_inbound = self.offer_inbound(messages, cost);
                }
                // A WebSocket session drives its own deadlines: no timer task per connection.
                clock.arm(shared.core.lock().poll_timeout(Instant::now()));
                tokio::select! {
                    biased;
                    _ = &mut application => {}
                    _ = shared.changed(Event::Frames, frames_seen) => {}
                    _ = clock.fired() => {
                        shared.handle_timeout();
                    }
                    _ = shared.changed(Event::InboundRoom, room_seen), if waiting_inbound.is_some() => {}
                    message = stream.recv(), if waiting_inbound.is_none() => {
                        match self.handle_message(message).await {
                            Ok(None) => {}
                            Ok(Some(kept)) => waiting_inbound = Some(kept),
                            Err(end) => break end,
                        }
                        // The handler shares this task: it takes what arrived and
                        // answers now, so the answer goes out in this same pass.
                        let _ = futures::poll!(&mut application);
                    }
                }
            };
            self.finish(end).await;
            // The handler sees the close and ends in its own time.
            application.await;
        }
    }

    /// Writes the ready frames while the session's clock and its handler keep
    /// running: a client that stops reading blocks the write, and its send
    /// timeout must still fire.
    async fn write_keeping_the_clock(
        &mut self,
        clock: &mut Clock,
        application: &mut (impl FusedFuture<Output = ()> + Unpin),
    ) -> Option<End> {
        let shared = self.shared.clone();
        let write = self.write_ready_frames();
        tokio::pin!(write);
        // Most writes complete at once: no timer or waiter is touched then.
        if let Poll::Ready(end) = futures::poll!(&mut write) {
            return end;
        }
        // A frame the client takes nothing of for `send_timeout` makes it as
        // slow as a full queue would (the frame is out of the queue, and the
        // handler may wait for the client rather than queue more); so does
        // the last frame of a session that is over.
        let give_up_at = shared
            .core
            .lock()
            .send_timeout()
            .map(|timeout| Instant::now() + timeout);
        loop {
            // While the write waits, the application may queue more and so
            // bring the send deadline forward: it says so with `Event::Deadline`.
            let now = Instant::now();
            let (deadline, deadline_seen) = {
                let mut core = shared.core.lock();
                (core.poll_timeout(now), core.waiters.count(Event::Deadline))
            };
            clock.arm(deadline);
            clock.arm(give_up_at);
            tokio::select! {
                biased;
                end = &mut write => return end,
                // The handler goes on meanwhile: it may queue more, and so
                // run into the bound and the send timeout.
                _ = &mut *application => {}
                _ = clock.fired() => {
                    if give_up_at.is_some_and(|at| Instant::now() >= at) {
                        shared.change(|core| {
                            core.handle_write_stalled();
                            ((), core.waiters.all_happened())
                        });
                        log::debug!("a WebSocket client took nothing of a frame for the send timeout");
                        return Some(End::Stalled);
                    }
                    if shared.handle_timeout() == TimeoutOutcome::SendTimedOut {
                        log::debug!("a WebSocket client took nothing for the send timeout");
                        return Some(End::Stalled);
                    }
                }
                _ = shared.changed(Event::Deadline, deadline_seen) => {}
            }
        }
    }

    /// Writes every frame the session has ready; `Some` once the loop must stop.
    async fn write_ready_frames(&mut self) -> Option<End> {
        loop {
            let delivery = self.shared.change(|core| {
                let (delivery, to_wake) = core.take_delivery(self.id, Instant::now()).unzip();
                (delivery, to_wake.unwrap_or_default())
            })?;
            if let Frame::Messages(messages) = &delivery.frame {
                self.shared.metrics.messages_out(messages);
            }
            let end = delivery.end;
            if let Err(actix_ws::Closed) = self.write(delivery.frame).await {
                return Some(End::Interrupted(None));
            }
            if end {
                return Some(End::Closed);
            }
        }
    }

    async fn write(&mut self, frame: Frame) -> Result<(), actix_ws::Closed> {
        match (self.framing, frame) {
            (Framing::Sockjs, frame @ Frame::Close { .. }) => {
                self.ws.text(frame.encode()).await?;
                self.ws.clone().close(Some(CloseCode::Normal.into())).await
            }
            (Framing::Sockjs, frame) => self.ws.text(frame.encode()).await,
            (Framing::Raw, Frame::Open) => Ok(()),
            (Framing::Raw, Frame::Heartbeat) => {
                if self.awaiting_pong {
                    log::debug!("raw WebSocket peer missed its pong; closing");
                    self.shared.metrics.heartbeat_timeouts.inc();
                    return Err(actix_ws::Closed);
                }
                self.awaiting_pong = true;
                self.ws.ping(b"").await
            }
            (Framing::Raw, Frame::Messages(messages)) => {
                for message in messages {
                    self.ws.text(message.into_string()).await?;
                }
                Ok(())
            }
            (Framing::Raw, Frame::Close { code, reason }) => {
                let reason = CloseReason {
                    code: wire_close_code(code),
                    description: Some(reason),
                };
                self.ws.clone().close(Some(reason)).await
            }
        }
    }

    /// One event from the client. `Ok(Some(..))` holds messages that wait
    /// for the application to make room.
    async fn handle_message(
        &mut self,
        message: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
    ) -> Result<Option<(Vec<String>, usize)>, End> {
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
                Framing::Raw => vec![text.to_string()],
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
            Some(Ok(AggregatedMessage::Ping(bytes))) => {
                let _ = self.ws.pong(&bytes).await;
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
        if messages.is_empty() {
            return Ok(None);
        }
        let cost = messages_cost(&messages);
        Ok(self.offer_inbound(messages, cost))
    }

    /// Hands messages to the application, or keeps them while its queue is full.
    fn offer_inbound(&self, messages: Vec<String>, cost: usize) -> Option<(Vec<String>, usize)> {
        self.shared
            .change(|core| match core.check_inbound_room(cost) {
                Ok(()) => {
                    self.shared.metrics.messages_in(&messages);
                    core.handle_inbound(messages);
                    (None, core.waiters.happened(Event::Inbound))
                }
                Err(InboundRefusal::Full) => (Some((messages, cost)), ToWake::default()),
                Err(InboundRefusal::Closed) => (None, ToWake::default()),
            })
    }

    async fn finish(self, end: End) {
        let how = match end {
            End::Interrupted(_) | End::Stalled => Detach::Interrupted,
            End::Closed | End::ClientClosed => Detach::Finished,
        };
        self.shared
            .core
            .lock()
            .detach_receiver(self.id, how, Instant::now());
        self.shared.wake_all();
        let abort = self.abort.clone();
        // A close waits behind what the client does not read: it gets
        // `CLOSE_GRACE` to go out, and the connection as long to end.
        let close = match end {
            End::Closed | End::Stalled => None,
            End::ClientClosed => Some(None),
            End::Interrupted(reason) => Some(reason),
        };
        if let Some(reason) = close {
            let _ = tokio::time::timeout(CLOSE_GRACE, self.ws.close(reason)).await;
        }
        abort_after(abort, CLOSE_GRACE);
    }
}

/// One timer for the life of a connection, re-armed only when a deadline
/// comes earlier than the armed one: a later deadline (the heartbeat moves on
/// with every frame) is picked up when the armed one fires and the session
/// is asked again. No timer is created or moved per message.
struct Clock {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl Clock {
    fn new() -> Self {
        Clock {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
            armed: None,
        }
    }

    fn arm(&mut self, deadline: Option<Instant>) {
        if let Some(deadline) = deadline {
            if self.armed.is_none_or(|armed| deadline < armed) {
                self.sleep.as_mut().reset(deadline.into());
                self.armed = Some(deadline);
            }
        }
    }

    /// Completes when the armed deadline passes; never if none is armed.
    async fn fired(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.sleep.as_mut().await;
        self.armed = None;
    }
}

/// The client's bytes, cut where a frame header announces more than `max`
/// payload bytes, or a fragmented message passes `max` in all: no more of
/// such a frame reaches actix-ws, which would buffer all of it first.
fn limit_frames(req: &HttpRequest, payload: web::Payload, max: usize) -> web::Payload {
    let limited = LimitedPayload {
        inner: payload,
        limit: FrameLimit::new(max),
        cut: Cut::No,
    };
    let mut payload: actix_web::dev::Payload = actix_web::dev::Payload::Stream {
        payload: Box::pin(limited),
    };
    // The extractor only takes the payload out: it is ready at once.
    web::Payload::from_request(req, &mut payload)
        .now_or_never()
        .and_then(Result::ok)
        .expect("the payload extractor is infallible")
}

pin_project_lite::pin_project! {
    struct LimitedPayload {
        #[pin]
        inner: web::Payload,
        limit: FrameLimit,
        cut: Cut,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    No,
    /// The whole frames before the cut have been passed on; the reader is
    /// given one turn to take them before it hears of the overflow.
    Announced,
    Overflowed,
    Ended,
}

impl futures::Stream for LimitedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        match *this.cut {
            Cut::No => {}
            Cut::Announced => {
                *this.cut = Cut::Overflowed;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Cut::Overflowed => {
                *this.cut = Cut::Ended;
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
            Cut::Ended => return Poll::Ready(None),
        }
        let chunk = match std::task::ready!(this.inner.poll_next(cx)) {
            Some(Ok(chunk)) => chunk,
            other => return Poll::Ready(other),
        };
        match this.limit.scan(&chunk) {
            Ok(()) => Poll::Ready(Some(Ok(chunk))),
            Err(TooLarge { at }) => {
                *this.cut = Cut::Announced;
                Poll::Ready(Some(Ok(chunk.slice(..at))))
            }
        }
    }
}

/// A frame or message over the bound, as actix-http, actix-ws or
/// [`limit_frames`] reports it.
fn is_too_large(error: &actix_ws::ProtocolError) -> bool {
    match error {
        actix_ws::ProtocolError::Overflow => true,
        actix_ws::ProtocolError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<PayloadError>())
            .is_some_and(|e| matches!(e, PayloadError::Overflow)),
        _ => false,
    }
}

/// Close codes an application may put on the wire; others become 1000.
fn wire_close_code(code: u16) -> CloseCode {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => CloseCode::from(code),
        _ => CloseCode::Normal,
    }
}
