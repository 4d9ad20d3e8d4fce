//! A minimal HTTP/1.1 client for the SockJS XHR transports: keep-alive
//! `POST`s, response heads, and bodies by `Content-Length` or chunked
//! encoding, read incrementally (a streaming receiver's body never ends
//! until `response_limit`).

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const READ_CHUNK: usize = 8192;
const MAX_HEAD: usize = 16 * 1024;

pub struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// The server said it closes the connection after this response.
    closing: bool,
    /// When the last response ended: servers drop idle keep-alive
    /// connections (actix after 5 s), so an old one is not reused.
    idle_since: std::time::Instant,
}

/// Idle keep-alive connections older than this are replaced, not reused.
const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Waiting for a chunk-size line.
    Size,
    /// Bytes left in the current chunk.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
}

/// How the current response's body is framed, and how far it has been read.
#[derive(Debug)]
pub struct Body {
    kind: BodyKind,
    done: bool,
}

#[derive(Debug)]
enum BodyKind {
    Length(usize),
    Chunked(Chunk),
    UntilClose,
}

pub struct Head {
    pub status: u16,
    pub body: Body,
}

impl Http {
    pub fn new(stream: TcpStream) -> Http {
        Http {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            out: Vec::with_capacity(512),
            closing: false,
            idle_since: std::time::Instant::now(),
        }
    }

    /// Whether another request may follow on this connection.
    pub fn reusable(&self) -> bool {
        !self.closing && self.idle_since.elapsed() < MAX_IDLE
    }

    /// Sends a `POST` and reads the response head.
    pub async fn post(&mut self, host: &str, path: &str, body: &[u8]) -> Result<Head, String> {
        self.request("POST", host, path, body).await
    }

    /// Sends a request and reads the response head.
    pub async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Head, String> {
        self.request_typed(method, host, path, "text/plain;charset=UTF-8", body)
            .await
    }

    /// Like [`Http::request`], with the body's `Content-Type` given (e.g.
    /// `application/x-www-form-urlencoded` for `jsonp_send`).
    pub async fn request_typed(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Head, String> {
        self.write_request(method, host, path, content_type, body)
            .await?;
        self.read_head(path).await
    }

    /// Sends a request without waiting for the response (a long-poll that
    /// is to be left hanging); the connection is then only good for being
    /// dropped or for reading that response.
    pub async fn write_request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        self.out.clear();
        self.out.extend_from_slice(method.as_bytes());
        self.out.extend_from_slice(b" ");
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(host.as_bytes());
        self.out.extend_from_slice(b"\r\nContent-Type: ");
        self.out.extend_from_slice(content_type.as_bytes());
        self.out.extend_from_slice(b"\r\nContent-Length: ");
        self.out
            .extend_from_slice(body.len().to_string().as_bytes());
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write {path}: {e}"))
    }

    async fn read_more(&mut self) -> Result<usize, String> {
        let (buf, start, end) = (&mut self.buf, &mut self.start, &mut self.end);
        crate::net::read_more(&mut self.stream, buf, start, end, 0).await
    }

    async fn read_head(&mut self, path: &str) -> Result<Head, String> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = response.version == Some(0);
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            if h.value.eq_ignore_ascii_case(b"close") {
                                close = true;
                            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                                close = false;
                            }
                        }
                    }
                    self.start += len;
                    let kind = if status == 204 || status == 304 || (100..200).contains(&status) {
                        BodyKind::Length(0)
                    } else if chunked {
                        BodyKind::Chunked(Chunk::Size)
                    } else if let Some(n) = length {
                        BodyKind::Length(n)
                    } else {
                        close = true;
                        BodyKind::UntilClose
                    };
                    self.closing = close;
                    let done = matches!(kind, BodyKind::Length(0));
                    return Ok(Head {
                        status,
                        body: Body { kind, done },
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if self.end - self.start >= MAX_HEAD {
                        return Err(format!("{path}: response head too long"));
                    }
                    if self.read_more().await? == 0 {
                        return Err(format!("{path}: connection closed before a response"));
                    }
                }
                Err(e) => return Err(format!("{path}: bad response head: {e}")),
            }
        }
    }

    /// Appends the next body bytes to `out`; `Ok(false)` once the body has ended.
    pub async fn read_body(&mut self, body: &mut Body, out: &mut Vec<u8>) -> Result<bool, String> {
        let more = self.read_body_inner(body, out).await?;
        if !more {
            self.idle_since = std::time::Instant::now();
        }
        Ok(more)
    }

    async fn read_body_inner(
        &mut self,
        body: &mut Body,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        loop {
            if body.done {
                return Ok(false);
            }
            let appended = self.take_buffered(body, out)?;
            if appended || body.done {
                return Ok(!body.done || appended);
            }
            if self.read_more().await? == 0 {
                if matches!(body.kind, BodyKind::UntilClose) {
                    body.done = true;
                    return Ok(false);
                }
                return Err("connection closed inside a response body".into());
            }
        }
    }

    /// Reads the whole rest of the body into `out`.
    pub async fn read_to_end(&mut self, body: &mut Body, out: &mut Vec<u8>) -> Result<(), String> {
        while self.read_body(body, out).await? {}
        Ok(())
    }

    /// Moves what is buffered of the body to `out`; `true` if any data moved.
    fn take_buffered(&mut self, body: &mut Body, out: &mut Vec<u8>) -> Result<bool, String> {
        let mut appended = false;
        loop {
            let avail = &self.buf[self.start..self.end];
            match &mut body.kind {
                BodyKind::Length(left) => {
                    let n = (*left).min(avail.len());
                    out.extend_from_slice(&avail[..n]);
                    self.start += n;
                    *left -= n;
                    body.done = *left == 0;
                    return Ok(appended || n > 0);
                }
                BodyKind::UntilClose => {
                    out.extend_from_slice(avail);
                    let n = avail.len();
                    self.start = self.end;
                    return Ok(n > 0);
                }
                BodyKind::Chunked(state) => match *state {
                    Chunk::Size | Chunk::Trailer | Chunk::DataEnd => {
                        let Some(pos) = avail.windows(2).position(|w| w == b"\r\n") else {
                            return Ok(appended);
                        };
                        let line = &avail[..pos];
                        let next = match *state {
                            Chunk::Size => {
                                let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                                let text = std::str::from_utf8(hex).unwrap_or("").trim();
                                let size = usize::from_str_radix(text, 16)
                                    .map_err(|_| format!("bad chunk size {text:?}"))?;
                                if size == 0 {
                                    Chunk::Trailer
                                } else {
                                    Chunk::Data(size)
                                }
                            }
                            Chunk::DataEnd => {
                                if !line.is_empty() {
                                    return Err("chunk data longer than its size".into());
                                }
                                Chunk::Size
                            }
                            Chunk::Trailer => {
                                if line.is_empty() {
                                    self.start += pos + 2;
                                    body.done = true;
                                    return Ok(appended);
                                }
                                Chunk::Trailer
                            }
                            Chunk::Data(_) => unreachable!(),
                        };
                        self.start += pos + 2;
                        *state = next;
                    }
                    Chunk::Data(left) => {
                        if avail.is_empty() {
                            return Ok(appended);
                        }
                        let n = left.min(avail.len());
                        out.extend_from_slice(&avail[..n]);
                        self.start += n;
                        appended = true;
                        *state = if left == n {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n)
                        };
                    }
                },
            }
        }
    }
}

/// Splits complete `\n`-terminated lines off the front of `pending`, calling
/// `each` with every line (without its `\n`).
pub fn drain_lines(pending: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
    let mut from = 0;
    while let Some(pos) = pending[from..].iter().position(|&b| b == b'\n') {
        each(&pending[from..from + pos]);
        from += pos + 1;
    }
    if from > 0 {
        pending.drain(..from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A server that answers with `response`, written one byte at a time
    /// so that every parser state meets a read boundary.
    async fn serve_bytewise(response: &'static [u8]) -> Http {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request).await.unwrap();
            for b in response {
                s.write_all(&[*b]).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Http::new(stream)
    }

    #[tokio::test]
    async fn chunked_body_split_anywhere() {
        let mut http = serve_bytewise(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhhhh\n\r\n2;ext=1\r\no\n\r\n7\r\na[\"x\"]\n\r\n0\r\n\r\n",
        )
        .await;
        let mut head = http.post("h", "/p", b"").await.unwrap();
        assert_eq!(head.status, 200);
        let mut pending = Vec::new();
        let mut lines = Vec::new();
        while http.read_body(&mut head.body, &mut pending).await.unwrap() {
            drain_lines(&mut pending, |l| lines.push(l.to_vec()));
        }
        assert_eq!(lines, [&b"hhhh"[..], b"o", b"a[\"x\"]"]);
        assert!(pending.is_empty());
        assert!(http.reusable());
    }

    #[tokio::test]
    async fn no_content_and_length_bodies() {
        let mut http = serve_bytewise(
            b"HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\n\r\n\
              HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nconnection: close\r\n\r\nno!",
        )
        .await;
        let mut sink = Vec::new();
        let mut head = http.post("h", "/a", b"[\"m\"]").await.unwrap();
        assert_eq!(head.status, 204);
        http.read_to_end(&mut head.body, &mut sink).await.unwrap();
        assert!(sink.is_empty());
        let mut head = http.read_head("/b").await.unwrap();
        assert_eq!(head.status, 404);
        http.read_to_end(&mut head.body, &mut sink).await.unwrap();
        assert_eq!(sink, b"no!");
        assert!(!http.reusable());
    }
}
