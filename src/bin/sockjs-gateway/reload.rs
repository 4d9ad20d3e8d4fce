//! SIGHUP: the config file and TLS files read again, and what may change
//! live applied (origins, trusted proxies, limits and timeouts, relays, the
//! certificate, the log level). What cannot is named in a warning and kept.
//! Everything is read and checked before anything is applied, so a reload
//! that fails changes nothing.

use std::sync::Arc;

use sockjs_gateway::relay::Relay;
use sockjs_gateway::Options;

use crate::cli::Cli;
use crate::config::{self, ConfigFile};
use crate::services::{self, Built};
use crate::settings::{ServiceKind, Settings};
use crate::tls::{Certificates, Loaded};

/// What a reload starts from: the command line (its flags still win over
/// the file) and what is running.
pub struct Running {
    pub cli: Cli,
    pub settings: Settings,
    /// In the order of `settings.services`.
    pub services: Vec<Built>,
    pub certificates: Option<Arc<Certificates>>,
    /// The log level when the file sets none: RUST_LOG's, or `info`.
    pub start_log_level: log::LevelFilter,
}

/// A service's new options and relay, read and checked.
struct ServiceChange {
    index: usize,
    options: Options,
    relay: Option<(Relay, ServiceKind)>,
}

/// Everything a reload will apply, once all of it was read.
#[derive(Default)]
struct Plan {
    services: Vec<ServiceChange>,
    certificate: Option<Loaded>,
    log_level: Option<log::LevelFilter>,
    /// What changes, for the summary line.
    changes: Vec<String>,
}

impl Running {
    /// Reads everything again and applies it, or changes nothing and says why.
    pub fn reload(&mut self) {
        match self.plan() {
            Ok(plan) => {
                let summary = self.apply(plan);
                log::info!("reload: done; {summary}");
            }
            Err(error) => log::error!("reload failed: {error}; nothing changed"),
        }
    }

    fn plan(&self) -> Result<Plan, String> {
        let file = match &self.cli.config {
            Some(path) => config::load(path).map_err(|error| error.to_string())?,
            None => ConfigFile::default(),
        };
        let new = Settings::resolve(&self.cli, file)?;
        let old = &self.settings;
        let mut plan = Plan::default();
        keep_fixed(old, &new);
        match (&self.certificates, &new.tls) {
            (Some(certificates), Some(files)) => {
                plan.certificate = Some(certificates.load(files)?);
            }
            (Some(_), None) | (None, Some(_)) => {
                log::warn!(
                    "reload: TLS cannot be turned on or off live; keeping it {}",
                    if old.tls.is_some() { "on" } else { "off" }
                );
            }
            (None, None) => {}
        }
        let level = new.log_level.unwrap_or(self.start_log_level);
        if level != log::max_level() {
            plan.log_level = Some(level);
            plan.changes.push(format!("log level {level}"));
        }
        for (index, running) in old.services.iter().enumerate() {
            let prefix = running.prefix();
            let Some(wanted) = new.services.iter().find(|s| s.prefix() == prefix) else {
                log::warn!("reload: services cannot be removed live; keeping {prefix}");
                continue;
            };
            let relay = match (&running.kind, &wanted.kind) {
                (ServiceKind::Relay(was), ServiceKind::Relay(spec)) => {
                    (was != spec).then(|| (spec, wanted.kind.clone()))
                }
                (was, kind) if was == kind => None,
                _ => {
                    log::warn!(
                        "reload: the kind of {prefix} cannot change live; keeping {}",
                        kind_name(&running.kind)
                    );
                    continue;
                }
            };
            let mut options = wanted.options.clone();
            if options.transports.websocket != running.options.transports.websocket {
                log::warn!(
                    "reload: the transports of {prefix} cannot change live; keeping websocket = {}",
                    running.options.transports.websocket
                );
            }
            options.transports = running.options.transports.clone();
            let changed = changed_options(&running.options, &options);
            let relay = match relay {
                Some((spec, kind)) => Some((services::relay(spec)?, kind)),
                None => None,
            };
            if changed.is_empty() && relay.is_none() {
                continue;
            }
            if !changed.is_empty() {
                plan.changes
                    .push(format!("{prefix}: {} (new sessions)", changed.join(", ")));
            }
            if relay.is_some() {
                plan.changes.push(format!("{prefix}: relay (new sessions)"));
            }
            plan.services.push(ServiceChange {
                index,
                options,
                relay,
            });
        }
        for added in &new.services {
            if !old.services.iter().any(|s| s.prefix() == added.prefix()) {
                log::warn!(
                    "reload: services cannot be added live; {} is not served",
                    added.prefix()
                );
            }
        }
        Ok(plan)
    }

    /// Applies a plan; nothing in it can fail.
    fn apply(&mut self, plan: Plan) -> String {
        let mut changes = plan.changes;
        if let (Some(certificates), Some(loaded)) = (&self.certificates, plan.certificate) {
            let files = loaded.files().clone();
            if certificates.serve(loaded) {
                changes.push("TLS certificate (new connections)".into());
            }
            self.settings.tls = Some(files);
        }
        if let Some(level) = plan.log_level {
            log::set_max_level(level);
        }
        for change in plan.services {
            let running = &mut self.settings.services[change.index];
            let built = &self.services[change.index];
            let mut options = change.options.clone();
            if let (Some((relay, kind)), Some(live)) = (change.relay, &built.relay) {
                if let ServiceKind::Relay(spec) = &kind {
                    services::log_relay(spec, &relay);
                }
                options = live.replace(relay, options);
                running.kind = kind;
            } else if let Some(live) = &built.relay {
                options = live.reoptioned(options);
            }
            built.service.update_options(options);
            running.options = change.options;
        }
        if changes.is_empty() {
            "nothing changed".into()
        } else {
            format!("changed: {}", changes.join("; "))
        }
    }
}

/// Warns about each setting that cannot change live and was changed.
fn keep_fixed(old: &Settings, new: &Settings) {
    let fixed = |name: &str, was: String, now: String| {
        if was != now {
            log::warn!("reload: {name} cannot change live; keeping {was}");
        }
    };
    let addresses = |list: &[std::net::SocketAddr]| {
        list.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let or_none = |value: Option<String>| value.unwrap_or_else(|| "none".into());
    fixed("listen", addresses(&old.listen), addresses(&new.listen));
    fixed(
        "metrics",
        or_none(old.metrics.map(|a| a.to_string())),
        or_none(new.metrics.map(|a| a.to_string())),
    );
    fixed(
        "workers",
        or_none(old.workers.map(|w| w.to_string())),
        or_none(new.workers.map(|w| w.to_string())),
    );
    fixed(
        "shutdown_timeout",
        format!("{:?}", old.shutdown_timeout),
        format!("{:?}", new.shutdown_timeout),
    );
    fixed(
        "redis",
        or_none(old.redis.clone()),
        or_none(new.redis.clone()),
    );
    fixed(
        "advertise",
        or_none(old.advertise.clone()),
        or_none(new.advertise.clone()),
    );
}

fn kind_name(kind: &ServiceKind) -> String {
    match kind {
        ServiceKind::Local { handler, .. } => format!("{handler:?}").to_lowercase(),
        ServiceKind::Relay(spec) => format!("relay to {}", spec.upstream),
    }
}

/// The names of the options that differ (their `Debug` forms compared).
fn changed_options(old: &Options, new: &Options) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident => $name:literal),* $(,)?) => {
            // Destructured so a new option cannot be forgotten here.
            let Options { $($field: _,)* transports: _, peer_headers: _ } = new;
            $(
                if format!("{:?}", old.$field) != format!("{:?}", new.$field) {
                    changed.push($name);
                }
            )*
        };
    }
    compare!(
        heartbeat_delay => "heartbeat_delay",
        disconnect_delay => "disconnect_delay",
        response_limit => "response_limit",
        sockjs_url => "sockjs_url",
        cookie_needed => "cookie_needed",
        max_queued_bytes => "max_queued_bytes",
        max_message_bytes => "max_message_bytes",
        send_timeout => "send_timeout",
        overflow => "overflow",
        body_timeout => "body_timeout",
        origins => "allowed_origins",
        jsonp_with_origin_policy => "allow_jsonp",
        trusted_proxies => "trusted_proxies",
        bind_session => "bind_session",
        max_sessions => "max_sessions",
    );
    changed
}
