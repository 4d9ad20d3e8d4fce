//! A minimal RFC 6455 client: handshake, masked text frames out, frames in.
//!
//! Only what the benchmark needs, and cheap per message (one `write` per
//! frame, no per-frame allocation on the read side) so that the generator's
//! core is not the bottleneck. Server frames are expected unfragmented (actix
//! never fragments); a fragment is reported as an error, never mis-read.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One message from the server; `Text` borrows the connection's buffer.
pub enum Msg<'a> {
    Text(&'a [u8]),
    Binary,
    Close(Option<u16>),
}

pub struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    mask_state: u32,
}

const READ_CHUNK: usize = 4096;
const MAX_HEAD: usize = 16 * 1024;
const MAX_FRAME: usize = 16 * 1024 * 1024;

impl Ws {
    /// Performs the opening handshake on `stream`; bytes that arrived after
    /// the `101` head stay buffered for [`Ws::recv`].
    pub async fn handshake(stream: TcpStream, host: &str, path: &str) -> Result<Ws, String> {
        let mut ws = Ws {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            out: Vec::with_capacity(256),
            mask_state: 0x9E37_79B9 ^ (path.len() as u32).wrapping_mul(0x85EB_CA6B),
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        ws.stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("handshake write: {e}"))?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&ws.buf[..ws.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    if status != 101 {
                        return Err(format!("handshake {path}: status {status}"));
                    }
                    let accept = response
                        .headers
                        .iter()
                        .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
                    if !accept {
                        return Err(format!("handshake {path}: no Sec-WebSocket-Accept"));
                    }
                    ws.start = len;
                    return Ok(ws);
                }
                Ok(httparse::Status::Partial) => {
                    if ws.end >= MAX_HEAD {
                        return Err("handshake: response head too long".into());
                    }
                    ws.read_more().await?;
                }
                Err(e) => return Err(format!("handshake {path}: bad response: {e}")),
            }
        }
    }

    /// Reads at least one more byte into the buffer, compacting or growing it.
    async fn read_more(&mut self) -> Result<(), String> {
        let (buf, start, end) = (&mut self.buf, &mut self.start, &mut self.end);
        match crate::net::read_more(&mut self.stream, buf, start, end, READ_CHUNK).await? {
            0 => Err("connection closed by the server".into()),
            _ => Ok(()),
        }
    }

    /// Frees the read buffer while nothing is buffered (idle sessions hold
    /// thousands of connections); it is allocated again on the next read.
    pub fn shrink(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.out = Vec::new();
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: masks need not be secret here, only present.
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_le_bytes()
    }

    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mask = self.next_mask();
        self.out.clear();
        self.out.push(0x80 | opcode);
        let len = payload.len();
        if len < 126 {
            self.out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.out.extend_from_slice(&mask);
        let base = self.out.len();
        self.out.extend_from_slice(payload);
        for (i, b) in self.out[base..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    pub async fn send_text(&mut self, payload: &[u8]) -> Result<(), String> {
        self.write_frame(0x1, payload).await
    }

    /// The next data or close message; pings are answered, pongs skipped.
    pub async fn recv(&mut self) -> Result<Msg<'_>, String> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() >= 2 {
                let b0 = avail[0];
                let b1 = avail[1];
                let (header, len) = match b1 & 0x7F {
                    126 if avail.len() >= 4 => {
                        (4, u16::from_be_bytes([avail[2], avail[3]]) as usize)
                    }
                    127 if avail.len() >= 10 => {
                        let mut n = [0u8; 8];
                        n.copy_from_slice(&avail[2..10]);
                        (10, u64::from_be_bytes(n) as usize)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n as usize),
                };
                if header != usize::MAX {
                    if b1 & 0x80 != 0 {
                        return Err("server sent a masked frame".into());
                    }
                    if len > MAX_FRAME {
                        return Err(format!("frame of {len} bytes"));
                    }
                    if avail.len() >= header + len {
                        let from = self.start + header;
                        let to = from + len;
                        self.start = to;
                        let fin = b0 & 0x80 != 0;
                        let opcode = b0 & 0x0F;
                        if !fin || opcode == 0 {
                            return Err("fragmented frame from the server".into());
                        }
                        match opcode {
                            0x1 => return Ok(Msg::Text(&self.buf[from..to])),
                            0x2 => return Ok(Msg::Binary),
                            0x8 => {
                                let code = (len >= 2).then(|| {
                                    u16::from_be_bytes([self.buf[from], self.buf[from + 1]])
                                });
                                return Ok(Msg::Close(code));
                            }
                            0x9 => {
                                let payload = self.buf[from..to].to_vec();
                                self.write_frame(0xA, &payload).await?;
                                continue;
                            }
                            0xA => continue,
                            other => return Err(format!("unknown opcode {other}")),
                        }
                    }
                    let need = header + len;
                    if need > self.buf.len() {
                        // A frame larger than the buffer: make room for all of it.
                        self.buf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                        self.buf.resize(need.max(READ_CHUNK), 0);
                    }
                }
            }
            self.read_more().await?;
        }
    }

    /// The closing handshake: sends close 1000 and waits (bounded) for the
    /// server's close frame, then drops the connection. (Waiting for the
    /// server to end the TCP connection too would measure actix's lingering:
    /// it closes ~0.5-1 s after the handshake.)
    pub async fn close(mut self, bound: std::time::Duration) -> Result<(), String> {
        self.write_frame(0x8, &1000u16.to_be_bytes()).await?;
        let wait = async {
            loop {
                match self.recv().await {
                    Ok(Msg::Close(_)) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(format!("before the close frame: {e}")),
                }
            }
        };
        tokio::time::timeout(bound, wait)
            .await
            .map_err(|_| "close handshake timed out".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn frames_pings_and_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            let mut out = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                connection: upgrade\r\nsec-websocket-accept: x\r\n\r\n"
                .to_vec();
            out.extend_from_slice(&[0x81, 1, b'o']); // in the same segment as the head
            out.extend_from_slice(&[0x89, 2, b'p', b'g']); // ping
            out.extend_from_slice(&[0x81, 126, 0, 200]);
            out.extend_from_slice(&[b'z'; 200]);
            s.write_all(&out).await.unwrap();
            // The pong comes back masked, with the ping's payload.
            let mut pong = [0u8; 8];
            s.read_exact(&mut pong).await.unwrap();
            assert_eq!(pong[0], 0x8A);
            assert_eq!(pong[1], 0x80 | 2);
            let mask = &pong[2..6];
            assert_eq!([pong[6] ^ mask[0], pong[7] ^ mask[1]], *b"pg");
            s.write_all(&[0x88, 2, 0x03, 0xE8]).await.unwrap();
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut ws = Ws::handshake(stream, "h", "/x").await.unwrap();
        assert!(matches!(ws.recv().await.unwrap(), Msg::Text(b"o")));
        match ws.recv().await.unwrap() {
            Msg::Text(t) => assert_eq!(t, &[b'z'; 200][..]),
            _ => panic!("expected text"),
        }
        assert!(matches!(ws.recv().await.unwrap(), Msg::Close(Some(1000))));
        server.await.unwrap();
    }
}
