//! The two line formats: plain text and JSON lines.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::record::SessionRecord;

/// How the access log writes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// One line of fields in a fixed order (README, "Access log").
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    /// The record as one line, with its `\n`.
    pub fn line(self, record: &SessionRecord) -> String {
        match self {
            AccessLogFormat::Plain => plain(record),
            AccessLogFormat::Json => json(record),
        }
    }
}

/// `2026-12-03T17:00:00.123Z /echo websocket 127.0.0.1 session=abc
/// duration=1.234s in=3/42B out=3/42B end=closed code=3000 reason="Go away!"`,
/// with `transports=` after `session=` for HTTP sessions. The timestamp is
/// the session's end.
fn plain(record: &SessionRecord) -> String {
    let mut line = String::with_capacity(160);
    let end = record.started + record.duration;
    let _ = write!(
        line,
        "{} {} {} {}",
        rfc3339(end),
        value(&record.service),
        record.transport,
        record
            .client_ip
            .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
    );
    let _ = write!(
        line,
        " session={}",
        record.session_id.as_deref().map_or("-".into(), value)
    );
    if !record.transport.starts_with("websocket") {
        let _ = write!(line, " transports={}", record.transports.join(","));
    }
    let t = &record.traffic;
    let _ = write!(
        line,
        " duration={:.3}s in={}/{}B out={}/{}B end={}",
        record.duration.as_secs_f64(),
        t.messages_in,
        t.bytes_in,
        t.messages_out,
        t.bytes_out,
        record.end.kind()
    );
    if let Some((code, reason)) = record.end.code_and_reason() {
        let _ = write!(line, " code={code} reason={}", quoted(reason));
    }
    line.push('\n');
    line
}

/// Field names as README "Access log" lists them.
fn json(record: &SessionRecord) -> String {
    let t = &record.traffic;
    let (code, reason) = record.end.code_and_reason().unzip();
    let object = serde_json::json!({
        "time": rfc3339(record.started + record.duration),
        "service": record.service,
        "session": record.session_id,
        "transport": record.transport,
        "transports": record.transports,
        "client": record.client_ip.map(|ip| ip.to_string()),
        "start": rfc3339(record.started),
        "duration_ms": duration_ms(record.duration),
        "messages_in": t.messages_in,
        "bytes_in": t.bytes_in,
        "messages_out": t.messages_out,
        "bytes_out": t.bytes_out,
        "end": record.end.kind(),
        "code": code,
        "reason": reason,
    });
    let mut line = object.to_string();
    line.push('\n');
    line
}

fn duration_ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Client-chosen text (a session id, a service prefix) as it is when it
/// has nothing to confuse a reader of the line, else quoted.
fn value(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+~%".contains(c));
    if plain {
        text.to_owned()
    } else {
        quoted(text)
    }
}

/// `"text"`, with `"`, `\` and every control character escaped: a reason
/// can be client text, and must not end the line or forge another.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `2026-12-03T17:00:00.123Z`: UTC, milliseconds.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::SessionEnd;
    use crate::protocol::session::Traffic;

    fn record(end: SessionEnd) -> SessionRecord {
        SessionRecord {
            service: "/echo".into(),
            session_id: Some("abc".into()),
            transport: "xhr-streaming",
            transports: vec!["xhr-streaming", "xhr-polling"],
            client_ip: Some("203.0.113.9".parse().unwrap()),
            started: UNIX_EPOCH + Duration::from_millis(1_796_317_200_123),
            duration: Duration::from_millis(1234),
            traffic: Traffic {
                messages_in: 3,
                bytes_in: 42,
                messages_out: 4,
                bytes_out: 50,
            },
            end,
        }
    }

    #[test]
    fn timestamps_are_utc_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 3_723_456);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:02:03.456Z");
        let time = UNIX_EPOCH + Duration::from_millis(1_796_317_200_123);
        assert_eq!(rfc3339(time), "2026-12-03T17:00:00.123Z");
    }

    #[test]
    fn a_plain_line_has_every_field_and_quotes_the_reason() {
        let end = SessionEnd::Closed {
            code: 3000,
            reason: "Go \"away\"!\nfake=line".into(),
        };
        assert_eq!(
            AccessLogFormat::Plain.line(&record(end)),
            "2026-12-03T17:00:01.357Z /echo xhr-streaming 203.0.113.9 session=abc \
             transports=xhr-streaming,xhr-polling duration=1.234s in=3/42B out=4/50B \
             end=closed code=3000 reason=\"Go \\\"away\\\"!\\nfake=line\"\n"
        );
    }

    #[test]
    fn a_strange_session_id_is_quoted() {
        let mut record = record(SessionEnd::Timeout);
        record.session_id = Some("a b\u{7}".into());
        let line = AccessLogFormat::Plain.line(&record);
        assert!(line.contains(" session=\"a b\\u{7}\" "), "{line}");
        assert!(line.ends_with(" end=timeout\n"), "{line}");
    }

    #[test]
    fn a_json_line_is_one_object() {
        let line = AccessLogFormat::Json.line(&record(SessionEnd::Interrupted));
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["service"], "/echo");
        assert_eq!(value["transports"][1], "xhr-polling");
        assert_eq!(value["client"], "203.0.113.9");
        assert_eq!(value["start"], "2026-12-03T17:00:00.123Z");
        assert_eq!(value["duration_ms"], 1234.0);
        assert_eq!(value["bytes_out"], 50);
        assert_eq!(value["end"], "interrupted");
        assert_eq!(value["code"], 1002);
    }
}
