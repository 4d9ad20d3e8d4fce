//! SockJS clients for the five transports the soak tests use, on top of the
//! hand-written WebSocket (`ws.rs`) and HTTP/1.1 (`http.rs`) clients:
//! framed WebSocket, xhr-streaming, xhr-polling, eventsource and jsonp-polling
//! receivers, and the `xhr_send` / `jsonp_send` send paths.

use std::rc::Rc;

use tokio::net::TcpStream;

use crate::http::{drain_lines, Body, Http};
use crate::net::Target;
use crate::ws::{Msg, Ws};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum Kind {
    Websocket,
    XhrStreaming,
    XhrPolling,
    EventSource,
    Jsonp,
}

impl Kind {
    /// Round-robin order.
    pub const ALL: [Kind; 5] = [
        Kind::Websocket,
        Kind::XhrStreaming,
        Kind::XhrPolling,
        Kind::EventSource,
        Kind::Jsonp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Websocket => "websocket",
            Kind::XhrStreaming => "xhr-streaming",
            Kind::XhrPolling => "xhr-polling",
            Kind::EventSource => "eventsource",
            Kind::Jsonp => "jsonp",
        }
    }

    /// One response carries one frame (the receiver is reopened after each).
    pub fn polling(self) -> bool {
        matches!(self, Kind::XhrPolling | Kind::Jsonp)
    }

    fn receiver(self) -> (&'static str, &'static str) {
        match self {
            Kind::Websocket => ("GET", "websocket"),
            Kind::XhrStreaming => ("POST", "xhr_streaming"),
            Kind::XhrPolling => ("POST", "xhr"),
            Kind::EventSource => ("GET", "eventsource"),
            Kind::Jsonp => ("GET", "jsonp?c=cb"),
        }
    }
}

/// A frame from the server.
#[derive(Debug)]
pub enum Frame {
    Open,
    Heartbeat,
    Messages(Vec<String>),
    Close(u16, String),
}

pub fn parse_frame(text: &[u8]) -> Result<Frame, String> {
    let bad = || format!("bad frame {:?}", shown(text));
    match text.first() {
        Some(b'o') if text.len() == 1 => Ok(Frame::Open),
        Some(b'h') if text.len() == 1 => Ok(Frame::Heartbeat),
        Some(b'a') => serde_json::from_slice::<Vec<String>>(&text[1..])
            .map(Frame::Messages)
            .map_err(|_| bad()),
        Some(b'c') => serde_json::from_slice::<(u16, String)>(&text[1..])
            .map(|(code, reason)| Frame::Close(code, reason))
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// At most 100 bytes of `bytes`, for error messages.
pub fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(100)]).into_owned()
}

/// A new connection; with `rst` it is reset (SO_LINGER 0) when dropped
/// instead of closed with a FIN: the rudest way a client can go away.
pub async fn connect(target: &Target, rst: bool) -> Result<TcpStream, String> {
    let stream = target.connect().await?;
    if rst {
        stream
            .set_zero_linger()
            .map_err(|e| format!("SO_LINGER: {e}"))?;
    }
    Ok(stream)
}

/// A framed WebSocket session at `{base}/websocket`, after its `o` frame.
pub async fn open_ws(target: &Target, base: &str, rst: bool) -> Result<Ws, String> {
    let stream = connect(target, rst).await?;
    let path = format!("{base}/websocket");
    let mut ws = Ws::handshake(stream, &target.host, &path).await?;
    match ws.recv().await? {
        Msg::Text(b"o") => Ok(ws),
        Msg::Text(t) => Err(format!("{path}: first frame {:?}", shown(t))),
        Msg::Binary => Err(format!("{path}: binary first frame")),
        Msg::Close(code) => Err(format!("{path}: closed at open ({code:?})")),
    }
}

/// The next frame of a framed WebSocket (`None`: a non-text message).
pub fn ws_frame(msg: Msg<'_>) -> Result<Frame, String> {
    match msg {
        Msg::Text(t) => parse_frame(t),
        Msg::Binary => Err("binary message".into()),
        Msg::Close(code) => Err(format!("WebSocket closed by the server ({code:?})")),
    }
}

/// The receiving side of an HTTP session: one receiver request at a time,
/// a new one as soon as the last ended (polling: after each frame;
/// streaming: when `response_limit` ends it).
pub struct Receiver {
    kind: Kind,
    target: Rc<Target>,
    method: &'static str,
    path: String,
    rst: bool,
    conn: Option<Http>,
    body: Option<Body>,
    pending: Vec<u8>,
    /// Receiver requests made.
    pub requests: u64,
}

impl Receiver {
    pub fn new(kind: Kind, target: Rc<Target>, base: &str, rst: bool) -> Receiver {
        let (method, name) = kind.receiver();
        Receiver {
            kind,
            target,
            method,
            path: format!("{base}/{name}"),
            rst,
            conn: None,
            body: None,
            pending: Vec::new(),
            requests: 0,
        }
    }

    async fn conn(&mut self) -> Result<&mut Http, String> {
        if !self.conn.as_ref().is_some_and(Http::reusable) {
            self.conn = Some(Http::new(connect(&self.target, self.rst).await?));
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Starts a receiver request and reads its response head.
    pub async fn start(&mut self) -> Result<(), String> {
        let (method, host) = (self.method, self.target.host.clone());
        let path = self.path.clone();
        let conn = self.conn().await?;
        let head = match conn.request(method, &host, &path, b"").await {
            Ok(head) => head,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        self.requests += 1;
        if head.status != 200 {
            self.conn = None;
            return Err(format!("{path}: status {}", head.status));
        }
        self.body = Some(head.body);
        self.pending.clear();
        Ok(())
    }

    /// Sends a receiver request and does not wait for its response: the
    /// long-poll of a client that is about to vanish.
    pub async fn attach_and_forget(&mut self) -> Result<(), String> {
        let (method, host) = (self.method, self.target.host.clone());
        let path = self.path.clone();
        let conn = self.conn().await?;
        conn.write_request(method, &host, &path, "text/plain;charset=UTF-8", b"")
            .await?;
        self.requests += 1;
        Ok(())
    }

    /// Appends at least one frame to `out`, making receiver requests as needed.
    pub async fn next(&mut self, out: &mut Vec<Frame>) -> Result<(), String> {
        let before = out.len();
        loop {
            if self.body.is_none() {
                self.start().await?;
            }
            let conn = self.conn.as_mut().expect("a receiver connection");
            let body = self.body.as_mut().expect("a receiver response");
            let more = match conn.read_body(body, &mut self.pending).await {
                Ok(more) => more,
                Err(e) => {
                    self.conn = None;
                    self.body = None;
                    return Err(format!("{}: {e}", self.path));
                }
            };
            if !more {
                self.body = None;
            }
            self.extract(!more, out)?;
            if out.len() > before {
                return Ok(());
            }
        }
    }

    /// Moves the complete frames of `pending` to `out`.
    fn extract(&mut self, ended: bool, out: &mut Vec<Frame>) -> Result<(), String> {
        let mut result = Ok(());
        match self.kind {
            Kind::XhrStreaming | Kind::XhrPolling => {
                drain_lines(&mut self.pending, |line| {
                    // The xhr_streaming prelude: 2048 'h' and a newline.
                    if line.len() == 2048 && line.iter().all(|&b| b == b'h') {
                        return;
                    }
                    match parse_frame(line) {
                        Ok(frame) => out.push(frame),
                        Err(e) => result = Err(e),
                    }
                });
            }
            Kind::EventSource => {
                drain_lines(&mut self.pending, |line| {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() {
                        return;
                    }
                    match line.strip_prefix(b"data: ") {
                        Some(frame) => match parse_frame(frame) {
                            Ok(frame) => out.push(frame),
                            Err(e) => result = Err(e),
                        },
                        None => result = Err(format!("bad event line {:?}", shown(line))),
                    }
                });
            }
            Kind::Jsonp => {
                if ended {
                    let body = std::mem::take(&mut self.pending);
                    out.push(parse_jsonp(&body)?);
                }
                return result;
            }
            Kind::Websocket => unreachable!("no HTTP receiver for WebSockets"),
        }
        result?;
        if ended && !self.pending.is_empty() {
            return Err(format!(
                "{}: response ended inside a frame: {:?}",
                self.path,
                shown(&self.pending)
            ));
        }
        Ok(())
    }
}

/// `/**/cb("FRAME");\r\n`: FRAME is a JSON string literal.
fn parse_jsonp(body: &[u8]) -> Result<Frame, String> {
    let inner = body
        .strip_prefix(b"/**/cb(")
        .and_then(|b| {
            b.strip_suffix(b");\r\n")
                .or_else(|| b.strip_suffix(b");\n"))
                .or_else(|| b.strip_suffix(b");"))
        })
        .ok_or_else(|| format!("bad jsonp body {:?}", shown(body)))?;
    let frame: String = serde_json::from_slice(inner)
        .map_err(|e| format!("jsonp literal {:?}: {e}", shown(inner)))?;
    parse_frame(frame.as_bytes())
}

/// The sending side of an HTTP session: `xhr_send` (JSON array, 204) or,
/// for jsonp, `jsonp_send` (form `d=...`, 200 `ok`).
pub struct Sender {
    jsonp: bool,
    target: Rc<Target>,
    path: String,
    rst: bool,
    conn: Option<Http>,
    body: Vec<u8>,
    sink: Vec<u8>,
    /// Send requests made.
    pub requests: u64,
}

impl Sender {
    pub fn new(kind: Kind, target: Rc<Target>, base: &str, rst: bool) -> Sender {
        let jsonp = kind == Kind::Jsonp;
        Sender {
            jsonp,
            target,
            path: format!("{base}/{}", if jsonp { "jsonp_send" } else { "xhr_send" }),
            rst,
            conn: None,
            body: Vec::new(),
            sink: Vec::new(),
            requests: 0,
        }
    }

    /// Opens the send connection now (else the first send does).
    pub async fn connect(&mut self) -> Result<(), String> {
        if !self.conn.as_ref().is_some_and(Http::reusable) {
            self.conn = Some(Http::new(connect(&self.target, self.rst).await?));
        }
        Ok(())
    }

    pub async fn send(&mut self, messages: &[String]) -> Result<(), String> {
        let json = serde_json::to_string(messages).expect("JSON");
        self.body.clear();
        let content_type = if self.jsonp {
            self.body.extend_from_slice(b"d=");
            form_encode(json.as_bytes(), &mut self.body);
            "application/x-www-form-urlencoded"
        } else {
            self.body.extend_from_slice(json.as_bytes());
            "text/plain;charset=UTF-8"
        };
        self.connect().await?;
        let conn = self.conn.as_mut().expect("just set");
        self.sink.clear();
        let result = match conn
            .request_typed(
                "POST",
                &self.target.host,
                &self.path,
                content_type,
                &self.body,
            )
            .await
        {
            Ok(mut head) => conn
                .read_to_end(&mut head.body, &mut self.sink)
                .await
                .map(|()| head.status),
            Err(e) => Err(e),
        };
        self.requests += 1;
        let status = match result {
            Ok(status) => status,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        let ok = if self.jsonp {
            status == 200 && self.sink == b"ok"
        } else {
            status == 204
        };
        if !ok {
            self.conn = None;
            return Err(format!(
                "{}: status {status} {:?}",
                self.path,
                shown(&self.sink)
            ));
        }
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` value encoding (every byte but the
/// unreserved ones as `%XX`).
fn form_encode(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// One session over any transport, used sequentially (open, send, read).
// Few exist at a time; boxing the HTTP parts would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Session {
    Ws(Box<Ws>),
    Http {
        recv: Receiver,
        send: Option<Sender>,
    },
}

impl Session {
    /// Opens a session at `base` (`/SERVICE/SERVER/SESSION`) and reads its `o` frame.
    pub async fn open(
        kind: Kind,
        target: &Rc<Target>,
        base: &str,
        rst: bool,
    ) -> Result<Session, String> {
        if kind == Kind::Websocket {
            return Ok(Session::Ws(Box::new(open_ws(target, base, rst).await?)));
        }
        // The send connection is made first: once `o` is in, the session's
        // disconnect_delay runs (no receiver), and the send should not
        // wait for a connect.
        let mut send = Sender::new(kind, target.clone(), base, rst);
        send.connect().await?;
        let mut recv = Receiver::new(kind, target.clone(), base, rst);
        let mut frames = Vec::new();
        recv.next(&mut frames).await?;
        match frames.first() {
            Some(Frame::Open) if frames.len() == 1 => {}
            other => return Err(format!("{base} {}: first frames {other:?}", kind.name())),
        }
        Ok(Session::Http {
            recv,
            send: Some(send),
        })
    }

    pub async fn send(&mut self, messages: &[String]) -> Result<(), String> {
        match self {
            Session::Ws(ws) => {
                let json = serde_json::to_string(messages).expect("JSON");
                ws.send_text(json.as_bytes()).await
            }
            Session::Http { send, .. } => {
                send.as_mut()
                    .ok_or("the sender was dropped")?
                    .send(messages)
                    .await
            }
        }
    }

    /// Appends at least one frame to `out`.
    pub async fn next(&mut self, out: &mut Vec<Frame>) -> Result<(), String> {
        match self {
            Session::Ws(ws) => {
                let frame = ws_frame(ws.recv().await?)?;
                out.push(frame);
                Ok(())
            }
            Session::Http { recv, .. } => recv.next(out).await,
        }
    }
}

/// Characters that every transport must carry intact: HTML specials (jsonp
/// writes them as `\u003c`...), quotes and backslashes, non-ASCII, an emoji
/// (a surrogate pair when escaped), U+2028 and a control character (sent
/// as `\uXXXX`).
const PAD: &str = "<p>&amp;\"q\"\\/ é€😀\u{2028}\u{1}~";

/// A soak message: `SESSION:SEQ:PAD`.
pub fn soak_message(session: &str, seq: u64) -> String {
    format!("{session}:{seq}:{PAD}")
}

/// `(session, seq)` of a well-formed [`soak_message`].
pub fn parse_soak(text: &str) -> Option<(&str, u64)> {
    let mut parts = text.splitn(3, ':');
    let session = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    (parts.next()? == PAD).then_some((session, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_bodies() {
        assert!(matches!(parse_frame(b"o"), Ok(Frame::Open)));
        match parse_frame(br#"c[4009,"Too slow to keep up"]"#) {
            Ok(Frame::Close(4009, r)) => assert_eq!(r, "Too slow to keep up"),
            other => panic!("{other:?}"),
        }
        match parse_jsonp(b"/**/cb(\"a[\\\"x\\u003c\\\"]\");\r\n") {
            Ok(Frame::Messages(m)) => assert_eq!(m, ["x<"]),
            other => panic!("{other:?}"),
        }
        let m = soak_message("s1", 7);
        assert_eq!(parse_soak(&m), Some(("s1", 7)));
        assert_eq!(parse_soak("s1:7:x"), None);
        let mut out = Vec::new();
        form_encode("[\"a b&é\"]".as_bytes(), &mut out);
        assert_eq!(out, b"%5B%22a%20b%26%C3%A9%22%5D");
    }
}
