//! A message on its way to a client: its text owned by one session, or
//! shared by every session it goes to (a broadcast), whose JSON form is
//! then escaped once for all of them.

use std::fmt;
use std::sync::{Arc, OnceLock};

use super::frame::{json_string_len, write_json_string};

/// One application message in an outgoing queue or an `a[...]` frame.
#[derive(Clone)]
pub enum OutMessage {
    /// Sent to one session.
    Owned(String),
    /// The same text queued for many sessions: one copy, escaped once.
    Shared(Arc<SharedText>),
}

/// The text of a shared message and, once the first frame carrying it was
/// encoded, its JSON string literal (quotes and escapes included).
pub struct SharedText {
    text: String,
    json: OnceLock<Box<str>>,
}

impl SharedText {
    /// A shared message of `text`.
    pub fn new(text: String) -> Arc<SharedText> {
        Arc::new(SharedText {
            text,
            json: OnceLock::new(),
        })
    }

    /// The message's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let mut out = String::with_capacity(self.text.len() + 2);
            write_json_string(&self.text, &mut out);
            out.into_boxed_str()
        })
    }
}

impl OutMessage {
    /// The message's text, as the application sent it.
    pub fn as_str(&self) -> &str {
        match self {
            OutMessage::Owned(text) => text,
            OutMessage::Shared(shared) => &shared.text,
        }
    }

    /// Its length in bytes (what the queue's bound counts).
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether it is the empty string.
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }

    /// Appends it as a JSON string literal to `out`.
    pub fn write_json<W: fmt::Write + ?Sized>(&self, out: &mut W) {
        match self {
            OutMessage::Owned(text) => write_json_string(text, out),
            OutMessage::Shared(shared) => {
                // Writing to a `String` or a growable buffer cannot fail.
                let _ = out.write_str(shared.json());
            }
        }
    }

    /// The length of [`OutMessage::write_json`]'s output.
    pub fn json_len(&self) -> usize {
        match self {
            OutMessage::Owned(text) => json_string_len(text),
            OutMessage::Shared(shared) => match shared.json.get() {
                Some(json) => json.len(),
                None => json_string_len(&shared.text),
            },
        }
    }

    /// The text, without a copy when this was its only holder.
    pub fn into_string(self) -> String {
        match self {
            OutMessage::Owned(text) => text,
            OutMessage::Shared(shared) => match Arc::try_unwrap(shared) {
                Ok(only) => only.text,
                Err(shared) => shared.text.clone(),
            },
        }
    }
}

impl From<String> for OutMessage {
    fn from(text: String) -> Self {
        OutMessage::Owned(text)
    }
}

impl From<&str> for OutMessage {
    fn from(text: &str) -> Self {
        OutMessage::Owned(text.to_owned())
    }
}

impl AsRef<str> for OutMessage {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for OutMessage {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for OutMessage {}

impl fmt::Debug for OutMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_text_is_escaped_once_and_reads_like_owned() {
        let text = "a\"b\u{2028}</script>".to_owned();
        let owned = OutMessage::from(text.clone());
        let shared = OutMessage::Shared(SharedText::new(text.clone()));
        let (mut a, mut b) = (String::new(), String::new());
        owned.write_json(&mut a);
        assert_eq!(shared.json_len(), a.len(), "before the first encoding");
        shared.write_json(&mut b);
        assert_eq!(a, b);
        assert_eq!(shared.json_len(), a.len(), "from the cached literal");
        assert_eq!(owned, shared);
        assert_eq!(shared.clone().into_string(), text);
    }

    #[test]
    fn into_string_takes_a_sole_shared_text_without_a_copy() {
        let shared = OutMessage::Shared(SharedText::new("x".repeat(64)));
        let pointer = shared.as_str().as_ptr();
        let text = shared.into_string();
        assert_eq!(text.as_ptr(), pointer);
    }
}
