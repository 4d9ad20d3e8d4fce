//! The WebSocket's output: a response body that takes the session's frames
//! when the connection can write them, as the HTTP receivers' bodies do, and
//! encodes them straight into the bytes that go out. No channel stands
//! between the session and the connection, and a frame is never copied
//! before the connection's own write buffer.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{Bytes, BytesMut};

use super::Framing;
use crate::protocol::frame::Frame;
use crate::protocol::message::OutMessage;
use crate::protocol::session::ReceiverId;
use crate::server::shared::SharedSession;
use crate::server::waiting::Event;
use crate::server::websocket_control::{WebsocketControl, WriterEnd};

/// An output buffer up to this size is kept for the next frame (no
/// allocation per message); a larger one is let go with its frame, so an
/// idle connection does not hold on to the largest message it ever sent.
const KEPT_BUFFER_BYTES: usize = 1024;

/// A close frame's payload is at most 125 bytes, two of them the code.
const MAX_CLOSE_REASON_BYTES: usize = 123;

pub(super) struct FrameBody {
    shared: Arc<SharedSession>,
    id: ReceiverId,
    writer: Writer,
}

/// The bytes on their way out, apart from the session they come from.
struct Writer {
    framing: Framing,
    buffer: BytesMut,
    ended: bool,
    /// The last batch's emptied buffer, given back to the session's queue.
    spent: Option<Vec<OutMessage>>,
}

impl FrameBody {
    pub fn new(shared: Arc<SharedSession>, id: ReceiverId, framing: Framing) -> Self {
        FrameBody {
            shared,
            id,
            writer: Writer {
                framing,
                buffer: BytesMut::new(),
                ended: false,
                spent: None,
            },
        }
    }
}

impl Writer {
    /// Writes what the reader asked for; true once the output must end.
    fn write_control(&mut self, control: WebsocketControl) -> bool {
        if let Some(payload) = control.pong {
            Parser::write_message(&mut self.buffer, payload, OpCode::Pong, true, false);
        }
        match control.end {
            None => false,
            Some(WriterEnd::Close(reason)) => {
                write_close(&mut self.buffer, reason);
                true
            }
            Some(WriterEnd::Abandon) => true,
        }
    }

    /// Encodes one of the session's frames; true if it was the last.
    fn write_frame(&mut self, frame: Frame) -> bool {
        let buffer = &mut self.buffer;
        match (self.framing, frame) {
            (Framing::Sockjs, frame) => {
                put_text(buffer, frame.estimated_len(), |out| frame.encode_into(out));
                match frame {
                    Frame::Close { .. } => {
                        write_close(buffer, Some(CloseCode::Normal.into()));
                        return true;
                    }
                    Frame::Messages(messages) => self.keep_spent(messages),
                    _ => {}
                }
                false
            }
            (Framing::Raw, Frame::Open) => false,
            (Framing::Raw, Frame::Heartbeat) => {
                Parser::write_message(buffer, b"", OpCode::Ping, true, false);
                false
            }
            (Framing::Raw, Frame::Messages(messages)) => {
                for message in &messages {
                    let text = message.as_str();
                    put_text(buffer, text.len(), |out| {
                        out.extend_from_slice(text.as_bytes())
                    });
                }
                self.keep_spent(messages);
                false
            }
            (Framing::Raw, Frame::Close { code, reason }) => {
                let reason = CloseReason {
                    code: wire_close_code(code),
                    description: Some(reason),
                };
                write_close(buffer, Some(reason));
                true
            }
        }
    }

    /// A written batch: its messages go now, its buffer at the next look.
    fn keep_spent(&mut self, mut messages: Vec<OutMessage>) {
        messages.clear();
        self.spent = Some(messages);
    }

    /// The buffered bytes as one chunk for the connection.
    fn take_chunk(&mut self) -> Bytes {
        let chunk = self.buffer.split().freeze();
        if self.buffer.capacity() + chunk.len() > KEPT_BUFFER_BYTES {
            self.buffer = BytesMut::new();
        }
        chunk
    }
}

impl MessageBody for FrameBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let FrameBody { shared, id, writer } = self.get_mut();
        loop {
            if writer.ended {
                // Only an abandoned output ends with nothing left to write.
                return match writer.buffer.is_empty() {
                    true => Poll::Ready(None),
                    false => Poll::Ready(Some(Ok(writer.take_chunk()))),
                };
            }
            let mut core = shared.core.lock();
            if let Some(spent) = writer.spent.take() {
                core.reuse_batch_buffer(spent);
            }
            if let Some(control) = core.websocket_control.take() {
                writer.ended = writer.write_control(*control);
                if writer.ended {
                    continue;
                }
            }
            let Some((delivery, to_wake)) = core.take_delivery(*id) else {
                if !writer.buffer.is_empty() {
                    return Poll::Ready(Some(Ok(writer.take_chunk())));
                }
                core.waiters.register(Event::Frames, cx.waker());
                return Poll::Pending;
            };
            drop(core);
            to_wake.wake();
            if let Frame::Messages(messages) = &delivery.frame {
                shared.metrics.messages_out(messages);
            }
            writer.ended = writer.write_frame(delivery.frame) || delivery.end;
            if !writer.buffer.is_empty() {
                return Poll::Ready(Some(Ok(writer.take_chunk())));
            }
        }
    }
}

/// Appends a text frame whose payload `write` appends; `estimate` is about
/// its length, so the header is nearly always the right size at once.
fn put_text(buffer: &mut BytesMut, estimate: usize, write: impl FnOnce(&mut BytesMut)) {
    let start = buffer.len();
    let reserved = header_len(estimate);
    buffer.reserve(reserved + estimate);
    buffer.resize(start + reserved, 0);
    write(buffer);
    let len = buffer.len() - start - reserved;
    let needed = header_len(len);
    if needed != reserved {
        // The estimate was off across a length boundary: move the payload.
        let payload = start + reserved..start + reserved + len;
        if needed > reserved {
            buffer.resize(buffer.len() + needed - reserved, 0);
        }
        buffer.copy_within(payload, start + needed);
        buffer.truncate(start + needed + len);
    }
    write_text_header(&mut buffer[start..start + needed], len);
}

/// The length of an unmasked frame header for a payload of `len` bytes
/// (RFC 6455 section 5.2).
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

fn write_text_header(header: &mut [u8], len: usize) {
    header[0] = 0x80 | u8::from(OpCode::Text);
    match header.len() {
        2 => header[1] = len as u8,
        4 => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// A close frame, its reason cut to what a control frame holds (at a
/// character boundary), as a longer one would break the frame.
fn write_close(buffer: &mut BytesMut, mut reason: Option<CloseReason>) {
    if let Some(text) = reason.as_mut().and_then(|r| r.description.as_mut()) {
        if text.len() > MAX_CLOSE_REASON_BYTES {
            let mut cut = MAX_CLOSE_REASON_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
    }
    Parser::write_close(buffer, reason, false);
}

/// Close codes an application may put on the wire; others become 1000.
fn wire_close_code(code: u16) -> CloseCode {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => CloseCode::from(code),
        _ => CloseCode::Normal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes what was written as a client would: each frame's opcode and payload.
    fn decode(mut bytes: BytesMut) -> Vec<(OpCode, BytesMut)> {
        let mut frames = Vec::new();
        while let Some((fin, opcode, payload)) = Parser::parse(&mut bytes, false, 1 << 20).unwrap()
        {
            assert!(fin);
            frames.push((opcode, payload.unwrap_or_default()));
        }
        assert!(bytes.is_empty());
        frames
    }

    #[test]
    fn a_text_frame_has_the_right_header_whatever_the_estimate() {
        for (len, estimate) in [
            (0, 0),
            (125, 125),
            (126, 125),
            (125, 126),
            (0xffff, 0xffff),
            (0x10000, 0xffff),
            (100, 0x10000),
            (0x10000, 10),
        ] {
            let mut buffer = BytesMut::from(&b"before"[..]);
            put_text(&mut buffer, estimate, |out| {
                out.resize(out.len() + len, b'x')
            });
            let frames = decode(buffer.split_off(6));
            assert_eq!(&buffer[..], b"before");
            assert_eq!(frames.len(), 1);
            let (opcode, payload) = &frames[0];
            assert_eq!(*opcode, OpCode::Text);
            assert_eq!(payload.len(), len, "estimate {estimate}");
            assert!(payload.iter().all(|&b| b == b'x'));
        }
    }

    #[test]
    fn a_long_close_reason_is_cut_at_a_character_boundary() {
        let mut buffer = BytesMut::new();
        let reason = CloseReason {
            code: CloseCode::Normal,
            description: Some("é".repeat(100)),
        };
        write_close(&mut buffer, Some(reason));
        let frames = decode(buffer);
        assert_eq!(frames[0].0, OpCode::Close);
        let reason = Parser::try_parse_close_payload(&frames[0].1)
            .unwrap()
            .unwrap();
        assert_eq!(reason.code, CloseCode::Normal);
        assert_eq!(reason.description.unwrap(), "é".repeat(61));
    }

    #[test]
    fn application_close_codes_outside_the_wire_ranges_become_1000() {
        assert_eq!(u16::from(wire_close_code(4000)), 4000);
        assert_eq!(u16::from(wire_close_code(1011)), 1011);
        assert_eq!(u16::from(wire_close_code(1005)), 1000);
        assert_eq!(u16::from(wire_close_code(2999)), 1000);
    }
}
