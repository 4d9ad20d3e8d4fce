//! Server-to-client frames (PROTOCOL.md section 2) and the SockJS JSON escaping.

use std::fmt::Write;

use super::message::OutMessage;
use super::word;

/// One SockJS frame, before it is written in a transport's wrapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `o`: the first frame of every session.
    Open,
    /// `h`: keeps an idle receiver alive.
    Heartbeat,
    /// `a[...]`: one or more application messages, in order.
    Messages(Vec<OutMessage>),
    /// `c[CODE,"REASON"]`: the session is closed.
    Close {
        /// The close code, such as 3000 or 1002.
        code: u16,
        /// The close reason, such as `"Go away!"`.
        reason: String,
    },
}

impl Frame {
    /// The frame as the text that goes on the wire, e.g. `a["x"]`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.estimated_len());
        self.encode_into(&mut out);
        out
    }

    /// About the length of [`Frame::encode`], without a scan: exact when
    /// nothing needs escaping (the common case), which only makes it longer.
    pub fn estimated_len(&self) -> usize {
        match self {
            Frame::Open | Frame::Heartbeat => 1,
            Frame::Messages(messages) => 2 + messages.iter().map(|m| m.len() + 3).sum::<usize>(),
            Frame::Close { reason, .. } => 10 + reason.len(),
        }
    }

    /// Appends the encoded frame to `out`: a `String`, or a transport's
    /// output buffer, so no copy is made on the way.
    pub fn encode_into<W: Write + ?Sized>(&self, out: &mut W) {
        // Writing to a `String` or a growable buffer cannot fail.
        let _ = match self {
            Frame::Open => out.write_str("o"),
            Frame::Heartbeat => out.write_str("h"),
            Frame::Messages(messages) => {
                let _ = out.write_str("a[");
                for (i, message) in messages.iter().enumerate() {
                    if i > 0 {
                        let _ = out.write_str(",");
                    }
                    message.write_json(out);
                }
                out.write_str("]")
            }
            Frame::Close { code, reason } => {
                let _ = write!(out, "c[{code},");
                write_json_string(reason, out);
                out.write_str("]")
            }
        };
    }

    /// The length in bytes of [`Frame::encode`], computed without allocating.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Open | Frame::Heartbeat => 1,
            Frame::Messages(messages) => {
                let commas = messages.len().saturating_sub(1);
                3 + commas + messages.iter().map(OutMessage::json_len).sum::<usize>()
            }
            Frame::Close { code, reason } => 4 + decimal_len(*code) + json_string_len(reason),
        }
    }
}

/// The close frame sent to a second receiver while one is attached.
pub fn another_connection_open() -> Frame {
    Frame::Close {
        code: 2010,
        reason: "Another connection still open".to_owned(),
    }
}

/// The close frame of a session whose receiver dropped its connection.
pub fn connection_interrupted() -> Frame {
    Frame::Close {
        code: 1002,
        reason: "Connection interrupted".to_owned(),
    }
}

/// True for the code points SockJS escapes on top of standard JSON escaping,
/// because browsers and proxies mangle them in transit. Controls with a short
/// JSON escape (`\n`, `\t`, ...) get it, as `JSON.stringify` does; the rest
/// are written as lowercase `\uXXXX`.
pub fn must_escape(c: char) -> bool {
    matches!(c,
        '\u{0000}'..='\u{001f}'
        | '\u{200c}'..='\u{200f}'
        | '\u{2028}'..='\u{202f}'
        | '\u{2060}'..='\u{206f}'
        | '\u{fff0}'..='\u{ffff}')
}

/// Writes `s` as a quoted JSON string with the SockJS escaping.
pub fn write_json_string<W: Write + ?Sized>(s: &str, out: &mut W) {
    // Writing to a `String` or a growable buffer cannot fail.
    let _ = out.write_str("\"");
    let mut plain_from = 0;
    let mut at = 0;
    while let Some((position, char_len, escape)) = next_escape(s, at) {
        let _ = out.write_str(&s[plain_from..position]);
        let _ = match escape {
            Escape::Short(text) => out.write_str(text),
            Escape::Unicode(code) => write!(out, "\\u{code:04x}"),
        };
        at = position + char_len;
        plain_from = at;
    }
    let _ = out.write_str(&s[plain_from..]);
    let _ = out.write_str("\"");
}

/// The length of [`write_json_string`]'s output for `s`.
pub fn json_string_len(s: &str) -> usize {
    let mut len = 2 + s.len();
    let mut at = 0;
    while let Some((position, char_len, escape)) = next_escape(s, at) {
        len = len - char_len
            + match escape {
                Escape::Short(text) => text.len(),
                Escape::Unicode(_) => 6,
            };
        at = position + char_len;
    }
    len
}

enum Escape {
    Short(&'static str),
    Unicode(u32),
}

/// The next character from byte `at` on that must be escaped: its byte
/// position, its length in bytes and its escape. Bytes that cannot start
/// an escape are skipped through a table; of the non-ASCII characters only those whose UTF-8 starts
/// with 0xE2 (U+2000-U+2FFF) or 0xEF (U+F000-U+FFFF) can need escaping, so
/// only those are decoded.
fn next_escape(s: &str, mut at: usize) -> Option<(usize, usize, Escape)> {
    let bytes = s.as_bytes();
    while at < bytes.len() {
        // Eight plain ASCII bytes at a time: most text has nothing to escape.
        if let Some(word) = word::at(bytes, at) {
            if !may_need_escaping(word) {
                at += 8;
                continue;
            }
        }
        let byte = bytes[at];
        if !NEEDS_A_LOOK[byte as usize] {
            at += 1;
            continue;
        }
        match byte {
            b'"' => return Some((at, 1, Escape::Short("\\\""))),
            b'\\' => return Some((at, 1, Escape::Short("\\\\"))),
            0x08 => return Some((at, 1, Escape::Short("\\b"))),
            b'\t' => return Some((at, 1, Escape::Short("\\t"))),
            b'\n' => return Some((at, 1, Escape::Short("\\n"))),
            0x0c => return Some((at, 1, Escape::Short("\\f"))),
            b'\r' => return Some((at, 1, Escape::Short("\\r"))),
            0x00..=0x1f => return Some((at, 1, Escape::Unicode(byte as u32))),
            // 0xE2 or 0xEF: the lead byte of a three-byte character.
            _ => {
                let c = s[at..].chars().next()?;
                if must_escape(c) {
                    return Some((at, 3, Escape::Unicode(c as u32)));
                }
                at += 3;
            }
        }
    }
    None
}

/// The bytes [`next_escape`] must look at: controls, `"`, `\\`, and the lead
/// bytes 0xE2 and 0xEF. Every other byte, continuation bytes included, is
/// copied as it is.
/// False only when none of the eight bytes in `word` is a control
/// character, `"`, `\` or part of a non-ASCII character (which may be one
/// SockJS escapes): a true answer only sends the bytes through the table below.
fn may_need_escaping(word: u64) -> bool {
    word::has_non_ascii(word)
        || word::has_control(word)
        || word::has_byte(word, b'"')
        || word::has_byte(word, b'\\')
}

static NEEDS_A_LOOK: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0xe2] = true;
    table[0xef] = true;
    table
};

fn decimal_len(mut n: u16) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_test_flags_every_byte_that_needs_a_look_at_every_position() {
        for byte in 0..=255u8 {
            let flagged = byte < 0x20 || byte == b'"' || byte == b'\\' || byte >= 0x80;
            for position in 0..8 {
                let mut word = *b"abcdefgh";
                word[position] = byte;
                assert_eq!(
                    may_need_escaping(u64::from_le_bytes(word)),
                    flagged,
                    "byte {byte:#04x} at {position}"
                );
            }
        }
    }

    fn messages(items: &[&str]) -> Frame {
        Frame::Messages(items.iter().map(|&s| s.into()).collect())
    }

    #[test]
    fn letters_of_the_simple_frames() {
        assert_eq!(Frame::Open.encode(), "o");
        assert_eq!(Frame::Heartbeat.encode(), "h");
    }

    #[test]
    fn messages_frame_is_a_json_array_in_order() {
        assert_eq!(messages(&["a"]).encode(), r#"a["a"]"#);
        assert_eq!(messages(&["a", "b", ""]).encode(), r#"a["a","b",""]"#);
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        let frame = Frame::Close {
            code: 3000,
            reason: "Go away!".into(),
        };
        assert_eq!(frame.encode(), r#"c[3000,"Go away!"]"#);
        assert_eq!(
            another_connection_open().encode(),
            r#"c[2010,"Another connection still open"]"#
        );
        assert_eq!(
            connection_interrupted().encode(),
            r#"c[1002,"Connection interrupted"]"#
        );
    }

    #[test]
    fn quotes_and_backslashes_use_standard_json_escapes() {
        assert_eq!(
            messages(&[r#"say "hi" \o/"#]).encode(),
            r#"a["say \"hi\" \\o/"]"#
        );
    }

    #[test]
    fn control_characters_are_escaped_as_json_stringify_does() {
        let short = [
            (8, "\\b"),
            (9, "\\t"),
            (10, "\\n"),
            (12, "\\f"),
            (13, "\\r"),
        ];
        for c in 0u32..=0x1f {
            let s = char::from_u32(c).unwrap().to_string();
            let expected = match short.iter().find(|(code, _)| *code == c) {
                Some((_, escape)) => escape.to_string(),
                None => format!("\\u{c:04x}"),
            };
            assert_eq!(messages(&[&s]).encode(), format!("a[\"{expected}\"]"));
        }
    }

    #[test]
    fn every_sockjs_escaped_range_is_escaped_and_nothing_else() {
        let ranges = [
            (0x200c, 0x200f),
            (0x2028, 0x202f),
            (0x2060, 0x206f),
            (0xfff0, 0xffff),
        ];
        for (lo, hi) in ranges {
            for c in lo..=hi {
                let s = char::from_u32(c).unwrap().to_string();
                let mut out = String::new();
                write_json_string(&s, &mut out);
                assert_eq!(out, format!("\"\\u{c:04x}\""));
            }
        }
        for c in [
            0x7f, 0xa0, 0xff, 0x200b, 0x2030, 0x205f, 0x2070, 0xffef, 0x1f600,
        ] {
            let s = char::from_u32(c).unwrap().to_string();
            let mut out = String::new();
            write_json_string(&s, &mut out);
            assert_eq!(out, format!("\"{s}\""), "U+{c:04X} goes out raw");
        }
    }

    #[test]
    fn escaped_output_is_json_that_decodes_to_the_input() {
        let all: String = (0u32..0x3000)
            .chain(0xe000..0x10000)
            .chain([0x1f600, 0x10ffff])
            .filter_map(char::from_u32)
            .collect();
        let frame = messages(&[&all, "plain"]).encode();
        let decoded: Vec<String> = serde_json::from_str(&frame[1..]).unwrap();
        assert_eq!(decoded, vec![all, "plain".to_string()]);
    }

    #[test]
    fn encoded_len_matches_encode() {
        let frames = [
            Frame::Open,
            Frame::Heartbeat,
            messages(&[]),
            messages(&["", "x\u{2028}\"\\\u{0}é😀"]),
            Frame::Close {
                code: 7,
                reason: "a\nb".into(),
            },
            Frame::Close {
                code: 65535,
                reason: String::new(),
            },
        ];
        for frame in frames {
            assert_eq!(frame.encoded_len(), frame.encode().len(), "{frame:?}");
        }
    }
}
