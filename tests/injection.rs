//! PROTOCOL.md section 9: htmlfile and jsonp write frames into HTML and
//! JavaScript, and the callback name too. Messages built to break out of the
//! script block or the string literal must arrive intact and must not appear
//! raw on the wire; callback names that are not plain identifiers are
//! refused without being echoed.

mod support;

use support::*;

/// Messages that would end or confuse the script block or the string if
/// written raw.
fn hostile_messages() -> Vec<String> {
    [
        "</script><script>alert(1)</script>",
        "</SCRIPT>",
        "</ScRiPt >",
        "<!--",
        "-->",
        "<!-- <script>",
        "<![CDATA[",
        "]]>",
        "&lt;",
        "&#60;&#x3c;",
        "&amp;&",
        "\u{2028}",
        "\u{2029}",
        "a\u{2028}b\u{2029}c",
        "\");alert(1);//",
        "\\\");alert(1);//",
        "'-alert(1)-'",
        "\n</script>\r\n",
        "<img src=x onerror=alert(1)>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The message JSON bodies to send for `m`: raw (serde_json leaves `<`,
/// `&`, U+2028 unescaped) and escaped as the browser client does.
fn bodies(m: &str) -> [String; 2] {
    [json_array(&[m]), format!("[{}]", client_escape(m))]
}

/// Checks one frame's JS string literal: HTML/JS safe (no raw `<`, `>`,
/// `&`, U+2028, U+2029), and it decodes to `a[...]` holding exactly `m`,
/// escaped per section 2.
#[track_caller]
fn check_literal(lit: &str, m: &str, what: &str) {
    for bad in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
        assert!(
            !lit.contains(bad),
            "{what}: raw {bad:?} in the JS string literal {lit:?}"
        );
    }
    let frame = decode_js_literal(lit);
    let lits = raw_array_literals(&frame);
    assert_eq!(lits.len(), 1, "{what}: expected one message in {frame:?}");
    check_escaping(&lits[0], m);
}

#[test]
fn hostile_messages_over_jsonp_arrive_intact_and_never_raw() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    for m in hostile_messages() {
        for body in bodies(&m) {
            let what = format!("jsonp, sent as {body:?}");
            let r = s.jsonp_send("/echo", &id, Some("text/plain"), body.as_bytes());
            assert_eq!(r.status, 200, "{what}: {}", r.body_lossy());
            let r = s.jsonp("/echo", &id, "cb");
            assert_eq!(r.status, 200, "{what}");
            let text = r.text();
            // The whole body is `/**/cb("...");\r\n`: no markup at all.
            for bad in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
                assert!(!text.contains(bad), "{what}: raw {bad:?} in body {text:?}");
            }
            check_literal(&jsonp_literal(&text, "cb"), &m, &what);
        }
    }
}

#[test]
fn hostile_messages_over_jsonp_form_send_arrive_intact() {
    let s = Server::start();
    let id = s.open_jsonp_session("/echo");
    for m in hostile_messages() {
        let what = format!("jsonp form, message {m:?}");
        s.jsonp_send_form_ok("/echo", &id, &json_array(&[&m]));
        let r = s.jsonp("/echo", &id, "cb");
        check_literal(&jsonp_literal(&r.text(), "cb"), &m, &what);
    }
}

#[test]
fn hostile_messages_over_htmlfile_arrive_intact_and_never_raw() {
    let s = Server::start();
    for m in hostile_messages() {
        // A fresh session per message keeps each stream under /echo's
        // response_limit.
        let id = sid();
        let mut st = htmlfile(s.port, "/echo", &id, "cb");
        st.read_htmlfile_prelude();
        assert_eq!(st.read_htmlfile_script().as_deref(), Some("o"));
        for body in bodies(&m) {
            let what = format!("htmlfile, sent as {body:?}");
            s.send_ok("/echo", &id, &body);
            // read_htmlfile_script checks the frame is exactly
            // `<script>\np("…");\n</script>\r\n`, so the only markup in it
            // is the wrapper.
            let lit = st.read_htmlfile_script().expect("echoed frame");
            check_literal(&lit, &m, &what);
        }
    }
}

// ---------------------------------------------------------------------------
// Callback injection
// ---------------------------------------------------------------------------

/// Callback values (as they appear in the query string) that try to inject
/// script, markup or headers.
const HOSTILE_CALLBACKS: &[&str] = &[
    "alert(1)//",
    "alert(1)",
    "a%3C/script%3E",
    "a%3C%2Fscript%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "x%0Ay",
    "x%0D%0ASet-Cookie:%20injected=1",
    "cb);alert(1)//",
    "cb%29%3Balert%281%29%2F%2F",
    "a%22%3E%3Csvg%20onload%3Dalert(1)%3E",
    "%3C!--",
    "cb%E2%80%A8alert(1)",
    "cb%00alert",
    "a=b",
    "a%26b",
    "a,b",
    "a[0]",
    "a%5B0%5D",
    "a:b",
    "a%5Cu0028",
];

#[track_caller]
fn assert_refused_without_echo(r: &Response, what: &str) {
    assert_eq!(r.status, 500, "{what}: {}", r.body_lossy());
    let body = r.body_lossy();
    assert_eq!(
        body.trim_end(),
        "invalid \"callback\" parameter",
        "{what}: the body must be the error text and nothing of the callback"
    );
    for (k, v) in &r.head.headers {
        let l = format!("{k}: {v}").to_ascii_lowercase();
        assert!(
            !l.contains("injected") && !l.contains("alert"),
            "{what}: callback echoed in header {k}: {v}"
        );
    }
}

#[test]
fn hostile_callbacks_on_jsonp_are_500_and_not_echoed() {
    let s = Server::start();
    for cb in HOSTILE_CALLBACKS {
        for param in ["c", "callback"] {
            let r = s.get(&format!("/echo/000/{}/jsonp?{param}={cb}", sid()));
            assert_refused_without_echo(&r, &format!("jsonp ?{param}={cb}"));
        }
    }
}

#[test]
fn hostile_callbacks_on_htmlfile_are_500_and_not_echoed() {
    let s = Server::start();
    for cb in HOSTILE_CALLBACKS {
        for param in ["c", "callback"] {
            let r = s.get(&format!("/echo/000/{}/htmlfile?{param}={cb}", sid()));
            assert_refused_without_echo(&r, &format!("htmlfile ?{param}={cb}"));
        }
    }
}
