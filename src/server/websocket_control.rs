//! What a WebSocket connection's reader hands to its writer besides the
//! session's frames. The reader and the writer run as different tasks; this
//! travels under the session lock, where the writer looks for frames anyway.

use actix_web::web::Bytes;
use actix_ws::CloseReason;

#[derive(Default)]
pub(crate) struct WebsocketControl {
    /// The payload of the client's latest unanswered ping: only the latest
    /// needs its pong (RFC 6455 section 5.5.3).
    pub pong: Option<Bytes>,
    /// How the writer ends the connection, once the reader has decided.
    pub end: Option<WriterEnd>,
}

pub(crate) enum WriterEnd {
    /// A close frame, then the end of the output.
    Close(Option<CloseReason>),
    /// The end of the output without a close: the client takes nothing.
    Abandon,
}
