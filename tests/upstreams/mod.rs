//! Real upstream servers for the relay tests, on loopback, one thread per
//! connection: a WebSocket server (tungstenite) and a newline-delimited TCP
//! server. Both answer `up:MESSAGE` and obey a few commands, and report what
//! they saw (handshake headers, the close they were sent) on a channel.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use tokio_tungstenite::tungstenite;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// What an upstream saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A connection, with its handshake headers (lower-case names).
    Connected(Vec<(String, String)>),
    /// The close frame the gateway sent, if any.
    Closed(Option<(u16, String)>),
    /// `flood`: the gateway stopped reading after this many bytes.
    Blocked(usize),
}

pub struct Upstream {
    pub port: u16,
    pub seen: mpsc::Receiver<Seen>,
}

impl Upstream {
    /// The next thing seen, within `timeout`.
    #[track_caller]
    pub fn next(&self, timeout: Duration) -> Seen {
        self.seen
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("the upstream saw nothing within {timeout:?}"))
    }

    #[track_caller]
    pub fn expect_connected(&self) -> Vec<(String, String)> {
        match self.next(Duration::from_secs(10)) {
            Seen::Connected(headers) => headers,
            other => panic!("expected a connection, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn expect_closed(&self) -> Option<(u16, String)> {
        loop {
            match self.next(Duration::from_secs(15)) {
                Seen::Closed(close) => return close,
                Seen::Blocked(_) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    }
}

fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an upstream");
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// A WebSocket upstream. For each text message it answers `up:MESSAGE`,
/// except for the commands:
/// - `close CODE REASON`: closes with that code and reason;
/// - `drop`: ends the TCP connection without a close frame;
/// - `flood`: writes 1 KiB messages until the gateway stops reading for
///   300 ms (reported as `Blocked`, as is 1 GiB written), then reads on;
/// - `bye`: closes with no code.
pub fn websocket() -> Upstream {
    serve_each_connection(|stream, tx| serve_websocket(stream, tx, None))
}

/// The same WebSocket upstream, answering every handshake by selecting
/// `selected` in `Sec-WebSocket-Protocol` (`None`: selecting nothing),
/// whatever the gateway asked for.
pub fn websocket_selecting(selected: Option<&'static str>) -> Upstream {
    serve_each_connection(move |stream, tx| serve_websocket(stream, tx, selected))
}

/// Listens on loopback and runs `serve` on a thread per connection.
fn serve_each_connection(
    serve: impl Fn(TcpStream, mpsc::Sender<Seen>) + Clone + Send + 'static,
) -> Upstream {
    let (listener, port) = listen();
    let (tx, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let tx = tx.clone();
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream, tx));
        }
    });
    Upstream { port, seen }
}

fn serve_websocket(stream: TcpStream, tx: mpsc::Sender<Seen>, selected: Option<&'static str>) {
    let mut headers = Vec::new();
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let record = |request: &Request, mut response: Response| {
        headers = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        if let Some(selected) = selected {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                selected.parse().expect("a header value"),
            );
        }
        Ok(response)
    };
    let Ok(mut socket) = tungstenite::accept_hdr(stream, record) else {
        return;
    };
    let _ = tx.send(Seen::Connected(headers));
    loop {
        let message = match socket.read() {
            Ok(Message::Text(text)) => text.as_str().to_owned(),
            Ok(Message::Close(frame)) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                let _ = tx.send(Seen::Closed(close));
                let _ = socket.flush();
                return;
            }
            Ok(_) => continue,
            Err(_) => {
                let _ = tx.send(Seen::Closed(None));
                return;
            }
        };
        if let Some(command) = message.strip_prefix("close ") {
            let (code, reason) = command.split_once(' ').unwrap_or((command, ""));
            let frame = CloseFrame {
                code: CloseCode::from(code.parse::<u16>().unwrap()),
                reason: reason.to_owned().into(),
            };
            let _ = socket.close(Some(frame));
            // Waits for the gateway's answer to the close.
            while socket.read().is_ok() {}
            return;
        } else if message == "bye" {
            let _ = socket.close(None);
            while socket.read().is_ok() {}
            let _ = tx.send(Seen::Closed(None));
            return;
        } else if message == "drop" {
            return;
        } else if message == "flood" {
            flood(&mut socket, &tx);
        } else if socket.send(Message::text(format!("up:{message}"))).is_err() {
            let _ = tx.send(Seen::Closed(None));
            return;
        }
    }
}

fn flood(socket: &mut tungstenite::WebSocket<TcpStream>, tx: &mpsc::Sender<Seen>) {
    let stream = socket.get_mut();
    stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let payload = "x".repeat(1024);
    let mut written = 0;
    loop {
        match socket.send(Message::text(payload.clone())) {
            Ok(()) => written += payload.len(),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break
            }
            Err(_) => break,
        }
        if written > 1 << 30 {
            break;
        }
    }
    let _ = tx.send(Seen::Blocked(written));
    socket.get_mut().set_write_timeout(None).unwrap();
}

/// A TCP upstream of newline-delimited text: answers each line with
/// `up:LINE`; the line `bye` makes it end the connection.
pub fn lines() -> Upstream {
    serve_each_connection(|stream, tx| {
        let _ = tx.send(Seen::Connected(Vec::new()));
        let mut writer = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if line == "bye" || writeln!(writer, "up:{line}").is_err() {
                break;
            }
        }
        let _ = tx.send(Seen::Closed(None));
    })
}

/// A TCP upstream that reads nothing until `release` is sent, then reads
/// every line and reports their count when the gateway ends the connection.
pub fn stalled_lines() -> (Upstream, mpsc::Sender<()>, mpsc::Receiver<Vec<String>>) {
    let (listener, port) = listen();
    let (tx, seen) = mpsc::channel();
    let (release_tx, release) = mpsc::channel::<()>();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Some(Ok(stream)) = listener.incoming().next() else {
            return;
        };
        let _ = tx.send(Seen::Connected(Vec::new()));
        let _ = release.recv();
        let lines: Vec<String> = BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = lines_tx.send(lines);
    });
    (Upstream { port, seen }, release_tx, lines_rx)
}

/// A port where nothing listens.
pub fn closed_port() -> u16 {
    let (listener, port) = listen();
    drop(listener);
    port
}
