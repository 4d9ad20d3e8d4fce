//! PROTOCOL.md sections 5 (`/info`), 7 (caching and CORS headers, preflights)
//! and 8 (JSESSIONID).

mod support;

use support::*;

const YEAR: i64 = 31_536_000;

fn info_json(s: &Server, prefix: &str) -> serde_json::Value {
    let r = s.get(&format!("{prefix}/info"));
    assert_eq!(r.status, 200, "GET {prefix}/info");
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{prefix}/info is not JSON ({e}): {:?}", r.body_lossy()))
}

// ---------------------------------------------------------------------------
// Section 5: /info
// ---------------------------------------------------------------------------

#[test]
fn info_is_200_json_with_websocket_cookie_needed_origins_entropy() {
    let s = Server::start();
    let r = s.get("/echo/info");
    assert_eq!(r.status, 200);
    r.assert_header("Content-Type", "application/json; charset=UTF-8");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("info body is JSON");
    assert_eq!(v["websocket"], serde_json::json!(true), "{v}");
    assert_eq!(v["cookie_needed"], serde_json::json!(false), "{v}");
    assert_eq!(v["origins"], serde_json::json!(["*:*"]), "{v}");
    let entropy = v["entropy"]
        .as_u64()
        .unwrap_or_else(|| panic!("entropy must be a non-negative integer: {v}"));
    assert!(
        entropy <= u32::MAX as u64,
        "entropy must fit 0..2^32-1: {entropy}"
    );
}

#[test]
fn info_websocket_false_on_disabled_websocket_echo() {
    let s = Server::start();
    let v = info_json(&s, "/disabled_websocket_echo");
    assert_eq!(v["websocket"], serde_json::json!(false), "{v}");
    assert_eq!(v["cookie_needed"], serde_json::json!(false), "{v}");
}

#[test]
fn info_cookie_needed_true_on_cookie_needed_echo() {
    let s = Server::start();
    let v = info_json(&s, "/cookie_needed_echo");
    assert_eq!(v["cookie_needed"], serde_json::json!(true), "{v}");
    assert_eq!(v["websocket"], serde_json::json!(true), "{v}");
}

#[test]
fn info_entropy_differs_between_calls() {
    let s = Server::start();
    let a = info_json(&s, "/echo")["entropy"].as_u64().unwrap();
    let b = info_json(&s, "/echo")["entropy"].as_u64().unwrap();
    let c = info_json(&s, "/echo")["entropy"].as_u64().unwrap();
    assert!(
        a != b && b != c,
        "entropy must be fresh on every call: {a} {b} {c}"
    );
}

#[test]
fn info_sets_no_cookie() {
    let s = Server::start();
    for prefix in ["/echo", "/cookie_needed_echo"] {
        let r = s.get(&format!("{prefix}/info"));
        r.assert_no_header("Set-Cookie");
        let r =
            s.request(Request::get(&format!("{prefix}/info")).header("Cookie", "JSESSIONID=abc"));
        r.assert_no_header("Set-Cookie");
    }
}

// ---------------------------------------------------------------------------
// Section 7: not cacheable
// ---------------------------------------------------------------------------

fn assert_not_cacheable(r: &Response, what: &str) {
    assert_eq!(
        r.header_all("Cache-Control"),
        vec![NO_CACHE],
        "{what}: Cache-Control"
    );
    assert!(!r.has_header("Expires"), "{what}: no Expires allowed");
    assert!(
        !r.has_header("Last-Modified"),
        "{what}: no Last-Modified allowed"
    );
}

#[test]
fn info_is_not_cacheable() {
    let s = Server::start();
    let r = s.get("/echo/info");
    assert_not_cacheable(&r, "/info");
}

#[test]
fn xhr_xhr_send_and_xhr_streaming_are_not_cacheable() {
    let s = Server::start();
    let id = sid();
    let r = s.xhr("/echo", &id);
    assert_eq!(r.status, 200);
    assert_not_cacheable(&r, "xhr");
    let r = s.xhr_send("/echo", &id, br#"["x"]"#);
    assert_eq!(r.status, 204);
    assert_not_cacheable(&r, "xhr_send");
    let mut st = xhr_streaming(s.port, "/echo", &id);
    let head = Response {
        head: st.head.clone(),
        status: st.status,
        body: Vec::new(),
    };
    assert_not_cacheable(&head, "xhr_streaming");
    st.expect_prelude();
    assert_eq!(st.next_frame(), Frame::Messages(vec!["x".into()]));
}

// ---------------------------------------------------------------------------
// Section 7: CORS on actual requests
// ---------------------------------------------------------------------------

/// (method, path) of every CORS-carrying request for a fresh session.
fn cors_requests(id: &str) -> Vec<Request> {
    vec![
        Request::get("/echo/info"),
        Request::post(&format!("/echo/000/{id}/xhr"), b""),
        Request::post(&format!("/echo/000/{id}/xhr_send"), br#"["cors"]"#),
        Request::post(&format!("/echo/000/{id}/xhr_streaming"), b""),
    ]
}

/// Sends the request and returns only its head (streaming bodies are not
/// read to the end).
fn head_of(s: &Server, req: &Request) -> Response {
    let st = s.connect().stream(req);
    Response {
        status: st.status,
        head: st.head.clone(),
        body: Vec::new(),
    }
}

fn assert_vary_origin(r: &Response, what: &str) {
    assert!(
        r.header_tokens("Vary")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("Origin")),
        "{what}: Vary must list Origin, got {:?}",
        r.header_all("Vary")
    );
}

#[test]
fn cors_with_origin_echoes_it_exactly_with_credentials() {
    let s = Server::start();
    for origin in ["https://example.com", "null", "http://a.example:8080"] {
        let id = sid();
        for req in cors_requests(&id) {
            let what = format!("{} {} Origin {origin}", req.method, req.path);
            let req = req.header("Origin", origin);
            let r = head_of(&s, &req);
            assert!(
                r.status == 200 || r.status == 204,
                "{what}: status {}",
                r.status
            );
            r.assert_header("Access-Control-Allow-Origin", origin);
            r.assert_header("Access-Control-Allow-Credentials", "true");
            assert_vary_origin(&r, &what);
        }
    }
}

#[test]
fn cors_without_origin_is_star_without_credentials() {
    let s = Server::start();
    let id = sid();
    for req in cors_requests(&id) {
        let what = format!("{} {}", req.method, req.path);
        let r = head_of(&s, &req);
        assert!(
            r.status == 200 || r.status == 204,
            "{what}: status {}",
            r.status
        );
        r.assert_header("Access-Control-Allow-Origin", "*");
        r.assert_no_header("Access-Control-Allow-Credentials");
        assert_vary_origin(&r, &what);
    }
}

// ---------------------------------------------------------------------------
// Section 7: preflights
// ---------------------------------------------------------------------------

fn assert_preflight(r: &Response, methods: &str, what: &str) {
    assert_eq!(r.status, 204, "{what}: preflight status");
    assert!(r.body.is_empty(), "{what}: preflight body must be empty");
    r.assert_header("Access-Control-Allow-Methods", methods);
    r.assert_header("Cache-Control", "public, max-age=31536000");
    r.assert_header("Access-Control-Max-Age", "31536000");
    let expires = r
        .header("Expires")
        .unwrap_or_else(|| panic!("{what}: preflight must carry Expires"));
    let t = parse_http_date(expires)
        .unwrap_or_else(|| panic!("{what}: Expires is not an HTTP date: {expires:?}"));
    let ahead = t - now_unix();
    assert!(
        (YEAR - 2 * 86400..=YEAR + 2 * 86400).contains(&ahead),
        "{what}: Expires must be a year ahead, is {ahead} s ahead ({expires})"
    );
}

fn preflight_paths(id: &str) -> Vec<(String, &'static str)> {
    vec![
        ("/echo/info".to_string(), "OPTIONS, GET"),
        (format!("/echo/000/{id}/xhr"), "OPTIONS, POST"),
        (format!("/echo/000/{id}/xhr_streaming"), "OPTIONS, POST"),
        (format!("/echo/000/{id}/xhr_send"), "OPTIONS, POST"),
    ]
}

#[test]
fn preflight_answers_204_with_methods_and_year_long_caching() {
    let s = Server::start();
    let id = sid();
    for (path, methods) in preflight_paths(&id) {
        let r = s.request(
            Request::options(&path)
                .header("Origin", "https://example.com")
                .header("Access-Control-Request-Method", "POST"),
        );
        assert_preflight(&r, methods, &format!("OPTIONS {path}"));
        r.assert_header("Access-Control-Allow-Origin", "https://example.com");
        r.assert_header("Access-Control-Allow-Credentials", "true");
        assert_vary_origin(&r, &path);
    }
}

#[test]
fn preflight_without_origin_is_star_without_credentials() {
    let s = Server::start();
    let id = sid();
    for (path, methods) in preflight_paths(&id) {
        let r = s.request(Request::options(&path));
        assert_preflight(&r, methods, &format!("OPTIONS {path}"));
        r.assert_header("Access-Control-Allow-Origin", "*");
        r.assert_no_header("Access-Control-Allow-Credentials");
    }
}

#[test]
fn preflight_with_null_origin_echoes_null() {
    let s = Server::start();
    let id = sid();
    for (path, methods) in preflight_paths(&id) {
        let r = s.request(Request::options(&path).header("Origin", "null"));
        assert_preflight(&r, methods, &format!("OPTIONS {path}"));
        r.assert_header("Access-Control-Allow-Origin", "null");
        r.assert_header("Access-Control-Allow-Credentials", "true");
    }
}

#[test]
fn preflight_allow_headers_echoes_request_headers() {
    let s = Server::start();
    let id = sid();
    for (path, methods) in preflight_paths(&id) {
        let r = s.request(
            Request::options(&path)
                .header("Origin", "https://example.com")
                .header(
                    "Access-Control-Request-Headers",
                    "Content-Type, X-Custom-Header",
                ),
        );
        assert_preflight(&r, methods, &format!("OPTIONS {path}"));
        r.assert_header(
            "Access-Control-Allow-Headers",
            "Content-Type, X-Custom-Header",
        );
    }
}

#[test]
fn preflight_allow_headers_absent_when_request_headers_absent_or_empty() {
    let s = Server::start();
    let id = sid();
    for (path, methods) in preflight_paths(&id) {
        let r = s.request(Request::options(&path).header("Origin", "https://example.com"));
        assert_preflight(&r, methods, &format!("OPTIONS {path}"));
        r.assert_no_header("Access-Control-Allow-Headers");

        let r = s.request(
            Request::options(&path)
                .header("Origin", "https://example.com")
                .header("Access-Control-Request-Headers", ""),
        );
        assert_preflight(
            &r,
            methods,
            &format!("OPTIONS {path} (empty request headers)"),
        );
        r.assert_no_header("Access-Control-Allow-Headers");
    }
}

// ---------------------------------------------------------------------------
// Section 8: JSESSIONID
// ---------------------------------------------------------------------------

#[test]
fn jsessionid_dummy_on_cookie_needed_echo_without_cookie() {
    let s = Server::start();
    let id = sid();
    let r = s.xhr("/cookie_needed_echo", &id);
    assert_eq!(r.text(), "o\n");
    r.assert_header("Set-Cookie", "JSESSIONID=dummy; path=/");

    let r = s.xhr_send("/cookie_needed_echo", &id, br#"["x"]"#);
    assert_eq!(r.status, 204);
    r.assert_header("Set-Cookie", "JSESSIONID=dummy; path=/");

    let st = xhr_streaming(s.port, "/cookie_needed_echo", &id);
    assert_eq!(
        st.head.header_all("Set-Cookie"),
        vec!["JSESSIONID=dummy; path=/"],
        "xhr_streaming Set-Cookie"
    );
}

#[test]
fn jsessionid_echoes_request_cookie_value() {
    let s = Server::start();
    let id = sid();
    let base = format!("/cookie_needed_echo/000/{id}");
    let r =
        s.request(Request::post(&format!("{base}/xhr"), b"").header("Cookie", "JSESSIONID=abc123"));
    assert_eq!(r.text(), "o\n");
    r.assert_header("Set-Cookie", "JSESSIONID=abc123; path=/");

    let r = s.request(
        Request::post(&format!("{base}/xhr_send"), br#"["x"]"#)
            .header("Cookie", "foo=bar; JSESSIONID=node-7; baz=qux"),
    );
    assert_eq!(r.status, 204);
    r.assert_header("Set-Cookie", "JSESSIONID=node-7; path=/");

    let st = s.connect().stream(
        &Request::post(&format!("{base}/xhr_streaming"), b"")
            .header("Cookie", "JSESSIONID=stream-1"),
    );
    assert_eq!(st.status, 200);
    assert_eq!(
        st.head.header_all("Set-Cookie"),
        vec!["JSESSIONID=stream-1; path=/"]
    );
}

#[test]
fn jsessionid_set_on_preflight_under_session_path() {
    let s = Server::start();
    let id = sid();
    let r = s.request(Request::options(&format!(
        "/cookie_needed_echo/000/{id}/xhr"
    )));
    r.assert_header("Set-Cookie", "JSESSIONID=dummy; path=/");
    let r = s.request(
        Request::options(&format!("/cookie_needed_echo/000/{id}/xhr_send"))
            .header("Cookie", "JSESSIONID=pre"),
    );
    r.assert_header("Set-Cookie", "JSESSIONID=pre; path=/");
}

#[test]
fn jsessionid_absent_on_echo() {
    let s = Server::start();
    let id = sid();
    let r = s.xhr("/echo", &id);
    assert_eq!(r.text(), "o\n");
    r.assert_no_header("Set-Cookie");
    let r = s.request(
        Request::post(&format!("/echo/000/{id}/xhr_send"), br#"["x"]"#)
            .header("Cookie", "JSESSIONID=abc"),
    );
    assert_eq!(r.status, 204);
    r.assert_no_header("Set-Cookie");
    let r = s.request(
        Request::post(&format!("/echo/000/{id}/xhr"), b"").header("Cookie", "JSESSIONID=abc"),
    );
    assert_eq!(one_frame_body(&r.text()), Frame::Messages(vec!["x".into()]));
    r.assert_no_header("Set-Cookie");
}
