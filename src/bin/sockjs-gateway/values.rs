//! The text forms of setting values, shared by the flags and the file, so
//! both accept and refuse exactly the same things.

use std::time::Duration;

use sockjs_gateway::{AccessLogFormat, Overflow, SessionBinding};

/// `250ms`, `5s`, `1.5s`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 5s or 200ms"))?;
    if !value.is_finite() || value < 0.0 || value * scale > 86_400.0 {
        return Err(format!("`{text}` is out of range (0 to 24 hours)"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// A timeout: a duration above zero (a zero timeout would refuse everything).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("`{text}`: a timeout must be above zero")),
        timeout => Ok(timeout),
    }
}

/// A cap on a service's live sessions: 0 would refuse every session, so the
/// cap is at least 1 (no cap at all is the default).
pub fn parse_max_sessions(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("the session cap must be at least 1 (leave it out for no cap)".to_owned()),
        Ok(cap) => Ok(cap),
        Err(_) => Err(format!("`{text}` is not a number of sessions")),
    }
}

pub fn parse_overflow(text: &str) -> Result<Overflow, String> {
    match text {
        "close" => Ok(Overflow::Close),
        "drop-oldest" => Ok(Overflow::DropOldest),
        _ => Err(format!(
            "`{text}`: the overflow policy is `close` or `drop-oldest`"
        )),
    }
}

pub fn parse_access_log_format(text: &str) -> Result<AccessLogFormat, String> {
    match text {
        "plain" => Ok(AccessLogFormat::Plain),
        "json" => Ok(AccessLogFormat::Json),
        _ => Err(format!(
            "`{text}`: the access log format is `plain` or `json`"
        )),
    }
}

/// Where `--access-log` writes: `-` for standard output, else a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(std::path::PathBuf),
}

pub fn parse_access_log(text: &str) -> Result<AccessLogTarget, String> {
    match text {
        "" => Err("the access log needs a file name, or `-` for standard output".into()),
        "-" => Ok(AccessLogTarget::Stdout),
        path => Ok(AccessLogTarget::File(path.into())),
    }
}

pub fn parse_binding(text: &str) -> Result<SessionBinding, String> {
    match text.split_once(':') {
        None if text == "ip" => Ok(SessionBinding::ClientIp),
        None if text == "cookie" => Ok(SessionBinding::Cookie("JSESSIONID".to_owned())),
        Some(("cookie", name)) if !name.is_empty() => Ok(SessionBinding::Cookie(name.to_owned())),
        _ => Err(format!(
            "`{text}`: bind sessions to `ip`, `cookie` or `cookie:NAME`"
        )),
    }
}

pub fn parse_sockjs_url(text: &str) -> Result<String, String> {
    if text.starts_with('/') || text.starts_with("http") {
        Ok(text.to_owned())
    } else {
        Err("the client library URL must start with / or http".to_owned())
    }
}

/// A page origin as browsers send it, `SCHEME://HOST[:PORT]`, where the host
/// may start with `*.` for any subdomain. Anything else could never match an
/// `Origin` header, so it is refused rather than silently useless.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{text}` is not an origin such as https://app.example.com or https://*.example.com"
        )
    };
    let (scheme, authority) = text.split_once("://").ok_or_else(bad)?;
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let host = authority.strip_prefix("*.").unwrap_or(authority);
    let (host, port) = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, rest)) => (v6, Some(rest.strip_prefix(':').unwrap_or(rest))),
            None => ("", None),
        },
        None => match host.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host, None),
        },
    };
    let is_v6 = authority.starts_with('[');
    let host_ok = if is_v6 {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok());
    if scheme_ok && host_ok && port_ok {
        Ok(text.to_owned())
    } else {
        Err(bad())
    }
}

/// A service prefix: `/name`, segments without spaces, no trailing slash
/// (one is dropped).
pub fn parse_prefix(text: &str) -> Result<String, String> {
    let prefix = text.trim_end_matches('/');
    if !text.starts_with('/') {
        return Err(format!("`{text}`: a service prefix starts with /"));
    }
    if prefix.is_empty() {
        return Err("the prefix `/` would hide every other path; use /NAME".to_owned());
    }
    if prefix.contains("//") || prefix.contains(|c: char| c.is_whitespace() || "?#%".contains(c)) {
        return Err(format!(
            "`{text}`: a service prefix is /NAME[/NAME...] without spaces, `//`, `?`, `#` or `%`"
        ));
    }
    Ok(prefix.to_owned())
}

/// Where a relay service forwards its sessions: `ws://…`, `wss://…` or
/// `tcp://HOST:PORT`, by the library's own rule.
pub fn parse_upstream(text: &str) -> Result<String, String> {
    sockjs_gateway::relay::Upstream::parse(text).map(|_| text.to_owned())
}

/// A request header name, as HTTP allows it.
/// `redis://HOST[:PORT][/DB]` or
/// `redis+sentinel://HOST[:PORT],HOST[:PORT],.../MASTER[/DB]`.
pub fn parse_redis(text: &str) -> Result<String, String> {
    sockjs_gateway::cluster::check_redis_url(text)
}

/// `off`, `error`, `warn`, `info`, `debug` or `trace`.
pub fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    text.parse().map_err(|_| {
        format!("`{text}`: the log level is one of off, error, warn, info, debug, trace")
    })
}

/// `HOST:PORT` as the other cluster nodes reach this one (plain HTTP).
pub fn parse_advertise(text: &str) -> Result<String, String> {
    let refuse = || format!("`{text}`: the advertised address is HOST:PORT, e.g. 10.0.0.5:8081");
    let (host, port) = text.rsplit_once(':').ok_or_else(refuse)?;
    let host_ok = !host.is_empty()
        && (host.parse::<std::net::IpAddr>().is_ok()
            || (host.starts_with('[') && host.ends_with(']'))
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    match port.parse::<u16>() {
        Ok(port) if port != 0 && host_ok => Ok(text.to_owned()),
        _ => Err(refuse()),
    }
}

/// A WebSocket subprotocol name (RFC 6455 section 4.1: an HTTP token, such
/// as `v12.stomp`).
pub fn parse_subprotocol(text: &str) -> Result<String, String> {
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !text.is_empty() && text.chars().all(token_char) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a WebSocket subprotocol name such as v12.stomp"
        ))
    }
}

pub fn parse_header_name(text: &str) -> Result<String, String> {
    actix_web::http::header::HeaderName::from_bytes(text.as_bytes())
        .map(|name| name.as_str().to_owned())
        .map_err(|_| format!("`{text}` is not a header name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_values() {
        assert!(parse_redis("redis://127.0.0.1:6379").is_ok());
        assert!(parse_redis("http://127.0.0.1:6379").is_err());
        assert!(parse_redis("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/main").is_ok());
        assert!(parse_redis("redis+sentinel://127.0.0.1:26379").is_err());
        assert!(parse_advertise("10.0.0.5:8081").is_ok());
        assert!(parse_advertise("node-1.internal:8081").is_ok());
        assert!(parse_advertise("[::1]:8081").is_ok());
        assert!(parse_advertise("10.0.0.5").is_err());
        assert!(parse_advertise("10.0.0.5:0").is_err());
        assert!(parse_advertise(":8081").is_err());
        assert!(parse_advertise("http://h:1/x").is_err());
    }

    #[test]
    fn session_caps() {
        assert_eq!(parse_max_sessions("1"), Ok(1));
        assert_eq!(parse_max_sessions("5000"), Ok(5000));
        for bad in ["0", "-1", "many", ""] {
            assert!(parse_max_sessions(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("3s"), Ok(Duration::from_secs(3)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("later").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("25"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn origins() {
        for good in [
            "https://app.example.com",
            "http://localhost:3000",
            "https://*.example.com",
            "http://127.0.0.1:8081/",
            "http://[::1]:8080",
            "chrome-extension://abcdef",
        ] {
            assert_eq!(parse_origin(good).as_deref(), Ok(good), "{good}");
        }
        for bad in [
            "app.example.com",
            "*",
            "null",
            "https://",
            "https://a.example.com/path",
            "https://a b.com",
            "https://a.com:port",
            "https://[::1",
            "://a.com",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("/chat"), Ok("/chat".to_owned()));
        assert_eq!(parse_prefix("/a/b/"), Ok("/a/b".to_owned()));
        for bad in ["chat", "/", "", "/a b", "/a//b", "/a?b"] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_names() {
        assert_eq!(parse_header_name("Cookie"), Ok("cookie".to_owned()));
        assert!(parse_header_name("bad name").is_err());
        assert!(parse_header_name("").is_err());
    }

    #[test]
    fn subprotocols() {
        assert_eq!(parse_subprotocol("v12.stomp"), Ok("v12.stomp".to_owned()));
        for bad in ["", "v12 stomp", "a,b", "é"] {
            assert!(parse_subprotocol(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bindings_and_overflow() {
        assert_eq!(parse_binding("ip"), Ok(SessionBinding::ClientIp));
        assert_eq!(
            parse_binding("cookie:sid"),
            Ok(SessionBinding::Cookie("sid".into()))
        );
        assert!(parse_binding("cookie:").is_err());
        assert!(matches!(
            parse_overflow("drop-oldest"),
            Ok(Overflow::DropOldest)
        ));
        assert!(parse_overflow("drop").is_err());
    }
}
