//! Where the backplane's Redis is: one fixed address (`redis://`), or the
//! primary that Redis Sentinel names (`redis+sentinel://`), asked again
//! through the `redis` crate's Sentinel client whenever the one in use stops
//! answering or turns out to be a replica.

use std::time::{Duration, Instant};

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, RedisConnectionInfo};

use super::REDIS_TIMEOUT;

/// The scheme of a Sentinel set-up.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// Sentinel's own default port, for an address given without one.
const SENTINEL_PORT: u16 = 26379;
/// The sentinels are not asked again sooner than this after they were last
/// asked: while they still name a dead primary, every failing command would
/// otherwise ask them once more.
const REDISCOVERY_PAUSE: Duration = Duration::from_millis(200);

/// A Redis to connect to, and which of the primaries so far it is: the
/// per-thread connections are made again when it changes.
#[derive(Clone)]
pub(super) struct Primary {
    pub generation: u64,
    pub client: Client,
}

pub(super) struct Backplane {
    sentinel: Option<Sentinel>,
    primary: parking_lot::RwLock<Option<Primary>>,
}

struct Sentinel {
    master: String,
    client: tokio::sync::Mutex<SentinelClient>,
    /// When the sentinels were last asked.
    asked: parking_lot::Mutex<Option<Instant>>,
}

impl Backplane {
    /// From a URL [`check_redis_url`](super::check_redis_url) accepted.
    pub fn open(url: &str) -> Result<Backplane, String> {
        if url.starts_with(SENTINEL_SCHEME) {
            let setup = SentinelUrl::parse(url)?;
            let node = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(RedisConnectionInfo::default().set_db(setup.db));
            let client = SentinelClient::build(
                setup.sentinel_urls(),
                setup.master.clone(),
                Some(node),
                SentinelServerType::Master,
            )
            .map_err(|e| format!("`{url}`: {e}"))?;
            return Ok(Backplane {
                sentinel: Some(Sentinel {
                    master: setup.master,
                    client: tokio::sync::Mutex::new(client),
                    asked: parking_lot::Mutex::new(None),
                }),
                primary: parking_lot::RwLock::new(None),
            });
        }
        let client = Client::open(url).map_err(|e| format!("`{url}`: {e}"))?;
        Ok(Backplane {
            sentinel: None,
            primary: parking_lot::RwLock::new(Some(Primary {
                generation: 0,
                client,
            })),
        })
    }

    /// The Redis in use, asking the sentinels first if none was found yet.
    pub async fn primary(&self) -> Result<Primary, String> {
        if let Some(primary) = self.primary.read().clone() {
            return Ok(primary);
        }
        self.rediscover(None).await;
        self.primary
            .read()
            .clone()
            .ok_or_else(|| "the sentinels name no reachable primary".to_owned())
    }

    /// After a command on `failed` (`None`: there was no primary) lost its
    /// connection, timed out or met a replica: asks the sentinels which Redis
    /// is the primary now, unless another caller already did. True if the
    /// primary changed. A fixed address never changes.
    pub async fn rediscover(&self, failed: Option<u64>) -> bool {
        let Some(sentinel) = &self.sentinel else {
            return false;
        };
        let mut client = sentinel.client.lock().await;
        let current = self.primary.read().clone();
        if current.as_ref().map(|p| p.generation) != failed {
            return true;
        }
        {
            let mut asked = sentinel.asked.lock();
            if asked.is_some_and(|at| at.elapsed() < REDISCOVERY_PAUSE) {
                return false;
            }
            *asked = Some(Instant::now());
        }
        let found = match tokio::time::timeout(REDIS_TIMEOUT, client.async_get_client()).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                log::debug!("cluster: sentinels, primary `{}`: {error}", sentinel.master);
                return false;
            }
            Err(_) => {
                log::debug!("cluster: sentinels gave no primary within {REDIS_TIMEOUT:?}");
                return false;
            }
        };
        let address = found.get_connection_info().addr().to_string();
        let previous = current.map(|p| {
            (
                p.generation,
                p.client.get_connection_info().addr().to_string(),
            )
        });
        if previous.as_ref().is_some_and(|(_, was)| *was == address) {
            return false;
        }
        let generation = previous
            .as_ref()
            .map_or(1, |(generation, _)| generation + 1);
        match &previous {
            Some((_, was)) => log::warn!(
                "cluster: Sentinel primary `{}` is now {address} (was {was})",
                sentinel.master
            ),
            None => log::info!(
                "cluster: Sentinel primary `{}` is {address}",
                sentinel.master
            ),
        }
        *self.primary.write() = Some(Primary {
            generation,
            client: found,
        });
        true
    }
}

/// A parsed `redis+sentinel://HOST[:PORT],HOST[:PORT],.../MASTER[/DB]`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    /// `(host, port)`; an IPv6 host without its brackets.
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
}

impl SentinelUrl {
    pub fn parse(url: &str) -> Result<SentinelUrl, String> {
        let bad = |why: &str| {
            format!(
                "`{url}`: {why} (expected {SENTINEL_SCHEME}HOST:PORT,HOST:PORT,.../MASTER[/DB])"
            )
        };
        let rest = url
            .strip_prefix(SENTINEL_SCHEME)
            .ok_or_else(|| bad("not a Sentinel URL"))?;
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("the primary's name is missing"))?;
        let sentinels = hosts
            .split(',')
            .map(|address| {
                parse_address(address)
                    .ok_or_else(|| bad(&format!("bad sentinel address `{address}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (master, db) = match path.split_once('/') {
            None => (path, 0),
            Some((master, db)) => {
                let db = db
                    .parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| bad(&format!("bad database number `{db}`")))?;
                (master, db)
            }
        };
        let name_ok = !master.is_empty()
            && master
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !name_ok {
            return Err(bad(&format!(
                "bad primary name `{master}` (letters, digits, `.`, `_`, `-`)"
            )));
        }
        Ok(SentinelUrl {
            sentinels,
            master: master.to_owned(),
            db,
        })
    }

    /// Each sentinel as the `redis://` URL the `redis` crate takes.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(host, port)| match host.contains(':') {
                true => format!("redis://[{host}]:{port}"),
                false => format!("redis://{host}:{port}"),
            })
            .collect()
    }
}

/// `HOST[:PORT]` or `[IPV6][:PORT]`.
fn parse_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    if !host_ok {
        return None;
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let url = SentinelUrl::parse("redis+sentinel://10.0.0.1:26379,s2,[::1]:5000/main/2")
            .expect("valid");
        assert_eq!(
            url.sentinels,
            [
                ("10.0.0.1".to_owned(), 26379),
                ("s2".to_owned(), 26379),
                ("::1".to_owned(), 5000)
            ]
        );
        assert_eq!(url.master, "main");
        assert_eq!(url.db, 2);
        assert_eq!(
            url.sentinel_urls(),
            [
                "redis://10.0.0.1:26379",
                "redis://s2:26379",
                "redis://[::1]:5000"
            ]
        );
        let plain = SentinelUrl::parse("redis+sentinel://h:1/mymaster").expect("valid");
        assert_eq!((plain.master.as_str(), plain.db), ("mymaster", 0));
    }

    #[test]
    fn bad_sentinel_urls() {
        for url in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel:///main",
            "redis+sentinel://h:1,,h:2/main",
            "redis+sentinel://h:0/main",
            "redis+sentinel://h:99999/main",
            "redis+sentinel://h:x/main",
            "redis+sentinel://h:1/main/-1",
            "redis+sentinel://h:1/main/x",
            "redis+sentinel://h:1/ma in",
            "redis+sentinel://[::1/main",
            "redis+sentinel://u@h:1/main",
        ] {
            assert!(SentinelUrl::parse(url).is_err(), "{url}");
        }
    }
}
