//! PROTOCOL.md sections 7 and 8 as tables: one test per header rule, each
//! looping over every endpoint the rule covers and over the endpoints that
//! must not carry it. Every failing endpoint is listed in the panic message.
//!
//! Endpoints a rule says nothing about are in neither list (named in each
//! test's comment).

mod support;

use support::*;

const YEAR: i64 = 31_536_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ep {
    Info,
    Xhr,
    XhrStreaming,
    XhrSend,
    EventSource,
    HtmlFile,
    Jsonp,
    JsonpSend,
    PreflightInfo,
    PreflightXhr,
    PreflightXhrStreaming,
    PreflightXhrSend,
    IframeHtml,
    /// The streaming receivers over HTTP/1.0.
    XhrStreaming10,
    EventSource10,
    HtmlFile10,
    /// `OPTIONS` on endpoints that have no preflight.
    OptionsEventSource,
    OptionsHtmlFile,
    OptionsJsonp,
    OptionsJsonpSend,
}

use Ep::*;

const TRANSPORTS: &[Ep] = &[
    Info,
    Xhr,
    XhrStreaming,
    XhrSend,
    EventSource,
    HtmlFile,
    Jsonp,
    JsonpSend,
];
const PREFLIGHTS: &[Ep] = &[
    PreflightInfo,
    PreflightXhr,
    PreflightXhrStreaming,
    PreflightXhrSend,
];
/// eventsource too: sockjs-client uses it cross-origin, and Chromium
/// refuses an event stream without CORS headers (PROTOCOL.md section 7
/// leaves it out; the real browser tests showed it is needed).
const CORS: &[Ep] = &[
    Info,
    Xhr,
    XhrStreaming,
    XhrSend,
    EventSource,
    PreflightInfo,
    PreflightXhr,
    PreflightXhrStreaming,
    PreflightXhrSend,
];
const NOT_CORS: &[Ep] = &[HtmlFile, Jsonp, JsonpSend];
const NOT_PREFLIGHT: &[Ep] = &[
    OptionsEventSource,
    OptionsHtmlFile,
    OptionsJsonp,
    OptionsJsonpSend,
];

impl Ep {
    fn is_streaming(self) -> bool {
        matches!(
            self,
            XhrStreaming | EventSource | HtmlFile | XhrStreaming10 | EventSource10 | HtmlFile10
        )
    }

    fn needs_session(self) -> bool {
        matches!(self, XhrSend | JsonpSend)
    }

    /// `Access-Control-Allow-Methods` of a preflight.
    fn methods(self) -> &'static str {
        if self == PreflightInfo {
            "OPTIONS, GET"
        } else {
            "OPTIONS, POST"
        }
    }

    fn request(self, prefix: &str, id: &str) -> Request {
        let base = format!("{prefix}/000/{id}");
        let preflight = |path: String, method: &str| {
            Request::options(&path).header("Access-Control-Request-Method", method)
        };
        match self {
            Info => Request::get(&format!("{prefix}/info")),
            Xhr => Request::post(&format!("{base}/xhr"), b""),
            XhrStreaming => Request::post(&format!("{base}/xhr_streaming"), b""),
            XhrSend => Request::post(&format!("{base}/xhr_send"), br#"["h"]"#),
            EventSource => Request::get(&format!("{base}/eventsource")),
            HtmlFile => Request::get(&format!("{base}/htmlfile?c=cb")),
            Jsonp => Request::get(&format!("{base}/jsonp?c=cb")),
            JsonpSend => Request::post(&format!("{base}/jsonp_send"), b"d=%5B%22h%22%5D")
                .header("Content-Type", "application/x-www-form-urlencoded"),
            PreflightInfo => preflight(format!("{prefix}/info"), "GET"),
            PreflightXhr => preflight(format!("{base}/xhr"), "POST"),
            PreflightXhrStreaming => preflight(format!("{base}/xhr_streaming"), "POST"),
            PreflightXhrSend => preflight(format!("{base}/xhr_send"), "POST"),
            IframeHtml => Request::get(&format!("{prefix}/iframe.html")),
            XhrStreaming10 => XhrStreaming.request(prefix, id).http10(),
            EventSource10 => EventSource.request(prefix, id).http10(),
            HtmlFile10 => HtmlFile.request(prefix, id).http10(),
            OptionsEventSource => Request::options(&format!("{base}/eventsource")),
            OptionsHtmlFile => Request::options(&format!("{base}/htmlfile?c=cb")),
            OptionsJsonp => Request::options(&format!("{base}/jsonp?c=cb")),
            OptionsJsonpSend => Request::options(&format!("{base}/jsonp_send")),
        }
    }

    /// Whether `status` is this endpoint's normal answer (so a rule is
    /// checked on the real response, not on an error page).
    fn status_ok(self, status: u16) -> bool {
        match self {
            XhrSend => status == 204,
            PreflightInfo | PreflightXhr | PreflightXhrStreaming | PreflightXhrSend => {
                status == 204 || status == 200
            }
            OptionsEventSource | OptionsHtmlFile | OptionsJsonp | OptionsJsonpSend => true,
            _ => status == 200,
        }
    }
}

/// Calls `ep` under `prefix` for a fresh session (created first by an xhr
/// poll when the endpoint needs one) with the extra request `headers`.
/// Streaming responses are returned with their head only.
fn call(s: &Server, prefix: &str, ep: Ep, headers: &[(&str, &str)]) -> Response {
    let id = sid();
    if ep.needs_session() {
        let r = s.xhr(prefix, &id);
        assert_eq!(r.text(), "o\n", "{prefix} {ep:?}: opening the session");
    }
    let mut req = ep.request(prefix, &id);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = if ep.is_streaming() {
        let st = s.connect().stream(&req);
        Response {
            status: st.status,
            head: st.head.clone(),
            body: Vec::new(),
        }
    } else {
        s.request(req)
    };
    assert!(
        ep.status_ok(r.status),
        "{prefix} {ep:?} {headers:?}: unexpected status {} ({})",
        r.status,
        r.body_lossy()
    );
    r
}

/// Collects every failed check so one run names every failing endpoint.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    #[track_caller]
    fn finish(self, rule: &str) {
        assert!(
            self.0.is_empty(),
            "{rule}: {} failure(s):\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

fn label(prefix: &str, ep: Ep, headers: &[(&str, &str)]) -> String {
    format!("{prefix} {ep:?} {headers:?}")
}

fn has_vary_origin(r: &Response) -> bool {
    r.header_tokens("Vary")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("Origin"))
}

/// Section 7, not cacheable: every transport response, `xhr_send`,
/// `jsonp_send` and `/info` carry exactly the no-cache `Cache-Control` and
/// no `Expires` or `Last-Modified`. Must not: the preflights and the iframe
/// page, which are cached for a year. (Not covered: the greeting, errors.)
#[test]
fn not_cacheable_rule() {
    let s = Server::start();
    let mut f = Failures::default();
    for origin in [None, Some("https://example.com")] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        for &ep in TRANSPORTS
            .iter()
            .chain([EventSource10, HtmlFile10, XhrStreaming10].iter())
        {
            let r = call(&s, "/echo", ep, &headers);
            let what = label("/echo", ep, &headers);
            f.check(r.header_all("Cache-Control") == vec![NO_CACHE], || {
                format!("{what}: Cache-Control {:?}", r.header_all("Cache-Control"))
            });
            f.check(!r.has_header("Expires"), || {
                format!("{what}: Expires {:?}", r.header("Expires"))
            });
            f.check(!r.has_header("Last-Modified"), || {
                format!("{what}: Last-Modified {:?}", r.header("Last-Modified"))
            });
        }
        for &ep in PREFLIGHTS.iter().chain([IframeHtml].iter()) {
            let r = call(&s, "/echo", ep, &headers);
            let what = label("/echo", ep, &headers);
            let tokens: Vec<String> = r
                .header_tokens("Cache-Control")
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            f.check(
                !tokens.iter().any(|t| {
                    matches!(
                        t.as_str(),
                        "no-store" | "no-cache" | "must-revalidate" | "max-age=0"
                    )
                }),
                || format!("{what}: must be cacheable, Cache-Control {tokens:?}"),
            );
        }
    }
    f.finish("not_cacheable_rule");
}

/// Section 7, CORS with an `Origin`: `/info`, `xhr`, `xhr_streaming`,
/// `xhr_send`, eventsource and the preflights echo the origin exactly (`null`
/// included) with `Access-Control-Allow-Credentials: true` and
/// `Vary: Origin`. Must not: htmlfile, jsonp, jsonp_send (no
/// CORS headers at all). (Not covered: the iframe page, the greeting.)
#[test]
fn cors_with_origin_rule() {
    let s = Server::start();
    let mut f = Failures::default();
    for origin in ["https://example.com", "null", "http://a.example:8080"] {
        let headers = [("Origin", origin)];
        for &ep in CORS {
            let r = call(&s, "/echo", ep, &headers);
            let what = label("/echo", ep, &headers);
            f.check(
                r.header_all("Access-Control-Allow-Origin") == vec![origin],
                || {
                    format!(
                        "{what}: Access-Control-Allow-Origin {:?}",
                        r.header_all("Access-Control-Allow-Origin")
                    )
                },
            );
            f.check(
                r.header_all("Access-Control-Allow-Credentials") == vec!["true"],
                || {
                    format!(
                        "{what}: Access-Control-Allow-Credentials {:?}",
                        r.header_all("Access-Control-Allow-Credentials")
                    )
                },
            );
            f.check(has_vary_origin(&r), || {
                format!("{what}: Vary {:?}", r.header_all("Vary"))
            });
        }
        for &ep in NOT_CORS {
            let r = call(&s, "/echo", ep, &headers);
            let what = label("/echo", ep, &headers);
            for h in [
                "Access-Control-Allow-Origin",
                "Access-Control-Allow-Credentials",
            ] {
                f.check(!r.has_header(h), || {
                    format!("{what}: must not carry {h}: {:?}", r.header_all(h))
                });
            }
        }
    }
    f.finish("cors_with_origin_rule");
}

/// Section 7, CORS without an `Origin`: `Access-Control-Allow-Origin: *`,
/// no credentials header, `Vary: Origin`, on the same endpoints; the
/// non-CORS transports carry no CORS header.
#[test]
fn cors_without_origin_rule() {
    let s = Server::start();
    let mut f = Failures::default();
    for &ep in CORS {
        let r = call(&s, "/echo", ep, &[]);
        let what = label("/echo", ep, &[]);
        f.check(
            r.header_all("Access-Control-Allow-Origin") == vec!["*"],
            || {
                format!(
                    "{what}: Access-Control-Allow-Origin {:?}",
                    r.header_all("Access-Control-Allow-Origin")
                )
            },
        );
        f.check(!r.has_header("Access-Control-Allow-Credentials"), || {
            format!(
                "{what}: Access-Control-Allow-Credentials {:?}",
                r.header_all("Access-Control-Allow-Credentials")
            )
        });
        f.check(has_vary_origin(&r), || {
            format!("{what}: Vary {:?}", r.header_all("Vary"))
        });
    }
    for &ep in NOT_CORS {
        let r = call(&s, "/echo", ep, &[]);
        let what = label("/echo", ep, &[]);
        for h in [
            "Access-Control-Allow-Origin",
            "Access-Control-Allow-Credentials",
        ] {
            f.check(!r.has_header(h), || {
                format!("{what}: must not carry {h}: {:?}", r.header_all(h))
            });
        }
    }
    f.finish("cors_without_origin_rule");
}

/// Section 7, preflight: `OPTIONS` on `/info`, `xhr`, `xhr_streaming`,
/// `xhr_send` is `204` (or `200`) with an empty body, the exact
/// `Access-Control-Allow-Methods`, a year of caching, `Max-Age`, and
/// `Access-Control-Allow-Headers` echoing a non-empty
/// `Access-Control-Request-Headers` (absent otherwise). Must not: `OPTIONS`
/// on eventsource, htmlfile, jsonp, jsonp_send is no preflight (no 2xx, no
/// `Access-Control-Allow-Methods`).
#[test]
fn preflight_rule() {
    let s = Server::start();
    let mut f = Failures::default();
    let request_headers = [None, Some(""), Some("Content-Type, X-Custom-Header")];
    for origin in [None, Some("https://example.com")] {
        for rh in request_headers {
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if let Some(o) = origin {
                headers.push(("Origin", o));
            }
            if let Some(v) = rh {
                headers.push(("Access-Control-Request-Headers", v));
            }
            for &ep in PREFLIGHTS {
                let r = call(&s, "/echo", ep, &headers);
                let what = label("/echo", ep, &headers);
                f.check(r.status == 204 || r.status == 200, || {
                    format!("{what}: status {}", r.status)
                });
                f.check(r.body.is_empty(), || {
                    format!("{what}: body {:?}", r.body_lossy())
                });
                f.check(
                    r.header_all("Access-Control-Allow-Methods") == vec![ep.methods()],
                    || {
                        format!(
                            "{what}: Access-Control-Allow-Methods {:?}, want {:?}",
                            r.header_all("Access-Control-Allow-Methods"),
                            ep.methods()
                        )
                    },
                );
                f.check(
                    r.header_all("Cache-Control") == vec!["public, max-age=31536000"],
                    || format!("{what}: Cache-Control {:?}", r.header_all("Cache-Control")),
                );
                let ahead = r
                    .header("Expires")
                    .and_then(parse_http_date)
                    .map(|t| t - now_unix());
                f.check(
                    ahead.is_some_and(|a| (YEAR - 2 * 86400..=YEAR + 2 * 86400).contains(&a)),
                    || {
                        format!(
                            "{what}: Expires {:?} must be a year ahead",
                            r.header("Expires")
                        )
                    },
                );
                f.check(
                    r.header_all("Access-Control-Max-Age") == vec!["31536000"],
                    || {
                        format!(
                            "{what}: Access-Control-Max-Age {:?}",
                            r.header_all("Access-Control-Max-Age")
                        )
                    },
                );
                let allow_headers = r.header_all("Access-Control-Allow-Headers");
                match rh {
                    Some(v) if !v.is_empty() => f.check(allow_headers == vec![v], || {
                        format!("{what}: Access-Control-Allow-Headers {allow_headers:?}, want {v:?}")
                    }),
                    _ => f.check(allow_headers.is_empty(), || {
                        format!("{what}: Access-Control-Allow-Headers must be absent, got {allow_headers:?}")
                    }),
                }
            }
            for &ep in NOT_PREFLIGHT {
                let mut headers = headers.clone();
                headers.push(("Access-Control-Request-Method", "GET"));
                let r = call(&s, "/echo", ep, &headers);
                let what = label("/echo", ep, &headers);
                f.check(r.status / 100 != 2, || {
                    format!("{what}: no preflight here, got status {}", r.status)
                });
                f.check(!r.has_header("Access-Control-Allow-Methods"), || {
                    format!(
                        "{what}: no preflight here, got Access-Control-Allow-Methods {:?}",
                        r.header_all("Access-Control-Allow-Methods")
                    )
                });
            }
        }
    }
    f.finish("preflight_rule");
}

/// Section 8, JSESSIONID: on /cookie_needed_echo every response under
/// `PREFIX/SERVER/SESSION/...` (every receiver, `xhr_send`, `jsonp_send`,
/// the session preflights) sets `JSESSIONID=VALUE; path=/`, `VALUE` being
/// the request's own JSESSIONID cookie or `dummy`. Must not: `/info` there,
/// and every endpoint of /echo (JSESSIONID off), even when the request
/// sends the cookie. (Not covered: `OPTIONS /info`, the iframe page.)
#[test]
fn jsessionid_rule() {
    let s = Server::start();
    let mut f = Failures::default();
    let cookies = [
        (None, "dummy"),
        (Some("JSESSIONID=abc123"), "abc123"),
        (Some("foo=bar; JSESSIONID=node-7; baz=qux"), "node-7"),
    ];
    let session_eps = [
        Xhr,
        XhrStreaming,
        XhrSend,
        EventSource,
        HtmlFile,
        Jsonp,
        JsonpSend,
        PreflightXhr,
        PreflightXhrStreaming,
        PreflightXhrSend,
        XhrStreaming10,
        EventSource10,
        HtmlFile10,
    ];
    for (cookie, value) in cookies {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        let want = format!("JSESSIONID={value}; path=/");
        for ep in session_eps {
            let r = call(&s, "/cookie_needed_echo", ep, &headers);
            let what = label("/cookie_needed_echo", ep, &headers);
            f.check(r.header_all("Set-Cookie") == vec![want.as_str()], || {
                format!(
                    "{what}: Set-Cookie {:?}, want {want:?}",
                    r.header_all("Set-Cookie")
                )
            });
        }
        let r = call(&s, "/cookie_needed_echo", Info, &headers);
        let what = label("/cookie_needed_echo", Info, &headers);
        f.check(!r.has_header("Set-Cookie"), || {
            format!(
                "{what}: must set no cookie, got {:?}",
                r.header_all("Set-Cookie")
            )
        });
        for ep in session_eps.iter().chain(&[Info, PreflightInfo, IframeHtml]) {
            let r = call(&s, "/echo", *ep, &headers);
            let what = label("/echo", *ep, &headers);
            f.check(!r.has_header("Set-Cookie"), || {
                format!(
                    "{what}: must set no cookie, got {:?}",
                    r.header_all("Set-Cookie")
                )
            });
        }
    }
    f.finish("jsessionid_rule");
}

/// Section 3 / gateway: every streaming response (xhr_streaming,
/// eventsource, htmlfile, on HTTP/1.1 and HTTP/1.0) carries exactly
/// `X-Accel-Buffering: no`, so a proxy does not buffer the frames. No
/// endpoint is required to lack it (PROTOCOL.md does not forbid it on
/// polling responses), so this rule has no negative list.
#[test]
fn streaming_unbuffered_rule() {
    let s = Server::start();
    let mut f = Failures::default();
    for prefix in ["/echo", "/cookie_needed_echo"] {
        for ep in [
            XhrStreaming,
            EventSource,
            HtmlFile,
            XhrStreaming10,
            EventSource10,
            HtmlFile10,
        ] {
            let r = call(&s, prefix, ep, &[]);
            let what = label(prefix, ep, &[]);
            f.check(r.header_all("X-Accel-Buffering") == vec!["no"], || {
                format!(
                    "{what}: X-Accel-Buffering {:?}",
                    r.header_all("X-Accel-Buffering")
                )
            });
        }
    }
    f.finish("streaming_unbuffered_rule");
}
