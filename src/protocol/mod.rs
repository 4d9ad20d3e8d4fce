//! The SockJS protocol with no I/O: routing, frames, inbound payloads and the
//! session state machine. Nothing here knows actix, tokio or sockets; time
//! comes in as an argument and decisions come out as values.

pub mod client_addr;
pub mod frame;
pub mod frame_limit;
pub mod inbound;
pub mod message;
pub mod origin;
pub mod route;
pub mod session;
pub mod word;
pub mod wrap;
