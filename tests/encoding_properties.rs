//! Properties of the SockJS encoder and decoder over arbitrary Unicode.

use proptest::prelude::*;
use sockjs_gateway::protocol::frame::Frame;
use sockjs_gateway::protocol::inbound;
use sockjs_gateway::protocol::message::{OutMessage, SharedText};

fn frame_of(messages: &[String]) -> Frame {
    Frame::Messages(messages.iter().map(|m| m.as_str().into()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any strings go out as a frame that a standard JSON decoder reads back unchanged.
    #[test]
    fn any_unicode_round_trips_through_the_encoder_and_a_json_decoder(messages in prop::collection::vec(any::<String>(), 1..5)) {
        let frame = frame_of(&messages).encode();
        prop_assert!(frame.starts_with('a'));
        let decoded: Vec<String> = serde_json::from_str(&frame[1..]).unwrap();
        prop_assert_eq!(decoded, messages);
    }

    /// The encoder's output never carries a code point SockJS must escape.
    #[test]
    fn encoded_frames_hold_no_character_sockjs_escapes(message in any::<String>()) {
        let frame = frame_of(&[message]).encode();
        prop_assert!(!frame.chars().any(sockjs_gateway::protocol::frame::must_escape), "{:?}", frame);
    }

    /// What the server writes, its own inbound decoder reads back unchanged.
    #[test]
    fn the_inbound_decoder_reads_what_the_encoder_writes(messages in prop::collection::vec(any::<String>(), 0..5)) {
        let frame = frame_of(&messages).encode();
        prop_assert_eq!(inbound::decode_array(&frame.as_bytes()[1..]).unwrap(), messages);
    }

    /// A shared message (a broadcast's) encodes as the same text sent to one
    /// session does, the first time (escaped) and every later time (cached).
    #[test]
    fn shared_messages_encode_as_owned_ones(messages in prop::collection::vec(any::<String>(), 1..5)) {
        let shared: Vec<OutMessage> = messages
            .iter()
            .map(|m| OutMessage::Shared(SharedText::new(m.clone())))
            .collect();
        let frame = Frame::Messages(shared);
        let owned = frame_of(&messages).encode();
        prop_assert_eq!(frame.encoded_len(), owned.len());
        prop_assert_eq!(&frame.encode(), &owned);
        prop_assert_eq!(&frame.encode(), &owned);
        prop_assert_eq!(frame.encoded_len(), owned.len());
    }

    /// Arbitrary bytes get a typed refusal or messages, never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = inbound::decode_array(&body);
        let _ = inbound::decode_jsonp_send(&body, true);
        if let Ok(text) = std::str::from_utf8(&body) {
            let _ = inbound::decode_websocket_message(text);
        }
    }
}
