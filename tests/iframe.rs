//! PROTOCOL.md section 6: the iframe page (`PREFIX/iframe.html`,
//! `PREFIX/iframe-ANYTHING.html`), its caching, `--sockjs-url`, and the
//! client library the gateway serves at `/lib/sockjs.min.js`.

mod support;

use support::*;

const YEAR: i64 = 31_536_000;
const DEFAULT_SOCKJS_URL: &str = "/lib/sockjs.min.js";

/// The section 6 page with `url` (already attribute-escaped) substituted.
fn iframe_page(url: &str) -> String {
    format!(
        "<!DOCTYPE html>\n\
         <html>\n\
         <head>\n  \
         <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\" />\n  \
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\n  \
         <script src=\"{url}\"></script>\n  \
         <script>\n    \
         document.domain = document.domain;\n    \
         SockJS.bootstrap_iframe();\n  \
         </script>\n\
         </head>\n\
         <body>\n  \
         <h2>Don't panic!</h2>\n  \
         <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>\n\
         </body>\n\
         </html>"
    )
}

/// Compares a served page with the section 6 page; the page may or may
/// not end with a newline after `</html>`.
#[track_caller]
fn assert_page(body: &str, url: &str, what: &str) {
    let body = body.strip_suffix('\n').unwrap_or(body);
    assert_eq!(body, iframe_page(url), "{what}: iframe page body");
}

/// Every iframe path variant that must serve the page.
fn variants(prefix: &str) -> Vec<String> {
    [
        "/iframe.html",
        "/iframe-.html",
        "/iframe-a.html",
        "/iframe-0.1.2.html",
        "/iframe-1.6.1.html",
        "/iframe-abc_DEF-9.html",
        "/iframe.html?t=1234",
        "/iframe-1.6.1.html?t=1234&x=y",
        "/iframe-.html?",
    ]
    .iter()
    .map(|v| format!("{prefix}{v}"))
    .collect()
}

#[test]
fn iframe_page_is_200_html_with_exact_body_on_every_variant() {
    let s = Server::start();
    for prefix in ["/echo", "/close", "/cookie_needed_echo"] {
        for path in variants(prefix) {
            let r = s.get(&path);
            assert_eq!(r.status, 200, "GET {path}");
            r.assert_header("Content-Type", "text/html; charset=UTF-8");
            assert_page(&r.text(), DEFAULT_SOCKJS_URL, &path);
        }
    }
}

#[test]
fn iframe_page_is_strongly_cacheable() {
    let s = Server::start();
    for path in variants("/echo") {
        let r = s.get(&path);
        assert_eq!(r.status, 200, "GET {path}");
        r.assert_header("Cache-Control", "public, max-age=31536000");
        let expires = r
            .header("Expires")
            .unwrap_or_else(|| panic!("{path}: Expires missing"));
        let t = parse_http_date(expires)
            .unwrap_or_else(|| panic!("{path}: Expires is not an HTTP date: {expires:?}"));
        let ahead = t - now_unix();
        assert!(
            (YEAR - 2 * 86400..=YEAR + 2 * 86400).contains(&ahead),
            "{path}: Expires must be a year ahead, is {ahead} s ahead ({expires})"
        );
        assert_eq!(r.header_all("ETag").len(), 1, "{path}: one ETag");
        r.assert_no_header("Last-Modified");
    }
}

#[test]
fn iframe_etag_is_stable_and_same_for_every_variant() {
    let s = Server::start();
    let tag = s
        .get("/echo/iframe.html")
        .header("ETag")
        .expect("ETag")
        .to_string();
    assert!(
        tag.len() > 2 && tag.ends_with('"') && (tag.starts_with('"') || tag.starts_with("W/\"")),
        "ETag must be a quoted entity tag: {tag:?}"
    );
    for prefix in ["/echo", "/close"] {
        for path in variants(prefix) {
            for i in 0..2 {
                let r = s.get(&path);
                assert_eq!(
                    r.header("ETag"),
                    Some(tag.as_str()),
                    "{path} (request #{i}): same body, same tag"
                );
            }
        }
    }
    // A second server with the same configuration serves the same tag.
    let s2 = Server::start();
    assert_eq!(
        s2.get("/echo/iframe.html").header("ETag"),
        Some(tag.as_str()),
        "the tag must not depend on the process"
    );
}

#[test]
fn iframe_if_none_match_with_tag_is_304_without_body_or_content_type() {
    let s = Server::start();
    let tag = s
        .get("/echo/iframe.html")
        .header("ETag")
        .expect("ETag")
        .to_string();
    for path in variants("/echo") {
        let r = s.request(Request::get(&path).header("If-None-Match", &tag));
        assert_eq!(r.status, 304, "{path} with If-None-Match {tag}");
        assert!(r.body.is_empty(), "{path}: 304 must have no body");
        r.assert_no_header("Content-Type");
        if let Some(len) = r.header("Content-Length") {
            assert_eq!(len, "0", "{path}: 304 must not announce a body");
        }
    }
    // The 304 ends its response: the connection is usable for another one.
    let mut conn = s.connect();
    let r = conn.request(&Request::get("/echo/iframe.html").header("If-None-Match", &tag));
    assert_eq!(r.status, 304);
    let r = conn.request(&Request::get("/echo/iframe.html"));
    assert_eq!(r.status, 200);
    assert_page(
        &r.text(),
        DEFAULT_SOCKJS_URL,
        "after a 304 on the same connection",
    );
}

#[test]
fn iframe_if_none_match_with_other_tag_is_full_200() {
    let s = Server::start();
    for other in ["\"not-the-tag\"", "W/\"x\"", "\"\""] {
        let r = s.request(Request::get("/echo/iframe.html").header("If-None-Match", other));
        assert_eq!(r.status, 200, "If-None-Match {other}");
        r.assert_header("Content-Type", "text/html; charset=UTF-8");
        assert_page(&r.text(), DEFAULT_SOCKJS_URL, other);
    }
}

#[test]
fn iframe_sockjs_url_override_is_substituted() {
    let s = Server::start_with(&["--sockjs-url", "https://cdn.example/sockjs-1.6.1.min.js"]);
    for path in variants("/echo") {
        let r = s.get(&path);
        assert_eq!(r.status, 200, "{path}");
        assert_page(&r.text(), "https://cdn.example/sockjs-1.6.1.min.js", &path);
    }
    let s = Server::start_with(&["--sockjs-url", "/static/sockjs.js"]);
    let r = s.get("/echo/iframe.html");
    assert_page(
        &r.text(),
        "/static/sockjs.js",
        "--sockjs-url /static/sockjs.js",
    );
}

#[test]
fn iframe_sockjs_url_override_is_html_attribute_escaped() {
    let s = Server::start_with(&["--sockjs-url", "http://cdn.example/x.js?a=1&b=\"2\""]);
    let r = s.get("/echo/iframe.html");
    assert_eq!(r.status, 200);
    let body = r.text();
    assert_page(
        &body,
        "http://cdn.example/x.js?a=1&amp;b=&quot;2&quot;",
        "escaped --sockjs-url",
    );
    assert!(
        !body.contains("b=\"2\""),
        "a raw quote would end the src attribute"
    );
}

#[test]
fn iframe_etag_changes_with_the_page() {
    let a = Server::start();
    let b = Server::start_with(&["--sockjs-url", "http://cdn.example/other.js"]);
    let ta = a
        .get("/echo/iframe.html")
        .header("ETag")
        .unwrap()
        .to_string();
    let tb = b
        .get("/echo/iframe.html")
        .header("ETag")
        .unwrap()
        .to_string();
    assert_ne!(ta, tb, "a different page must not share the tag");
    // And the old tag does not validate the new page.
    let r = b.request(Request::get("/echo/iframe.html").header("If-None-Match", &ta));
    assert_eq!(r.status, 200, "stale tag must get the new page");
}

#[test]
fn sockjs_url_not_starting_with_slash_or_http_is_refused_at_start() {
    for bad in [
        "cdn.example/x.js",
        "ftp://cdn.example/x.js",
        "javascript:alert(1)",
        "./sockjs.js",
        "sockjs.js",
        "data:text/javascript,alert(1)",
        "",
    ] {
        expect_start_refused(&["--sockjs-url", bad]);
    }
}

#[test]
fn lib_sockjs_min_js_is_served() {
    let s = Server::start();
    let r = s.get("/lib/sockjs.min.js");
    assert_eq!(r.status, 200);
    let ct = r.header("Content-Type").expect("Content-Type");
    let mime = ct.split(';').next().unwrap().trim().to_ascii_lowercase();
    assert!(
        mime == "application/javascript" || mime == "text/javascript",
        "JavaScript content type expected, got {ct:?}"
    );
    let body = r.text();
    assert!(body.contains("SockJS"), "bundle must define SockJS");
    assert!(
        body.contains("bootstrap_iframe"),
        "the iframe page calls SockJS.bootstrap_iframe()"
    );
    assert!(body.contains("\"1.6.1\""), "sockjs-client 1.6.1 bundle");
}
