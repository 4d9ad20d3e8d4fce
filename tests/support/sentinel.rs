//! A Redis Sentinel set-up on loopback for the failover test: a primary, a
//! replica and three sentinels (Debian's `redis-server`, the sentinels in
//! `--sentinel` mode), all in one temporary directory, each stopped by its
//! PID on drop. Queries go through `redis-cli --raw`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{fresh_temp_dir, poll_until};

/// The name the sentinels monitor the primary under.
pub const MASTER: &str = "sockjs-test";
const STARTUP: Duration = Duration::from_secs(10);
/// Sentinels find each other through hello messages every 2 s, and the
/// replica through the primary's INFO.
const DISCOVERY: Duration = Duration::from_secs(20);

/// One `redis-server` process (a data node or a sentinel).
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
}

impl RedisProcess {
    fn spawn(args: &[String], port: u16, log: &Path) -> RedisProcess {
        let log = std::fs::File::create(log).expect("redis log file");
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install -y redis-server redis-tools)");
        let process = RedisProcess {
            child: Some(child),
            port,
        };
        poll_until(
            &format!("redis-server on {port} to answer PING"),
            STARTUP,
            || (process.try_cli(&["PING"])? == "PONG").then_some(()),
        );
        process
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would; waits for the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli --raw` output of one command, `None` if it failed.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("run redis-cli (apt-get install -y redis-tools)");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .filter(|out| !out.starts_with("Could not connect"))
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli -p {} {args:?}", self.port))
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The primary, its replica and three sentinels.
pub struct SentinelSetup {
    pub primary: RedisProcess,
    pub replica: RedisProcess,
    pub sentinels: Vec<RedisProcess>,
    pub dir: PathBuf,
}

impl SentinelSetup {
    /// Starts everything and waits until every sentinel knows the replica
    /// (in sync) and the two other sentinels, so that a failover can be
    /// agreed on (quorum 2).
    pub fn start() -> SentinelSetup {
        let dir = fresh_temp_dir("sentinel");
        let data = |port: u16, extra: &[&str]| {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                dir.to_str().unwrap(),
                "--dbfilename",
                &format!("dump-{port}.rdb"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            RedisProcess::spawn(&args, port, &dir.join(format!("redis-{port}.log")))
        };
        let primary_port = free_port();
        let primary = data(primary_port, &[]);
        let replica_port = free_port();
        let replica = data(
            replica_port,
            &["--replicaof", "127.0.0.1", &primary_port.to_string()],
        );
        let sentinels: Vec<RedisProcess> = (0..3)
            .map(|_| {
                let port = free_port();
                let conf = dir.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds {MASTER} 1000\n\
                         sentinel failover-timeout {MASTER} 3000\n\
                         sentinel parallel-syncs {MASTER} 1\n",
                        dir = dir.display()
                    ),
                )
                .expect("write sentinel.conf");
                let args = vec![conf.to_str().unwrap().to_owned(), "--sentinel".to_owned()];
                RedisProcess::spawn(&args, port, &dir.join(format!("sentinel-{port}.log")))
            })
            .collect();
        let setup = SentinelSetup {
            primary,
            replica,
            sentinels,
            dir,
        };
        poll_until("the replica in sync", DISCOVERY, || {
            let info = setup.replica.try_cli(&["INFO", "replication"])?;
            info.contains("master_link_status:up").then_some(())
        });
        poll_until(
            "every sentinel to know the replica and both other sentinels",
            DISCOVERY,
            || {
                setup
                    .sentinels
                    .iter()
                    .all(|s| {
                        let others = s
                            .try_cli(&["SENTINEL", "SENTINELS", MASTER])
                            .unwrap_or_default();
                        let replicas = s
                            .try_cli(&["SENTINEL", "REPLICAS", MASTER])
                            .unwrap_or_default();
                        let lines: Vec<&str> = replicas.lines().collect();
                        let healthy_replica =
                            lines.windows(2).any(|w| w[0] == "flags" && w[1] == "slave");
                        others.lines().filter(|l| *l == "runid").count() == 2 && healthy_replica
                    })
                    .then_some(())
            },
        );
        setup
    }

    /// `redis+sentinel://` with every sentinel.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The port of the primary the first sentinel names now.
    pub fn named_primary(&self) -> Option<u16> {
        let reply = self.sentinels[0].try_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])?;
        reply.lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            sentinel.kill();
        }
        self.primary.kill();
        self.replica.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- redis and sentinel logs in {} ----",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A port the system had free a moment ago (for servers that take a fixed
/// port: redis-server, nginx).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// nginx in the foreground (one process, `master_process off`) as a
/// round-robin balancer over `nodes` with no stickiness, as README
/// "Cluster" describes it: WebSocket upgrade headers passed on, buffering
/// off. Config, logs and temp paths in its own directory; killed by PID.
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(nodes: &[u16]) -> Nginx {
        let dir = fresh_temp_dir("nginx");
        for d in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"] {
            std::fs::create_dir_all(dir.join(d)).expect("nginx dir");
        }
        let port = free_port();
        let p = format!("{}/", dir.display());
        let upstreams: String = nodes
            .iter()
            .map(|n| format!("    server 127.0.0.1:{n} max_fails=0;\n"))
            .collect();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}nginx.pid;\n\
             error_log {p}logs/error.log info;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log {p}logs/access.log;\n  client_body_temp_path {p}client_body;\n\
             proxy_temp_path {p}proxy;\n  fastcgi_temp_path {p}fastcgi;\n  uwsgi_temp_path {p}uwsgi;\n\
             scgi_temp_path {p}scgi;\n\
             map $http_upgrade $cluster_connection {{ default upgrade; '' ''; }}\n\
             upstream sockjs_nodes {{\n{upstreams}    keepalive 32;\n    keepalive_timeout 2s;\n  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
             proxy_pass http://sockjs_nodes;\n      proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $cluster_connection;\n      proxy_buffering off;\n\
             proxy_request_buffering off;\n      proxy_read_timeout 120s;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let bin = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| !b.starts_with('/') || Path::new(b).exists())
            .unwrap();
        let child = Command::new(bin)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&p)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx (apt-get install -y nginx)");
        let nginx = Nginx {
            child: Some(child),
            port,
            dir,
        };
        poll_until("nginx to accept connections", STARTUP, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(drop)
        });
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- nginx logs in {} ----", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
