//! The writing side: a bounded queue drained by one thread.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::format::AccessLogFormat;
use super::record::SessionRecord;

/// Records waiting for the writer thread by default: at a few hundred bytes
/// each, about a megabyte.
pub const DEFAULT_QUEUE: usize = 4096;

/// Where ended sessions are written, one line each. Cheap to clone: every
/// clone feeds the same queue and thread. Hand it to each service with
/// [`crate::SockJs::with_access_log`], and count it with
/// [`crate::Metrics::watch_access_log`].
///
/// A session's end only queues its record; a thread formats and writes the
/// lines, flushing whenever the queue runs empty. When the queue is full
/// (the disk is slower than sessions end) the record is dropped and counted.
///
/// ```no_run
/// use sockjs_gateway::{AccessLog, AccessLogFormat};
/// let log = AccessLog::open("/var/log/sockjs/access.log", AccessLogFormat::Plain)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct AccessLog {
    queue: SyncSender<SessionRecord>,
    counts: Arc<Counts>,
}

struct Counts {
    written: Counter,
    dropped: Counter,
    /// Records queued and not yet written and flushed.
    unflushed: AtomicU64,
}

impl AccessLog {
    /// Appends to the file at `path`, created if need be.
    pub fn open(path: impl AsRef<Path>, format: AccessLogFormat) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::to_writer(file, format, DEFAULT_QUEUE))
    }

    /// Writes to standard output.
    pub fn stdout(format: AccessLogFormat) -> Self {
        Self::to_writer(io::stdout(), format, DEFAULT_QUEUE)
    }

    /// Writes to `sink`, with at most `queue` records waiting for it.
    pub fn to_writer(
        sink: impl Write + Send + 'static,
        format: AccessLogFormat,
        queue: usize,
    ) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<SessionRecord>(queue.max(1));
        let counts = Arc::new(Counts {
            written: Counter::default(),
            dropped: Counter::default(),
            unflushed: AtomicU64::new(0),
        });
        let thread_counts = counts.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut sink = BufWriter::with_capacity(64 * 1024, sink);
                let mut batch = 0;
                let mut failed = false;
                while let Ok(record) = receiver.recv() {
                    let mut next = Some(record);
                    while let Some(record) = next.take() {
                        let written = sink.write_all(format.line(&record).as_bytes());
                        report(&mut failed, written);
                        thread_counts.written.inc();
                        batch += 1;
                        next = receiver.try_recv().ok();
                    }
                    report(&mut failed, sink.flush());
                    thread_counts.unflushed.fetch_sub(batch, Ordering::AcqRel);
                    batch = 0;
                }
            });
        if let Err(error) = spawned {
            log::error!("access log: cannot start its writer thread: {error}");
        }
        AccessLog {
            queue: sender,
            counts,
        }
    }

    /// Queues `record` for writing; never waits. A full queue drops it.
    pub fn record(&self, record: SessionRecord) {
        self.counts.unflushed.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.unflushed.fetch_sub(1, Ordering::AcqRel);
                self.counts.dropped.inc();
            }
        }
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.counts.written.get()
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.get()
    }

    /// Waits, at most `timeout`, until every queued record is written and
    /// flushed (before the process exits). True if they all were.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.counts.unflushed.load(Ordering::Acquire) == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn counters(&self) -> (Counter, Counter) {
        (self.counts.written.clone(), self.counts.dropped.clone())
    }
}

/// Logs the first write error of a run of them, and the recovery.
fn report(failed: &mut bool, result: io::Result<()>) {
    match result {
        Err(error) if !*failed => {
            log::error!("access log: cannot write: {error}");
            *failed = true;
        }
        Ok(()) if *failed => {
            log::info!("access log: writing again");
            *failed = false;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::SessionEnd;
    use std::sync::Mutex;
    use std::time::SystemTime;

    /// A sink that says when a write comes, then waits for the test's word.
    struct Gate {
        out: Arc<Mutex<Vec<u8>>>,
        entered: mpsc::Sender<()>,
        open: mpsc::Receiver<()>,
    }

    impl Write for Gate {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.open.recv();
            self.out.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn record() -> SessionRecord {
        SessionRecord {
            service: "/echo".into(),
            session_id: None,
            transport: "websocket-raw",
            transports: vec!["websocket-raw"],
            client_ip: None,
            started: SystemTime::now(),
            duration: Duration::ZERO,
            traffic: Default::default(),
            end: SessionEnd::Timeout,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        let (entered, writing) = mpsc::channel();
        let (open, gate) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Gate {
            out: out.clone(),
            entered,
            open: gate,
        };
        let log = AccessLog::to_writer(sink, AccessLogFormat::Plain, 2);
        log.record(record());
        // The thread flushes its first line (the queue ran empty) and is held there.
        writing.recv_timeout(Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        for _ in 0..10 {
            log.record(record());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(log.dropped(), 8, "two fit in the queue");
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        assert!(log.flush(Duration::from_secs(5)));
        assert_eq!(log.written(), 3);
        let lines = out.lock().unwrap().iter().filter(|&&b| b == b'\n').count();
        assert_eq!(lines, 3);
    }
}
