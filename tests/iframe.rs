//! PROTOCOL.md section 6: the iframe page (`PREFIX/iframe.html`,
//! `PREFIX/iframe-ANYTHING.html`), its caching, `--sockjs-url`, and the
//! client libraries the gateway serves under `/lib/`: every sockjs-client
//! release's bundle and the iframe loader that picks among them.

mod support;

use support::*;

const YEAR: i64 = 31_536_000;
const DEFAULT_SOCKJS_URL: &str = "/lib/sockjs-iframe-loader.js";

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

#[track_caller]
fn assert_javascript(r: &Response, path: &str) {
    assert_eq!(r.status, 200, "GET {path}");
    r.assert_header("Content-Type", "application/javascript; charset=UTF-8");
}

const RELEASES: [&str; 17] = [
    "1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.1.0", "1.1.1", "1.1.2", "1.1.4", "1.1.5", "1.2.0",
    "1.3.0", "1.4.0", "1.5.0", "1.5.1", "1.5.2", "1.6.0", "1.6.1",
];

#[test]
fn lib_sockjs_min_js_is_1_6_1() {
    let s = Server::start();
    let r = s.get("/lib/sockjs.min.js");
    assert_javascript(&r, "/lib/sockjs.min.js");
    r.assert_header("Cache-Control", "public, max-age=31536000, immutable");
    let body = r.text();
    assert!(
        body.starts_with("/* sockjs-client v1.6.1 |"),
        "1.6.1 bundle"
    );
    assert!(body.contains("bootstrap_iframe"));
    assert_eq!(s.get("/lib/sockjs-1.6.1.min.js").body, r.body);
}

#[test]
fn every_release_is_served_at_its_versioned_path() {
    let s = Server::start();
    for version in RELEASES {
        let path = format!("/lib/sockjs-{version}.min.js");
        let r = s.get(&path);
        assert_javascript(&r, &path);
        r.assert_header("Cache-Control", "public, max-age=31536000, immutable");
        let body = r.text();
        assert!(
            body.starts_with(&format!("/* sockjs-client v{version} |")),
            "{path}: the bundle of {version}"
        );
        assert!(
            body.contains(&format!("\"{version}\"")),
            "{path}: SockJS.version"
        );
        let head = s.request(Request::new("HEAD", &path));
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path}: no body");
    }
}

#[test]
fn iframe_loader_is_served_and_loads_bundles_from_beside_itself() {
    let s = Server::start();
    let r = s.get(DEFAULT_SOCKJS_URL);
    assert_javascript(&r, DEFAULT_SOCKJS_URL);
    r.assert_header("Cache-Control", "public, max-age=86400");
    let body = r.text();
    for needle in [
        "window.SockJS = {",
        "bootstrap_iframe: function",
        "'sockjs-' + release + '.min.js'",
        "base + 'sockjs.min.js'",
        "type: 's'",
    ] {
        assert!(body.contains(needle), "loader: {needle:?} missing");
    }
}

#[test]
fn a_release_not_carried_is_404_with_the_list_and_logged_once() {
    let s = Server::start();
    for _ in 0..3 {
        let r = s.get("/lib/sockjs-1.7.0.min.js");
        assert_eq!(r.status, 404);
        r.assert_header("Content-Type", "text/plain; charset=UTF-8");
        assert_eq!(
            r.text(),
            format!(
                "sockjs-client 1.7.0 is not bundled here; bundled: {}\n",
                RELEASES.join(", ")
            )
        );
    }
    for other in [
        "/lib/sockjs-.min.js",
        "/lib/sockjs-1.6.1-fork.2.min.js",
        "/lib/other.js",
        "/lib/",
    ] {
        let r = s.get(other);
        assert_eq!(r.status, 404, "GET {other}");
    }
    // The fork's version string is logged after 1.7.0's: once it is there,
    // 1.7.0's line had its chance to repeat.
    let line = poll_until(
        "the log names 1.7.0",
        std::time::Duration::from_secs(5),
        || {
            let log = s.log();
            log.contains("1.6.1-fork.2").then_some(log)
        },
    );
    assert_eq!(
        line.matches("a page asked for sockjs-client \"1.7.0\"")
            .count(),
        1,
        "logged once: {line}"
    );
    assert!(line.contains("its iframe falls back to 1.6.1"), "{line}");
}
