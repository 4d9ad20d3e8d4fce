//! The gateway's Prometheus endpoint, scraped over HTTP/1.1, and the
//! readings the soak checks are made of (live sessions, close counters, RSS).

use std::time::{Duration, Instant};

use crate::http::Http;
use crate::net::{rss_kib, Target};

pub struct Metrics {
    target: Target,
    path: String,
    conn: Option<Http>,
    /// Read RSS from /proc/PID/status when known (else the exported gauge).
    pid: Option<u32>,
}

/// `(name, labels, value)` of one sample line.
type Sample = (String, Vec<(String, String)>, f64);

/// One scrape.
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Metrics {
    /// `url` is `http://IP:PORT/metrics`.
    pub fn new(url: &str, pid: Option<u32>) -> Result<Metrics, String> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        Ok(Metrics {
            target: Target::new(hostport, 0)?,
            path: path.to_owned(),
            conn: None,
            pid,
        })
    }

    pub async fn scrape(&mut self) -> Result<Scrape, String> {
        let once = tokio::time::timeout(Duration::from_secs(5), self.scrape_once()).await;
        match once {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                self.conn = None;
                Err(format!("scraping {}: {e}", self.path))
            }
            Err(_) => {
                self.conn = None;
                Err(format!("scraping {}: timed out", self.path))
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

    /// The server's resident memory in bytes.
    pub fn rss(&self, scrape: &Scrape) -> Option<u64> {
        match self.pid {
            Some(pid) => rss_kib(Some(pid)).map(|k| k * 1024),
            None => scrape
                .get("process_resident_memory_bytes", &[])
                .map(|v| v as u64),
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

    /// The first sample of `name` whose labels include `filter`.
    pub fn get(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, filter).next()
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
            out.insert(format!("{}/{}", get("reason"), get("code")), (*v).into());
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
        assert_eq!(s.get("process_resident_memory_bytes", &[]), Some(1048576.0));
    }
}
