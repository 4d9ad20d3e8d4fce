//! Every client body format: typed errors or messages, never a panic; what
//! serde_json accepts as an array of strings we accept with the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::protocol::inbound::{decode_array, decode_jsonp_send, decode_websocket_message};

fuzz_target!(|body: &[u8]| {
    let ours = decode_array(body);
    let _ = decode_jsonp_send(body, true);
    let _ = decode_jsonp_send(body, false);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = decode_websocket_message(text);
    }
    if let Ok(theirs) = serde_json::from_slice::<Vec<String>>(body) {
        assert_eq!(ours.as_ref().ok(), Some(&theirs), "serde_json reads {theirs:?}");
    }
});
