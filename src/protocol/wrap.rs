//! How each HTTP transport writes frames into its response body
//! (PROTOCOL.md section 9): preludes and per-frame wrappings.

use super::frame::must_escape;
use super::inbound::percent_decode;
use std::fmt::Write as _;

/// The byte layout of one receiver's response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrapping {
    /// `xhr`: each frame followed by `\n`.
    XhrPolling,
    /// `xhr_streaming`: a 2 KiB prelude, then frames as in `xhr`.
    XhrStreaming,
    /// `eventsource`: `data: FRAME\r\n\r\n`.
    EventSource,
    /// `htmlfile`: an HTML head calling `parent.CALLBACK`, then one `<script>` per frame.
    HtmlFile {
        /// The page's callback name, already checked.
        callback: String,
    },
    /// `jsonp`: `/**/CALLBACK("FRAME");\r\n`.
    Jsonp {
        /// The callback name, already checked.
        callback: String,
    },
}

const HTMLFILE_HEAD: &str = r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.CALLBACK;
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>"#;

impl Wrapping {
    /// Bytes written before the first frame.
    pub fn prelude(&self) -> String {
        match self {
            Wrapping::XhrPolling | Wrapping::Jsonp { .. } => String::new(),
            Wrapping::XhrStreaming => {
                let mut prelude = "h".repeat(2048);
                prelude.push('\n');
                prelude
            }
            Wrapping::EventSource => "\r\n".to_owned(),
            Wrapping::HtmlFile { callback } => {
                let mut head = HTMLFILE_HEAD.replace("CALLBACK", callback);
                // Old browsers render nothing of a streamed page before 1 KiB.
                let padding = 1025usize.saturating_sub(head.len());
                head.extend(std::iter::repeat_n(' ', padding));
                head.push_str("\r\n\r\n");
                head
            }
        }
    }

    /// Appends one encoded frame, wrapped, to `out`.
    pub fn wrap_into(&self, frame: &str, out: &mut String) {
        match self {
            Wrapping::XhrPolling | Wrapping::XhrStreaming => {
                out.push_str(frame);
                out.push('\n');
            }
            Wrapping::EventSource => {
                out.push_str("data: ");
                for c in frame.chars() {
                    match c {
                        '\r' => out.push_str("%0D"),
                        '\n' => out.push_str("%0A"),
                        '\0' => out.push_str("%00"),
                        '%' => out.push_str("%25"),
                        c => out.push(c),
                    }
                }
                out.push_str("\r\n\r\n");
            }
            Wrapping::HtmlFile { .. } => {
                out.push_str("<script>\np(");
                write_script_string(frame, out);
                out.push_str(");\n</script>\r\n");
            }
            Wrapping::Jsonp { callback } => {
                out.push_str("/**/");
                out.push_str(callback);
                out.push('(');
                write_script_string(frame, out);
                out.push_str(");\r\n");
            }
        }
    }

    /// One frame, wrapped.
    pub fn wrap(&self, frame: &str) -> String {
        let mut out = String::with_capacity(frame.len() + 16);
        self.wrap_into(frame, &mut out);
        out
    }
}

/// A JSON string literal that is also safe inside an HTML `<script>` block:
/// `<`, `>` and `&` are written as `\u003c` etc., so no `</script>`, `<!--`
/// or entity can end or alter the block.
fn write_script_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '<' | '>' | '&' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if must_escape(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The `c`/`callback` parameter check of htmlfile and jsonp: a security
/// boundary, since the name is written into HTML and JavaScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackError {
    /// Neither `c` nor `callback` is given, or it is empty.
    Missing,
    /// Longer than 32 characters, or a character outside `[a-zA-Z0-9_.-]`.
    Invalid,
}

impl CallbackError {
    /// The text of the `500` response that refuses the request.
    pub fn text(self) -> &'static str {
        match self {
            CallbackError::Missing => "\"callback\" parameter required",
            CallbackError::Invalid => "invalid \"callback\" parameter",
        }
    }
}

/// The callback named by a query string's `c` (or else `callback`)
/// parameter, percent-decoded.
pub fn callback_param(query: &str) -> Option<String> {
    let value = |name: &str| {
        query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    let raw = value("c").or_else(|| value("callback"))?;
    Some(String::from_utf8_lossy(&percent_decode(raw.as_bytes(), false)).into_owned())
}

/// Checks a callback name: 1 to 32 characters of `[a-zA-Z0-9_.-]`.
pub fn check_callback(callback: Option<&str>) -> Result<&str, CallbackError> {
    let callback = callback
        .filter(|c| !c.is_empty())
        .ok_or(CallbackError::Missing)?;
    let valid = callback.len() <= 32
        && callback
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(callback)
    } else {
        Err(CallbackError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xhr_frames_end_with_newline() {
        assert_eq!(Wrapping::XhrPolling.wrap("o"), "o\n");
        assert_eq!(Wrapping::XhrStreaming.wrap(r#"a["x"]"#), "a[\"x\"]\n");
        assert_eq!(Wrapping::XhrPolling.prelude(), "");
    }

    #[test]
    fn xhr_streaming_prelude_is_2048_h_and_newline() {
        let prelude = Wrapping::XhrStreaming.prelude();
        assert_eq!(prelude.len(), 2049);
        assert!(prelude[..2048].bytes().all(|b| b == b'h'));
        assert!(prelude.ends_with('\n'));
    }

    #[test]
    fn eventsource_data_lines() {
        assert_eq!(Wrapping::EventSource.prelude(), "\r\n");
        assert_eq!(Wrapping::EventSource.wrap("o"), "data: o\r\n\r\n");
        assert_eq!(
            Wrapping::EventSource.wrap("a\r\n\0%"),
            "data: a%0D%0A%00%25\r\n\r\n"
        );
    }

    #[test]
    fn htmlfile_head_is_padded_past_1024_bytes() {
        let prelude = Wrapping::HtmlFile {
            callback: "cb".into(),
        }
        .prelude();
        assert!(prelude.len() > 1024);
        assert!(prelude.starts_with("<!doctype html>\n<html><head>"));
        assert!(prelude.contains("var c = parent.cb;\n"));
        assert!(prelude.ends_with("</script> \r\n\r\n") || prelude.ends_with(" \r\n\r\n"));
    }

    #[test]
    fn htmlfile_and_jsonp_frames() {
        let html = Wrapping::HtmlFile {
            callback: "cb".into(),
        };
        assert_eq!(
            html.wrap(r#"a["x"]"#),
            "<script>\np(\"a[\\\"x\\\"]\");\n</script>\r\n"
        );
        let jsonp = Wrapping::Jsonp {
            callback: "cb".into(),
        };
        assert_eq!(jsonp.wrap("o"), "/**/cb(\"o\");\r\n");
    }

    #[test]
    fn script_strings_cannot_end_a_script_block() {
        let jsonp = Wrapping::Jsonp {
            callback: "cb".into(),
        };
        let frame = r#"a["</script><script>alert(1)</script>","</SCRIPT","<!--","&amp;","\u2028"]"#;
        let wrapped = jsonp.wrap(frame);
        for bad in ["<", ">", "&", "\u{2028}"] {
            assert!(!wrapped.contains(bad), "{bad:?} in {wrapped}");
        }
        let inner = wrapped
            .strip_prefix("/**/cb(")
            .unwrap()
            .strip_suffix(");\r\n")
            .unwrap();
        let decoded: String = serde_json::from_str(inner).unwrap();
        assert_eq!(decoded, frame);
    }

    #[test]
    fn callback_from_c_or_callback_percent_decoded() {
        assert_eq!(
            callback_param("c=%63allback&x=1").as_deref(),
            Some("callback")
        );
        assert_eq!(callback_param("t=1&callback=cb").as_deref(), Some("cb"));
        assert_eq!(callback_param("c=a&callback=b").as_deref(), Some("a"));
        assert_eq!(callback_param("c").as_deref(), Some(""));
        assert_eq!(callback_param("x=1"), None);
    }

    #[test]
    fn callback_check() {
        assert_eq!(check_callback(Some("a.b-c_D9")), Ok("a.b-c_D9"));
        assert_eq!(check_callback(Some(&"x".repeat(32))).map(str::len), Ok(32));
        assert_eq!(check_callback(None), Err(CallbackError::Missing));
        assert_eq!(check_callback(Some("")), Err(CallbackError::Missing));
        for bad in [
            "a b",
            "a(1)",
            "<x>",
            "a;alert(1)",
            "é",
            "a\"",
            &"x".repeat(33),
        ] {
            assert_eq!(
                check_callback(Some(bad)),
                Err(CallbackError::Invalid),
                "{bad}"
            );
        }
        assert_eq!(
            CallbackError::Missing.text(),
            "\"callback\" parameter required"
        );
        assert_eq!(
            CallbackError::Invalid.text(),
            "invalid \"callback\" parameter"
        );
    }
}
