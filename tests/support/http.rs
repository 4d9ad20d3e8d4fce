//! A raw HTTP/1.x client over `std::net::TcpStream`: exact request bytes,
//! bounded reads, incremental chunked decoding, streaming receivers.

use super::*;

// HTTP requests

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

// HTTP responses

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

// Connection

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
