//! Any strings encode to a frame a JSON decoder reads back unchanged, with no
//! character SockJS escapes left raw, and every transport wrapping holds it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::protocol::frame::{must_escape, Frame};
use sockjs_gateway::protocol::wrap::Wrapping;

fuzz_target!(|messages: Vec<String>| {
    if messages.is_empty() {
        return;
    }
    let frame = Frame::Messages(messages.clone());
    let encoded = frame.encode();
    assert_eq!(encoded.len(), frame.encoded_len());
    assert!(!encoded.chars().any(must_escape));
    let decoded: Vec<String> = serde_json::from_str(&encoded[1..]).unwrap();
    assert_eq!(decoded, messages);
    for wrapping in [
        Wrapping::XhrStreaming,
        Wrapping::EventSource,
        Wrapping::HtmlFile { callback: "c".into() },
        Wrapping::Jsonp { callback: "c".into() },
    ] {
        let wrapped = wrapping.wrap(&encoded);
        if matches!(wrapping, Wrapping::HtmlFile { .. } | Wrapping::Jsonp { .. }) {
            let inner = &wrapped[wrapped.find("(\"").unwrap() + 1..wrapped.rfind(");").unwrap()];
            assert!(!inner.contains(['<', '>', '&']), "{inner}");
            let text: String = serde_json::from_str(inner).unwrap();
            assert_eq!(text, encoded);
        }
    }
});
