//! SockJS frames: parsing, and the escaping rules of PROTOCOL.md section 8.

// SockJS frames

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
