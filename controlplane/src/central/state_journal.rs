//! The append-only journal of the last-known-good state: every sync answer
//! the gateway applied after the state file was written, as received.
//!
//! Rewriting the whole state (a million indicators: ~60 MB of JSON, a
//! second or more of CPU) after each update took the control plane's one
//! spare core from the updates themselves. Instead each applied answer is
//! appended here (a 100,000-indicator batch: ~3 MB, milliseconds) and
//! synced; the state file is rewritten only when the journal has grown
//! past it, and then the records it covers are dropped.
//!
//! A record: `HBJ1`, the revision it starts from and the one it brings the
//! state to (u64 LE each), the body's length (u64 LE), its SHA-256, then
//! the body. A crash can leave a torn last record: it is ignored (Central
//! sends it again, the gateway asks from the revision it holds). A record
//! that fails its checksum with more records after it is corruption: the
//! gateway refuses to start rather than enforce half a history.
//!
//! It owns the journal file only; it must never be written by anyone but
//! the client's persist thread, nor be read except at start and by the
//! fold of the journal into the state file ([`read_records`], which never
//! repairs: the persist thread may be appending meanwhile).

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The journal file in the state directory.
pub const JOURNAL_FILE: &str = "central-state.journal";
const MAGIC: &[u8; 4] = b"HBJ1";
const HEADER: usize = 4 + 8 + 8 + 8 + 32;

/// One applied sync answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// The revision the answer was asked from.
    pub since: u64,
    /// The revision it brought the state to.
    pub to: u64,
    /// The answer's body, as received.
    pub body: bytes::Bytes,
}

/// The journal file of a state directory, open for appending.
#[derive(Debug)]
pub struct StateJournal {
    path: PathBuf,
    file: Option<std::fs::File>,
    bytes: u64,
}

fn encode(r: &JournalRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&r.since.to_le_bytes());
    out.extend_from_slice(&r.to.to_le_bytes());
    out.extend_from_slice(&(r.body.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&r.body));
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Reads the records of `bytes`; a torn or unverifiable last record ends
/// the list. `Err` names the offset of a bad record that is not the last.
fn decode(bytes: &[u8]) -> Result<(Vec<JournalRecord>, usize), String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < HEADER {
            break; // torn: the header was not all written
        }
        if &rest[..4] != MAGIC {
            return Err(format!("no record at byte {at}"));
        }
        let (since, to, len) = (u64_at(rest, 4), u64_at(rest, 12), u64_at(rest, 20));
        let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(HEADER)).filter(|&e| e <= rest.len())
        else {
            break; // torn: the body was not all written
        };
        let body = &rest[HEADER..end];
        if Sha256::digest(body).as_slice() != &rest[28..60] || to <= since {
            if end == rest.len() {
                break; // the last record, torn by a crash
            }
            return Err(format!("record at byte {at} fails its checksum"));
        }
        out.push(JournalRecord { since, to, body: bytes::Bytes::copy_from_slice(body) });
        at += end;
    }
    Ok((out, at))
}

/// The records of the journal of state directory `dir`, read only: a torn
/// last record (one being appended while this reads) is left out.
pub fn read_records(dir: &Path) -> Result<Vec<JournalRecord>, String> {
    let path = dir.join(JOURNAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}: fix its permissions", path.display())),
    };
    decode(&bytes).map(|(records, _)| records).map_err(|why| format!("the state journal {} is corrupt ({why})", path.display()))
}

impl StateJournal {
    /// The journal of state directory `dir`, with what it holds (torn tail
    /// dropped). Creates nothing until the first append.
    pub fn open(dir: &Path) -> Result<(Self, Vec<JournalRecord>), String> {
        let path = dir.join(JOURNAL_FILE);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read {}: {e}: fix its permissions", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}: fix its permissions", path.display())),
        }
        let (records, good) = decode(&bytes).map_err(|why| {
            format!(
                "the last-known-good state journal {} is corrupt ({why}): restore the state directory from a backup, or delete both central-state files to resync from Central",
                path.display()
            )
        })?;
        let mut j = StateJournal { path, file: None, bytes: good as u64 };
        if good < bytes.len() {
            tracing::warn!("{}: a torn last record ({} bytes) dropped", j.path.display(), bytes.len() - good);
            j.rewrite(&records).map_err(|e| format!("cannot repair {}: {e}", j.path.display()))?;
        }
        Ok((j, records))
    }

    /// Bytes in the journal.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Appends `r` and syncs it to disk.
    pub fn append(&mut self, r: &JournalRecord) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        let mut head = Vec::with_capacity(HEADER);
        encode(r, &mut head);
        let r_len = r.body.len();
        let r = f.write_all(&head).and_then(|()| f.write_all(&r.body)).and_then(|()| f.sync_data());
        if r.is_err() {
            // A partial record may be on disk: reopen, and rewrite what is
            // known good before the next append.
            self.file = None;
            if let Ok((_, recs)) = Self::open(self.path.parent().unwrap_or(Path::new("."))) {
                let _ = self.rewrite(&recs);
            }
        } else {
            self.bytes += (HEADER + r_len) as u64;
        }
        r
    }

    /// Keeps only the records past revision `revision` (the state file now
    /// holds the rest); written aside and renamed.
    pub fn drop_through(&mut self, revision: u64) -> std::io::Result<()> {
        let (_, recs) = Self::open(self.path.parent().unwrap_or(Path::new("."))).map_err(std::io::Error::other)?;
        let keep: Vec<JournalRecord> = recs.into_iter().filter(|r| r.to > revision).collect();
        self.rewrite(&keep)
    }

    fn rewrite(&mut self, records: &[JournalRecord]) -> std::io::Result<()> {
        self.file = None;
        if records.is_empty() {
            match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.bytes = 0;
            return Ok(());
        }
        let mut out = Vec::new();
        for r in records {
            encode(r, &mut out);
            out.extend_from_slice(&r.body);
        }
        super::client::write_atomic(&self.path, &out, false)?;
        self.bytes = out.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(since: u64, to: u64, body: &str) -> JournalRecord {
        JournalRecord { since, to, body: bytes::Bytes::copy_from_slice(body.as_bytes()) }
    }

    #[test]
    fn records_come_back_in_order_after_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, none) = StateJournal::open(d.path()).unwrap();
        assert!(none.is_empty() && j.is_empty());
        assert!(!d.path().join(JOURNAL_FILE).exists(), "nothing is created before the first append");
        let recs = [rec(3, 4, "{\"a\":1}"), rec(4, 6, "{\"b\":2}"), rec(6, 7, "")];
        for r in &recs {
            j.append(r).unwrap();
        }
        assert_eq!(j.len(), std::fs::metadata(d.path().join(JOURNAL_FILE)).unwrap().len());
        let (j2, back) = StateJournal::open(d.path()).unwrap();
        assert_eq!(back, recs);
        assert_eq!(j2.len(), j.len());
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_file_repaired() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _) = StateJournal::open(d.path()).unwrap();
        j.append(&rec(0, 1, "first")).unwrap();
        let good = j.len();
        j.append(&rec(1, 2, "second, torn by a crash")).unwrap();
        let path = d.path().join(JOURNAL_FILE);
        for cut in [good + 3, good + HEADER as u64 + 4, j.len() - 1] {
            let bytes = std::fs::read(&path).unwrap();
            let mut torn = bytes.clone();
            torn.truncate(cut as usize);
            std::fs::write(&path, &torn).unwrap();
            let (j2, back) = StateJournal::open(d.path()).unwrap();
            assert_eq!(back, vec![rec(0, 1, "first")], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), good, "repaired to the good records");
            assert_eq!(j2.len(), good);
            std::fs::write(&path, &bytes).unwrap();
        }
        // A last record whose body was not all synced (garbage of the right length).
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(StateJournal::open(d.path()).unwrap().1, vec![rec(0, 1, "first")]);
    }

    #[test]
    fn a_bad_record_before_good_ones_is_corruption() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _) = StateJournal::open(d.path()).unwrap();
        j.append(&rec(0, 1, "first")).unwrap();
        j.append(&rec(1, 2, "second")).unwrap();
        let path = d.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 1] ^= 0xff; // the first body
        std::fs::write(&path, &bytes).unwrap();
        let e = StateJournal::open(d.path()).unwrap_err();
        assert!(e.contains("corrupt") && e.contains("checksum") && e.contains("resync from Central"), "{e}");
        std::fs::write(&path, b"not a journal at all, and long enough to hold a header of sixty bytes").unwrap();
        assert!(StateJournal::open(d.path()).unwrap_err().contains("no record at byte 0"));
    }

    #[test]
    fn drop_through_keeps_only_later_records() {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _) = StateJournal::open(d.path()).unwrap();
        for (a, b) in [(0, 1), (1, 3), (3, 4)] {
            j.append(&rec(a, b, &format!("{a}-{b}"))).unwrap();
        }
        j.drop_through(3).unwrap();
        assert_eq!(StateJournal::open(d.path()).unwrap().1, vec![rec(3, 4, "3-4")]);
        j.append(&rec(4, 5, "4-5")).unwrap();
        assert_eq!(StateJournal::open(d.path()).unwrap().1, vec![rec(3, 4, "3-4"), rec(4, 5, "4-5")]);
        j.drop_through(5).unwrap();
        assert!(!d.path().join(JOURNAL_FILE).exists());
        assert!(j.is_empty());
    }
}
