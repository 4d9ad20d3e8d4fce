//! Command-line flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use sockjs_gateway::{Cidr, Overflow, SessionBinding};

/// A SockJS server and gateway. With no flags it serves the conventional
/// SockJS test services (/echo, /disabled_websocket_echo, /cookie_needed_echo,
/// /close, /ticker, /amplify, /broadcast) on 127.0.0.1:8081.
#[derive(Debug, Parser)]
#[command(name = "sockjs-gateway", version)]
pub struct Cli {
    /// Address to listen on; repeat for several.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub listen: Vec<SocketAddr>,

    /// Idle time before a heartbeat frame, e.g. 25s or 500ms; 0 turns heartbeats off.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    pub heartbeat_delay: Duration,

    /// How long a session with no receiver lives before it is closed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub disconnect_delay: Duration,

    /// Client library URL for the iframe page (must start with / or http).
    #[arg(long, value_name = "URL", default_value = sockjs_gateway::DEFAULT_SOCKJS_URL, value_parser = parse_sockjs_url)]
    pub sockjs_url: String,

    /// Bound on a session's messages waiting for its client, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_queued_bytes: usize,

    /// Bound on one inbound message or send body, in bytes (larger bodies get 413).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// A session whose client takes none of its queued messages for this long
    /// is closed with 4008 "Send timeout"; 0 waits for ever.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub send_timeout: Duration,

    /// How long an xhr_send/jsonp_send body may take to arrive (slower: 408).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// What a full outgoing queue does: `close` (senders wait, a stalled client
    /// is closed) or `drop-oldest` (the oldest queued messages are dropped, counted).
    #[arg(long, value_name = "POLICY", default_value = "close", value_parser = parse_overflow)]
    pub overflow: Overflow,

    /// A page origin allowed to use the services, e.g. https://app.example.com
    /// or https://*.example.com; repeatable. Default: every origin. Refused
    /// origins get 403 on every transport and WebSocket handshake.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,

    /// Keep jsonp-polling on under --allowed-origin (its requests carry no
    /// Origin to check, so an allow-list turns it off by default).
    #[arg(long)]
    pub allow_jsonp: bool,

    /// Bind each session to its first request's client address (`ip`) or to a
    /// cookie (`cookie` for JSESSIONID, `cookie:NAME` for another); a later
    /// request that does not match gets 404. Off by default.
    #[arg(long, value_name = "ip|cookie[:NAME]", value_parser = parse_binding)]
    pub bind_session: Option<SessionBinding>,

    /// A proxy (address or CIDR block) allowed to name the client's address
    /// with X-Forwarded-For or Forwarded; repeatable. Others cannot.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<Cidr>,

    /// At most this many live sessions per service; new ones beyond get 503.
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// On SIGTERM or Ctrl-C: how long to let sessions take their close frame
    /// (1001) before the process exits.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Serve Prometheus metrics at /metrics and a health check at /healthz
    /// (200 while accepting, 503 while shutting down) on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Relay a SockJS service to an upstream: `PREFIX=ws://HOST:PORT/PATH`,
    /// `PREFIX=wss://...` or `PREFIX=tcp://HOST:PORT` (newline-delimited
    /// text). Each session gets its own upstream connection. Repeatable; a
    /// relay at a built-in service's prefix replaces that service.
    #[arg(long = "relay", value_name = "PREFIX=URL", value_parser = parse_relay)]
    pub relays: Vec<RelaySpec>,

    /// A request header passed on to every relay's upstream handshake, such
    /// as Cookie or Authorization; repeatable. X-Forwarded-For and
    /// X-Forwarded-Proto are always sent.
    #[arg(long = "relay-forward-header", value_name = "NAME")]
    pub relay_forward_headers: Vec<String>,

    /// A PEM file of certificate authorities trusted for wss:// upstreams,
    /// beside the public ones.
    #[arg(long, value_name = "FILE")]
    pub relay_ca: Option<String>,

    /// Worker threads; defaults to the number of CPUs.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

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

/// One `--relay PREFIX=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    pub prefix: String,
    pub upstream: String,
}

fn parse_relay(text: &str) -> Result<RelaySpec, String> {
    let (prefix, upstream) = text
        .split_once('=')
        .ok_or("a relay is PREFIX=URL, e.g. /app=ws://127.0.0.1:9000/")?;
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err(format!(
            "the relay prefix `{prefix}` must start with / and name a path"
        ));
    }
    sockjs_gateway::relay::Upstream::parse(upstream)?;
    Ok(RelaySpec {
        prefix: prefix.trim_end_matches('/').to_owned(),
        upstream: upstream.to_owned(),
    })
}

fn parse_overflow(text: &str) -> Result<Overflow, String> {
    match text {
        "close" => Ok(Overflow::Close),
        "drop-oldest" => Ok(Overflow::DropOldest),
        _ => Err("the overflow policy is `close` or `drop-oldest`".to_owned()),
    }
}

fn parse_binding(text: &str) -> Result<SessionBinding, String> {
    match text.split_once(':') {
        None if text == "ip" => Ok(SessionBinding::ClientIp),
        None if text == "cookie" => Ok(SessionBinding::Cookie("JSESSIONID".to_owned())),
        Some(("cookie", name)) if !name.is_empty() => Ok(SessionBinding::Cookie(name.to_owned())),
        _ => Err("bind sessions to `ip`, `cookie` or `cookie:NAME`".to_owned()),
    }
}

fn parse_sockjs_url(text: &str) -> Result<String, String> {
    if text.starts_with('/') || text.starts_with("http") {
        Ok(text.to_owned())
    } else {
        Err("the client library URL must start with / or http".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("25"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn relays() {
        let spec = parse_relay("/app/=ws://127.0.0.1:9000/x").unwrap();
        assert_eq!(spec.prefix, "/app");
        assert_eq!(spec.upstream, "ws://127.0.0.1:9000/x");
        assert!(parse_relay("/app").is_err());
        assert!(parse_relay("app=ws://h/").is_err());
        assert!(parse_relay("/=ws://h/").is_err());
        assert!(parse_relay("/app=http://h/").is_err());
    }
}
