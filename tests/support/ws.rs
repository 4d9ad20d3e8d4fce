//! A blocking WebSocket client on the `tungstenite` crate re-exported by
//! `tokio-tungstenite`.

use super::*;

// WebSocket

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
