//! The gateway's Prometheus endpoint, scraped over HTTP/1.1, and the
//! readings the soak checks are made of (live sessions, close counters, RSS).
//! A cluster has one endpoint per node: each reading is the sum over them.

use std::time::{Duration, Instant};

use crate::http::Http;
use crate::net::{Procs, Target};

pub struct Metrics {
    endpoints: Vec<Endpoint>,
    /// Read RSS from /proc/PID/status when known (else the exported gauge).
    procs: Procs,
}

/// One node's `/metrics`.
struct Endpoint {
    target: Target,
    path: String,
    conn: Option<Http>,
}

/// `(name, labels, value)` of one sample line.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape.
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Metrics {
    /// `urls` is `http://IP:PORT/metrics`, or several, comma-separated (the
    /// nodes of a cluster); `procs` the server's processes (may be none).
    pub fn new(urls: &str, procs: Procs) -> Result<Metrics, String> {
        let mut endpoints = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let rest = url.strip_prefix("http://").unwrap_or(url);
            let (hostport, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/metrics"),
            };
            endpoints.push(Endpoint {
                target: Target::new(hostport, 0)?,
                path: path.to_owned(),
                conn: None,
            });
        }
        if endpoints.is_empty() {
            return Err("--metrics: no URL".into());
        }
        Ok(Metrics { endpoints, procs })
    }

    /// Every endpoint's samples, one after the other: sums over them are
    /// sums over the cluster.
    pub async fn scrape(&mut self) -> Result<Scrape, String> {
        let mut samples = Vec::new();
        for endpoint in &mut self.endpoints {
            samples.extend(endpoint.scrape().await?.samples);
        }
        Ok(Scrape { samples })
    }

    /// How many endpoints (cluster nodes) are read.
    pub fn nodes(&self) -> usize {
        self.endpoints.len()
    }

    /// The server's resident memory in bytes (every node's, summed).
    pub fn rss(&self, scrape: &Scrape) -> Option<u64> {
        match self.procs.rss_kib() {
            Some(kib) => Some(kib * 1024),
            None if self.procs.each().is_empty() => {
                let every: Vec<f64> = scrape
                    .matching("process_resident_memory_bytes", &[])
                    .collect();
                (every.len() == self.endpoints.len()).then(|| every.iter().sum::<f64>() as u64)
            }
            None => None,
        }
    }

    /// Scrapes every `every` until `done(scrape)` holds or `bound` passes;
    /// returns the time it took (`Ok(None)`: the bound passed) and the last scrape.
    pub async fn wait_for(
        &mut self,
        every: Duration,
        bound: Duration,
        mut done: impl FnMut(&Scrape) -> bool,
    ) -> Result<(Option<Duration>, Scrape), String> {
        let started = Instant::now();
        loop {
            let scrape = self.scrape().await?;
            if done(&scrape) {
                return Ok((Some(started.elapsed()), scrape));
            }
            if started.elapsed() >= bound {
                return Ok((None, scrape));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// RSS once it has settled: read every 200 ms until two readings in a
    /// row are within 1% of each other (at most `bound`).
    pub async fn settled_rss(&mut self, bound: Duration) -> Result<u64, String> {
        let started = Instant::now();
        let mut last = None;
        loop {
            let scrape = self.scrape().await?;
            let rss = self.rss(&scrape).ok_or("no RSS reading")?;
            if let Some(prev) = last {
                let diff = (rss as f64 - prev as f64).abs();
                if diff <= 0.01 * prev as f64 || started.elapsed() >= bound {
                    return Ok(rss);
                }
            }
            last = Some(rss);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Endpoint {
    async fn scrape(&mut self) -> Result<Scrape, String> {
        let once = tokio::time::timeout(Duration::from_secs(5), self.scrape_once()).await;
        match once {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                self.conn = None;
                Err(format!("scraping {}{}: {e}", self.target.host, self.path))
            }
            Err(_) => {
                self.conn = None;
                Err(format!(
                    "scraping {}{}: timed out",
                    self.target.host, self.path
                ))
            }
        }
    }

    async fn scrape_once(&mut self) -> Result<Scrape, String> {
        if !self.conn.as_ref().is_some_and(Http::reusable) {
            self.conn = Some(Http::new(self.target.connect().await?));
        }
        let conn = self.conn.as_mut().expect("just set");
        let mut head = conn
            .request("GET", &self.target.host, &self.path, b"")
            .await?;
        let mut body = Vec::new();
        conn.read_to_end(&mut head.body, &mut body).await?;
        if head.status != 200 {
            return Err(format!("status {}", head.status));
        }
        Ok(Scrape::parse(&String::from_utf8_lossy(&body)))
    }
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Scrape { samples }
    }

    /// The sum over every sample of `name` whose labels include `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.matching(name, filter).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.samples
            .iter()
            .filter(move |(n, labels, _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    }

    /// Live sessions of a service, all transports.
    pub fn live(&self, service: &str) -> f64 {
        self.sum("sockjs_sessions_open", &[("service", service)])
    }

    /// `sockjs_sessions_closed_total` of a service with this close code.
    pub fn closed_with(&self, service: &str, code: &str) -> f64 {
        self.sum(
            "sockjs_sessions_closed_total",
            &[("service", service), ("code", code)],
        )
    }

    /// `reason/code -> count` of a service's closed sessions.
    pub fn closes(&self, service: &str) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (n, labels, v) in &self.samples {
            if n != "sockjs_sessions_closed_total"
                || !labels
                    .iter()
                    .any(|(k, val)| k == "service" && val == service)
            {
                continue;
            }
            let get = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            // Several nodes: the same key once per node, summed.
            let key = format!("{}/{}", get("reason"), get("code"));
            let sum = out
                .get(&key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
                + v;
            out.insert(key, sum.into());
        }
        serde_json::Value::Object(out)
    }
}

/// `a="x",b="y"` (values without escaped quotes, as the gateway writes them).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.push((
            key.trim_start_matches(',').trim().to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[end + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let s = Scrape::parse(
            "# HELP x\nsockjs_sessions_open{service=\"/echo\",transport=\"websocket\"} 3\n\
             sockjs_sessions_open{service=\"/echo\",transport=\"xhr\"} 2\n\
             sockjs_sessions_open{service=\"/broadcast\",transport=\"xhr\"} 7\n\
             sockjs_sessions_closed_total{service=\"/broadcast\",reason=\"application\",code=\"4009\"} 5\n\
             process_resident_memory_bytes 1048576\n",
        );
        assert_eq!(s.live("/echo"), 5.0);
        assert_eq!(s.closed_with("/broadcast", "4009"), 5.0);
        assert_eq!(s.sum("process_resident_memory_bytes", &[]), 1048576.0);
    }
}
