//! The access log: one record per ended session, written in plain text or
//! JSON lines by a dedicated thread behind a bounded queue, so that a slow
//! disk never holds up a session (a full queue drops the line and counts it).

mod format;
mod record;
mod writer;

pub use format::AccessLogFormat;
pub use record::{SessionEnd, SessionRecord};
pub use writer::{AccessLog, DEFAULT_QUEUE};
