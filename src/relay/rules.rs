//! The relay's rules, free of I/O: which upstream a URL names, how closes
//! map between the two sides, what the upstream handshake carries, and how
//! a line-based upstream's bytes become messages.

use std::fmt;
use std::net::IpAddr;

use crate::protocol::session::CloseReason;

/// The upstream ended the connection without an application close code
/// (a normal close, going away, no code, or a TCP end of stream).
pub const UPSTREAM_CLOSED: u16 = 4500;
/// The upstream connection failed after it opened: an I/O or protocol error,
/// a message over the size bound, data that is not UTF-8 text, or an
/// upstream close with an error code (1002, 1003, 1007-1011); or a handshake
/// that selected none of the subprotocols asked for.
pub const UPSTREAM_ERROR: u16 = 4501;
/// No upstream connection: refused, unreachable, handshake rejected or
/// timed out. The session is closed at once.
pub const UPSTREAM_UNAVAILABLE: u16 = 4502;

/// Where a relay service sends its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A WebSocket server: `ws://` or `wss://`; one text message per SockJS message.
    WebSocket {
        /// The URL, as given.
        url: String,
        /// Whether it is `wss://` (TLS).
        secure: bool,
    },
    /// A TCP server speaking newline-delimited UTF-8 text: `tcp://HOST:PORT`.
    Tcp {
        /// `HOST:PORT`.
        address: String,
    },
}

impl Upstream {
    /// Reads `ws://HOST[:PORT]/PATH`, `wss://...` or `tcp://HOST:PORT`.
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` is not an upstream URL (ws://, wss:// or tcp://)"))?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains(char::is_whitespace) {
            return Err(format!("`{text}` has no host"));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "ws" | "wss" => Ok(Upstream::WebSocket {
                url: text.to_owned(),
                secure: scheme.eq_ignore_ascii_case("wss"),
            }),
            "tcp" => {
                if rest != authority {
                    return Err(format!("`{text}`: a tcp:// upstream is HOST:PORT, no path"));
                }
                let port_ok = authority.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !port_ok {
                    return Err(format!("`{text}`: a tcp:// upstream needs HOST:PORT"));
                }
                Ok(Upstream::Tcp {
                    address: authority.to_owned(),
                })
            }
            _ => Err(format!(
                "`{text}`: the upstream scheme must be ws://, wss:// or tcp://"
            )),
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::WebSocket { url, .. } => f.write_str(url),
            Upstream::Tcp { address } => write!(f, "tcp://{address}"),
        }
    }
}

/// The close the browser sees when the upstream closes with `code` (`None`:
/// a close frame without a code, or a TCP end of stream) and `reason`.
/// Application codes 3000-4999 pass through unchanged; normal closes become
/// [`UPSTREAM_CLOSED`], error closes [`UPSTREAM_ERROR`]. The upstream's reason
/// is kept when it gave one.
pub fn close_from_upstream(code: Option<u16>, reason: &str) -> (u16, String) {
    let (code, default_reason) = match code {
        Some(code @ 3000..=4999) => (code, ""),
        None | Some(1000 | 1001 | 1005) => (UPSTREAM_CLOSED, "Upstream closed"),
        Some(_) => (UPSTREAM_ERROR, "Upstream error"),
    };
    let reason = if reason.is_empty() {
        default_reason
    } else {
        reason
    };
    (code, reason.to_owned())
}

/// The close frame the upstream gets when the session ends for `reason`.
/// A client's own close (and an application code) passes through; a client
/// that vanished is reported as going away.
pub fn close_to_upstream(reason: Option<&CloseReason>) -> (u16, String) {
    let sendable = |code: u16| matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
    match reason {
        Some(CloseReason::Client { code, reason }) if sendable(*code) => (*code, reason.clone()),
        Some(CloseReason::Application { code, reason }) if sendable(*code) => {
            (*code, reason.clone())
        }
        Some(CloseReason::Client { .. }) => (1000, String::new()),
        Some(CloseReason::SendTimeout) => (1001, "Client too slow".to_owned()),
        _ => (1001, "Client gone".to_owned()),
    }
}

/// What the upstream handshake learns about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFacts<'a> {
    /// The client's address, through trusted proxies.
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`, as the client reached the gateway.
    pub scheme: &'a str,
}

/// The headers of an upstream WebSocket handshake: `X-Forwarded-For` and
/// `X-Forwarded-Proto`, then each of `forwarded` the client sent, in order.
pub fn handshake_headers(
    facts: &ClientFacts<'_>,
    forwarded: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if let Some(ip) = facts.client_ip {
        headers.push(("X-Forwarded-For".to_owned(), ip.to_string()));
    }
    headers.push(("X-Forwarded-Proto".to_owned(), facts.scheme.to_owned()));
    headers.extend(forwarded);
    headers
}

/// Why a line-based upstream's bytes cannot become a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    TooLong,
    NotUtf8,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineError::TooLong => "Upstream line too long",
            LineError::NotUtf8 => "Upstream sent invalid UTF-8",
        })
    }
}

/// Splits a byte stream into lines (`\n`, with an optional `\r` before it),
/// each at most `max_bytes` long.
#[derive(Debug)]
pub struct LineDecoder {
    partial: Vec<u8>,
    max_bytes: usize,
}

impl LineDecoder {
    pub fn new(max_bytes: usize) -> Self {
        LineDecoder {
            partial: Vec::new(),
            max_bytes,
        }
    }

    /// Takes `bytes` and appends every line they complete to `lines`.
    pub fn push(&mut self, mut bytes: &[u8], lines: &mut Vec<String>) -> Result<(), LineError> {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..end])?;
            lines.push(self.take_line()?);
            bytes = &bytes[end + 1..];
        }
        self.append(bytes)
    }

    /// At the end of the stream: the last line, if it had no newline.
    pub fn finish(&mut self) -> Result<Option<String>, LineError> {
        if self.partial.is_empty() {
            Ok(None)
        } else {
            self.take_line().map(Some)
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), LineError> {
        if self.partial.len() + bytes.len() > self.max_bytes + 1 {
            return Err(LineError::TooLong);
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn take_line(&mut self) -> Result<String, LineError> {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > self.max_bytes {
            return Err(LineError::TooLong);
        }
        String::from_utf8(line).map_err(|_| LineError::NotUtf8)
    }
}

/// One SockJS message as bytes for a line-based upstream. A message holding
/// newlines reaches the upstream as that many lines.
pub fn encode_line(message: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(message.len() + 1);
    line.extend_from_slice(message.as_bytes());
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            Upstream::parse("ws://127.0.0.1:9000/socket"),
            Ok(Upstream::WebSocket {
                url: "ws://127.0.0.1:9000/socket".into(),
                secure: false
            })
        );
        assert_eq!(
            Upstream::parse("wss://backend.example/"),
            Ok(Upstream::WebSocket {
                url: "wss://backend.example/".into(),
                secure: true
            })
        );
        assert_eq!(
            Upstream::parse("tcp://[::1]:7000"),
            Ok(Upstream::Tcp {
                address: "[::1]:7000".into()
            })
        );
        assert_eq!(
            Upstream::parse("tcp://localhost:7000"),
            Ok(Upstream::Tcp {
                address: "localhost:7000".into()
            })
        );
        for bad in [
            "http://x/",
            "127.0.0.1:9000",
            "ws://",
            "ws:///path",
            "tcp://host",
            "tcp://host:99999",
            "tcp://host:0",
            "tcp://host:80/path",
            "tcp://:80",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn upstream_application_codes_pass_through() {
        assert_eq!(
            close_from_upstream(Some(3000), "Go away!"),
            (3000, "Go away!".into())
        );
        assert_eq!(close_from_upstream(Some(4999), ""), (4999, String::new()));
    }

    #[test]
    fn upstream_normal_and_error_closes_are_mapped() {
        assert_eq!(
            close_from_upstream(None, ""),
            (UPSTREAM_CLOSED, "Upstream closed".into())
        );
        assert_eq!(
            close_from_upstream(Some(1000), "bye"),
            (UPSTREAM_CLOSED, "bye".into())
        );
        assert_eq!(
            close_from_upstream(Some(1001), ""),
            (UPSTREAM_CLOSED, "Upstream closed".into())
        );
        assert_eq!(
            close_from_upstream(Some(1011), ""),
            (UPSTREAM_ERROR, "Upstream error".into())
        );
        assert_eq!(
            close_from_upstream(Some(2999), "odd"),
            (UPSTREAM_ERROR, "odd".into())
        );
        assert_eq!(
            close_from_upstream(Some(5000), ""),
            (UPSTREAM_ERROR, "Upstream error".into())
        );
    }

    #[test]
    fn session_closes_reach_the_upstream() {
        let client = |code, reason: &str| CloseReason::Client {
            code,
            reason: reason.into(),
        };
        assert_eq!(
            close_to_upstream(Some(&client(1000, "done"))),
            (1000, "done".into())
        );
        assert_eq!(
            close_to_upstream(Some(&client(3001, "x"))),
            (3001, "x".into())
        );
        assert_eq!(
            close_to_upstream(Some(&client(1005, ""))),
            (1000, String::new())
        );
        assert_eq!(close_to_upstream(Some(&CloseReason::Interrupted)).0, 1001);
        assert_eq!(close_to_upstream(Some(&CloseReason::Timeout)).0, 1001);
        assert_eq!(close_to_upstream(None).0, 1001);
        let shutdown = CloseReason::Application {
            code: 1001,
            reason: "Server shutting down".into(),
        };
        assert_eq!(
            close_to_upstream(Some(&shutdown)),
            (1001, "Server shutting down".into())
        );
    }

    #[test]
    fn handshake_names_the_client_then_the_forwarded_headers() {
        let facts = ClientFacts {
            client_ip: Some("203.0.113.7".parse().unwrap()),
            scheme: "https",
        };
        let headers = handshake_headers(&facts, [("Cookie".to_owned(), "a=1".to_owned())]);
        assert_eq!(
            headers,
            [
                ("X-Forwarded-For".to_owned(), "203.0.113.7".to_owned()),
                ("X-Forwarded-Proto".to_owned(), "https".to_owned()),
                ("Cookie".to_owned(), "a=1".to_owned()),
            ]
        );
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        let mut decoder = LineDecoder::new(16);
        let mut lines = Vec::new();
        decoder.push(b"one\r\ntw", &mut lines).unwrap();
        decoder.push(b"o\n\nthr", &mut lines).unwrap();
        assert_eq!(lines, ["one", "two", ""]);
        assert_eq!(decoder.finish(), Ok(Some("thr".into())));
        assert_eq!(decoder.finish(), Ok(None));
    }

    #[test]
    fn lines_over_the_bound_or_not_utf8_are_refused() {
        let mut decoder = LineDecoder::new(4);
        let mut lines = Vec::new();
        decoder.push(b"abcd\r\n", &mut lines).unwrap();
        assert_eq!(lines, ["abcd"]);
        assert_eq!(decoder.push(b"abcdef", &mut lines), Err(LineError::TooLong));
        let mut decoder = LineDecoder::new(4);
        assert_eq!(decoder.push(b"\xff\n", &mut lines), Err(LineError::NotUtf8));
        let mut decoder = LineDecoder::new(4);
        assert_eq!(decoder.push("é\n".as_bytes(), &mut lines), Ok(()));
    }

    #[test]
    fn messages_become_lines() {
        assert_eq!(encode_line("hi"), b"hi\n");
        assert_eq!(encode_line(""), b"\n");
    }
}
