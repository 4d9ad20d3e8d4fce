//! What a run counts: latencies in an HDR histogram, and per-session sequence
//! checks that catch loss, duplication and reordering.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A message body: `SESSION:SEQ:` then padding up to `size` bytes, ASCII only
/// so that it travels unescaped in SockJS JSON frames.
pub fn message(session: &str, seq: u64, size: usize) -> String {
    let mut m = format!("{session}:{seq}:");
    while m.len() < size {
        m.push('x');
    }
    m
}

/// Parses a message made by [`message`]: `(session, seq)` if well formed.
pub fn parse_message(text: &str) -> Option<(&str, u64)> {
    let mut parts = text.splitn(3, ':');
    let session = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    let pad = parts.next()?;
    pad.bytes().all(|b| b == b'x').then_some((session, seq))
}

/// The order check for one stream of sequence numbers (1, 2, 3, ...).
#[derive(Default)]
pub struct SeqCheck {
    next: u64,
    /// Skipped over: lost unless they still arrive (then: reordered).
    missing: BTreeSet<u64>,
}

pub enum Seen {
    InOrder,
    Duplicate,
    Reordered,
    /// Arrived ahead of `n` earlier ones.
    Gap(u64),
}

impl SeqCheck {
    pub fn new() -> Self {
        SeqCheck {
            next: 1,
            missing: BTreeSet::new(),
        }
    }

    pub fn see(&mut self, seq: u64) -> Seen {
        if seq == self.next {
            self.next += 1;
            Seen::InOrder
        } else if seq > self.next {
            let gap = seq - self.next;
            if gap < 1_000_000 {
                self.missing.extend(self.next..seq);
            }
            self.next = seq + 1;
            Seen::Gap(gap)
        } else if self.missing.remove(&seq) {
            Seen::Reordered
        } else {
            Seen::Duplicate
        }
    }

    /// Sequence numbers skipped and never seen since.
    pub fn lost(&self) -> u64 {
        self.missing.len() as u64
    }
}

/// Counters and the latency histogram of one run, shared by its tasks
/// (the generator is single-threaded).
pub struct Stats {
    pub hist: Histogram<u64>,
    /// Exchanges completed inside the measured window.
    pub counted: u64,
    /// Exchanges completed in all.
    pub total: u64,
    pub errors: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub receiver_conflicts: u64,
    pub samples: Vec<String>,
    pub window: (Instant, Instant),
}

pub type Shared = std::rc::Rc<RefCell<Stats>>;

impl Stats {
    pub fn new(window: (Instant, Instant)) -> Shared {
        std::rc::Rc::new(RefCell::new(Stats {
            hist: Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds"),
            counted: 0,
            total: 0,
            errors: 0,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            corrupt: 0,
            receiver_conflicts: 0,
            samples: Vec::new(),
            window,
        }))
    }

    /// One exchange done at `done` after `latency`; counted if inside the window.
    pub fn record(&mut self, latency: Duration, done: Instant) {
        self.total += 1;
        if done >= self.window.0 && done <= self.window.1 {
            self.counted += 1;
            let _ = self.hist.record((latency.as_nanos() as u64).max(1));
        }
    }

    /// Records a latency unconditionally (setup echoes, fan-out times).
    pub fn record_always(&mut self, latency: Duration) {
        self.total += 1;
        self.counted += 1;
        let _ = self.hist.record((latency.as_nanos() as u64).max(1));
    }

    pub fn error(&mut self, what: impl Into<String>) {
        self.errors += 1;
        if self.samples.len() < 10 {
            self.samples.push(what.into());
        }
    }

    /// Applies the verdict of a [`SeqCheck`] to the counters.
    pub fn seen(&mut self, seen: Seen, session: &str, seq: u64) {
        match seen {
            Seen::InOrder => {}
            Seen::Duplicate => {
                self.duplicated += 1;
                self.error(format!("{session}: duplicate of message {seq}"));
            }
            Seen::Reordered => {
                self.reordered += 1;
                self.error(format!("{session}: message {seq} out of order"));
            }
            Seen::Gap(n) => self.error(format!("{session}: {n} message(s) missing before {seq}")),
        }
    }

    pub fn corrupt(&mut self, session: &str, text: &[u8]) {
        self.corrupt += 1;
        let shown = String::from_utf8_lossy(&text[..text.len().min(80)]).into_owned();
        self.error(format!("{session}: unexpected data {shown:?}"));
    }

    /// Whether the run is clean: no loss, duplication, reordering or error.
    pub fn clean(&self) -> bool {
        self.errors == 0
            && self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.corrupt == 0
            && self.receiver_conflicts == 0
    }

    /// Latency percentiles in microseconds.
    pub fn latency_json(&self) -> Value {
        latency_json(&self.hist, 1e3)
    }
}

/// `p50/p90/p99/p99.9/max/mean` of a nanosecond histogram, divided by `scale`.
pub fn latency_json(hist: &Histogram<u64>, scale: f64) -> Value {
    if hist.is_empty() {
        return Value::Null;
    }
    let q = |q: f64| round3(hist.value_at_quantile(q) as f64 / scale);
    json!({
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "p99_9": q(0.999),
        "max": round3(hist.max() as f64 / scale),
        "mean": round3(hist.mean() / scale),
        "count": hist.len(),
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = message("s7", 42, 32);
        assert_eq!(m.len(), 32);
        assert_eq!(parse_message(&m), Some(("s7", 42)));
        assert_eq!(parse_message("s7:42:xxy"), None);
        assert_eq!(parse_message("s7:x:xx"), None);
    }

    #[test]
    fn sequence_verdicts() {
        let mut c = SeqCheck::new();
        assert!(matches!(c.see(1), Seen::InOrder));
        assert!(matches!(c.see(4), Seen::Gap(2)));
        assert_eq!(c.lost(), 2);
        assert!(matches!(c.see(2), Seen::Reordered));
        assert!(matches!(c.see(2), Seen::Duplicate));
        assert!(matches!(c.see(4), Seen::Duplicate));
        assert_eq!(c.lost(), 1);
        assert!(matches!(c.see(5), Seen::InOrder));
    }
}
