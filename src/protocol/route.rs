//! The URL map under one service prefix (PROTOCOL.md section 1).

/// The request methods the router distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `OPTIONS`: a CORS preflight.
    Options,
    /// Any other method.
    Other,
}

/// A request that opens or feeds a session receiver (section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiverKind {
    /// `xhr`: one response per poll.
    XhrPolling,
    /// `xhr_streaming`: a chunked response carrying many frames.
    XhrStreaming,
    /// `eventsource`: a `text/event-stream` response.
    EventSource,
    /// `htmlfile`: a streaming page of `<script>` calls.
    HtmlFile,
    /// `jsonp`: one JavaScript callback per poll.
    JsonpPolling,
}

/// A request that carries messages from the client into a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// `xhr_send`: a JSON array body.
    Xhr,
    /// `jsonp_send`: a form or plain body carrying a JSON array.
    Jsonp,
}

/// What a path under `PREFIX/SERVER/SESSION/` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEndpoint {
    /// The framed WebSocket, `PREFIX/SERVER/SESSION/websocket`.
    Websocket,
    /// A request that receives the session's frames.
    Receiver(ReceiverKind),
    /// A request that carries messages into the session.
    Send(SendKind),
    /// A CORS preflight; `allow` is the `Access-Control-Allow-Methods` value.
    Preflight {
        /// The `Access-Control-Allow-Methods` value.
        allow: &'static str,
    },
}

/// A request the service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `PREFIX` or `PREFIX/`: the `Welcome to SockJS!` greeting.
    Greeting,
    /// `PREFIX/info`.
    Info,
    /// `PREFIX/iframe.html` (or `iframe-VERSION.html`).
    Iframe,
    /// `PREFIX/websocket`: a WebSocket without SockJS framing.
    RawWebsocket,
    /// The CORS preflight of `/info`.
    InfoPreflight,
    /// A request under `PREFIX/SERVER/SESSION/`.
    Session {
        /// The `SESSION` segment.
        session_id: &'a str,
        /// What the request asks of the session.
        endpoint: SessionEndpoint,
    },
}

/// The longest `SERVER` or `SESSION` segment accepted, in bytes as sent
/// (percent-escapes count as written). Clients use 8 to 36 (a UUID); a
/// session id is kept for the session's life, so unbounded ids would let
/// one client pin as much memory as its request line holds.
pub const MAX_ID_BYTES: usize = 128;

/// A request the service refuses before any session is involved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No such path: `404`.
    NotFound,
    /// A session path whose `SERVER` or `SESSION` is over [`MAX_ID_BYTES`]:
    /// `404`, like every other path that names no session.
    IdTooLong,
    /// The path exists but not for this method; `allow` is the `Allow` value.
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'static str,
    },
}

const GET: &str = "GET";
const POST: &str = "POST";
const OPTIONS_GET: &str = "OPTIONS, GET";
const OPTIONS_POST: &str = "OPTIONS, POST";

/// Routes `path`, the request path below the service prefix without the query
/// string (`""` for the prefix itself, `"/info"`, `"/000/abc/xhr"`, ...).
pub fn route(method: Method, path: &str) -> Result<Route<'_>, RouteError> {
    match path {
        "" | "/" => only(method, Method::Get, GET, Route::Greeting),
        "/info" => match method {
            Method::Get => Ok(Route::Info),
            Method::Options => Ok(Route::InfoPreflight),
            _ => Err(RouteError::MethodNotAllowed { allow: OPTIONS_GET }),
        },
        "/websocket" => only(method, Method::Get, GET, Route::RawWebsocket),
        _ if is_iframe_page(path) => only(method, Method::Get, GET, Route::Iframe),
        _ => route_session(method, path),
    }
}

fn only<'a>(
    method: Method,
    expected: Method,
    allow: &'static str,
    route: Route<'a>,
) -> Result<Route<'a>, RouteError> {
    if method == expected {
        Ok(route)
    } else {
        Err(RouteError::MethodNotAllowed { allow })
    }
}

/// `/iframe.html` or `/iframe-ANYTHING.html`, where ANYTHING holds no `/`.
fn is_iframe_page(path: &str) -> bool {
    let Some(middle) = path
        .strip_prefix("/iframe")
        .and_then(|rest| rest.strip_suffix(".html"))
    else {
        return false;
    };
    middle.is_empty() || (middle.starts_with('-') && !middle.contains('/'))
}

fn route_session(method: Method, path: &str) -> Result<Route<'_>, RouteError> {
    let mut segments = path
        .strip_prefix('/')
        .ok_or(RouteError::NotFound)?
        .split('/');
    let (Some(server_id), Some(session_id), Some(transport), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(RouteError::NotFound);
    };
    if !is_id_segment(server_id) || !is_id_segment(session_id) {
        return Err(RouteError::NotFound);
    }
    use ReceiverKind::*;
    let (endpoint, preflight, allow) = match transport {
        "websocket" => (SessionEndpoint::Websocket, false, GET),
        "xhr" => (SessionEndpoint::Receiver(XhrPolling), true, OPTIONS_POST),
        "xhr_streaming" => (SessionEndpoint::Receiver(XhrStreaming), true, OPTIONS_POST),
        "xhr_send" => (SessionEndpoint::Send(SendKind::Xhr), true, OPTIONS_POST),
        "eventsource" => (SessionEndpoint::Receiver(EventSource), false, GET),
        "htmlfile" => (SessionEndpoint::Receiver(HtmlFile), false, GET),
        "jsonp" => (SessionEndpoint::Receiver(JsonpPolling), false, GET),
        "jsonp_send" => (SessionEndpoint::Send(SendKind::Jsonp), false, POST),
        _ => return Err(RouteError::NotFound),
    };
    if server_id.len() > MAX_ID_BYTES || session_id.len() > MAX_ID_BYTES {
        return Err(RouteError::IdTooLong);
    }
    let expected = if allow == GET {
        Method::Get
    } else {
        Method::Post
    };
    if method == expected {
        Ok(Route::Session {
            session_id,
            endpoint,
        })
    } else if method == Method::Options && preflight {
        Ok(Route::Session {
            session_id,
            endpoint: SessionEndpoint::Preflight { allow },
        })
    } else {
        Err(RouteError::MethodNotAllowed { allow })
    }
}

/// A `GET` on a WebSocket path must be a valid upgrade (PROTOCOL.md section
/// 1): `Upgrade` naming `websocket` and `Connection` naming `Upgrade` among
/// its tokens (Firefox sends `keep-alive, Upgrade`). Otherwise `400` with
/// the text this returns.
pub fn check_websocket_upgrade<'a>(
    upgrade: impl IntoIterator<Item = &'a str>,
    connection: impl IntoIterator<Item = &'a str>,
) -> Result<(), &'static str> {
    fn has_token<'a>(values: impl IntoIterator<Item = &'a str>, token: &str) -> bool {
        values
            .into_iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
    if !has_token(upgrade, "websocket") {
        return Err("Can \"Upgrade\" only to \"WebSocket\".");
    }
    if !has_token(connection, "upgrade") {
        return Err("\"Connection\" must be \"Upgrade\".");
    }
    Ok(())
}

/// `SERVER` and `SESSION` are each one non-empty segment without a dot.
fn is_id_segment(segment: &str) -> bool {
    !segment.is_empty() && !segment.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::*;

    fn session(endpoint: SessionEndpoint) -> Result<Route<'static>, RouteError> {
        Ok(Route::Session {
            session_id: "s",
            endpoint,
        })
    }

    #[test]
    fn greeting_with_and_without_slash() {
        assert_eq!(route(Get, ""), Ok(Route::Greeting));
        assert_eq!(route(Get, "/"), Ok(Route::Greeting));
        assert_eq!(
            route(Post, ""),
            Err(RouteError::MethodNotAllowed { allow: "GET" })
        );
    }

    #[test]
    fn info_and_its_preflight() {
        assert_eq!(route(Get, "/info"), Ok(Route::Info));
        assert_eq!(route(Options, "/info"), Ok(Route::InfoPreflight));
        assert_eq!(
            route(Post, "/info"),
            Err(RouteError::MethodNotAllowed {
                allow: "OPTIONS, GET"
            })
        );
    }

    #[test]
    fn iframe_page_variants() {
        for path in [
            "/iframe.html",
            "/iframe-a.html",
            "/iframe-0.3.4.html",
            "/iframe-x-y_z.html",
            "/iframe-.html",
            "/iframe-0.1.2abc-dirty.2144.html",
        ] {
            assert_eq!(route(Get, path), Ok(Route::Iframe), "{path}");
        }
        for path in [
            "/iframe.htm",
            "/iframe",
            "/iframe.HTML",
            "/iframe.xml",
            "/IFRAME.HTML",
            "/iframe-/.html",
            "/iframeX.html",
            "/iframe.html/",
        ] {
            assert_eq!(route(Get, path), Err(RouteError::NotFound), "{path}");
        }
    }

    #[test]
    fn websockets_are_get_only_with_allow_get() {
        assert_eq!(route(Get, "/websocket"), Ok(Route::RawWebsocket));
        assert_eq!(
            route(Get, "/1/s/websocket"),
            Ok(Route::Session {
                session_id: "s",
                endpoint: SessionEndpoint::Websocket
            })
        );
        for path in ["/websocket", "/1/s/websocket"] {
            assert_eq!(
                route(Post, path),
                Err(RouteError::MethodNotAllowed { allow: "GET" })
            );
        }
    }

    #[test]
    fn every_session_transport() {
        use ReceiverKind::*;
        let cases = [
            (Post, "xhr", SessionEndpoint::Receiver(XhrPolling)),
            (
                Post,
                "xhr_streaming",
                SessionEndpoint::Receiver(XhrStreaming),
            ),
            (Post, "xhr_send", SessionEndpoint::Send(SendKind::Xhr)),
            (Get, "eventsource", SessionEndpoint::Receiver(EventSource)),
            (Get, "htmlfile", SessionEndpoint::Receiver(HtmlFile)),
            (Get, "jsonp", SessionEndpoint::Receiver(JsonpPolling)),
            (Post, "jsonp_send", SessionEndpoint::Send(SendKind::Jsonp)),
        ];
        for (method, name, endpoint) in cases {
            assert_eq!(
                route(method, &format!("/000/s/{name}")),
                session(endpoint),
                "{name}"
            );
        }
    }

    #[test]
    fn xhr_paths_have_preflights_and_refuse_get() {
        for name in ["xhr", "xhr_streaming", "xhr_send"] {
            let path = format!("/0/s/{name}");
            assert_eq!(
                route(Options, &path),
                Ok(Route::Session {
                    session_id: "s",
                    endpoint: SessionEndpoint::Preflight {
                        allow: "OPTIONS, POST"
                    }
                })
            );
            assert_eq!(
                route(Get, &path),
                Err(RouteError::MethodNotAllowed {
                    allow: "OPTIONS, POST"
                })
            );
        }
        assert_eq!(
            route(Get, "/0/s/jsonp_send"),
            Err(RouteError::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            route(Post, "/0/s/jsonp"),
            Err(RouteError::MethodNotAllowed { allow: "GET" })
        );
    }

    #[test]
    fn websocket_upgrade_headers() {
        assert_eq!(check_websocket_upgrade(["websocket"], ["Upgrade"]), Ok(()));
        assert_eq!(
            check_websocket_upgrade(["WebSocket"], ["keep-alive, Upgrade"]),
            Ok(())
        );
        let bad_upgrade = Err("Can \"Upgrade\" only to \"WebSocket\".");
        assert_eq!(check_websocket_upgrade([], ["Upgrade"]), bad_upgrade);
        assert_eq!(check_websocket_upgrade(["h2c"], ["Upgrade"]), bad_upgrade);
        let bad_connection = Err("\"Connection\" must be \"Upgrade\".");
        assert_eq!(
            check_websocket_upgrade(["websocket"], ["close"]),
            bad_connection
        );
        assert_eq!(check_websocket_upgrade(["websocket"], []), bad_connection);
    }

    #[test]
    fn any_id_without_a_dot_is_accepted_and_server_id_is_ignored() {
        for (server, id) in [
            ("_", "_"),
            ("1", "1"),
            ("abcdefgh_i-j%20", "abcdefgh_i-j%20"),
            ("999", "0f8e2f0c-1b0e-4b8e-9d3c-1a2b3c4d5e6f"),
        ] {
            match route(Post, &format!("/{server}/{id}/xhr")) {
                Ok(Route::Session { session_id, .. }) => assert_eq!(session_id, id),
                other => panic!("{server}/{id}: {other:?}"),
            }
        }
    }

    #[test]
    fn ids_are_capped_at_max_id_bytes() {
        let longest = "s".repeat(MAX_ID_BYTES);
        let over = "s".repeat(MAX_ID_BYTES + 1);
        for (method, name) in [
            (Get, "websocket"),
            (Post, "xhr"),
            (Post, "xhr_streaming"),
            (Post, "xhr_send"),
            (Options, "xhr"),
            (Get, "eventsource"),
            (Get, "htmlfile"),
            (Get, "jsonp"),
            (Post, "jsonp_send"),
        ] {
            match route(method, &format!("/000/{longest}/{name}")) {
                Ok(Route::Session { session_id, .. }) => assert_eq!(session_id, longest),
                other => panic!("{name} with a {MAX_ID_BYTES}-byte id: {other:?}"),
            }
            assert_eq!(
                route(method, &format!("/000/{over}/{name}")),
                Err(RouteError::IdTooLong),
                "{name}"
            );
            assert_eq!(
                route(method, &format!("/{over}/s/{name}")),
                Err(RouteError::IdTooLong),
                "{name}: the server id too"
            );
        }
        assert_eq!(
            route(Post, &format!("/000/{over}/websocket")),
            Err(RouteError::IdTooLong),
            "the length is checked before the method"
        );
        let escaped = "%20".repeat(43);
        assert_eq!(
            route(Post, &format!("/000/{escaped}/xhr")),
            Err(RouteError::IdTooLong),
            "escapes count as written: 129 bytes"
        );
        assert_eq!(
            route(Post, &format!("/000/{over}/unknown")),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn everything_else_is_not_found() {
        for path in [
            "/a",
            "//",
            "/a/a/",
            "/a./a/xhr",
            "/a/a./xhr",
            "/a/a/xhr/",
            "//a/xhr",
            "/a//xhr",
            "/a/a/unknown",
            "/a/a/a/xhr",
            "/info/",
            "/websocket/",
            "/a/a/XHR",
            "info",
        ] {
            assert_eq!(route(Post, path), Err(RouteError::NotFound), "POST {path}");
            assert_eq!(route(Get, path), Err(RouteError::NotFound), "GET {path}");
        }
    }
}
