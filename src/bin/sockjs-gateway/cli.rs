//! Command-line flags. Every setting flag is optional with no clap default,
//! so the settings can tell a flag that was given (it overrides the file)
//! from one that was not; the defaults, and the merging, live in
//! `settings.rs`, which reads this module (never the other way round).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use sockjs_gateway::{AccessLogFormat, Cidr, Overflow, SessionBinding, CLIENT_RELEASES};

use crate::values::AccessLogTarget;
use crate::values::{
    parse_access_log, parse_access_log_format, parse_advertise, parse_binding, parse_duration,
    parse_header_name, parse_max_sessions, parse_origin, parse_overflow, parse_prefix, parse_redis,
    parse_sockjs_url, parse_subprotocol, parse_timeout, parse_upstream,
};

/// A SockJS server and gateway. With no flags it serves the conventional
/// SockJS test services (/echo, /disabled_websocket_echo, /cookie_needed_echo,
/// /close, /ticker, /amplify, /broadcast) on 127.0.0.1:8081. Flags override
/// the --config file.
#[derive(Debug, Parser)]
#[command(name = "sockjs-gateway", version)]
pub struct Cli {
    /// A TOML file describing listen addresses, services and their options,
    /// TLS and metrics (see examples/gateway.toml). Flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on; repeat for several (default 127.0.0.1:8081).
    /// Replaces the file's list.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// Serve HTTPS and WSS with this PEM certificate chain (with --tls-key);
    /// HTTP/2 is offered by ALPN.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Idle time before a heartbeat frame, e.g. 25s or 500ms (default 25s); 0
    /// turns heartbeats off.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_delay: Option<Duration>,

    /// How long a session with no receiver lives before it is closed
    /// (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub disconnect_delay: Option<Duration>,

    /// Client library URL for the iframe page, starting with / or http; it
    /// pins the iframe to that one release (default
    /// /lib/sockjs-iframe-loader.js, which runs the release the page speaks).
    #[arg(long, value_name = "URL", value_parser = parse_sockjs_url)]
    pub sockjs_url: Option<String>,

    /// Bound on a session's messages waiting for its client, in bytes
    /// (default 1048576).
    #[arg(long, value_name = "BYTES")]
    pub max_queued_bytes: Option<usize>,

    /// Bound on one inbound message or send body, in bytes; larger bodies get
    /// 413 (default 1048576).
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// A session whose client takes none of its queued messages for this long
    /// is closed with 4008 "Send timeout"; 0 waits for ever (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub send_timeout: Option<Duration>,

    /// How long an xhr_send/jsonp_send body may take to arrive; slower: 408
    /// (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub body_timeout: Option<Duration>,

    /// What a full outgoing queue does: `close` (the default: senders wait, a
    /// stalled client is closed) or `drop-oldest` (the oldest queued messages
    /// are dropped, counted).
    #[arg(long, value_name = "POLICY", value_parser = parse_overflow)]
    pub overflow: Option<Overflow>,

    /// A page origin allowed to use the services, e.g. https://app.example.com
    /// or https://*.example.com; repeatable. Default: every origin. Refused
    /// origins get 403 on every transport and WebSocket handshake.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = parse_origin)]
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

    /// At most this many live sessions per service, at least 1; new ones
    /// beyond get 503 (default: no cap).
    #[arg(long, value_name = "N", value_parser = parse_max_sessions)]
    pub max_sessions: Option<usize>,

    /// A relay service: sessions at PREFIX are forwarded to URL (ws://, wss://
    /// or tcp://HOST:PORT); repeatable.
    #[arg(long = "relay", value_name = "PREFIX=URL", value_parser = parse_relay)]
    pub relays: Vec<RelayFlag>,

    /// The WebSocket subprotocol(s) the relay at PREFIX asks its upstream
    /// for, e.g. /stomp=v12.stomp; several are offered in order. An upstream
    /// that selects none closes the session with 4501. Repeatable, one per
    /// relay; replaces the file's `subprotocol`.
    #[arg(long = "relay-subprotocol", value_name = "PREFIX=PROTO[,PROTO...]", value_parser = parse_relay_subprotocols)]
    pub relay_subprotocols: Vec<(String, Vec<String>)>,

    /// A request header every relay service passes on to its upstream;
    /// repeatable. Replaces the file's forward_headers.
    #[arg(long = "relay-forward-header", value_name = "NAME", value_parser = parse_header_name)]
    pub relay_forward_headers: Vec<String>,

    /// A PEM file of certificate authorities trusted for wss:// upstreams,
    /// beside the public ones. Replaces the file's `ca`.
    #[arg(long, value_name = "FILE")]
    pub relay_ca: Option<String>,

    /// How long a relay waits for its upstream connection (TCP, TLS and
    /// handshake) before the session gets 4502 (default 10s). Replaces the
    /// file's `connect_timeout`.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub relay_connect_timeout: Option<Duration>,

    /// On SIGTERM or Ctrl-C: how long to let sessions take their close frame
    /// (1001) before the process exits (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,

    /// Serve Prometheus metrics at /metrics and a health check at /healthz
    /// (200 while accepting, 503 while shutting down) on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Write one line per ended session to FILE (appended to, created if
    /// need be), or to standard output for `-` (README, "Access log").
    #[arg(long, value_name = "FILE|-", value_parser = parse_access_log)]
    pub access_log: Option<AccessLogTarget>,

    /// The access log's lines: `plain` (the default) or `json` (one object
    /// per line).
    #[arg(long, value_name = "plain|json", value_parser = parse_access_log_format)]
    pub access_log_format: Option<AccessLogFormat>,

    /// Ended sessions the access log holds while its writer is behind (a
    /// slow disk, a full pipe); more are dropped and counted in
    /// sockjs_access_log_dropped_total (default 4096).
    #[arg(long, value_name = "LINES")]
    pub access_log_buffer: Option<NonZeroUsize>,

    /// Cluster mode, with this Redis (redis://HOST:PORT) as the backplane:
    /// HTTP-transport sessions work across nodes and /broadcast reaches
    /// every node (README, "Cluster"). Or the primary Redis Sentinel names,
    /// followed through failovers:
    /// redis+sentinel://HOST:PORT,HOST:PORT,HOST:PORT/MASTER[/DB].
    #[arg(long, value_name = "URL", value_parser = parse_redis)]
    pub redis: Option<String>,

    /// In cluster mode, HOST:PORT where the other nodes reach this one over
    /// plain HTTP (default: the first listen address).
    #[arg(long, value_name = "ADDR", value_parser = parse_advertise)]
    pub advertise: Option<String>,

    /// Worker threads; defaults to the number of CPUs.
    #[arg(long, value_name = "N")]
    pub workers: Option<NonZeroUsize>,
}

/// One `--relay PREFIX=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayFlag {
    pub prefix: String,
    pub upstream: String,
}

/// `PREFIX=URL`, both validated as in the file.
fn parse_relay(text: &str) -> Result<RelayFlag, String> {
    let (prefix, upstream) = text.split_once('=').ok_or_else(|| {
        format!("`{text}`: a relay is PREFIX=URL, e.g. /app=ws://127.0.0.1:9000/")
    })?;
    Ok(RelayFlag {
        prefix: parse_prefix(prefix)?,
        upstream: parse_upstream(upstream)?,
    })
}

/// `PREFIX=PROTO[,PROTO...]`.
fn parse_relay_subprotocols(text: &str) -> Result<(String, Vec<String>), String> {
    let (prefix, protocols) = text.split_once('=').ok_or_else(|| {
        format!("`{text}`: a relay subprotocol is PREFIX=PROTO[,PROTO...], e.g. /stomp=v12.stomp")
    })?;
    let protocols = protocols
        .split(',')
        .map(|p| parse_subprotocol(p.trim()))
        .collect::<Result<_, _>>()?;
    Ok((parse_prefix(prefix)?, protocols))
}

impl Cli {
    /// The process's command line; `--version` (and `-V`) also name the
    /// bundled sockjs-client releases. Exits with clap's message on bad flags.
    pub fn from_command_line() -> Cli {
        let version = version_with_client_releases();
        let matches = Cli::command()
            .version(version)
            .long_version(version)
            .get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// The rules clap cannot see: two `--relay` (or `--relay-subprotocol`)
    /// flags for one prefix.
    pub fn check(&self) -> Result<(), String> {
        for (i, relay) in self.relays.iter().enumerate() {
            if self.relays[..i].iter().any(|r| r.prefix == relay.prefix) {
                return Err(format!(
                    "--relay: the prefix `{}` is given twice",
                    relay.prefix
                ));
            }
        }
        for (i, (prefix, _)) in self.relay_subprotocols.iter().enumerate() {
            if self.relay_subprotocols[..i]
                .iter()
                .any(|(p, _)| p == prefix)
            {
                return Err(format!(
                    "--relay-subprotocol: the prefix `{prefix}` is given twice"
                ));
            }
        }
        Ok(())
    }
}

/// `0.1.0 (sockjs-client 1.0.0, 1.0.1, ..., 1.6.1)`: the gateway's version
/// and every client release it serves under `/lib/`.
fn version_with_client_releases() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let releases: Vec<&str> = CLIENT_RELEASES.iter().map(|r| r.version).collect();
        format!(
            "{} (sockjs-client {})",
            env!("CARGO_PKG_VERSION"),
            releases.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays() {
        let relay = parse_relay("/app=ws://127.0.0.1:9000/socket").unwrap();
        assert_eq!(relay.prefix, "/app");
        assert_eq!(relay.upstream, "ws://127.0.0.1:9000/socket");
        assert!(parse_relay("/app").is_err());
        assert!(parse_relay("app=ws://h/").is_err());
        assert!(parse_relay("/app=http://h/").is_err());
    }

    #[test]
    fn relay_subprotocols() {
        assert_eq!(
            parse_relay_subprotocols("/stomp=v12.stomp, v11.stomp"),
            Ok((
                "/stomp".to_owned(),
                vec!["v12.stomp".to_owned(), "v11.stomp".to_owned()]
            ))
        );
        assert!(parse_relay_subprotocols("/stomp").is_err());
        assert!(parse_relay_subprotocols("/stomp=").is_err());
        assert!(parse_relay_subprotocols("/stomp=a b").is_err());
        assert!(parse_relay_subprotocols("stomp=v12.stomp").is_err());
    }
}
