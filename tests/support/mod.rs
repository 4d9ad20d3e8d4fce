//! Shared black-box helpers for the integration tests: a server guard that
//! starts the `sockjs-gateway` binary on an ephemeral port, a small raw
//! HTTP/1.x client over `std::net::TcpStream` (exact request bytes, bounded
//! reads, incremental chunked decoding), a blocking WebSocket client built on
//! the `tungstenite` crate re-exported by `tokio-tungstenite`, and SockJS frame
//! helpers, one file each; they are all re-exported here, so a test names
//! them `support::Server`, `support::Conn`, ...
//!
//! Every read is bounded by a timeout; nothing here waits by sleeping.

// Each test file uses a part of these helpers.
#![allow(dead_code, unused_imports)]

pub mod access_log;
mod dates;
mod frames;
mod http;
mod metrics;
pub mod redis;
pub mod reload;
pub mod sentinel;
mod server;
pub mod stalled;
mod transports;
mod ws;

pub use dates::*;
pub use frames::*;
pub use http::*;
pub use metrics::*;
pub use server::*;
pub use transports::*;
pub use ws::*;

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_tungstenite::tungstenite;
use tungstenite::protocol::{Role, WebSocket};
use tungstenite::Message;

/// Upper bound on every single blocking read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The key from RFC 6455 section 1.3 and its accept value.
pub const WS_KEY: &str = "x3JJHMbDL1EzLkh9GBhXDw==";
pub const WS_ACCEPT: &str = "HSmrc0sMlYUkAGmm5OPpG2HaGWk=";

/// The exact not-cacheable header value of PROTOCOL.md section 7.
pub const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
