//! The gateway as a child process: started on an ephemeral port, its log
//! read as it goes, stopped on drop; start-ups that must be refused; temp dirs.

use super::*;

// Server guard

/// A running `sockjs-gateway` child process; killed (by its PID) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Server with default timings.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Server with extra command line flags, e.g.
    /// `&["--heartbeat-delay", "200ms"]`.
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", extra)
    }

    /// Server listening on `listen` (e.g. the address of one just killed).
    pub fn start_at(listen: &str, extra: &[&str]) -> Server {
        Server::spawn(listen, extra, Stdio::null())
    }

    /// Server whose standard output (`--access-log -`) arrives line by line.
    pub fn start_reading_stdout(extra: &[&str]) -> (Server, mpsc::Receiver<String>) {
        let mut server = Server::spawn("127.0.0.1:0", extra, Stdio::piped());
        let stdout = server.child.stdout.take().expect("child stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (server, lines)
    }

    fn spawn(listen: &str, extra: &[&str], stdout: Stdio) -> Server {
        let log_level = std::env::var("SOCKJS_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        let mut child = Command::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
            .args(["--listen", listen])
            .args(extra)
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockjs-gateway");
        let stderr = child.stderr.take().expect("child stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<u16>();
        let thread_log = Arc::clone(&log);
        // Drains stderr for the whole life of the child so the pipe never fills.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let port = parse_listening_port(&line);
                // Logged before the port is handed over, so the listening
                // line is in `log()` as soon as `start_with` returns.
                thread_log.lock().unwrap().push(line);
                if let Some(port) = port {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => Server { child, port, log },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lock().unwrap().join("\n");
                panic!(
                    "sockjs-gateway did not print `listening on http(s)://127.0.0.1:PORT` ({e}); \
                     stderr so far:\n{lines}"
                );
            }
        }
    }

    /// Everything the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn connect(&self) -> Conn {
        Conn::open(self.port)
    }

    /// One request on a fresh connection, whole response read.
    #[track_caller]
    pub fn request(&self, req: Request) -> Response {
        self.connect().request(&req)
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.request(Request::get(path))
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.request(Request::post(path, body))
    }

    // --- SockJS xhr helpers ---

    /// `POST PREFIX/000/SID/xhr`, whole response.
    #[track_caller]
    pub fn xhr(&self, prefix: &str, sid: &str) -> Response {
        self.post(&format!("{prefix}/000/{sid}/xhr"), b"")
    }

    /// `POST PREFIX/000/SID/xhr_send` with `body`.
    #[track_caller]
    pub fn xhr_send(&self, prefix: &str, sid: &str, body: &[u8]) -> Response {
        self.post(&format!("{prefix}/000/{sid}/xhr_send"), body)
    }

    /// `xhr_send` that must succeed with 204.
    #[track_caller]
    pub fn send_ok(&self, prefix: &str, sid: &str, body: &str) {
        let r = self.xhr_send(prefix, sid, body.as_bytes());
        assert_eq!(
            r.status,
            204,
            "xhr_send {body:?} to {prefix} {sid}: {}",
            r.body_lossy()
        );
    }

    /// One xhr poll that must be `200` and carry exactly one frame plus `\n`.
    #[track_caller]
    pub fn poll(&self, prefix: &str, sid: &str) -> Frame {
        let r = self.xhr(prefix, sid);
        assert_eq!(r.status, 200, "xhr poll: {}", r.body_lossy());
        one_frame_body(&r.text())
    }

    /// Creates a session with an xhr poll that must answer exactly `o\n`.
    #[track_caller]
    pub fn open_xhr_session(&self, prefix: &str) -> String {
        let id = sid();
        let r = self.xhr(prefix, &id);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "o\n", "new session must get the open frame");
        id
    }

    /// Polls until `n` messages have arrived; every frame must be `a[...]`.
    #[track_caller]
    pub fn poll_messages(&self, prefix: &str, sid: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.poll(prefix, sid) {
                Frame::Messages(m) => out.extend(m),
                other => panic!("expected a[...] frame, got {other:?} after {out:?}"),
            }
        }
        assert_eq!(out.len(), n, "more messages than expected: {out:?}");
        out
    }

    /// WebSocket handshake on `path` with the default headers.
    #[track_caller]
    pub fn ws(&self, path: &str) -> Ws {
        ws_connect(self.port, path, &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- sockjs-gateway stderr (port {}) ----\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// The port of the gateway's `listening on http://ADDR` (or `https://ADDR`
/// over TLS) log line.
fn parse_listening_port(line: &str) -> Option<u16> {
    let rest = ["listening on http://", "listening on https://"]
        .iter()
        .find_map(|marker| line.find(marker).map(|idx| &line[idx + marker.len()..]))?;
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/')
        .collect();
    let colon = addr.rfind(':')?;
    let digits: String = addr[colon + 1..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// A unique session id (no dots): process id, counter and nanos.
pub fn sid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{}-{}-{}", std::process::id(), n, nanos)
}

/// Polls `check` (which must do real requests) until it returns `Some`, or
/// panics at `deadline`. The short pause between attempts only paces the
/// loop; the outcome is decided by the server's answers.
#[track_caller]
pub fn poll_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the gateway with `extra` flags and expects it to refuse to start:
/// it must exit with a non-zero status (within the startup bound) without
/// ever printing its listening line. Returns its stderr.
#[track_caller]
pub fn expect_start_refused(extra: &[&str]) -> String {
    start_refused_status(extra).1
}

/// As [`expect_start_refused`], also returning the exit status.
#[track_caller]
pub fn start_refused_status(extra: &[&str]) -> (std::process::ExitStatus, String) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    start_refused_with(&args)
}

/// Starts the gateway with exactly `args` (no `--listen` added) and expects
/// it to exit with a non-zero status without ever printing its listening
/// line. Returns the status and its stderr.
#[track_caller]
pub fn start_refused_with(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockjs-gateway"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockjs-gateway");
    let stderr = child.stderr.take().expect("child stderr");
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if parse_listening_port(&line).is_some() {
                let _ = tx.send(None);
                return;
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(Some(all));
    });
    match rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Some(log)) => {
            let status = child.wait().expect("wait for sockjs-gateway");
            assert!(
                !status.success(),
                "sockjs-gateway {args:?} must exit with a non-zero status, got {status}; stderr:\n{log}"
            );
            (status, log)
        }
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockjs-gateway {args:?} must refuse to start, but it is listening");
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockjs-gateway {args:?} neither exited nor started within {STARTUP_TIMEOUT:?}");
        }
    }
}

impl Server {
    /// The server process's PID, to signal it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server process (SIGKILL), as a crash would, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM to the server process.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits (bounded) for the server process to exit; its status, or `None`
    /// if it is still running at the deadline.
    pub fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A fresh directory under the system's temp dir, named for `label`, this
/// process and a counter; the caller removes it.
pub fn fresh_temp_dir(label: &str) -> std::path::PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sockjs-gateway-{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
