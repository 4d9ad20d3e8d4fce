//! `--relay-subprotocol` and the file's `subprotocol`: the relay asks its
//! real WebSocket upstream (started inside the test) for a subprotocol, an
//! upstream that selects one works as usual, one that selects none closes
//! the session with 4501, and settings that cannot work refuse the start.

mod support;
mod upstreams;

use std::path::PathBuf;
use std::time::Duration;

use support::{close_frame, ws_connect, Frame, Server};
use upstreams::Seen;

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The handshake headers of the upstream's next connection; the closes of
/// earlier ones (sessions refused or ended before) are passed over.
#[track_caller]
fn connected(upstream: &upstreams::Upstream) -> Vec<(String, String)> {
    loop {
        match upstream.next(Duration::from_secs(10)) {
            Seen::Connected(headers) => return headers,
            Seen::Closed(_) => continue,
            other => panic!("expected a connection, got {other:?}"),
        }
    }
}

/// A message through the relay and back over framed WebSocket, then over
/// xhr-polling; each session's handshake must have asked for `asked`.
#[track_caller]
fn round_trips(server: &Server, upstream: &upstreams::Upstream, asked: &str) {
    let mut ws = ws_connect(server.port, "/stomp/000/proto/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    let headers = connected(upstream);
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some(asked));
    ws.send_text(r#"["CONNECT"]"#);
    assert_eq!(ws.next_frame(), Frame::Messages(vec!["up:CONNECT".into()]));

    let id = server.open_xhr_session("/stomp");
    let headers = connected(upstream);
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some(asked));
    server.send_ok("/stomp", &id, r#"["SEND"]"#);
    assert_eq!(
        server.poll("/stomp", &id),
        Frame::Messages(vec!["up:SEND".into()])
    );
}

#[test]
fn the_subprotocol_is_asked_for_and_the_chosen_one_accepted() {
    let upstream = upstreams::websocket_selecting(Some("v11.stomp"));
    let server = Server::start_with(&[
        "--relay",
        &format!("/stomp=ws://127.0.0.1:{}/ws", upstream.port),
        "--relay-subprotocol",
        "/stomp=v12.stomp,v11.stomp",
    ]);
    round_trips(&server, &upstream, "v12.stomp, v11.stomp");
    assert!(
        server.log().contains("(subprotocol v12.stomp, v11.stomp)"),
        "{}",
        server.log()
    );
}

#[test]
fn an_upstream_that_selects_none_closes_the_session_with_4501() {
    let none = upstreams::websocket_selecting(None);
    let other = upstreams::websocket_selecting(Some("mqtt"));
    let server = Server::start_with(&[
        "--relay",
        &format!("/stomp=ws://127.0.0.1:{}/ws", none.port),
        "--relay",
        &format!("/other=ws://127.0.0.1:{}/ws", other.port),
        "--relay-subprotocol",
        "/stomp=v12.stomp",
        "--relay-subprotocol",
        "/other=v12.stomp",
    ]);
    let refused = close_frame(4501, "Upstream refused subprotocol v12.stomp");
    for (prefix, upstream) in [("/stomp", &none), ("/other", &other)] {
        let mut ws = ws_connect(server.port, &format!("{prefix}/000/np/websocket"), &[]);
        assert_eq!(ws.next_frame(), Frame::Open);
        connected(upstream);
        assert_eq!(ws.next_frame(), refused, "{prefix} over websocket");

        let id = server.open_xhr_session(prefix);
        connected(upstream);
        assert_eq!(
            server.poll(prefix, &id),
            refused,
            "{prefix} over xhr-polling"
        );
    }
    support::poll_until("the refusal in the log", Duration::from_secs(10), || {
        let log = server.log();
        (log.contains("selected none of the subprotocols asked for (v12.stomp)")
            && log.contains(" WARN "))
        .then_some(())
    });
}

/// A relay without the setting asks for no subprotocol.
#[test]
fn without_the_setting_no_subprotocol_is_asked_for() {
    let upstream = upstreams::websocket();
    let server = Server::start_with(&[
        "--relay",
        &format!("/stomp=ws://127.0.0.1:{}/ws", upstream.port),
    ]);
    let mut ws = ws_connect(server.port, "/stomp/000/plain/websocket", &[]);
    assert_eq!(ws.next_frame(), Frame::Open);
    let headers = connected(&upstream);
    assert_eq!(header(&headers, "sec-websocket-protocol"), None);
}

/// A config file in a directory of its own; removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        let dir = support::fresh_temp_dir("subprotocol");
        std::fs::write(dir.join("gateway.toml"), text).expect("write config");
        TempConfig(dir)
    }

    fn path(&self) -> String {
        self.0.join("gateway.toml").to_string_lossy().into_owned()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn relay_table(upstream: &str, subprotocol: &str) -> String {
    format!(
        "[[service]]\nprefix = \"/stomp\"\nkind = \"relay\"\nupstream = \"{upstream}\"\nsubprotocol = {subprotocol}\n"
    )
}

#[test]
fn the_config_files_subprotocol_key_as_a_string_or_a_list() {
    let upstream = upstreams::websocket_selecting(Some("v12.stomp"));
    let url = format!("ws://127.0.0.1:{}/ws", upstream.port);
    let one = TempConfig::new(&relay_table(&url, "\"v12.stomp\""));
    let server = Server::start_with(&["--config", &one.path()]);
    round_trips(&server, &upstream, "v12.stomp");
    drop(server);

    let list = TempConfig::new(&relay_table(&url, "[\"v12.stomp\", \"v10.stomp\"]"));
    let server = Server::start_with(&["--config", &list.path()]);
    round_trips(&server, &upstream, "v12.stomp, v10.stomp");
    drop(server);

    // The flag replaces the file's list.
    let server = Server::start_with(&[
        "--config",
        &list.path(),
        "--relay-subprotocol",
        "/stomp=v12.stomp",
    ]);
    round_trips(&server, &upstream, "v12.stomp");
}

/// Starts the gateway expecting it to refuse: exit code 2 and `reason` on
/// stderr, within a bound.
#[track_caller]
fn refused(args: &[&str], reason: &str) {
    let (status, stderr) =
        support::start_refused_with(&[&["--listen", "127.0.0.1:0"], args].concat());
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(reason), "{args:?}: {stderr}");
}

#[test]
fn settings_that_cannot_work_refuse_the_start() {
    refused(
        &["--relay-subprotocol", "/stomp=v12.stomp"],
        "--relay-subprotocol /stomp=v12.stomp: there is no relay at `/stomp`",
    );
    refused(
        &["--relay-subprotocol", "/echo=v12.stomp"],
        "there is no relay at `/echo`",
    );
    refused(
        &[
            "--relay",
            "/lines=tcp://127.0.0.1:7000",
            "--relay-subprotocol",
            "/lines=v12.stomp",
        ],
        "a TCP upstream has no subprotocol",
    );
    refused(
        &[
            "--relay",
            "/stomp=ws://127.0.0.1:1/",
            "--relay-subprotocol",
            "/stomp=v12 stomp",
        ],
        "is not a WebSocket subprotocol name",
    );
    refused(
        &[
            "--relay",
            "/stomp=ws://127.0.0.1:1/",
            "--relay-subprotocol",
            "/stomp=v12.stomp",
            "--relay-subprotocol",
            "/stomp=v11.stomp",
        ],
        "the prefix `/stomp` is given twice",
    );
    refused(&["--relay-subprotocol", "v12.stomp"], "PREFIX=PROTO");

    let tcp = TempConfig::new(&relay_table("tcp://127.0.0.1:7000", "\"v12.stomp\""));
    refused(
        &["--config", &tcp.path()],
        "gateway.toml:5:15: `subprotocol` is only for a ws:// or wss:// upstream",
    );
    let echo =
        TempConfig::new("[[service]]\nprefix = \"/e\"\nkind = \"echo\"\nsubprotocol = \"x\"\n");
    refused(
        &["--config", &echo.path()],
        "`subprotocol` is only for kind = \"relay\"",
    );
    let empty = TempConfig::new(&relay_table("ws://127.0.0.1:1/", "[]"));
    refused(&["--config", &empty.path()], "the list is empty");
    let bad = TempConfig::new(&relay_table("ws://127.0.0.1:1/", "[\"ok\", \"not ok\"]"));
    refused(
        &["--config", &bad.path()],
        "`not ok` is not a WebSocket subprotocol name",
    );
}
