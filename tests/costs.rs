//! Memory bounded by what things cost, not by what they claim: empty
//! messages, lying WebSocket frame headers and clients that stop reading,
//! against the real binary, with its RSS read from /proc.

mod support;

use support::{Conn, Frame, Request, Server};

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A JSON array of empty strings that fills `limit` bytes.
fn empty_strings(limit: usize) -> (Vec<u8>, usize) {
    let count = (limit - 1) / 3;
    let mut body = Vec::with_capacity(limit);
    body.push(b'[');
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"\"\"");
    }
    body.push(b']');
    (body, count)
}

#[test]
fn a_flood_of_empty_strings_hits_the_bounds_like_any_payload() {
    let server = Server::start_with(&["--disconnect-delay", "60s"]);
    let pid = server.pid();
    assert_eq!(server.xhr("/echo", "empties").text(), "o\n");
    let before = proc_kib(pid, "VmRSS");
    let (body, count) = empty_strings(1024 * 1024);
    assert_eq!((body.len(), count), (1024 * 1024, 349_525));
    // 40 MiB of sends, 14 million empty strings; nobody polls the session.
    let request = Request::post("/echo/000/empties/xhr_send", &body);
    let sends: Vec<Conn> = (0..40)
        .map(|_| {
            let mut conn = server.connect();
            conn.send(&request);
            conn
        })
        .collect();
    // Another session is served meanwhile.
    assert_eq!(server.xhr("/echo", "bystander").text(), "o\n");
    server.send_ok("/echo", "bystander", r#"["still served"]"#);
    assert_eq!(
        server.poll("/echo", "bystander"),
        Frame::Messages(vec!["still served".into()])
    );
    // The receiver takes them in frames of at most 64 KiB of queued cost;
    // each frame makes room, and the waiting sends move on.
    let mut taken = 0;
    for _ in 0..100 {
        let frame = server.xhr("/echo", "empties").text();
        let batch = frame
            .trim_end()
            .strip_prefix("a[")
            .expect("a frame of messages");
        let messages = batch.matches("\"\"").count();
        assert!(
            (1..=64 * 1024 / 64).contains(&messages),
            "{messages} messages in one frame"
        );
        taken += messages;
    }
    let peak = proc_kib(pid, "VmHWM");
    let after = proc_kib(pid, "VmRSS");
    eprintln!("RSS {before} KiB before, {after} KiB after {taken} messages taken, peak {peak} KiB");
    assert!(
        peak < 200 * 1024,
        "peak RSS {peak} KiB for 40 MiB of empty strings"
    );
    drop(sends);
}
