//! Reading the gateway's access log back: its file, polled with a bound
//! until the line of a session has been written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{fresh_temp_dir, poll_until};

/// A temporary access log file, removed (with its directory) on drop.
pub struct LogFile {
    dir: PathBuf,
    pub path: PathBuf,
}

impl LogFile {
    pub fn new(label: &str) -> LogFile {
        let dir = fresh_temp_dir(label);
        let path = dir.join("access.log");
        LogFile { dir, path }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }

    /// Every line written so far.
    pub fn lines(&self) -> Vec<String> {
        read_lines(&self.path)
    }

    /// The JSON record for which `pick` is true, once it is written.
    #[track_caller]
    pub fn json_record(
        &self,
        what: &str,
        pick: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll_until(what, Duration::from_secs(10), || {
            self.lines()
                .iter()
                .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
                .find(|record| pick(record))
        })
    }

    /// The plain line containing `needle`, once it is written.
    #[track_caller]
    pub fn plain_line(&self, needle: &str) -> String {
        poll_until(needle, Duration::from_secs(10), || {
            self.lines().into_iter().find(|line| line.contains(needle))
        })
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A line is only whole once its newline is there.
    match text.rfind('\n') {
        Some(end) => text[..end].lines().map(str::to_owned).collect(),
        None => Vec::new(),
    }
}

/// The JSON record of the session `sid`.
pub fn by_session(sid: &str) -> impl Fn(&serde_json::Value) -> bool + '_ {
    move |record| record["session"] == sid
}

/// The `key=value` fields of a plain line (after its four leading fields),
/// with quoted values unquoted.
pub fn plain_fields(line: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let rest: Vec<&str> = line.splitn(5, ' ').collect();
    let mut rest = rest.get(4).copied().unwrap_or_default();
    while let Some((key, after)) = rest.split_once('=') {
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').expect("a closing quote");
            (quoted[..end].to_owned(), quoted[end + 1..].trim_start())
        } else {
            let (value, next) = after.split_once(' ').unwrap_or((after, ""));
            (value.to_owned(), next)
        };
        fields.insert(key.to_owned(), value);
        rest = next;
    }
    fields
}
