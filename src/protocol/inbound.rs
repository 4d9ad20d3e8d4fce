//! Client-to-server payloads (PROTOCOL.md sections 2 and 9): a JSON array of
//! strings, a single JSON string (framed WebSocket only), or the form field
//! `d=` of `jsonp_send`.
//!
//! The decoder is hand-written rather than serde_json because browsers'
//! `JSON.stringify` writes a lone UTF-16 surrogate as `\ud800`, which serde
//! refuses. Such a surrogate becomes U+FFFD here, so one odd character never
//! kills a session.

use super::word;

/// Why a client payload was refused. Each maps to one status and one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundError {
    /// The body (or the `d` form field) was empty or missing.
    PayloadExpected,
    /// Not valid JSON, or not UTF-8.
    BrokenJson,
    /// Valid JSON, but not an array of strings.
    NotStrings,
    /// Larger than the service's inbound message limit.
    TooLarge,
}

impl InboundError {
    /// The HTTP status of the response that refuses the payload.
    pub fn status(self) -> u16 {
        match self {
            InboundError::TooLarge => 413,
            _ => 500,
        }
    }

    /// The response body text.
    pub fn text(self) -> &'static str {
        match self {
            InboundError::PayloadExpected => "Payload expected.",
            InboundError::BrokenJson => "Broken JSON encoding.",
            InboundError::NotStrings => "Payload must be a JSON array of strings.",
            InboundError::TooLarge => "Payload too large.",
        }
    }
}

impl std::fmt::Display for InboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for InboundError {}

/// Decodes an `xhr_send` body or a raw `jsonp_send` body: a JSON array of strings.
pub fn decode_array(body: &[u8]) -> Result<Vec<String>, InboundError> {
    if body.is_empty() {
        return Err(InboundError::PayloadExpected);
    }
    let text = std::str::from_utf8(body).map_err(|_| InboundError::BrokenJson)?;
    let mut parser = Parser::new(text);
    parser.skip_whitespace();
    if parser.peek() != Some(b'[') {
        parser.skip_value()?;
        parser.expect_end()?;
        return Err(InboundError::NotStrings);
    }
    let messages = parser.array_of_strings()?;
    parser.expect_end()?;
    Ok(messages)
}

/// The messages of one framed-WebSocket message: nearly always one, which
/// then needs no `Vec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Messages {
    /// One message.
    One(String),
    /// None, or more than one.
    Many(Vec<String>),
}

impl Default for Messages {
    fn default() -> Self {
        Messages::Many(Vec::new())
    }
}

impl Messages {
    /// The messages in order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Messages::One(message) => std::slice::from_ref(message),
            Messages::Many(messages) => messages,
        }
    }

    /// The messages in order, in a `Vec`.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Messages::One(message) => vec![message],
            Messages::Many(messages) => messages,
        }
    }
}

impl Extend<String> for Messages {
    fn extend<I: IntoIterator<Item = String>>(&mut self, messages: I) {
        for message in messages {
            match self {
                Messages::Many(many) if many.is_empty() => *self = Messages::One(message),
                Messages::Many(many) => many.push(message),
                Messages::One(_) => {
                    let Messages::One(first) = std::mem::take(self) else {
                        unreachable!("matched above")
                    };
                    *self = Messages::Many(vec![first, message]);
                }
            }
        }
    }
}

impl IntoIterator for Messages {
    type Item = String;
    type IntoIter = std::iter::Chain<std::option::IntoIter<String>, std::vec::IntoIter<String>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Messages::One(message) => Some(message).into_iter().chain(Vec::new()),
            Messages::Many(messages) => None.into_iter().chain(messages),
        }
    }
}

/// Decodes one framed-WebSocket text message: an array of strings or one string.
/// An empty message delivers nothing.
pub fn decode_websocket_message(text: &str) -> Result<Messages, InboundError> {
    let mut parser = Parser::new(text);
    parser.skip_whitespace();
    let messages = match parser.peek() {
        None => return Ok(Messages::default()),
        Some(b'[') => parser.array_of_strings()?,
        Some(b'"') => Messages::One(parser.string()?),
        Some(_) => {
            parser.skip_value()?;
            parser.expect_end()?;
            return Err(InboundError::NotStrings);
        }
    };
    parser.expect_end()?;
    Ok(messages)
}

/// Decodes a `jsonp_send` body: form-encoded `d=JSON` when the content type
/// says so, the raw JSON array otherwise.
pub fn decode_jsonp_send(body: &[u8], form_encoded: bool) -> Result<Vec<String>, InboundError> {
    if !form_encoded {
        return decode_array(body);
    }
    let field = body
        .split(|&b| b == b'&')
        .find_map(|pair| pair.strip_prefix(b"d="))
        .ok_or(InboundError::PayloadExpected)?;
    decode_array(&percent_decode(field, true))
}

/// Percent-decoding (`%XX` is a byte; a malformed escape is kept as
/// written); in form values `+` is a space too.
pub(crate) fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < input.len() => {
                match (hex_value(input[i + 1]), hex_value(input[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Containers open while skipping a non-string value.
    depth: usize,
}

/// Nesting beyond this is refused without looking further, so a hostile
/// `[[[[...` cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect_end(&mut self) -> Result<(), InboundError> {
        self.skip_whitespace();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(InboundError::BrokenJson),
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), InboundError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(InboundError::BrokenJson)
        }
    }

    /// `[ "..." , "..." ]`; a non-string element is `NotStrings` only when the
    /// whole payload is otherwise valid JSON.
    fn array_of_strings<C: Default + Extend<String>>(&mut self) -> Result<C, InboundError> {
        self.eat(b'[')?;
        let mut messages = C::default();
        let mut saw_non_string = false;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(messages);
        }
        loop {
            self.skip_whitespace();
            if self.peek() == Some(b'"') {
                messages.extend(Some(self.string()?));
            } else {
                self.skip_value()?;
                saw_non_string = true;
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(InboundError::BrokenJson),
            }
        }
        if saw_non_string {
            self.expect_end()?;
            return Err(InboundError::NotStrings);
        }
        Ok(messages)
    }

    fn string(&mut self) -> Result<String, InboundError> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            // Plain text runs up to a quote, a backslash or a control
            // character, and is copied in one go.
            let rest = &self.bytes()[self.pos..];
            let mut run = 0;
            while let Some(word) = word::at(rest, run) {
                if word::has_byte(word, b'"')
                    || word::has_byte(word, b'\\')
                    || word::has_control(word)
                {
                    break;
                }
                run += 8;
            }
            run += rest[run..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or(InboundError::BrokenJson)?;
            let plain = &self.text[self.pos..self.pos + run];
            self.pos += run + 1;
            if out.is_empty() && rest[run] == b'"' {
                // Nothing escaped, the common case: one allocation of the exact size.
                return Ok(plain.to_owned());
            }
            out.push_str(plain);
            match rest[run] {
                b'"' => return Ok(out),
                b'\\' => self.escape(&mut out)?,
                _ => return Err(InboundError::BrokenJson),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), InboundError> {
        let b = self.peek().ok_or(InboundError::BrokenJson)?;
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => return Err(InboundError::BrokenJson),
        };
        out.push(c);
        Ok(())
    }

    /// After `\u`: a code point, a surrogate pair written as two escapes, or
    /// U+FFFD for a surrogate with no partner.
    fn unicode_escape(&mut self) -> Result<char, InboundError> {
        let unit = self.hex4()?;
        match unit {
            0xd800..=0xdbff => {
                let rest = &self.bytes()[self.pos..];
                if rest.len() >= 6 && rest[0] == b'\\' && rest[1] == b'u' {
                    let saved = self.pos;
                    self.pos += 2;
                    let low = self.hex4()?;
                    if (0xdc00..=0xdfff).contains(&low) {
                        let code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                        return Ok(char::from_u32(code).unwrap_or('\u{fffd}'));
                    }
                    self.pos = saved;
                }
                Ok('\u{fffd}')
            }
            0xdc00..=0xdfff => Ok('\u{fffd}'),
            _ => Ok(char::from_u32(unit).unwrap_or('\u{fffd}')),
        }
    }

    fn hex4(&mut self) -> Result<u32, InboundError> {
        let digits = self
            .bytes()
            .get(self.pos..self.pos + 4)
            .ok_or(InboundError::BrokenJson)?;
        let mut value = 0;
        for &d in digits {
            value = value * 16 + (d as char).to_digit(16).ok_or(InboundError::BrokenJson)?;
        }
        self.pos += 4;
        Ok(value)
    }

    /// Skips any JSON value, checking it is well formed.
    fn skip_value(&mut self) -> Result<(), InboundError> {
        self.skip_whitespace();
        match self.peek().ok_or(InboundError::BrokenJson)? {
            b'"' => self.string().map(drop),
            b'[' => self.skip_container(b']'),
            b'{' => self.skip_container(b'}'),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(InboundError::BrokenJson),
        }
    }

    fn skip_container(&mut self, close: u8) -> Result<(), InboundError> {
        if self.depth >= MAX_DEPTH {
            // Whatever follows, this is no array of strings.
            return Err(InboundError::NotStrings);
        }
        self.depth += 1;
        let result = self.skip_container_items(close);
        self.depth -= 1;
        result
    }

    fn skip_container_items(&mut self, close: u8) -> Result<(), InboundError> {
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if close == b'}' {
                self.skip_whitespace();
                self.string()?;
                self.skip_whitespace();
                self.eat(b':')?;
            }
            self.skip_value()?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(InboundError::BrokenJson),
            }
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), InboundError> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(InboundError::BrokenJson)
        }
    }

    fn number(&mut self) -> Result<(), InboundError> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.pos += 1;
        }
        self.text[start..self.pos]
            .parse::<f64>()
            .map(drop)
            .map_err(|_| InboundError::BrokenJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn array_of_strings_in_order() {
        assert_eq!(decode_array(br#"["a","b"]"#), Ok(strings(&["a", "b"])));
        assert_eq!(
            decode_array(b" [ \"a\" ,\n\"\" ] "),
            Ok(strings(&["a", ""]))
        );
    }

    #[test]
    fn empty_array_delivers_nothing() {
        assert_eq!(decode_array(b"[]"), Ok(vec![]));
        assert_eq!(decode_websocket_message("[ ]"), Ok(Messages::default()));
    }

    #[test]
    fn empty_body_is_payload_expected() {
        let err = decode_array(b"").unwrap_err();
        assert_eq!(err, InboundError::PayloadExpected);
        assert_eq!((err.status(), err.text()), (500, "Payload expected."));
    }

    #[test]
    fn broken_json_is_refused_whole() {
        for body in [
            &b"["[..],
            b"[\"x",
            b"[\"x\"",
            b"[\"a\",]",
            b"[,]",
            b"x",
            b"[\"a\"]x",
            b"[\"\\x\"]",
            b"[\"\\u12\"]",
            b"[\"a\nb\"]",
            b"{",
            b"[1,]",
        ] {
            let err = decode_array(body).unwrap_err();
            assert_eq!(
                err,
                InboundError::BrokenJson,
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!((err.status(), err.text()), (500, "Broken JSON encoding."));
        }
    }

    #[test]
    fn invalid_utf8_is_broken_json() {
        assert_eq!(decode_array(b"[\"\xff\"]"), Err(InboundError::BrokenJson));
    }

    #[test]
    fn valid_json_that_is_not_strings_has_its_own_text() {
        for body in [
            &br#"["a",1]"#[..],
            br#"[null]"#,
            br#"[["a"]]"#,
            br#"{"a":"b"}"#,
            br#""a""#,
            b"42",
        ] {
            let err = decode_array(body).unwrap_err();
            assert_eq!(
                err,
                InboundError::NotStrings,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(err.text(), "Payload must be a JSON array of strings.");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        let deep = format!("[{}{}]", "[".repeat(1_000_000), "]".repeat(1_000_000));
        assert_eq!(decode_array(deep.as_bytes()), Err(InboundError::NotStrings));
        assert_eq!(
            decode_websocket_message(&deep),
            Err(InboundError::NotStrings)
        );
        let objects = "{\"a\":".repeat(100_000);
        assert!(decode_array(objects.as_bytes()).is_err());
        assert_eq!(
            decode_array(br#"[[[["a"]]]]"#),
            Err(InboundError::NotStrings)
        );
    }

    #[test]
    fn escapes_decode_including_surrogate_pairs() {
        let body = br#"["\"\\\/\b\f\n\r\t","\u00e9\u2028\ud83d\ude00","\uFFFF"]"#;
        assert_eq!(
            decode_array(body),
            Ok(strings(&[
                "\"\\/\u{8}\u{c}\n\r\t",
                "é\u{2028}😀",
                "\u{ffff}"
            ]))
        );
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(decode_array(br#"["\ud800"]"#), Ok(strings(&["\u{fffd}"])));
        assert_eq!(
            decode_array(br#"["a\udc00b"]"#),
            Ok(strings(&["a\u{fffd}b"]))
        );
        assert_eq!(
            decode_array(br#"["\ud800\u0041"]"#),
            Ok(strings(&["\u{fffd}A"]))
        );
        assert_eq!(
            decode_array(br#"["\ud800\ud800\udc00"]"#),
            Ok(strings(&["\u{fffd}\u{10000}"]))
        );
    }

    #[test]
    fn raw_utf8_passes_through() {
        assert_eq!(
            decode_array("[\"żółć 😀\"]".as_bytes()),
            Ok(strings(&["żółć 😀"]))
        );
    }

    #[test]
    fn websocket_accepts_a_single_string_or_nothing() {
        assert_eq!(
            decode_websocket_message(r#""b""#),
            Ok(Messages::One("b".into()))
        );
        assert_eq!(
            decode_websocket_message(r#"["a","b"]"#).map(Messages::into_vec),
            Ok(strings(&["a", "b"]))
        );
        assert_eq!(
            decode_websocket_message(r#"["a"]"#)
                .map(Messages::into_iter)
                .map(Vec::from_iter),
            Ok(strings(&["a"]))
        );
        assert_eq!(decode_websocket_message(""), Ok(Messages::default()));
        assert_eq!(
            decode_websocket_message(r#"["a"#),
            Err(InboundError::BrokenJson)
        );
        assert_eq!(decode_websocket_message("1"), Err(InboundError::NotStrings));
    }

    #[test]
    fn jsonp_send_form_field_d() {
        assert_eq!(
            decode_jsonp_send(b"d=%5B%22x%22%5D", true),
            Ok(strings(&["x"]))
        );
        assert_eq!(
            decode_jsonp_send(b"a=1&d=%5B%22a+b%22%5D", true),
            Ok(strings(&["a b"]))
        );
        assert_eq!(
            decode_jsonp_send(b"d=", true),
            Err(InboundError::PayloadExpected)
        );
        assert_eq!(
            decode_jsonp_send(b"e=1", true),
            Err(InboundError::PayloadExpected)
        );
        assert_eq!(
            decode_jsonp_send(b"", true),
            Err(InboundError::PayloadExpected)
        );
        assert_eq!(
            decode_jsonp_send(b"d=%5B%22x", true),
            Err(InboundError::BrokenJson)
        );
        assert_eq!(decode_jsonp_send(br#"["x"]"#, false), Ok(strings(&["x"])));
    }

    #[test]
    fn form_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode(b"%41%4a+%zz%4", true), b"AJ %zz%4".to_vec());
        assert_eq!(percent_decode(b"a+b%20c", false), b"a+b c".to_vec());
    }
}
