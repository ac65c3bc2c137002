//! The event log: JSON lines in a rotatable file, with identical events
//! rate-limited.
//!
//! Active threat response events and heartbeat-rule drops arrive from the
//! workers' bounded channels at packet rate when something matches a busy
//! flow; writing each would turn one infected endpoint into a disk-filling
//! log. So each event carries a *key* (what makes two events "identical":
//! same indicator, action, source and destination). Within one
//! `window`, the first event with a key is written and the rest are counted;
//! when the window closes, one `"repeated"` line says how many were
//! suppressed, so no event is lost from the record, only folded.
//!
//! Rotation: when the file passes `max_bytes`, it is renamed to `FILE.1`
//! (older ones shift to `.2` ... `.keep`, the oldest deleted) and a new one is
//! started. `logrotate` with `copytruncate` works too.

use serde::Serialize;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the log is kept.
#[derive(Debug, Clone)]
pub struct EventLogConfig {
    /// The file.
    pub path: PathBuf,
    /// Rotate when the file passes this size.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` .. `FILE.keep`).
    pub keep: usize,
    /// Identical events within this window are folded into one line + a count.
    pub window: Duration,
}

struct Folded {
    first_seen: Instant,
    suppressed: u64,
    /// The first event's JSON, to name what was repeated.
    line: String,
}

/// An open event log.
pub struct EventLog {
    config: EventLogConfig,
    out: BufWriter<File>,
    size: u64,
    open: HashMap<u64, Folded>,
    /// Lines written since start.
    pub written: u64,
    /// Events folded into "repeated" lines since start.
    pub suppressed: u64,
    /// Every line written is also handed here (Central's log upload spool).
    mirror: Option<std::sync::Arc<std::sync::Mutex<crate::central::spool::LogSpool>>>,
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn open_append(path: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok((BufWriter::new(f), size))
}

impl EventLog {
    /// Opens (appending to) the log.
    pub fn open(config: EventLogConfig) -> std::io::Result<Self> {
        let (out, size) = open_append(&config.path)?;
        Ok(Self { config, out, size, open: HashMap::new(), written: 0, suppressed: 0, mirror: None })
    }

    /// Hands every line written from now on to `spool` as well.
    pub fn set_mirror(&mut self, spool: std::sync::Arc<std::sync::Mutex<crate::central::spool::LogSpool>>) {
        self.mirror = Some(spool);
    }

    /// Logs `event` under `key`, unless an identical one is already in its
    /// window. `folded` identical events were already folded into this one
    /// upstream (by a worker); they count as repeats.
    pub fn record<E: Serialize>(&mut self, key: u64, event: &E, now: Instant, folded: u64) -> std::io::Result<()> {
        if let Some(f) = self.open.get_mut(&key) {
            if now.duration_since(f.first_seen) < self.config.window {
                f.suppressed += 1 + folded;
                self.suppressed += 1 + folded;
                return Ok(());
            }
        }
        self.close_window(key)?;
        let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        self.write_line(&line)?;
        self.suppressed += folded;
        self.open.insert(key, Folded { first_seen: now, suppressed: folded, line });
        Ok(())
    }

    /// Closes every window older than the configured length (call periodically).
    pub fn expire(&mut self, now: Instant) -> std::io::Result<()> {
        let window = self.config.window;
        let due: Vec<u64> =
            self.open.iter().filter(|(_, f)| now.duration_since(f.first_seen) >= window).map(|(k, _)| *k).collect();
        for key in due {
            self.close_window(key)?;
        }
        self.out.flush()
    }

    fn close_window(&mut self, key: u64) -> std::io::Result<()> {
        let Some(f) = self.open.remove(&key) else { return Ok(()) };
        if f.suppressed > 0 {
            let line = format!(
                "{{\"repeated\":{},\"window_ms\":{},\"at_ms\":{},\"event\":{}}}",
                f.suppressed,
                self.config.window.as_millis(),
                unix_ms(),
                f.line
            );
            self.write_line(&line)?;
        }
        Ok(())
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.config.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        self.written += 1;
        if let Some(m) = &self.mirror {
            m.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let name = |i: usize| {
            let mut p = self.config.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if self.config.keep == 0 {
            std::fs::remove_file(&self.config.path)?;
        } else {
            let _ = std::fs::remove_file(name(self.config.keep));
            for i in (1..self.config.keep).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            std::fs::rename(&self.config.path, name(1))?;
        }
        let (out, size) = open_append(&self.config.path)?;
        self.out = out;
        self.size = size;
        Ok(())
    }

    /// Writes out every folded count and flushes (at shutdown).
    pub fn close(mut self) -> std::io::Result<()> {
        let keys: Vec<u64> = self.open.keys().copied().collect();
        for key in keys {
            self.close_window(key)?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Ev<'a> {
        indicator: &'a str,
        n: u32,
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn config(dir: &Path, max_bytes: u64) -> EventLogConfig {
        EventLogConfig { path: dir.join("events.jsonl"), max_bytes, keep: 2, window: Duration::from_secs(1) }
    }

    #[test]
    fn identical_events_fold_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(config(dir.path(), 1 << 20)).unwrap();
        let t0 = Instant::now();
        for i in 0..100 {
            log.record(7, &Ev { indicator: "evil.example", n: i }, t0 + Duration::from_millis(i as u64), 0).unwrap();
        }
        log.record(8, &Ev { indicator: "other.example", n: 0 }, t0, 0).unwrap();
        log.expire(t0 + Duration::from_secs(2)).unwrap();
        // A new window for the same key writes again.
        log.record(7, &Ev { indicator: "evil.example", n: 500 }, t0 + Duration::from_secs(3), 0).unwrap();
        log.close().unwrap();
        let l = lines(&dir.path().join("events.jsonl"));
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(l[0]["n"], 0);
        assert_eq!(l[1]["indicator"], "other.example");
        assert_eq!(l[2]["repeated"], 99);
        assert_eq!(l[2]["event"]["indicator"], "evil.example");
        assert_eq!(l[3]["n"], 500);
        let counted: u64 = 1 + l[2]["repeated"].as_u64().unwrap() + 1 + 1;
        assert_eq!(counted, 102, "every event is written or counted");
    }

    #[test]
    fn rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(config(dir.path(), 200)).unwrap();
        let t0 = Instant::now();
        for i in 0..40u32 {
            log.record(u64::from(i), &Ev { indicator: "x.example", n: i }, t0, 0).unwrap();
        }
        log.close().unwrap();
        let base = dir.path().join("events.jsonl");
        let r1 = dir.path().join("events.jsonl.1");
        let r2 = dir.path().join("events.jsonl.2");
        assert!(r1.exists() && r2.exists());
        assert!(!dir.path().join("events.jsonl.3").exists());
        for p in [&base, &r1, &r2] {
            assert!(std::fs::metadata(p).unwrap().len() <= 200);
        }
        // The newest events are in the current file, in order.
        let cur = lines(&base);
        assert_eq!(cur.last().unwrap()["n"], 39);
    }
}
