//! `--config FILE`: the TOML file's shape (examples/gateway.toml documents
//! every key) and its loading. Every value is checked while it is read, so
//! a refusal names the file, line and column of the offending value.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use sockjs_gateway::{AccessLogFormat, Cidr, Overflow, SessionBinding};
use toml::Spanned;

use crate::values::{
    parse_access_log, parse_access_log_format, parse_advertise, parse_binding, parse_duration,
    parse_header_name, parse_log_level, parse_max_sessions, parse_origin, parse_overflow,
    parse_prefix, parse_redis, parse_sockjs_url, parse_subprotocol, parse_timeout, parse_upstream,
    AccessLogTarget,
};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<Spanned<Vec<SocketAddr>>>,
    pub workers: Option<NonZeroUsize>,
    pub metrics: Option<SocketAddr>,
    #[serde(default, deserialize_with = "duration")]
    pub shutdown_timeout: Option<Duration>,
    pub builtin_services: Option<bool>,
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Option<Vec<Cidr>>,
    #[serde(default, deserialize_with = "sockjs_url")]
    pub sockjs_url: Option<String>,
    pub tls: Option<TlsFiles>,
    #[serde(default, deserialize_with = "redis")]
    pub redis: Option<String>,
    #[serde(default, deserialize_with = "advertise")]
    pub advertise: Option<String>,
    #[serde(default, deserialize_with = "access_log")]
    pub access_log: Option<AccessLogTarget>,
    #[serde(default, deserialize_with = "access_log_format")]
    pub access_log_format: Option<AccessLogFormat>,
    pub access_log_buffer: Option<NonZeroUsize>,
    /// The most detailed log lines written; reloaded live.
    #[serde(default, deserialize_with = "log_level")]
    pub log_level: Option<log::LevelFilter>,
    #[serde(default)]
    pub defaults: ServiceOptions,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceTable>,
}

/// `[tls]`: PEM files; relative paths are taken from the file's directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a `[[service]]` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Echo,
    Close,
    Ticker,
    Amplify,
    Broadcast,
    Relay,
}

/// Declares [`ServiceOptions`] (`[defaults]`) and [`ServiceTable`]
/// (`[[service]]`) from one list of per-service keys, so both accept exactly
/// the same ones. serde's `flatten` would share them too, but it gives up
/// `deny_unknown_fields` and the line of a bad value.
macro_rules! service_tables {
    (
        service { $( $(#[$own_attr:meta])* $own:ident: $own_ty:ty, )* }
        options { $( $(#[$attr:meta])* $key:ident: $ty:ty, )* }
    ) => {
        /// Per-service options; `None` leaves the value to the layer below
        /// (built-in default < `[defaults]` < the service's own < flags).
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServiceOptions {
            $( $(#[$attr])* pub $key: Option<$ty>, )*
        }

        impl ServiceOptions {
            /// These options with every key that `over` sets taken from it.
            pub fn overlaid(&self, over: &ServiceOptions) -> ServiceOptions {
                ServiceOptions {
                    $( $key: over.$key.clone().or_else(|| self.$key.clone()), )*
                }
            }
        }

        /// One `[[service]]`.
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServiceTable {
            $( $(#[$own_attr])* pub $own: $own_ty, )*
            $( $(#[$attr])* pub $key: Option<$ty>, )*
        }

        impl ServiceTable {
            pub fn options(&self) -> ServiceOptions {
                ServiceOptions { $( $key: self.$key.clone(), )* }
            }
        }
    };
}

service_tables! {
    service {
        prefix: Spanned<Prefix>,
        kind: Spanned<Kind>,
        upstream: Option<Spanned<Upstream>>,
        forward_headers: Option<Spanned<Vec<HeaderName>>>,
        subprotocol: Option<Spanned<Subprotocols>>,
        ca: Option<Spanned<PathBuf>>,
        connect_timeout: Option<Spanned<Timeout>>,
    }
    options {
        #[serde(default, deserialize_with = "duration")]
        heartbeat_delay: Duration,
        #[serde(default, deserialize_with = "duration")]
        disconnect_delay: Duration,
        response_limit: usize,
        websocket: bool,
        cookie_needed: bool,
        #[serde(default, deserialize_with = "origins")]
        allowed_origins: Vec<String>,
        allow_jsonp: bool,
        #[serde(default, deserialize_with = "max_sessions")]
        max_sessions: usize,
        max_queued_bytes: usize,
        max_message_bytes: usize,
        #[serde(default, deserialize_with = "duration")]
        send_timeout: Duration,
        #[serde(default, deserialize_with = "duration")]
        body_timeout: Duration,
        #[serde(default, deserialize_with = "overflow")]
        overflow: Overflow,
        #[serde(default, deserialize_with = "binding")]
        bind_session: SessionBinding,
    }
}

/// Why the file was refused, and where.
#[derive(Debug)]
pub struct ConfigError {
    path: PathBuf,
    /// 1-based line and column.
    position: Option<(usize, usize)>,
    reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match self.position {
            Some((line, column)) => write!(f, "{path}:{line}:{column}: {}", self.reason),
            None => write!(f, "{path}: {}", self.reason),
        }
    }
}

/// Reads and checks the file; relative TLS, CA and access log paths come
/// back resolved against the file's directory.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        path: path.to_owned(),
        position: None,
        reason: format!("cannot read it: {error}"),
    })?;
    let refuse = |span: Option<Range<usize>>, reason: String| ConfigError {
        path: path.to_owned(),
        position: span.map(|span| line_and_column(&text, span.start)),
        reason,
    };
    let mut file: ConfigFile = toml::from_str(&text)
        .map_err(|error| refuse(error.span(), error.message().trim_end().to_owned()))?;
    check(&file, &text).map_err(|(span, reason)| refuse(Some(span), reason))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    if let Some(tls) = &mut file.tls {
        tls.cert = dir.join(&tls.cert);
        tls.key = dir.join(&tls.key);
    }
    if let Some(AccessLogTarget::File(log)) = &mut file.access_log {
        *log = dir.join(&*log);
    }
    for service in &mut file.services {
        if let Some(ca) = &mut service.ca {
            *ca.get_mut() = dir.join(ca.get_ref());
        }
    }
    Ok(file)
}

/// The rules that span more than one value.
fn check(file: &ConfigFile, text: &str) -> Result<(), (Range<usize>, String)> {
    if let Some(listen) = &file.listen {
        if listen.get_ref().is_empty() {
            return Err((listen.span(), "`listen` needs at least one address".into()));
        }
    }
    for (i, service) in file.services.iter().enumerate() {
        let prefix = &service.prefix;
        if let Some(earlier) = file.services[..i]
            .iter()
            .find(|s| s.prefix.get_ref() == prefix.get_ref())
        {
            let (line, _) = line_and_column(text, earlier.prefix.span().start);
            return Err((
                prefix.span(),
                format!(
                    "the prefix `{}` is already used by the service on line {line}",
                    prefix.get_ref().0
                ),
            ));
        }
        let is_relay = *service.kind.get_ref() == Kind::Relay;
        match (&service.upstream, &service.forward_headers) {
            (None, _) if is_relay => {
                return Err((
                    service.kind.span(),
                    "a relay service needs `upstream`".into(),
                ))
            }
            (Some(upstream), _) if !is_relay => {
                return Err((
                    upstream.span(),
                    "`upstream` is only for kind = \"relay\"".into(),
                ))
            }
            (_, Some(headers)) if !is_relay => {
                return Err((
                    headers.span(),
                    "`forward_headers` is only for kind = \"relay\"".into(),
                ))
            }
            _ => {}
        }
        if let (Some(protocols), Some(upstream)) = (&service.subprotocol, &service.upstream) {
            if upstream
                .get_ref()
                .0
                .to_ascii_lowercase()
                .starts_with("tcp://")
            {
                return Err((
                    protocols.span(),
                    "`subprotocol` is only for a ws:// or wss:// upstream; a TCP upstream has none"
                        .into(),
                ));
            }
        }
        let relay_only = [
            (
                "subprotocol",
                service.subprotocol.as_ref().map(Spanned::span),
            ),
            ("ca", service.ca.as_ref().map(Spanned::span)),
            (
                "connect_timeout",
                service.connect_timeout.as_ref().map(Spanned::span),
            ),
        ];
        for (key, span) in relay_only {
            if let Some(span) = span.filter(|_| !is_relay) {
                return Err((span, format!("`{key}` is only for kind = \"relay\"")));
            }
        }
    }
    Ok(())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// A validated service prefix (`/name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(pub String);

/// A validated relay upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream(pub String);

/// A relay's WebSocket subprotocols: one name, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subprotocols(pub Vec<String>);

/// A relay's connect timeout: a duration above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

/// A validated request header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(pub String);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Text(parse_prefix).deserialize(d).map(Prefix)
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Text(parse_upstream).deserialize(d).map(Upstream)
    }
}

impl<'de> Deserialize<'de> for Subprotocols {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OneOrList(parse_subprotocol))
            .map(Subprotocols)
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Text(parse_timeout).deserialize(d).map(Timeout)
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Text(parse_header_name).deserialize(d).map(HeaderName)
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Text(parse_duration).deserialize(d).map(Some)
}

fn max_sessions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Text(parse_max_sessions).deserialize(d).map(Some)
}

fn overflow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Overflow>, D::Error> {
    Text(parse_overflow).deserialize(d).map(Some)
}

fn binding<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SessionBinding>, D::Error> {
    Text(parse_binding).deserialize(d).map(Some)
}

fn sockjs_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Text(parse_sockjs_url).deserialize(d).map(Some)
}

fn redis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Text(parse_redis).deserialize(d).map(Some)
}

fn advertise<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Text(parse_advertise).deserialize(d).map(Some)
}

fn access_log<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AccessLogTarget>, D::Error> {
    Text(parse_access_log).deserialize(d).map(Some)
}

fn access_log_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AccessLogFormat>, D::Error> {
    Text(parse_access_log_format).deserialize(d).map(Some)
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<log::LevelFilter>, D::Error> {
    Text(parse_log_level).deserialize(d).map(Some)
}

fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_seq(ListOf(parse_origin)).map(Some)
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Cidr>>, D::Error> {
    d.deserialize_seq(ListOf(|text: &str| text.parse::<Cidr>()))
        .map(Some)
}

/// Reads a value through one of the text parsers the flags use. Numbers
/// are read as their text, so `heartbeat_delay = 25` means 25 seconds.
/// The parser's refusal comes back through serde, which is how the TOML
/// reader knows where the value was.
struct Text<T>(fn(&str) -> Result<T, String>);

impl<'de, T> DeserializeSeed<'de> for Text<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<T> Visitor<'_> for Text<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<T, E> {
        self.visit_str(&n.to_string())
    }
}

/// An array whose every element is read through [`Text`], so a bad element
/// is reported at its own position.
struct ListOf<T>(fn(&str) -> Result<T, String>);

impl<'de, T> Visitor<'de> for ListOf<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element_seed(Text(self.0))? {
            values.push(value);
        }
        Ok(values)
    }
}

/// A string, or an array of strings, each read through [`Text`]; an empty
/// array is refused (it would ask for nothing).
struct OneOrList<T>(fn(&str) -> Result<T, String>);

impl<'de, T> Visitor<'de> for OneOrList<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<T>, E> {
        (self.0)(text).map(|value| vec![value]).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
        let values = ListOf(self.0).visit_seq(seq)?;
        if values.is_empty() {
            return Err(serde::de::Error::custom("the list is empty"));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        assert_eq!(line_and_column(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_and_column(text, text.find('"').unwrap()), (2, 6));
        assert_eq!(line_and_column(text, 1000), (3, 1));
    }
}
