//! Any path and method routes to a route or a typed refusal, never a panic;
//! a routed session id is always one non-empty segment without a dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::protocol::route::{route, Method, Route};

fuzz_target!(|input: (u8, &str)| {
    let (method, path) = input;
    let method = [Method::Get, Method::Post, Method::Options, Method::Other][method as usize % 4];
    if let Ok(Route::Session { session_id, .. }) = route(method, path) {
        assert!(!session_id.is_empty() && !session_id.contains('.') && !session_id.contains('/'));
    }
});
