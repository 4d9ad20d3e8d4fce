//! eventsource, htmlfile and jsonp (PROTOCOL.md section 9): their framing
//! and the browser's decoding of it.

use super::*;

// eventsource, htmlfile and jsonp (PROTOCOL.md section 9)

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
