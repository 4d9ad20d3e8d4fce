//! `--config FILE`: the documented example file starts the gateway and its
//! services behave as it says, flags override it, and bad files are refused
//! with FILE:LINE and the reason.

mod support;
mod upstreams;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{expect_start_refused, json_array, Frame, Server};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateway.toml");

/// The example file on an ephemeral port; `--metrics 127.0.0.1:0` keeps its
/// metrics address from clashing with anything else.
fn start_example(extra: &[&str]) -> Server {
    let mut args = vec!["--config", EXAMPLE, "--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// A config file with `text` in a directory of its own; removed on drop.
struct TempConfig {
    dir: PathBuf,
    path: PathBuf,
}

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        let dir = support::fresh_temp_dir("config");
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).expect("write config");
        TempConfig { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn info(server: &Server, prefix: &str) -> serde_json::Value {
    let response = server.get(&format!("{prefix}/info"));
    assert_eq!(
        response.status,
        200,
        "{prefix}/info: {}",
        response.body_lossy()
    );
    serde_json::from_str(&response.text()).expect("/info is JSON")
}

#[test]
fn the_example_file_starts_and_its_services_answer() {
    let server = start_example(&[]);

    // /notes: echo, websocket = false, cookie_needed = true.
    let notes = info(&server, "/notes");
    assert_eq!(notes["websocket"], false);
    assert_eq!(notes["cookie_needed"], true);
    assert_eq!(server.get("/notes/000/n1/websocket").status, 404);
    assert_eq!(server.get("/notes/websocket").status, 404);
    let id = server.open_xhr_session("/notes");
    server.send_ok("/notes", &id, &json_array(&["hello notes"]));
    assert_eq!(server.poll_messages("/notes", &id, 1), ["hello notes"]);

    // /app: the example's relay is mounted (its upstream is reached per session).
    assert_eq!(info(&server, "/app")["websocket"], true);

    // /chat: broadcast, and the defaults' websocket = true.
    let chat = info(&server, "/chat");
    assert_eq!(chat["websocket"], true);
    assert_eq!(chat["cookie_needed"], false);
    let mut ws = server.ws("/chat/000/c1/websocket");
    assert_eq!(ws.next_frame(), Frame::Open);
    ws.send_text(&json_array(&["to everyone"]));
    assert_eq!(ws.messages(1), ["to everyone"]);

    // builtin_services = true keeps the conventional ones.
    assert_eq!(info(&server, "/echo")["websocket"], true);
    assert_eq!(info(&server, "/cookie_needed_echo")["cookie_needed"], true);
}

#[test]
fn a_per_service_value_comes_from_the_file_and_a_flag_overrides_it() {
    // /notes has max_message_bytes = 65536 in the file.
    let big = "x".repeat(70_000);
    let body = json_array(&[&big]);

    let from_file = start_example(&[]);
    let id = from_file.open_xhr_session("/notes");
    assert_eq!(
        from_file.xhr_send("/notes", &id, body.as_bytes()).status,
        413
    );

    let flagged = start_example(&["--max-message-bytes", "1048576"]);
    let id = flagged.open_xhr_session("/notes");
    flagged.send_ok("/notes", &id, &body);
    assert_eq!(flagged.poll_messages("/notes", &id, 1), [big]);
}

#[test]
fn a_flag_overrides_a_duration_of_the_file() {
    // /chat has heartbeat_delay = "10s" in the file; the flag makes it 200ms.
    let server = start_example(&["--heartbeat-delay", "200ms"]);
    let id = server.open_xhr_session("/chat");
    let started = Instant::now();
    assert_eq!(server.poll("/chat", &id), Frame::Heartbeat);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "heartbeat after {:?}: the flag's 200ms did not win over the file's 10s",
        started.elapsed()
    );
}

#[test]
fn a_service_replaces_the_builtin_of_its_prefix_and_builtins_can_be_turned_off() {
    let file =
        TempConfig::new("[[service]]\nprefix = \"/echo\"\nkind = \"echo\"\nwebsocket = false\n");
    let server = Server::start_with(&["--config", file.path()]);
    assert_eq!(info(&server, "/echo")["websocket"], false);
    assert_eq!(server.get("/ticker/info").status, 200);

    let file = TempConfig::new(
        "builtin_services = false\n\n[[service]]\nprefix = \"/only\"\nkind = \"echo\"\n",
    );
    let server = Server::start_with(&["--config", file.path()]);
    assert_eq!(server.get("/echo/info").status, 404);
    assert_eq!(server.get("/ticker/info").status, 404);
    let id = server.open_xhr_session("/only");
    server.send_ok("/only", &id, &json_array(&["alone"]));
    assert_eq!(server.poll_messages("/only", &id, 1), ["alone"]);
}

#[test]
fn bad_files_are_refused_with_file_line_and_reason() {
    let cases: &[(&str, &str, usize, &str)] = &[
        (
            "unknown key",
            "[defaults]\nheartbeat_delay = \"5s\"\nheartbeat_dely = \"5s\"\n",
            3,
            "unknown field `heartbeat_dely`",
        ),
        (
            "bad duration",
            "workers = 1\n\n[defaults]\ndisconnect_delay = \"5x\"\n",
            4,
            "`5x` is not a duration",
        ),
        (
            "bad upstream scheme",
            "[[service]]\nprefix = \"/app\"\nkind = \"relay\"\nupstream = \"http://127.0.0.1:9000/\"\n",
            4,
            "the upstream scheme must be ws://, wss:// or tcp://",
        ),
        (
            "TOML syntax error",
            "workers = 2\n[defaults\nheartbeat_delay = \"1s\"\n",
            2,
            "unclosed table, expected `]`",
        ),
        (
            "duplicate prefix",
            "[[service]]\nprefix = \"/a\"\nkind = \"echo\"\n\n[[service]]\nprefix = \"/a\"\nkind = \"broadcast\"\n",
            6,
            "the prefix `/a` is already used by the service on line 2",
        ),
        (
            "bad origin",
            "[[service]]\nprefix = \"/a\"\nkind = \"echo\"\nallowed_origins = [\"https://ok.example\", \"ok.example\"]\n",
            4,
            "`ok.example` is not an origin",
        ),
        (
            "prefix without /",
            "[[service]]\nprefix = \"chat\"\nkind = \"echo\"\n",
            2,
            "a service prefix starts with /",
        ),
        (
            "bad overflow policy",
            "[defaults]\noverflow = \"drop\"\n",
            2,
            "the overflow policy is `close` or `drop-oldest`",
        ),
        (
            "relay key on another kind",
            "[[service]]\nprefix = \"/a\"\nkind = \"echo\"\nca = \"ca.pem\"\n",
            4,
            "`ca` is only for kind = \"relay\"",
        ),
        (
            "zero connect timeout",
            "[[service]]\nprefix = \"/app\"\nkind = \"relay\"\nupstream = \"ws://127.0.0.1:9/\"\nconnect_timeout = \"0s\"\n",
            5,
            "a timeout must be above zero",
        ),
        (
            "a session cap of zero",
            "[defaults]\nheartbeat_delay = \"5s\"\nmax_sessions = 0\n",
            3,
            "the session cap must be at least 1",
        ),
        (
            "relay without upstream",
            "[[service]]\nprefix = \"/app\"\nkind = \"relay\"\n",
            3,
            "a relay service needs `upstream`",
        ),
    ];
    for (what, text, line, reason) in cases {
        let file = TempConfig::new(text);
        let stderr = expect_start_refused(&["--config", file.path()]);
        let located = format!("error: {}:{line}:", file.path());
        assert!(
            stderr.contains(&located),
            "{what}: stderr must name {located}, got:\n{stderr}"
        );
        assert!(
            stderr.contains(reason),
            "{what}: stderr must say {reason:?}, got:\n{stderr}"
        );
    }
}

#[test]
fn a_session_cap_of_zero_is_refused_as_a_flag() {
    let (status, stderr) = support::start_refused_status(&["--max-sessions", "0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-sessions") && stderr.contains("the session cap must be at least 1"),
        "{stderr}"
    );
}

/// Starts the gateway on `args`, where `taken` is an address another socket
/// holds: it must exit 2 naming that address, having logged nothing as
/// listening.
#[track_caller]
fn assert_refused_as_in_use(args: &[&str], taken: &str) {
    let (status, stderr) = support::start_refused_with(args);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("error: cannot listen on {taken}: address already in use"),
        "{args:?}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn an_address_in_use_is_refused_naming_it_before_anything_listens() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let taken = holder.local_addr().unwrap().to_string();
    assert_refused_as_in_use(&["--listen", &taken], &taken);
    assert_refused_as_in_use(&["--listen", "127.0.0.1:0", "--listen", &taken], &taken);
    assert_refused_as_in_use(&["--listen", "127.0.0.1:0", "--metrics", &taken], &taken);
    let file = TempConfig::new(&format!(
        "listen = [\"127.0.0.1:0\"]\nmetrics = \"{taken}\"\n"
    ));
    assert_refused_as_in_use(&["--config", file.path()], &taken);
}

#[test]
fn a_missing_file_is_refused_naming_it() {
    let missing = std::env::temp_dir().join("sockjs-gateway-no-such-config.toml");
    let missing = missing.to_str().expect("UTF-8 temp path");
    let stderr = expect_start_refused(&["--config", missing]);
    assert!(
        stderr.contains(&format!("error: {missing}: cannot read it")),
        "{stderr}"
    );
}

#[test]
fn a_relay_service_from_the_file_relays_with_its_own_options() {
    let upstream = upstreams::websocket();
    let config = TempConfig::new(&format!(
        r#"
builtin_services = false

[[service]]
prefix = "/app"
kind = "relay"
upstream = "ws://127.0.0.1:{}/socket"
forward_headers = ["Cookie"]
websocket = false
"#,
        upstream.port
    ));
    let server = Server::start_with(&["--config", config.path()]);
    assert_eq!(info(&server, "/app")["websocket"], false);
    assert_eq!(server.get("/echo/info").status, 404, "built-ins are off");
    let id = support::sid();
    let open = server.request(
        support::Request::post(&format!("/app/000/{id}/xhr"), b"").header("Cookie", "u=1"),
    );
    assert_eq!(open.text(), "o\n");
    let headers = upstream.expect_connected();
    assert!(
        headers.contains(&("cookie".to_owned(), "u=1".to_owned())),
        "{headers:?}"
    );
    server.send_ok("/app", &id, &json_array(&["through the file's relay"]));
    assert_eq!(
        server.poll_messages("/app", &id, 1),
        ["up:through the file's relay"]
    );
}

#[test]
fn version_names_the_gateway_release_and_every_bundled_client_release() {
    for flag in ["--version", "-V"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
            .arg(flag)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sockjs-gateway");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for sockjs-gateway") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("sockjs-gateway {flag} still running after 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        assert!(status.success(), "{flag}: {status}");
        let releases: Vec<&str> = sockjs_gateway::CLIENT_RELEASES
            .iter()
            .map(|release| release.version)
            .collect();
        assert_eq!(
            stdout.trim_end(),
            format!(
                "sockjs-gateway {} (sockjs-client {})",
                env!("CARGO_PKG_VERSION"),
                releases.join(", ")
            ),
            "{flag}"
        );
        assert!(
            stdout.contains("1.0.0, ") && stdout.contains(", 1.6.1)"),
            "{stdout}"
        );
    }
}
