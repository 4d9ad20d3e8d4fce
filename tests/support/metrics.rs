//! The gateway's own figures: its RSS and its `/metrics`.

use super::*;

// Metrics

/// Resident memory of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

/// Scrapes `sockjs_http_responses_total{status="200"}` until it has not
/// moved for 25 scrapes in a row (at least half a second): the gateway has
/// stopped answering. Returns that count and the peak RSS of `pid` seen.
pub fn wait_until_answers_stop(metrics: u16, pid: u32, bound: Duration) -> (u64, u64) {
    let answered = || {
        metric_value(
            &scrape(metrics),
            r#"sockjs_http_responses_total{status="200"}"#,
        ) as u64
    };
    let mut last = (answered(), 0);
    let mut peak = rss_kib(pid);
    poll_until("the gateway to stop answering", bound, || {
        peak = peak.max(rss_kib(pid));
        let now = answered();
        if now == last.0 {
            last.1 += 1;
        } else {
            last = (now, 0);
        }
        (last.1 >= 25).then_some(())
    });
    (last.0, peak)
}

/// The port of `--metrics 127.0.0.1:0`, read from the log.
pub fn metrics_port(server: &Server) -> u16 {
    poll_until(
        "the metrics address in the log",
        Duration::from_secs(10),
        || {
            let log = server.log();
            let line = log.lines().find(|l| l.contains("metrics on http://"))?;
            let rest = line.split("metrics on http://").nth(1)?;
            let addr = rest.split('/').next()?;
            addr.rsplit(':').next()?.parse().ok()
        },
    )
}

/// `GET /metrics`, which must answer 200.
pub fn scrape(port: u16) -> String {
    let response = Conn::open(port).request(&Request::get("/metrics"));
    assert_eq!(response.status, 200);
    response.text()
}

/// The value of one series (name and labels exactly as rendered).
#[track_caller]
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}
