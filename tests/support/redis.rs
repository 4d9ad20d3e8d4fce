//! A real `redis-server` for the cluster tests, on a free loopback port,
//! without persistence; killed by its PID on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::poll_until;

const STARTUP: Duration = Duration::from_secs(10);

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    /// A new server on a port the system had free.
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Redis::start_on(port)
    }

    /// A new, empty server on `port` (e.g. the port of one that was killed).
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install -y redis-server)");
        let redis = Redis {
            child: Some(child),
            port,
        };
        poll_until("redis-server to answer PING", STARTUP, || {
            (redis.try_command(&["PING"]).ok()? == "+PONG").then_some(())
        });
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command; its reply's first line (`+PONG`, `:1`, `$-1`, ...).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).expect("redis command")
    }

    /// The value of a string key, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut reader = self.send(&["GET", key]).expect("redis GET");
        let mut line = String::new();
        reader.read_line(&mut line).expect("redis GET reply");
        if line.starts_with("$-1") {
            return None;
        }
        line.clear();
        reader.read_line(&mut line).expect("redis GET value");
        Some(line.trim_end().to_owned())
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut line = String::new();
        self.send(args)?.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    fn send(&self, args: &[&str]) -> std::io::Result<BufReader<TcpStream>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        Ok(BufReader::new(stream))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
