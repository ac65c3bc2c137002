//! The log spool: every line the event log writes (Active threat response and
//! heartbeat logs) is numbered and kept on disk until Central acknowledges
//! it, so logs survive Central outages and gateway restarts.
//!
//! `spool.jsonl` in the state directory holds `{"seq":N,"record":LINE}` per
//! event, appended; `spool.acked` holds the highest sequence number Central
//! acknowledged (written to a temp file, then renamed). Sequence numbers are
//! never reused, so a batch resent after a lost answer is recognised by
//! Central. The spool is bounded: past `max_events` waiting, new events are
//! dropped and counted (never the old ones: they are the record of what
//! happened first). It must never block the caller on the network.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// One spooled event: its sequence number and its `{"seq":..,"record":..}` line.
#[derive(Debug, Clone)]
struct Spooled {
    seq: u64,
    line: String,
}

/// The spool.
#[derive(Debug)]
pub struct LogSpool {
    path: PathBuf,
    acked_path: PathBuf,
    out: BufWriter<File>,
    pending: VecDeque<Spooled>,
    /// Lines in the file that are already acknowledged.
    stale_lines: usize,
    next_seq: u64,
    acked: u64,
    max_events: usize,
    /// Events dropped because the spool was full.
    pub dropped: u64,
    /// Events acknowledged by Central since start.
    pub uploaded: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("log spool {}: {e}", path.display())
}

impl LogSpool {
    /// Opens the spool in `dir`, taking back what an earlier run left unsent.
    pub fn open(dir: &Path, max_events: usize) -> Result<Self, String> {
        let path = dir.join("spool.jsonl");
        let acked_path = dir.join("spool.acked");
        let acked = match std::fs::read_to_string(&acked_path) {
            Ok(t) => t.trim().parse::<u64>().map_err(|_| {
                io_err(&acked_path, "is not a number: delete it (events already sent may then be sent again, and Central ignores them)")
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&acked_path, e)),
        };
        let mut pending = VecDeque::new();
        let mut stale_lines = 0;
        let mut next_seq = acked + 1;
        if let Ok(f) = File::open(&path) {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| io_err(&path, e))?;
                // A line cut short by a crash has no valid JSON: it was never sent, and is lost.
                let Some(seq) = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["seq"].as_u64()) else {
                    tracing::warn!("log spool {}: skipping a damaged line", path.display());
                    continue;
                };
                next_seq = next_seq.max(seq + 1);
                if seq > acked {
                    pending.push_back(Spooled { seq, line });
                } else {
                    stale_lines += 1;
                }
            }
        }
        let out = BufWriter::new(
            OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io_err(&path, e))?,
        );
        if !pending.is_empty() {
            tracing::info!("log spool: {} event(s) from an earlier run still to send to Central", pending.len());
        }
        Ok(Self { path, acked_path, out, pending, stale_lines, next_seq, acked, max_events, dropped: 0, uploaded: 0 })
    }

    /// Spools one log line (a JSON object).
    pub fn push(&mut self, record: &str) {
        if self.pending.len() >= self.max_events {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                tracing::warn!(
                    "log spool full ({} events waiting for Central): {} event(s) dropped so far; raise [central] spool_max_events",
                    self.pending.len(),
                    self.dropped
                );
            }
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let line = format!("{{\"seq\":{seq},\"record\":{record}}}");
        if let Err(e) = writeln!(self.out, "{line}") {
            tracing::warn!("{}", io_err(&self.path, e));
        }
        self.pending.push_back(Spooled { seq, line });
    }

    /// Writes buffered lines to the file.
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::warn!("{}", io_err(&self.path, e));
        }
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next batch (at most `max` events): its last sequence number and
    /// the `POST /v1/logs` body.
    pub fn batch(&self, max: usize) -> Option<(u64, Vec<u8>)> {
        let first = self.pending.front()?.seq;
        let n = self.pending.len().min(max);
        let last = self.pending[n - 1].seq;
        let mut body = format!("{{\"batch_id\":\"{first}-{last}\",\"events\":[").into_bytes();
        for (i, s) in self.pending.iter().take(n).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(s.line.as_bytes());
        }
        body.extend_from_slice(b"]}");
        Some((last, body))
    }

    /// Central has every event up to `seq`.
    pub fn ack(&mut self, seq: u64) -> Result<(), String> {
        while self.pending.front().is_some_and(|s| s.seq <= seq) {
            self.pending.pop_front();
            self.stale_lines += 1;
            self.uploaded += 1;
        }
        self.acked = self.acked.max(seq);
        let tmp = self.acked_path.with_extension("acked.tmp");
        std::fs::write(&tmp, format!("{}\n", self.acked)).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &self.acked_path).map_err(|e| io_err(&self.acked_path, e))?;
        // Keep the file from growing without bound: rewrite it with only
        // what waits once the acknowledged part dominates.
        if self.stale_lines > 4096 && self.stale_lines > self.pending.len() {
            self.compact()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> Result<(), String> {
        self.flush();
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut w = BufWriter::new(File::create(&tmp).map_err(|e| io_err(&tmp, e))?);
            for s in &self.pending {
                writeln!(w, "{}", s.line).map_err(|e| io_err(&tmp, e))?;
            }
            w.flush().map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, e))?;
        self.out = BufWriter::new(OpenOptions::new().append(true).open(&self.path).map_err(|e| io_err(&self.path, e))?);
        self.stale_lines = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(body: &[u8]) -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    }

    #[test]
    fn survives_restart_numbers_never_repeat_and_the_bound_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LogSpool::open(dir.path(), 3).unwrap();
        for i in 0..5 {
            s.push(&format!("{{\"n\":{i}}}"));
        }
        assert_eq!((s.len(), s.dropped), (3, 2));
        let (last, body) = s.batch(2).unwrap();
        assert_eq!((last, seqs(&body)), (2, vec![1, 2]));
        assert!(std::str::from_utf8(&body).unwrap().contains("\"batch_id\":\"1-2\""));
        s.flush();
        s.ack(2).unwrap();
        drop(s);

        let mut s = LogSpool::open(dir.path(), 3).unwrap();
        assert_eq!(s.len(), 1, "event 3 is still to send");
        s.push("{\"n\":9}");
        let (last, body) = s.batch(10).unwrap();
        assert_eq!((last, seqs(&body)), (4, vec![3, 4]));
        s.ack(4).unwrap();
        assert!(s.is_empty() && s.batch(10).is_none());
        s.push("{\"n\":10}");
        s.flush();
        drop(s);
        std::fs::write(dir.path().join("spool.jsonl"), {
            let mut t = std::fs::read_to_string(dir.path().join("spool.jsonl")).unwrap();
            t.push_str("{\"seq\":6,\"rec");
            t
        })
        .unwrap();
        let s = LogSpool::open(dir.path(), 3).unwrap();
        assert_eq!(seqs(&s.batch(10).unwrap().1), vec![5], "a damaged last line is skipped");
    }
}
