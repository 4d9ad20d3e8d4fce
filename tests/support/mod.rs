//! Shared black-box helpers for the integration tests: a server guard that
//! starts the `sockjs-gateway` binary on an ephemeral port, a small raw
//! HTTP/1.x client over `std::net::TcpStream` (exact request bytes, bounded
//! reads, incremental chunked decoding), a blocking WebSocket client built on
//! the `tungstenite` crate re-exported by `tokio-tungstenite`, and SockJS frame
//! helpers.
//!
//! Every read is bounded by a timeout; nothing here waits by sleeping.

#![allow(dead_code)]

pub mod redis;
pub mod reload;
pub mod stalled;

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

// ---------------------------------------------------------------------------
// Server guard
// ---------------------------------------------------------------------------

/// A running `sockjs-gateway` child process; killed (by its PID) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Server with default timings.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Server with extra command line flags, e.g.
    /// `&["--heartbeat-delay", "200ms"]`.
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", extra)
    }

    /// Server listening on `listen` (e.g. the address of one just killed).
    pub fn start_at(listen: &str, extra: &[&str]) -> Server {
        let log_level = std::env::var("SOCKJS_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
            .args(["--listen", listen])
            .args(extra)
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockjs-gateway");
        let stderr = child.stderr.take().expect("child stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<u16>();
        let thread_log = Arc::clone(&log);
        // Drains stderr for the whole life of the child so the pipe never fills.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let port = parse_listening_port(&line);
                // Logged before the port is handed over, so the listening
                // line is in `log()` as soon as `start_with` returns.
                thread_log.lock().unwrap().push(line);
                if let Some(port) = port {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => Server { child, port, log },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lock().unwrap().join("\n");
                panic!(
                    "sockjs-gateway did not print `listening on http(s)://127.0.0.1:PORT` ({e}); \
                     stderr so far:\n{lines}"
                );
            }
        }
    }

    /// Everything the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn connect(&self) -> Conn {
        Conn::open(self.port)
    }

    /// One request on a fresh connection, whole response read.
    #[track_caller]
    pub fn request(&self, req: Request) -> Response {
        self.connect().request(&req)
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.request(Request::get(path))
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.request(Request::post(path, body))
    }

    // --- SockJS xhr helpers ---

    /// `POST PREFIX/000/SID/xhr`, whole response.
    #[track_caller]
    pub fn xhr(&self, prefix: &str, sid: &str) -> Response {
        self.post(&format!("{prefix}/000/{sid}/xhr"), b"")
    }

    /// `POST PREFIX/000/SID/xhr_send` with `body`.
    #[track_caller]
    pub fn xhr_send(&self, prefix: &str, sid: &str, body: &[u8]) -> Response {
        self.post(&format!("{prefix}/000/{sid}/xhr_send"), body)
    }

    /// `xhr_send` that must succeed with 204.
    #[track_caller]
    pub fn send_ok(&self, prefix: &str, sid: &str, body: &str) {
        let r = self.xhr_send(prefix, sid, body.as_bytes());
        assert_eq!(
            r.status,
            204,
            "xhr_send {body:?} to {prefix} {sid}: {}",
            r.body_lossy()
        );
    }

    /// One xhr poll that must be `200` and carry exactly one frame plus `\n`.
    #[track_caller]
    pub fn poll(&self, prefix: &str, sid: &str) -> Frame {
        let r = self.xhr(prefix, sid);
        assert_eq!(r.status, 200, "xhr poll: {}", r.body_lossy());
        one_frame_body(&r.text())
    }

    /// Creates a session with an xhr poll that must answer exactly `o\n`.
    #[track_caller]
    pub fn open_xhr_session(&self, prefix: &str) -> String {
        let id = sid();
        let r = self.xhr(prefix, &id);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "o\n", "new session must get the open frame");
        id
    }

    /// Polls until `n` messages have arrived; every frame must be `a[...]`.
    #[track_caller]
    pub fn poll_messages(&self, prefix: &str, sid: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.poll(prefix, sid) {
                Frame::Messages(m) => out.extend(m),
                other => panic!("expected a[...] frame, got {other:?} after {out:?}"),
            }
        }
        assert_eq!(out.len(), n, "more messages than expected: {out:?}");
        out
    }

    /// WebSocket handshake on `path` with the default headers.
    #[track_caller]
    pub fn ws(&self, path: &str) -> Ws {
        ws_connect(self.port, path, &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- sockjs-gateway stderr (port {}) ----\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// The port of the gateway's `listening on http://ADDR` (or `https://ADDR`
/// over TLS) log line.
fn parse_listening_port(line: &str) -> Option<u16> {
    let rest = ["listening on http://", "listening on https://"]
        .iter()
        .find_map(|marker| line.find(marker).map(|idx| &line[idx + marker.len()..]))?;
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    let colon = addr.rfind(':')?;
    let digits: String = addr[colon + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// A unique session id (no dots): process id, counter and nanos.
pub fn sid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{}-{}-{}", std::process::id(), n, nanos)
}

/// Polls `check` (which must do real requests) until it returns `Some`, or
/// panics at `deadline`. The short pause between attempts only paces the
/// loop; the outcome is decided by the server's answers.
#[track_caller]
pub fn poll_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// HTTP requests
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub version: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Add `Content-Length` automatically (for POST or non-empty body).
    pub auto_length: bool,
    /// Add `Host` automatically.
    pub auto_host: bool,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            version: "HTTP/1.1",
            headers: Vec::new(),
            body: Vec::new(),
            auto_length: true,
            auto_host: true,
        }
    }

    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    pub fn post(path: &str, body: &[u8]) -> Request {
        Request::new("POST", path).body(body)
    }

    pub fn options(path: &str) -> Request {
        Request::new("OPTIONS", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Request {
        self.body = body.to_vec();
        self
    }

    pub fn http10(mut self) -> Request {
        self.version = "HTTP/1.0";
        self
    }

    pub fn to_bytes(&self, port: u16) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.path, self.version);
        let has = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if self.auto_host && !has("host") {
            out.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
        }
        let wants_length = self.method == "POST" || self.method == "PUT" || !self.body.is_empty();
        if self.auto_length && wants_length && !has("content-length") && !has("transfer-encoding") {
            out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

// ---------------------------------------------------------------------------
// HTTP responses
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Head {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header, case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header (one per header line).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Comma-separated tokens over every line of a header, trimmed.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }

    fn is_chunked(&self) -> bool {
        self.header_tokens("transfer-encoding")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("chunked"))
    }

    fn body_kind(&self, method: &str) -> BodyKind {
        if method == "HEAD" || self.status / 100 == 1 || self.status == 204 || self.status == 304 {
            return BodyKind::Length(0);
        }
        if self.is_chunked() {
            return BodyKind::Chunked;
        }
        if let Some(len) = self.header("content-length") {
            let n = len
                .trim()
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("bad Content-Length {len:?}"));
            return BodyKind::Length(n);
        }
        BodyKind::UntilEof
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub head: Head,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.head.header_all(name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.head.has_header(name)
    }

    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        self.head.header_tokens(name)
    }

    /// Body as UTF-8; panics if it is not.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("response body is not UTF-8")
    }

    pub fn body_lossy(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a header is present with exactly this value (single line).
    #[track_caller]
    pub fn assert_header(&self, name: &str, value: &str) {
        let all = self.header_all(name);
        assert_eq!(
            all,
            vec![value],
            "header {name} (status {}, headers {:?})",
            self.status,
            self.head.headers
        );
    }

    #[track_caller]
    pub fn assert_no_header(&self, name: &str) {
        assert!(
            !self.has_header(name),
            "unexpected header {name}: {:?} (all headers {:?})",
            self.header_all(name),
            self.head.headers
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Length(usize),
    Chunked,
    UntilEof,
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/// A raw TCP connection with a read buffer. Every read is bounded by
/// `READ_TIMEOUT` unless a caller narrows it temporarily.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to server");
        Conn::from_stream(stream, port)
    }

    /// A connection opened by the caller (with its own socket options).
    pub fn from_stream(stream: TcpStream, port: u16) -> Conn {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            port,
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
        self.stream.flush().unwrap();
    }

    /// Sends the request bytes and nothing else (no read).
    pub fn send(&mut self, req: &Request) {
        let bytes = req.to_bytes(self.port);
        self.write_all(&bytes);
    }

    /// Reads more bytes into the buffer. `Ok(0)` is EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16384];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    #[track_caller]
    fn fill_or_panic(&mut self, what: &str) -> usize {
        match self.fill() {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => panic!("timed out ({READ_TIMEOUT:?}) reading {what}"),
            Err(e) => panic!("error reading {what}: {e}"),
        }
    }

    /// Reads one line up to and including `\n`; panics on EOF before it.
    #[track_caller]
    fn read_raw_line(&mut self, what: &str) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return self.buf.drain(..=i).collect();
            }
            if self.fill_or_panic(what) == 0 {
                panic!(
                    "connection closed while reading {what} (partial: {:?})",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Reads the status line and the headers.
    #[track_caller]
    pub fn read_head(&mut self) -> Head {
        let line = self.read_raw_line("status line");
        let line = String::from_utf8(line).expect("status line not UTF-8");
        let line = line.trim_end_matches(['\r', '\n']);
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        assert!(version.starts_with("HTTP/1."), "bad status line {line:?}");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let raw = self.read_raw_line("header line");
            let h = String::from_utf8_lossy(&raw);
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (k, v) = h
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {h:?}"));
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Head {
            version,
            status,
            reason,
            headers,
        }
    }

    /// Sends a request and reads the whole response (body by
    /// Content-Length, chunked or EOF). The connection stays usable for
    /// keep-alive when the body had a defined end.
    #[track_caller]
    pub fn request(&mut self, req: &Request) -> Response {
        self.send(req);
        self.read_response(&req.method)
    }

    #[track_caller]
    pub fn read_response(&mut self, method: &str) -> Response {
        let head = self.read_head();
        let kind = head.body_kind(method);
        let mut body = BodyReader::new(kind);
        let bytes = body.read_to_end(self);
        Response {
            status: head.status,
            head,
            body: bytes,
        }
    }

    /// Sends a request, reads the head, and hands back a body reader for
    /// reading frame by frame.
    pub fn stream(mut self, req: &Request) -> Streaming {
        self.send(req);
        let head = self.read_head();
        let kind = head.body_kind(&req.method);
        Streaming::new(head, BodyReader::new(kind), self)
    }

    /// Bytes already received but not consumed (e.g. after a 101).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Returns true if the peer closed the connection (EOF or reset) within
    /// `timeout` without sending anything more; panics if data arrives.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        assert!(
            self.buf.is_empty(),
            "unexpected data: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let r = self.fill();
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        match r {
            Ok(0) => true,
            Ok(_) => panic!("unexpected data: {:?}", String::from_utf8_lossy(&self.buf)),
            Err(e) if is_timeout(&e) => false,
            Err(_) => true,
        }
    }

    /// Asserts that no response body byte arrives for `dur` and the
    /// connection stays open (a pending long-poll). The response head may
    /// already have arrived; whatever came stays buffered for
    /// `read_response`.
    #[track_caller]
    pub fn expect_silence(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let after = &self.buf[p + 4..];
                assert!(
                    after.is_empty(),
                    "expected no response body for {dur:?}, got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let r = self.fill();
            self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
            match r {
                Err(e) if is_timeout(&e) => return,
                Ok(0) => panic!("expected the request to stay pending, connection closed"),
                Ok(_) => {}
                Err(e) => panic!("expected the request to stay pending, got error {e}"),
            }
        }
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[derive(Debug)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Done,
}

/// Incremental body decoder (Content-Length, chunked, until EOF).
pub struct BodyReader {
    kind: BodyKind,
    remaining: usize,
    chunk: ChunkState,
    finished: bool,
}

impl BodyReader {
    fn new(kind: BodyKind) -> BodyReader {
        let remaining = match kind {
            BodyKind::Length(n) => n,
            _ => 0,
        };
        BodyReader {
            kind,
            remaining,
            chunk: ChunkState::Size,
            finished: matches!(kind, BodyKind::Length(0)),
        }
    }

    /// Next piece of decoded body bytes, `None` at the end of the body.
    /// Panics on timeout.
    #[track_caller]
    fn next_piece(&mut self, conn: &mut Conn) -> Option<Vec<u8>> {
        match self.try_next_piece(conn) {
            Ok(p) => p,
            Err(e) if is_timeout(&e) => panic!("timed out ({READ_TIMEOUT:?}) reading body"),
            Err(e) => panic!("error reading body: {e}"),
        }
    }

    fn try_next_piece(&mut self, conn: &mut Conn) -> io::Result<Option<Vec<u8>>> {
        if self.finished {
            return Ok(None);
        }
        match self.kind {
            BodyKind::Length(_) => {
                if conn.buf.is_empty() && conn.fill()? == 0 {
                    panic!("EOF with {} body bytes missing", self.remaining);
                }
                let n = self.remaining.min(conn.buf.len());
                let out: Vec<u8> = conn.buf.drain(..n).collect();
                self.remaining -= n;
                if self.remaining == 0 {
                    self.finished = true;
                }
                Ok(Some(out))
            }
            BodyKind::UntilEof => {
                if conn.buf.is_empty() {
                    match conn.fill() {
                        Ok(0) => {
                            self.finished = true;
                            return Ok(None);
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                            self.finished = true;
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(Some(std::mem::take(&mut conn.buf)))
            }
            BodyKind::Chunked => loop {
                match self.chunk {
                    ChunkState::Size => {
                        let line = read_line_io(conn)?;
                        let line = String::from_utf8_lossy(&line);
                        let size_str = line.trim().split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(size_str, 16)
                            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                        if size == 0 {
                            // Trailers until the empty line.
                            loop {
                                let t = read_line_io(conn)?;
                                if t == b"\r\n" || t == b"\n" {
                                    break;
                                }
                            }
                            self.chunk = ChunkState::Done;
                            self.finished = true;
                            return Ok(None);
                        }
                        self.chunk = ChunkState::Data(size);
                    }
                    ChunkState::Data(left) => {
                        if conn.buf.is_empty() && conn.fill()? == 0 {
                            panic!("EOF inside a chunk ({left} bytes missing)");
                        }
                        let n = left.min(conn.buf.len());
                        let out: Vec<u8> = conn.buf.drain(..n).collect();
                        self.chunk = if left == n {
                            ChunkState::DataEnd
                        } else {
                            ChunkState::Data(left - n)
                        };
                        return Ok(Some(out));
                    }
                    ChunkState::DataEnd => {
                        let l = read_line_io(conn)?;
                        assert!(l == b"\r\n" || l == b"\n", "bad chunk end {l:?}");
                        self.chunk = ChunkState::Size;
                    }
                    ChunkState::Done => return Ok(None),
                }
            },
        }
    }

    #[track_caller]
    fn read_to_end(&mut self, conn: &mut Conn) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(p) = self.next_piece(conn) {
            out.extend(p);
        }
        out
    }
}

fn read_line_io(conn: &mut Conn) -> io::Result<Vec<u8>> {
    loop {
        if let Some(i) = conn.buf.iter().position(|&b| b == b'\n') {
            return Ok(conn.buf.drain(..=i).collect());
        }
        if conn.fill()? == 0 {
            panic!("EOF inside chunked framing");
        }
    }
}

/// A response whose body is read incrementally.
pub struct Streaming {
    pub head: Head,
    pub status: u16,
    body: BodyReader,
    pending: Vec<u8>,
    pub conn: Conn,
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.head.has_header(name)
    }

    pub fn body_kind(&self) -> BodyKind {
        self.body.kind
    }

    #[track_caller]
    fn more(&mut self) -> bool {
        match self.body.next_piece(&mut self.conn) {
            Some(p) => {
                self.pending.extend(p);
                true
            }
            None => false,
        }
    }

    /// Reads up to and including the next `\n`. `None` if the body ended
    /// cleanly before any further byte; panics if it ends mid-line.
    #[track_caller]
    pub fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8(line).expect("streamed line is not UTF-8"));
            }
            if !self.more() {
                assert!(
                    self.pending.is_empty(),
                    "body ended mid-line: {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
                return None;
            }
        }
    }

    /// The next line; panics if the body ended.
    #[track_caller]
    pub fn next_line(&mut self) -> String {
        self.read_line()
            .expect("streaming body ended, expected another line")
    }

    /// The next `\n`-terminated SockJS frame.
    #[track_caller]
    pub fn next_frame(&mut self) -> Frame {
        let line = self.next_line();
        parse_frame(line.strip_suffix('\n').unwrap())
    }

    /// Exactly `n` body bytes.
    #[track_caller]
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            assert!(
                self.more(),
                "body ended after {} of {n} bytes",
                self.pending.len()
            );
        }
        self.pending.drain(..n).collect()
    }

    /// Reads and checks the xhr_streaming prelude: 2048 `h` and `\n`.
    #[track_caller]
    pub fn expect_prelude(&mut self) {
        let p = self.read_exact(2049);
        let mut want = vec![b'h'; 2048];
        want.push(b'\n');
        assert!(p == want, "bad prelude: {:?}", String::from_utf8_lossy(&p));
    }

    /// The rest of the body up to its end.
    #[track_caller]
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.more() {}
        std::mem::take(&mut self.pending)
    }

    /// Asserts the body ends now (no more bytes).
    #[track_caller]
    pub fn expect_end(&mut self) {
        let rest = self.read_to_end();
        assert!(
            rest.is_empty(),
            "expected the response to end, got more: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Asserts that nothing arrives for `dur` (the response is still
    /// pending, as a long-poll should be).
    #[track_caller]
    pub fn expect_silence(&mut self, dur: Duration) {
        assert!(
            self.pending.is_empty(),
            "unexpected data: {:?}",
            String::from_utf8_lossy(&self.pending)
        );
        self.conn.stream.set_read_timeout(Some(dur)).unwrap();
        let r = self.body.try_next_piece(&mut self.conn);
        self.conn
            .stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        match r {
            Err(e) if is_timeout(&e) => {}
            Ok(Some(p)) => panic!(
                "expected no data for {dur:?}, got {:?}",
                String::from_utf8_lossy(&p)
            ),
            Ok(None) => panic!("expected the response to stay open, it ended"),
            Err(e) => panic!("expected the response to stay open, got error {e}"),
        }
    }

    /// Drops the connection abruptly (both directions).
    pub fn abort(self) {
        self.conn.shutdown();
    }
}

impl Streaming {
    fn new(head: Head, body: BodyReader, conn: Conn) -> Streaming {
        Streaming {
            status: head.status,
            head,
            body,
            pending: Vec::new(),
            conn,
        }
    }
}

/// Opens an `xhr_streaming` receiver and checks status 200.
#[track_caller]
pub fn xhr_streaming(port: u16, prefix: &str, sid: &str) -> Streaming {
    let s = Conn::open(port).stream(&Request::post(
        &format!("{prefix}/000/{sid}/xhr_streaming"),
        b"",
    ));
    assert_eq!(s.status, 200, "xhr_streaming status");
    assert_eq!(
        s.head.header_all("X-Accel-Buffering"),
        vec!["no"],
        "every streaming response carries X-Accel-Buffering: no"
    );
    s
}

/// Sends a request but does not read: the caller gets the connection.
pub fn send_only(port: u16, req: &Request) -> Conn {
    let mut c = Conn::open(port);
    c.send(req);
    c
}

// ---------------------------------------------------------------------------
// SockJS frames
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Open,
    Heartbeat,
    Messages(Vec<String>),
    Close(u64, String),
}

pub fn close_frame(code: u64, reason: &str) -> Frame {
    Frame::Close(code, reason.to_string())
}

/// Parses one SockJS frame (without trailing newline). Panics if invalid.
#[track_caller]
pub fn parse_frame(s: &str) -> Frame {
    match s.as_bytes().first() {
        Some(b'o') if s == "o" => Frame::Open,
        Some(b'h') if s == "h" => Frame::Heartbeat,
        Some(b'a') => {
            let v: Vec<String> =
                serde_json::from_str(&s[1..]).unwrap_or_else(|e| panic!("bad a-frame {s:?}: {e}"));
            assert!(
                !v.is_empty(),
                "a-frame must carry at least one message: {s:?}"
            );
            Frame::Messages(v)
        }
        Some(b'c') => {
            let v: (u64, String) =
                serde_json::from_str(&s[1..]).unwrap_or_else(|e| panic!("bad c-frame {s:?}: {e}"));
            Frame::Close(v.0, v.1)
        }
        _ => panic!("not a SockJS frame: {s:?}"),
    }
}

/// A polling body must be exactly one frame followed by `\n`.
#[track_caller]
pub fn one_frame_body(body: &str) -> Frame {
    let f = body
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("poll body must end with \\n: {body:?}"));
    assert!(
        !f.contains('\n'),
        "poll body must hold exactly one frame: {body:?}"
    );
    parse_frame(f)
}

/// JSON array of strings for sending.
pub fn json_array(msgs: &[&str]) -> String {
    serde_json::to_string(msgs).unwrap()
}

/// The code points PROTOCOL.md section 2 requires as lowercase `\uXXXX`.
pub fn must_escape(c: char) -> bool {
    matches!(c as u32,
        0x0000..=0x001F | 0x200C..=0x200F | 0x2028..=0x202F | 0x2060..=0x206F | 0xFFF0..=0xFFFF)
}

pub fn escaped_ranges_string() -> String {
    let ranges: [(u32, u32); 5] = [
        (0x0000, 0x001F),
        (0x200C, 0x200F),
        (0x2028, 0x202F),
        (0x2060, 0x206F),
        (0xFFF0, 0xFFFF),
    ];
    ranges
        .iter()
        .flat_map(|&(a, b)| (a..=b).map(|c| char::from_u32(c).unwrap()))
        .collect()
}

/// A JSON string literal encoded the way the browser client does: every
/// non-printable-ASCII code unit as `\uXXXX` (surrogate pairs for astral).
pub fn client_escape(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", u));
                }
            }
        }
    }
    out.push('"');
    out
}

/// How one character of a JSON string literal was written on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Raw,
    Short(char),
    /// `\uXXXX` as written (hex digits verbatim), one or two units.
    Unicode(String),
}

/// Tokenises the body of a JSON string literal (without the quotes) into
/// (decoded char, how it was written). Lone surrogates decode to U+FFFD but
/// are reported as `Unicode` with their hex so tests can spot them.
pub fn tokenize_json_string(lit: &str) -> Vec<(char, Written)> {
    let mut out = Vec::new();
    let mut it = lit.chars().peekable();
    let read_hex = |it: &mut std::iter::Peekable<std::str::Chars>| -> String {
        let h: String = (0..4)
            .map(|_| it.next().expect("short \\u escape"))
            .collect();
        assert!(
            h.chars().all(|c| c.is_ascii_hexdigit()),
            "bad \\u escape {h}"
        );
        h
    };
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push((c, Written::Raw));
            continue;
        }
        let e = it.next().expect("dangling backslash");
        match e {
            'u' => {
                let h = read_hex(&mut it);
                let u = u32::from_str_radix(&h, 16).unwrap();
                if (0xD800..0xDC00).contains(&u) {
                    let mut clone = it.clone();
                    if clone.next() == Some('\\') && clone.next() == Some('u') {
                        let h2: String = (0..4).map(|_| clone.next().unwrap_or('x')).collect();
                        if let Ok(u2) = u32::from_str_radix(&h2, 16) {
                            if (0xDC00..0xE000).contains(&u2) {
                                it = clone;
                                let cp = 0x10000 + ((u - 0xD800) << 10) + (u2 - 0xDC00);
                                out.push((
                                    char::from_u32(cp).unwrap(),
                                    Written::Unicode(format!("{h}\\u{h2}")),
                                ));
                                continue;
                            }
                        }
                    }
                    out.push(('\u{FFFD}', Written::Unicode(h)));
                } else if (0xDC00..0xE000).contains(&u) {
                    out.push(('\u{FFFD}', Written::Unicode(h)));
                } else {
                    out.push((char::from_u32(u).unwrap(), Written::Unicode(h)));
                }
            }
            '"' => out.push(('"', Written::Short('"'))),
            '\\' => out.push(('\\', Written::Short('\\'))),
            '/' => out.push(('/', Written::Short('/'))),
            'b' => out.push(('\u{8}', Written::Short('b'))),
            'f' => out.push(('\u{c}', Written::Short('f'))),
            'n' => out.push(('\n', Written::Short('n'))),
            'r' => out.push(('\r', Written::Short('r'))),
            't' => out.push(('\t', Written::Short('t'))),
            other => panic!("invalid JSON escape \\{other}"),
        }
    }
    out
}

/// Splits the raw text of an `a[...]` frame into its raw string literals
/// (contents between the quotes, escapes untouched).
pub fn raw_array_literals(frame: &str) -> Vec<String> {
    let inner = frame
        .strip_prefix("a[")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not an a-frame: {:.200}", frame));
    let mut out = Vec::new();
    let mut chars = inner.chars();
    loop {
        match chars.next() {
            None => break,
            Some('"') => {
                let mut lit = String::new();
                loop {
                    match chars.next().expect("unterminated string literal") {
                        '\\' => {
                            lit.push('\\');
                            lit.push(chars.next().expect("dangling backslash"));
                        }
                        '"' => break,
                        c => lit.push(c),
                    }
                }
                out.push(lit);
            }
            Some(',') | Some(' ') => {}
            Some(c) => panic!("unexpected {c:?} in a-frame"),
        }
    }
    out
}

/// Checks the wire form of one outgoing string literal: it decodes to
/// `expected`, every must-escape code point is written as lowercase
/// `\uXXXX`, and nothing else is malformed.
#[track_caller]
pub fn check_escaping(lit: &str, expected: &str) {
    let toks = tokenize_json_string(lit);
    let decoded: String = toks.iter().map(|(c, _)| *c).collect();
    if decoded != expected {
        let first = decoded
            .chars()
            .zip(expected.chars())
            .position(|(a, b)| a != b);
        panic!(
            "decoded message differs (lengths {} vs {}, first difference at char {:?})",
            decoded.chars().count(),
            expected.chars().count(),
            first
        );
    }
    for (c, w) in &toks {
        let short = match c {
            '\u{8}' => Some('b'),
            '\t' => Some('t'),
            '\n' => Some('n'),
            '\u{c}' => Some('f'),
            '\r' => Some('r'),
            _ => None,
        };
        if let Some(letter) = short {
            assert_eq!(
                w,
                &Written::Short(letter),
                "U+{:04X} must go out as \\{letter}",
                *c as u32
            );
        } else if must_escape(*c) {
            let want = format!("{:04x}", *c as u32);
            assert_eq!(
                w,
                &Written::Unicode(want.clone()),
                "U+{:04X} must go out as \\u{want}",
                *c as u32
            );
        }
    }
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

/// Raw handshake request for `path` with the RFC sample key. `extra`
/// headers replace the defaults of the same name.
pub fn ws_request(path: &str, extra: &[(&str, &str)]) -> Request {
    let defaults = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", WS_KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut req = Request::get(path);
    for (k, v) in defaults {
        if !extra.iter().any(|(ek, _)| ek.eq_ignore_ascii_case(k)) {
            req = req.header(k, v);
        }
    }
    for (k, v) in extra {
        if !v.is_empty() {
            req = req.header(k, v);
        }
    }
    req
}

pub struct Ws {
    pub head: Head,
    pub ws: WebSocket<TcpStream>,
}

/// Event read from a WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame (code, reason) or `None` if it had no payload.
    Close(Option<(u16, String)>),
    /// The TCP connection ended without a close frame (EOF / reset).
    Gone(String),
}

/// Handshakes (asserting `101`) and wraps the socket. Extra headers with an
/// empty value remove the default of that name.
#[track_caller]
pub fn ws_connect(port: u16, path: &str, extra: &[(&str, &str)]) -> Ws {
    let req = ws_request(path, extra);
    let mut conn = Conn::open(port);
    conn.send(&req);
    let head = conn.read_head();
    assert_eq!(
        head.status, 101,
        "websocket handshake on {path}: {:?}",
        head
    );
    let leftover = conn.take_buffered();
    let ws = WebSocket::from_partially_read(conn.stream, leftover, Role::Client, None);
    Ws { head, ws }
}

impl Ws {
    pub fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).expect("websocket send");
    }

    /// Next data or close event; pings and pongs are skipped (tungstenite
    /// answers pings itself). Panics on timeout.
    #[track_caller]
    pub fn next_event(&mut self) -> WsEvent {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return WsEvent::Text(t.as_str().to_string()),
                Ok(Message::Binary(b)) => return WsEvent::Binary(b.to_vec()),
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(Message::Close(cf)) => {
                    return WsEvent::Close(cf.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                Ok(Message::Frame(_)) => continue,
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                    panic!("timed out ({READ_TIMEOUT:?}) waiting for a websocket message")
                }
                Err(e) => return WsEvent::Gone(e.to_string()),
            }
        }
    }

    /// Like `next_event` but also reports pings (as `Some(true)`), for the
    /// heartbeat test.
    #[track_caller]
    pub fn next_text_or_ping(&mut self) -> Result<String, &'static str> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Ok(t.as_str().to_string()),
                Ok(Message::Ping(_)) => return Err("ping"),
                Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
                Ok(other) => panic!("expected text or ping, got {other:?}"),
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                    panic!("timed out waiting for a websocket message")
                }
                Err(e) => panic!("websocket error: {e}"),
            }
        }
    }

    #[track_caller]
    pub fn next_text(&mut self) -> String {
        match self.next_event() {
            WsEvent::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Next SockJS frame (one per text message).
    #[track_caller]
    pub fn next_frame(&mut self) -> Frame {
        parse_frame(&self.next_text())
    }

    /// Collects `n` messages from `a[...]` frames (skipping `h`).
    #[track_caller]
    pub fn messages(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next_frame() {
                Frame::Messages(m) => out.extend(m),
                Frame::Heartbeat => {}
                other => panic!("expected a[...] frame, got {other:?} after {out:?}"),
            }
        }
        assert_eq!(out.len(), n, "more messages than expected: {out:?}");
        out
    }

    /// Reads until the connection is over; returns the close frame if one
    /// came, and every text message seen before it.
    pub fn read_until_closed(&mut self) -> (Vec<String>, Option<(u16, String)>) {
        let mut texts = Vec::new();
        loop {
            match self.next_event() {
                WsEvent::Text(t) => texts.push(t),
                WsEvent::Binary(b) => panic!("unexpected binary message {b:?}"),
                WsEvent::Close(cf) => {
                    // Let tungstenite finish the closing handshake.
                    let _ = self.ws.flush();
                    return (texts, cf);
                }
                WsEvent::Gone(_) => return (texts, None),
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

// ---------------------------------------------------------------------------
// HTTP dates
// ---------------------------------------------------------------------------

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<_>>>()?;
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------
// eventsource, htmlfile and jsonp (PROTOCOL.md section 9)
// ---------------------------------------------------------------------------

/// The htmlfile head of PROTOCOL.md section 9 with `CALLBACK` substituted,
/// without padding or the trailing `\r\n\r\n`.
pub fn htmlfile_head(callback: &str) -> String {
    format!(
        "<!doctype html>\n\
         <html><head>\n  \
         <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n\
         </head><body><h2>Don't panic!</h2>\n  \
         <script>\n    \
         document.domain = document.domain;\n    \
         var c = parent.{callback};\n    \
         c.start();\n    \
         function p(d) {{c.message(d);}};\n    \
         window.onload = function() {{c.stop();}};\n  \
         </script>"
    )
}

/// Opens `GET PREFIX/000/SID/eventsource` and checks status 200.
#[track_caller]
pub fn eventsource(port: u16, prefix: &str, sid: &str) -> Streaming {
    let s = Conn::open(port).stream(&Request::get(&format!("{prefix}/000/{sid}/eventsource")));
    assert_eq!(s.status, 200, "eventsource status");
    s
}

/// Opens `GET PREFIX/000/SID/htmlfile?c=CALLBACK` and checks status 200.
#[track_caller]
pub fn htmlfile(port: u16, prefix: &str, sid: &str, callback: &str) -> Streaming {
    let s = Conn::open(port).stream(&Request::get(&format!(
        "{prefix}/000/{sid}/htmlfile?c={callback}"
    )));
    assert_eq!(s.status, 200, "htmlfile status");
    s
}

impl Streaming {
    /// Reads the eventsource prelude, exactly `\r\n`.
    #[track_caller]
    pub fn expect_eventsource_prelude(&mut self) {
        let p = self.read_exact(2);
        assert_eq!(
            p,
            b"\r\n",
            "eventsource prelude must be \\r\\n, got {:?}",
            String::from_utf8_lossy(&p)
        );
    }

    /// Reads one `data: FRAME\r\n\r\n` event and returns FRAME as written.
    /// `None` if the body ended cleanly before it.
    #[track_caller]
    pub fn read_event(&mut self) -> Option<String> {
        let line = self.read_line()?;
        let frame = line
            .strip_prefix("data: ")
            .and_then(|l| l.strip_suffix("\r\n"))
            .unwrap_or_else(|| panic!("not a `data: FRAME\\r\\n` line: {:.300?}", line));
        let blank = self.next_line();
        assert_eq!(blank, "\r\n", "an event ends with an empty line");
        Some(frame.to_string())
    }

    /// The next eventsource event, decoded as the client does
    /// (`decodeURI(e.data)`) and parsed as a SockJS frame.
    #[track_caller]
    pub fn next_event_frame(&mut self) -> Frame {
        let raw = self
            .read_event()
            .expect("eventsource body ended, expected another event");
        parse_frame(&decode_uri(&raw))
    }

    /// Reads the htmlfile prelude up to and including its `\r\n\r\n`
    /// and returns it whole.
    #[track_caller]
    pub fn read_htmlfile_prelude(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self
                .read_line()
                .unwrap_or_else(|| panic!("htmlfile body ended inside the head: {out:?}"));
            out.push_str(&line);
            if line == "\r\n" {
                assert!(
                    out.ends_with("\r\n\r\n"),
                    "head must end with \\r\\n\\r\\n: {out:?}"
                );
                return out;
            }
        }
    }

    /// Reads one `<script>\np("LIT");\n</script>\r\n` and returns `LIT` as
    /// written (the JS string literal without its quotes). `None` if the
    /// body ended cleanly before it.
    #[track_caller]
    pub fn read_htmlfile_script(&mut self) -> Option<String> {
        let open = self.read_line()?;
        assert_eq!(
            open, "<script>\n",
            "htmlfile frame must start with <script>\\n"
        );
        let call = self.next_line();
        let lit = call
            .strip_prefix("p(\"")
            .and_then(|l| l.strip_suffix("\");\n"))
            .unwrap_or_else(|| panic!("not a `p(\"...\");\\n` line: {:.300?}", call));
        let close = self.next_line();
        assert_eq!(
            close, "</script>\r\n",
            "htmlfile frame must end with </script>\\r\\n"
        );
        Some(lit.to_string())
    }

    /// The next htmlfile frame: decoded from its JS string literal (its
    /// HTML-safe escaping checked) and parsed.
    #[track_caller]
    pub fn next_htmlfile_frame(&mut self) -> Frame {
        let lit = self
            .read_htmlfile_script()
            .expect("htmlfile body ended, expected another <script>");
        parse_frame(&decode_js_literal(&lit))
    }
}

/// Decodes the body (without quotes) of a JS string literal written into
/// HTML or JavaScript by htmlfile or jsonp, and checks it is safe there: no
/// raw `<`, `>`, `&` (each must be `\u003c`, `\u003e`, `\u0026`), no raw
/// `"`, no raw control character and no raw U+2028/U+2029.
#[track_caller]
pub fn decode_js_literal(lit: &str) -> String {
    for (i, c) in lit.char_indices() {
        assert!(
            !matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') && (c as u32) >= 0x20,
            "raw {c:?} (U+{:04X}) at byte {i} of a JS string literal: {:.200?}",
            c as u32,
            &lit[i.saturating_sub(40)..]
        );
    }
    let toks = tokenize_json_string(lit);
    for (c, w) in &toks {
        if *c == '"' {
            assert_eq!(
                w,
                &Written::Short('"'),
                "raw quote inside a JS string literal"
            );
        }
        let want = match c {
            '<' => Some("003c"),
            '>' => Some("003e"),
            '&' => Some("0026"),
            _ => None,
        };
        if let Some(want) = want {
            assert_eq!(
                w,
                &Written::Unicode(want.to_string()),
                "{c:?} must be written as \\u{want}"
            );
        }
    }
    toks.into_iter().map(|(c, _)| c).collect()
}

/// The JS string literal (without quotes) of a whole jsonp body
/// `/**/CALLBACK("LIT");\r\n`.
#[track_caller]
pub fn jsonp_literal(body: &str, callback: &str) -> String {
    body.strip_prefix(&format!("/**/{callback}(\""))
        .and_then(|b| b.strip_suffix("\");\r\n"))
        .unwrap_or_else(|| {
            panic!(
                "not a `/**/{callback}(\"...\");\\r\\n` body: {:.300?}",
                body
            )
        })
        .to_string()
}

/// `application/x-www-form-urlencoded` encoding of a value: every byte
/// outside `[A-Za-z0-9*-._]` as `%XX`, spaces as `+`.
pub fn form_urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Server {
    /// `GET PREFIX/000/SID/jsonp?c=CALLBACK`, whole response.
    #[track_caller]
    pub fn jsonp(&self, prefix: &str, sid: &str, callback: &str) -> Response {
        self.get(&format!("{prefix}/000/{sid}/jsonp?c={callback}"))
    }

    /// One jsonp poll with callback `cb` that must be `200` and carry
    /// exactly one frame; the frame decoded and parsed.
    #[track_caller]
    pub fn jsonp_poll(&self, prefix: &str, sid: &str) -> Frame {
        let r = self.jsonp(prefix, sid, "cb");
        assert_eq!(r.status, 200, "jsonp poll: {}", r.body_lossy());
        parse_frame(&decode_js_literal(&jsonp_literal(&r.text(), "cb")))
    }

    /// Polls jsonp until `n` messages have arrived; every frame must be
    /// `a[...]`.
    #[track_caller]
    pub fn jsonp_messages(&self, prefix: &str, sid: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.jsonp_poll(prefix, sid) {
                Frame::Messages(m) => out.extend(m),
                other => panic!("expected a[...] frame, got {other:?} after {out:?}"),
            }
        }
        assert_eq!(out.len(), n, "more messages than expected: {out:?}");
        out
    }

    /// `POST PREFIX/000/SID/jsonp_send` with `body` and, if given, that
    /// Content-Type.
    #[track_caller]
    pub fn jsonp_send(
        &self,
        prefix: &str,
        sid: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        let mut req = Request::post(&format!("{prefix}/000/{sid}/jsonp_send"), body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        self.request(req)
    }

    /// Form-encoded `d=JSON` jsonp_send that must succeed with `200 ok`.
    #[track_caller]
    pub fn jsonp_send_form_ok(&self, prefix: &str, sid: &str, json: &str) {
        let body = format!("d={}", form_urlencode(json));
        let r = self.jsonp_send(
            prefix,
            sid,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        );
        assert_eq!(
            r.status,
            200,
            "jsonp_send d={json:.200}: {}",
            r.body_lossy()
        );
        assert_eq!(r.text(), "ok", "jsonp_send success body");
    }

    /// Creates a session with a jsonp poll that must answer `o`.
    #[track_caller]
    pub fn open_jsonp_session(&self, prefix: &str) -> String {
        let id = sid();
        let r = self.jsonp(prefix, &id, "cb");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            "/**/cb(\"o\");\r\n",
            "new session must get the open frame"
        );
        id
    }
}

/// Starts the gateway with `extra` flags and expects it to refuse to start:
/// it must exit with a non-zero status (within the startup bound) without
/// ever printing its listening line. Returns its stderr.
#[track_caller]
pub fn expect_start_refused(extra: &[&str]) -> String {
    start_refused_status(extra).1
}

/// As [`expect_start_refused`], also returning the exit status.
#[track_caller]
pub fn start_refused_status(extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    start_refused_with(&args)
}

/// Starts the gateway with exactly `args` (no `--listen` added) and expects
/// it to exit with a non-zero status without ever printing its listening
/// line. Returns the status and its stderr.
#[track_caller]
pub fn start_refused_with(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockjs-gateway");
    let stderr = child.stderr.take().expect("child stderr");
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if parse_listening_port(&line).is_some() {
                let _ = tx.send(None);
                return;
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(Some(all));
    });
    match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Some(log)) => {
            let status = child.wait().expect("wait for sockjs-gateway");
            assert!(
                !status.success(),
                "sockjs-gateway {args:?} must exit with a non-zero status, got {status}; stderr:\n{log}"
            );
            (status, log)
        }
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockjs-gateway {args:?} must refuse to start, but it is listening");
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockjs-gateway {args:?} neither exited nor started within {STARTUP_TIMEOUT:?}");
        }
    }
}

/// JavaScript's `decodeURI`, which sockjs-client applies to every
/// eventsource `data:` payload: `%XX` sequences (UTF-8) are decoded except
/// those of the reserved set `;/?:@&=+$,#`, which stay as written. Panics
/// where the browser would throw `URIError` (a `%` not followed by two hex
/// digits, or escapes that are not valid UTF-8).
#[track_caller]
pub fn decode_uri(s: &str) -> String {
    const RESERVED: &[u8] = b";/?:@&=+$,#";
    let b = s.as_bytes();
    let hex_at = |i: usize| -> u8 {
        let h = b
            .get(i..i + 3)
            .filter(|h| h[0] == b'%')
            .and_then(|h| std::str::from_utf8(&h[1..]).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        h.unwrap_or_else(|| {
            panic!(
                "decodeURI would throw URIError: bad %-escape at byte {i}: {:.40?}",
                String::from_utf8_lossy(&b[i..])
            )
        })
    };
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let first = hex_at(i);
        if first < 0x80 {
            if RESERVED.contains(&first) {
                out.extend_from_slice(&b[i..i + 3]);
            } else {
                out.push(first);
            }
            i += 3;
            continue;
        }
        let n = match first {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => panic!("decodeURI would throw URIError: bad UTF-8 lead byte %{first:02X}"),
        };
        let bytes: Vec<u8> = (0..n).map(|k| hex_at(i + 3 * k)).collect();
        assert!(
            std::str::from_utf8(&bytes).is_ok(),
            "decodeURI would throw URIError: invalid UTF-8 escapes {bytes:02X?}"
        );
        out.extend_from_slice(&bytes);
        i += 3 * n;
    }
    String::from_utf8(out).expect("decoded text is not UTF-8")
}

impl Server {
    /// The server process's PID, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server process (SIGKILL), as a crash would, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM to the server process.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits (bounded) for the server process to exit; its status, or `None`
    /// if it is still running at the deadline.
    pub fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// Resident memory of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

/// Scrapes `sockjs_http_responses_total{status="200"}` until it has not
/// moved for 25 scrapes in a row (at least half a second): the gateway has
/// stopped answering. Returns that count and the peak RSS of `pid` seen.
pub fn wait_until_answers_stop(metrics: u16, pid: u32, bound: Duration) -> (u64, u64) {
    let answered = || {
        metric_value(
            &scrape(metrics),
            r#"sockjs_http_responses_total{status="200"}"#,
        ) as u64
    };
    let mut last = (answered(), 0);
    let mut peak = rss_kib(pid);
    poll_until("the gateway to stop answering", bound, || {
        peak = peak.max(rss_kib(pid));
        let now = answered();
        if now == last.0 {
            last.1 += 1;
        } else {
            last = (now, 0);
        }
        (last.1 >= 25).then_some(())
    });
    (last.0, peak)
}

/// The port of `--metrics 127.0.0.1:0`, read from the log.
pub fn metrics_port(server: &Server) -> u16 {
    poll_until(
        "the metrics address in the log",
        Duration::from_secs(10),
        || {
            let log = server.log();
            let line = log.lines().find(|l| l.contains("metrics on http://"))?;
            let rest = line.split("metrics on http://").nth(1)?;
            let addr = rest.split('/').next()?;
            addr.rsplit(':').next()?.parse().ok()
        },
    )
}

/// `GET /metrics`, which must answer 200.
pub fn scrape(port: u16) -> String {
    let response = Conn::open(port).request(&Request::get("/metrics"));
    assert_eq!(response.status, 200);
    response.text()
}

/// The value of one series (name and labels exactly as rendered).
#[track_caller]
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

/// A fresh directory under the system's temp dir, named for `label`, this
/// process and a counter; the caller removes it.
pub fn fresh_temp_dir(label: &str) -> std::path::PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sockjs-gateway-{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
