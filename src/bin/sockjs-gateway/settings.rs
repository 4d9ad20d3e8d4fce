//! The gateway's settings, merged from three layers: built-in defaults <
//! the `--config` file < flags. A flag that was given wins everywhere: over
//! the file's top-level value, its `[defaults]` and every service's own.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use sockjs_gateway::{AccessLogFormat, Options, OriginPolicy, DEFAULT_SOCKJS_URL};

use crate::cli::Cli;
use crate::config::{ConfigFile, Kind, ServiceTable};
pub use crate::config::{ServiceOptions, TlsFiles};
pub use crate::values::AccessLogTarget;

const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything `main` needs to start.
#[derive(Debug)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    pub workers: Option<NonZeroUsize>,
    pub metrics: Option<SocketAddr>,
    pub shutdown_timeout: Duration,
    pub tls: Option<TlsFiles>,
    /// Cluster mode: the Redis URL.
    pub redis: Option<String>,
    /// Cluster mode: where the other nodes reach this one.
    pub advertise: Option<String>,
    /// Where ended sessions are written, if anywhere.
    pub access_log: Option<AccessLogTarget>,
    pub access_log_format: AccessLogFormat,
    /// Records held while the access log's writer is behind.
    pub access_log_buffer: usize,
    /// The file's `log_level`, if it has one.
    pub log_level: Option<log::LevelFilter>,
    /// Longer prefixes first, so `/a/b` is not hidden behind `/a`.
    pub services: Vec<ServiceSettings>,
}

/// One service to mount, with its options merged.
#[derive(Debug)]
pub struct ServiceSettings {
    pub kind: ServiceKind,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServiceKind {
    Local { prefix: String, handler: Handler },
    Relay(RelaySpec),
}

/// What a service that runs here does with its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Echo,
    Close,
    Ticker,
    Amplify,
    Broadcast,
}

/// A relay service: its sessions are forwarded to `upstream`.
#[derive(Debug, Clone, PartialEq)]
pub struct RelaySpec {
    pub prefix: String,
    /// `ws://…`, `wss://…` or `tcp://HOST:PORT`, already validated.
    pub upstream: String,
    /// Request headers passed on to the upstream.
    pub forward_headers: Vec<String>,
    /// WebSocket subprotocols asked of the upstream, in order.
    pub subprotocols: Vec<String>,
    /// A PEM file of extra certificate authorities for `wss://`.
    pub trusted_ca: Option<String>,
    /// How long to wait for the upstream connection (default: the library's).
    pub connect_timeout: Option<Duration>,
}

impl ServiceSettings {
    pub fn prefix(&self) -> &str {
        self.kind.prefix()
    }
}

impl ServiceKind {
    pub fn prefix(&self) -> &str {
        match self {
            ServiceKind::Local { prefix, .. } => prefix,
            ServiceKind::Relay(spec) => &spec.prefix,
        }
    }
}

/// A service before its options are merged.
struct Declared {
    kind: ServiceKind,
    own: ServiceOptions,
}

/// The per-service options given as flags: they override every service's.
fn flag_options(cli: &Cli) -> ServiceOptions {
    ServiceOptions {
        heartbeat_delay: cli.heartbeat_delay,
        disconnect_delay: cli.disconnect_delay,
        max_queued_bytes: cli.max_queued_bytes,
        max_message_bytes: cli.max_message_bytes,
        send_timeout: cli.send_timeout,
        body_timeout: cli.body_timeout,
        overflow: cli.overflow,
        allowed_origins: given(&cli.allowed_origins),
        allow_jsonp: cli.allow_jsonp.then_some(true),
        bind_session: cli.bind_session.clone(),
        max_sessions: cli.max_sessions,
        ..ServiceOptions::default()
    }
}

/// A repeatable flag counts as given when it was given at least once.
fn given<T: Clone>(values: &[T]) -> Option<Vec<T>> {
    (!values.is_empty()).then(|| values.to_vec())
}

impl Settings {
    /// Refuses only what no single flag or key can see: a
    /// `--relay-subprotocol` for a prefix that is not a WebSocket relay.
    pub fn resolve(cli: &Cli, file: ConfigFile) -> Result<Settings, String> {
        let flags = flag_options(cli);
        let sockjs_url = cli
            .sockjs_url
            .clone()
            .or(file.sockjs_url.clone())
            .unwrap_or_else(|| DEFAULT_SOCKJS_URL.to_owned());
        let trusted_proxies = given(&cli.trusted_proxies)
            .or(file.trusted_proxies.clone())
            .unwrap_or_default();
        let base = Options {
            sockjs_url,
            trusted_proxies,
            ..Options::default()
        };
        let mut services: Vec<ServiceSettings> = declared_services(cli, &file)?
            .into_iter()
            .map(|declared| {
                let layered = file.defaults.overlaid(&declared.own).overlaid(&flags);
                ServiceSettings {
                    kind: declared.kind,
                    options: layered.applied_to(base.clone()),
                }
            })
            .collect();
        services.sort_by_key(|s| std::cmp::Reverse(s.prefix().matches('/').count()));
        let listen = given(&cli.listen)
            .or(file.listen.map(|listen| listen.into_inner()))
            .unwrap_or_else(|| vec![DEFAULT_LISTEN.parse().expect("a valid default address")]);
        let tls = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => file.tls,
        };
        Ok(Settings {
            listen,
            workers: cli.workers.or(file.workers),
            metrics: cli.metrics.or(file.metrics),
            shutdown_timeout: cli
                .shutdown_timeout
                .or(file.shutdown_timeout)
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            tls,
            redis: cli.redis.clone().or(file.redis),
            advertise: cli.advertise.clone().or(file.advertise),
            access_log: cli.access_log.clone().or(file.access_log),
            access_log_format: cli
                .access_log_format
                .or(file.access_log_format)
                .unwrap_or_default(),
            access_log_buffer: cli
                .access_log_buffer
                .or(file.access_log_buffer)
                .map_or(sockjs_gateway::access_log::DEFAULT_QUEUE, NonZeroUsize::get),
            log_level: file.log_level,
            services,
        })
    }
}

/// The built-in services unless turned off, then the file's (replacing a
/// built-in of the same prefix), then the `--relay` flags (replacing any).
fn declared_services(cli: &Cli, file: &ConfigFile) -> Result<Vec<Declared>, String> {
    let mut services = Vec::new();
    if file.builtin_services.unwrap_or(true) {
        services.extend(builtin_services());
    }
    let mut add = |declared: Declared| {
        services.retain(|s: &Declared| s.kind.prefix() != declared.kind.prefix());
        services.push(declared);
    };
    for table in &file.services {
        add(from_table(table));
    }
    for relay in &cli.relays {
        add(Declared {
            kind: ServiceKind::Relay(RelaySpec {
                prefix: relay.prefix.clone(),
                upstream: relay.upstream.clone(),
                forward_headers: Vec::new(),
                subprotocols: Vec::new(),
                trusted_ca: None,
                connect_timeout: None,
            }),
            own: ServiceOptions::default(),
        });
    }
    for service in &mut services {
        if let ServiceKind::Relay(spec) = &mut service.kind {
            if let Some(headers) = given(&cli.relay_forward_headers) {
                spec.forward_headers = headers;
            }
            if let Some(ca) = &cli.relay_ca {
                spec.trusted_ca = Some(ca.clone());
            }
            if let Some(timeout) = cli.relay_connect_timeout {
                spec.connect_timeout = Some(timeout);
            }
        }
    }
    for (prefix, protocols) in &cli.relay_subprotocols {
        let flag = format!("--relay-subprotocol {prefix}={}", protocols.join(","));
        let spec = services.iter_mut().find_map(|s| match &mut s.kind {
            ServiceKind::Relay(spec) if spec.prefix == *prefix => Some(spec),
            _ => None,
        });
        match spec {
            None => return Err(format!("{flag}: there is no relay at `{prefix}`")),
            Some(spec) if spec.upstream.to_ascii_lowercase().starts_with("tcp://") => {
                return Err(format!(
                    "{flag}: the relay at `{prefix}` goes to {}, and a TCP upstream has no subprotocol",
                    spec.upstream
                ))
            }
            Some(spec) => spec.subprotocols = protocols.clone(),
        }
    }
    Ok(services)
}

fn local(prefix: String, handler: Handler) -> ServiceKind {
    ServiceKind::Local { prefix, handler }
}

fn from_table(table: &ServiceTable) -> Declared {
    let prefix = table.prefix.get_ref().0.clone();
    let kind = match table.kind.get_ref() {
        Kind::Relay => ServiceKind::Relay(RelaySpec {
            prefix,
            // config::check refuses a relay without an upstream.
            upstream: table
                .upstream
                .as_ref()
                .map(|u| u.get_ref().0.clone())
                .unwrap_or_default(),
            forward_headers: table
                .forward_headers
                .as_ref()
                .map(|headers| headers.get_ref().iter().map(|h| h.0.clone()).collect())
                .unwrap_or_default(),
            subprotocols: table
                .subprotocol
                .as_ref()
                .map(|protocols| protocols.get_ref().0.clone())
                .unwrap_or_default(),
            trusted_ca: table
                .ca
                .as_ref()
                .map(|ca| ca.get_ref().to_string_lossy().into_owned()),
            connect_timeout: table.connect_timeout.as_ref().map(|t| t.get_ref().0),
        }),
        Kind::Echo => local(prefix, Handler::Echo),
        Kind::Close => local(prefix, Handler::Close),
        Kind::Ticker => local(prefix, Handler::Ticker),
        Kind::Amplify => local(prefix, Handler::Amplify),
        Kind::Broadcast => local(prefix, Handler::Broadcast),
    };
    Declared {
        kind,
        own: table.options(),
    }
}

/// The conventional test services (PROTOCOL.md section 10), with what sets
/// each apart.
fn builtin_services() -> Vec<Declared> {
    let builtin = |prefix: &str, handler, own| Declared {
        kind: local(prefix.to_owned(), handler),
        own,
    };
    vec![
        builtin(
            "/echo",
            Handler::Echo,
            ServiceOptions {
                response_limit: Some(4096),
                ..Default::default()
            },
        ),
        builtin(
            "/disabled_websocket_echo",
            Handler::Echo,
            ServiceOptions {
                websocket: Some(false),
                ..Default::default()
            },
        ),
        builtin(
            "/cookie_needed_echo",
            Handler::Echo,
            ServiceOptions {
                cookie_needed: Some(true),
                ..Default::default()
            },
        ),
        builtin("/close", Handler::Close, ServiceOptions::default()),
        builtin("/ticker", Handler::Ticker, ServiceOptions::default()),
        builtin("/amplify", Handler::Amplify, ServiceOptions::default()),
        builtin("/broadcast", Handler::Broadcast, ServiceOptions::default()),
    ]
}

impl ServiceOptions {
    /// `options` with every value these options set.
    fn applied_to(self, mut options: Options) -> Options {
        let ServiceOptions {
            heartbeat_delay,
            disconnect_delay,
            response_limit,
            websocket,
            cookie_needed,
            allowed_origins,
            allow_jsonp,
            max_sessions,
            max_queued_bytes,
            max_message_bytes,
            send_timeout,
            body_timeout,
            overflow,
            bind_session,
        } = self;
        set(&mut options.heartbeat_delay, heartbeat_delay);
        set(&mut options.disconnect_delay, disconnect_delay);
        set(&mut options.response_limit, response_limit);
        set(&mut options.transports.websocket, websocket);
        set(&mut options.cookie_needed, cookie_needed);
        set(
            &mut options.origins,
            allowed_origins.map(OriginPolicy::allow_only),
        );
        set(&mut options.jsonp_with_origin_policy, allow_jsonp);
        set(&mut options.max_sessions, max_sessions.map(Some));
        set(&mut options.max_queued_bytes, max_queued_bytes);
        set(&mut options.max_message_bytes, max_message_bytes);
        set(&mut options.send_timeout, send_timeout);
        set(&mut options.body_timeout, body_timeout);
        set(&mut options.overflow, overflow);
        set(&mut options.bind_session, bind_session.map(Some));
        options
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;

    fn resolve(args: &[&str], file: &str) -> Settings {
        let cli = Cli::parse_from(std::iter::once("sockjs-gateway").chain(args.iter().copied()));
        Settings::resolve(&cli, toml::from_str(file).expect("valid test file"))
            .expect("settings that resolve")
    }

    fn service<'a>(settings: &'a Settings, prefix: &str) -> &'a ServiceSettings {
        settings
            .services
            .iter()
            .find(|s| s.prefix() == prefix)
            .unwrap_or_else(|| panic!("no service {prefix}"))
    }

    fn relay<'a>(settings: &'a Settings, prefix: &str) -> &'a RelaySpec {
        match &service(settings, prefix).kind {
            ServiceKind::Relay(spec) => spec,
            ServiceKind::Local { .. } => panic!("{prefix} is a relay"),
        }
    }

    const FILE: &str = r#"
        listen = ["127.0.0.1:9000", "127.0.0.1:9001"]
        shutdown_timeout = "2s"
        [defaults]
        heartbeat_delay = "7s"
        disconnect_delay = "3s"
        [[service]]
        prefix = "/chat"
        kind = "broadcast"
        heartbeat_delay = "9s"
        [[service]]
        prefix = "/app"
        kind = "relay"
        upstream = "tcp://127.0.0.1:7000"
        forward_headers = ["Cookie"]
        ca = "/etc/ssl/internal.pem"
        connect_timeout = "3s"
    "#;

    #[test]
    fn built_in_defaults_then_the_file_then_the_service_then_flags() {
        let settings = resolve(&[], "");
        assert_eq!(settings.listen, ["127.0.0.1:8081".parse().unwrap()]);
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(settings.services.len(), 7);
        let echo = &service(&settings, "/echo").options;
        assert_eq!(echo.response_limit, 4096);
        assert_eq!(echo.heartbeat_delay, Duration::from_secs(25));

        let settings = resolve(&[], FILE);
        assert_eq!(settings.listen.len(), 2);
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(2));
        let echo = &service(&settings, "/echo").options;
        assert_eq!(echo.heartbeat_delay, Duration::from_secs(7));
        assert_eq!(
            echo.response_limit, 4096,
            "a built-in keeps what sets it apart"
        );
        let chat = &service(&settings, "/chat").options;
        assert_eq!(chat.heartbeat_delay, Duration::from_secs(9));
        assert_eq!(chat.disconnect_delay, Duration::from_secs(3));

        let settings = resolve(
            &[
                "--listen",
                "127.0.0.1:0",
                "--heartbeat-delay",
                "1s",
                "--shutdown-timeout",
                "1s",
            ],
            FILE,
        );
        assert_eq!(settings.listen, ["127.0.0.1:0".parse().unwrap()]);
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(1));
        for service in &settings.services {
            assert_eq!(service.options.heartbeat_delay, Duration::from_secs(1));
        }
        let chat = &service(&settings, "/chat").options;
        assert_eq!(chat.disconnect_delay, Duration::from_secs(3));
    }

    #[test]
    fn flags_not_given_are_none() {
        let cli = Cli::parse_from(["sockjs-gateway"]);
        assert!(cli.listen.is_empty());
        assert_eq!(cli.heartbeat_delay, None);
        assert_eq!(flag_options(&cli).allow_jsonp, None);
        let cli = Cli::parse_from(["sockjs-gateway", "--heartbeat-delay", "1s", "--allow-jsonp"]);
        let options = flag_options(&cli);
        assert_eq!(options.heartbeat_delay, Some(Duration::from_secs(1)));
        assert_eq!(options.allow_jsonp, Some(true));
    }

    #[test]
    fn relays_from_the_file_and_flags() {
        let settings = resolve(&[], FILE);
        let app = relay(&settings, "/app");
        assert_eq!(app.upstream, "tcp://127.0.0.1:7000");
        assert_eq!(app.forward_headers, ["cookie"]);
        assert_eq!(app.trusted_ca.as_deref(), Some("/etc/ssl/internal.pem"));
        assert_eq!(app.connect_timeout, Some(Duration::from_secs(3)));

        let flags = resolve(
            &[
                "--relay-ca",
                "/other.pem",
                "--relay-connect-timeout",
                "500ms",
            ],
            FILE,
        );
        let app = relay(&flags, "/app");
        assert_eq!(app.trusted_ca.as_deref(), Some("/other.pem"));
        assert_eq!(app.connect_timeout, Some(Duration::from_millis(500)));

        let settings = resolve(
            &[
                "--relay",
                "/chat=ws://127.0.0.1:9000/",
                "--relay-forward-header",
                "Authorization",
            ],
            FILE,
        );
        let relays: Vec<&RelaySpec> = settings
            .services
            .iter()
            .filter_map(|s| match &s.kind {
                ServiceKind::Relay(spec) => Some(spec),
                ServiceKind::Local { .. } => None,
            })
            .collect();
        assert_eq!(relays.len(), 2, "--relay /chat replaces the file's /chat");
        for relay in relays {
            assert_eq!(relay.forward_headers, ["authorization"]);
        }
    }

    #[test]
    fn relay_subprotocols_from_the_file_and_flags() {
        let file = "[[service]]\nprefix = \"/stomp\"\nkind = \"relay\"\nupstream = \"ws://127.0.0.1:15674/ws\"\nsubprotocol = \"v12.stomp\"\n";
        assert_eq!(
            relay(&resolve(&[], file), "/stomp").subprotocols,
            ["v12.stomp"]
        );
        let flagged = resolve(&["--relay-subprotocol", "/stomp=v11.stomp,v10.stomp"], file);
        assert_eq!(
            relay(&flagged, "/stomp").subprotocols,
            ["v11.stomp", "v10.stomp"]
        );
        let refused = |args: &[&str]| {
            let cli =
                Cli::parse_from(std::iter::once("sockjs-gateway").chain(args.iter().copied()));
            Settings::resolve(&cli, ConfigFile::default()).unwrap_err()
        };
        let none = refused(&["--relay-subprotocol", "/stomp=v12.stomp"]);
        assert!(none.contains("there is no relay at `/stomp`"), "{none}");
        let echo = refused(&["--relay-subprotocol", "/echo=v12.stomp"]);
        assert!(echo.contains("there is no relay at `/echo`"), "{echo}");
        let tcp = refused(&[
            "--relay",
            "/lines=tcp://127.0.0.1:7000",
            "--relay-subprotocol",
            "/lines=v12.stomp",
        ]);
        assert!(tcp.contains("a TCP upstream has no subprotocol"), "{tcp}");
    }

    #[test]
    fn longer_prefixes_are_mounted_first() {
        let settings = resolve(&[], "[[service]]\nprefix = \"/echo/v2\"\nkind = \"echo\"\n");
        let first_echo = settings
            .services
            .iter()
            .position(|s| s.prefix().starts_with("/echo"))
            .unwrap();
        assert_eq!(settings.services[first_echo].prefix(), "/echo/v2");
    }

    #[test]
    fn cluster_flags_override_the_file() {
        let file = "redis = \"redis://10.0.0.1:6379\"\nadvertise = \"10.0.0.5:8081\"\n";
        let settings = resolve(&[], file);
        assert_eq!(settings.redis.as_deref(), Some("redis://10.0.0.1:6379"));
        assert_eq!(settings.advertise.as_deref(), Some("10.0.0.5:8081"));
        let settings = resolve(&["--redis", "redis://127.0.0.1:7000"], file);
        assert_eq!(settings.redis.as_deref(), Some("redis://127.0.0.1:7000"));
        assert_eq!(resolve(&[], "").redis, None);
        let sentinel = "redis = \"redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main\"\n";
        assert_eq!(
            resolve(&[], sentinel).redis.as_deref(),
            Some("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main")
        );
    }

    #[test]
    fn tls_flags_replace_the_file_section() {
        let file = "[tls]\ncert = \"a.pem\"\nkey = \"b.pem\"\n";
        assert_eq!(resolve(&[], file).tls.unwrap().cert, PathBuf::from("a.pem"));
        let flagged = resolve(&["--tls-cert", "c.pem", "--tls-key", "d.pem"], file);
        assert_eq!(
            flagged.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "d.pem".into()
            })
        );
    }
}
