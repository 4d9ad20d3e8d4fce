//! Sockets and the process facts the generator measures: loopback connects
//! spread over several source addresses, the fd limit, and a server's CPU time
//! and RSS read from `/proc`.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::net::{TcpSocket, TcpStream};

/// Where the server listens, and which local addresses the client connects from.
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    sources: Vec<IpAddr>,
    next_source: Cell<usize>,
}

impl Target {
    /// `url` is `http://IP:PORT`; `sources` > 0 spreads connections over
    /// 127.0.0.2 ..= 127.0.0.(sources + 1), each good for ~28k connections to
    /// one server port (the ephemeral port range), so 100,000 sessions fit.
    pub fn new(url: &str, sources: usize) -> Result<Target, String> {
        let hostport = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        let addr: SocketAddr = hostport
            .parse()
            .map_err(|_| format!("--url {url}: expected http://IP:PORT"))?;
        if sources > 250 {
            return Err("--sources: at most 250".into());
        }
        let sources = (0..sources)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
            .collect();
        Ok(Target {
            addr,
            host: hostport.to_owned(),
            sources,
            next_source: Cell::new(0),
        })
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// A new TCP connection to the server, `TCP_NODELAY` set.
    pub async fn connect(&self) -> Result<TcpStream, String> {
        let stream = if self.sources.is_empty() {
            TcpStream::connect(self.addr).await
        } else {
            let i = self.next_source.get();
            self.next_source.set((i + 1) % self.sources.len());
            let source = self.sources[i];
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            // Without this, bind() reserves a port for the source address
            // alone, and the port range runs out at ~28k sockets no matter
            // how many addresses we spread over.
            set_bind_address_no_port(&socket);
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| format!("bind {source}: {e}"))?;
            socket.connect(self.addr).await
        }
        .map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        Ok(stream)
    }
}

fn set_bind_address_no_port(socket: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Raises the soft fd limit to the hard limit, and the hard limit to `want`
/// when the process may (root); returns the soft limit now in force.
// `rlim_t` is u64 here but not on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if (limit.rlim_max as u64) < want {
            let raised = libc::rlimit {
                rlim_cur: want as libc::rlim_t,
                rlim_max: want as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return want;
            }
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur as u64
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    user_and_system_seconds(pid).map(|(user, system)| user + system)
}

/// CPU seconds a process has used so far in user space and in the kernel.
pub fn user_and_system_seconds(pid: Option<u32>) -> Option<(f64, f64)> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 of stat(5) is fields[0] here; utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime as f64 / ticks, stime as f64 / ticks))
}

/// Resident set size in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The server's processes: one gateway, or every process of a cluster
/// (its nodes, the balancer, Redis). CPU time and RSS are summed over them.
#[derive(Clone, Debug, Default)]
pub struct Procs(Vec<(String, u32)>);

impl Procs {
    /// `PID[,PID...]`, each optionally labelled `LABEL=PID` (labels name
    /// the per-process CPU figures; unlabelled ones are named by PID).
    pub fn parse(text: &str) -> Result<Procs, String> {
        let mut procs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (label, pid) = item.split_once('=').unwrap_or((item, item));
            let pid: u32 = pid
                .parse()
                .map_err(|_| format!("{item}: expected PID or LABEL=PID"))?;
            procs.push((label.to_owned(), pid));
        }
        Ok(Procs(procs))
    }

    /// `(label, pid)` of each process.
    pub fn each(&self) -> &[(String, u32)] {
        &self.0
    }

    /// CPU seconds used by all of them so far (`None`: no process, or one
    /// cannot be read, e.g. it exited).
    pub fn cpu_seconds(&self) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.iter().map(|(_, p)| cpu_seconds(Some(*p))).sum()
    }

    /// Their user-space CPU seconds so far (the rest of `cpu_seconds` is
    /// the kernel's, on loopback much of it the receiving side's TCP work).
    pub fn user_cpu_seconds(&self) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0
            .iter()
            .map(|(_, p)| user_and_system_seconds(Some(*p)).map(|(user, _)| user))
            .sum()
    }

    /// Their resident memory together, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.iter().map(|(_, p)| rss_kib(Some(*p))).sum()
    }
}

/// CPU seconds the whole machine has been busy (all CPUs, from /proc/stat).
pub fn system_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(busy as f64 / ticks)
}

/// CPU use of everything but the server and this process, in percent of one
/// core, over `window`: other work on a 2-core machine skews the figures.
pub async fn other_cpu_pct(server: &Procs, window: std::time::Duration) -> Option<f64> {
    let at = std::time::Instant::now();
    let (s0, g0, m0) = (
        server.cpu_seconds().unwrap_or(0.0),
        cpu_seconds(None)?,
        system_busy_seconds()?,
    );
    tokio::time::sleep(window).await;
    let (s1, g1, m1) = (
        server.cpu_seconds().unwrap_or(0.0),
        cpu_seconds(None)?,
        system_busy_seconds()?,
    );
    let wall = at.elapsed().as_secs_f64();
    Some((100.0 * ((m1 - m0) - (s1 - s0) - (g1 - g0)) / wall).max(0.0))
}

/// Reads more bytes into `buf[*end..]`, where `buf[*start..*end]` is what is
/// not consumed yet: first the buffer is reset when empty, grown to at least
/// `min_len`, and, when full, compacted (consumed bytes dropped) or doubled.
/// Returns how many bytes came (0 at the end of the stream).
pub async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    start: &mut usize,
    end: &mut usize,
    min_len: usize,
) -> Result<usize, String> {
    use tokio::io::AsyncReadExt;
    if *start == *end {
        *start = 0;
        *end = 0;
    }
    if buf.len() < min_len {
        buf.resize(min_len, 0);
    }
    if *end == buf.len() {
        if *start > 0 {
            buf.copy_within(*start..*end, 0);
            *end -= *start;
            *start = 0;
        } else {
            let len = buf.len() * 2;
            buf.resize(len, 0);
        }
    }
    let n = stream
        .read(&mut buf[*end..])
        .await
        .map_err(|e| format!("read: {e}"))?;
    *end += n;
    Ok(n)
}
