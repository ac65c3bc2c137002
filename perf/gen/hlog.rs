//! Latency histograms to and from HdrHistogram interval logs (`.hlog`): one
//! tagged interval per trial (`load10`, `load50`, `load90`, ...), readable by
//! HdrHistogram's own tools (Java HistogramLogProcessor, Python `hdrh`).

use base64::Engine as _;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One tagged histogram.
pub struct Tagged {
    /// Tag (letters, digits, `-`, `_`).
    pub tag: String,
    /// Seconds into the run when the trial began.
    pub start: Duration,
    /// The trial's length.
    pub length: Duration,
    /// Samples in nanoseconds.
    pub histogram: Histogram<u64>,
}

/// Writes `entries` as an interval log at `path`.
pub fn write(path: &Path, comment: &str, entries: &[Tagged]) -> Result<(), String> {
    let err = |e: String| format!("cannot write histogram log {}: {e}: check the --hlog path", path.display());
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let now = SystemTime::now();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(comment)
            .with_start_time(now)
            .with_base_time(now)
            .with_max_value_divisor(1.0)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(|e| err(format!("{e:?}")))?;
        for e in entries {
            let tag = Tag::new(&e.tag).ok_or_else(|| err(format!("tag `{}` has a character a log cannot hold", e.tag)))?;
            w.write_histogram(&e.histogram, e.start, e.length, Some(tag)).map_err(|e| err(format!("{e:?}")))?;
        }
    }
    std::fs::write(path, out).map_err(|e| err(e.to_string()))
}

/// Reads every interval of a log: (tag, histogram).
pub fn read(path: &Path) -> Result<Vec<(String, Histogram<u64>)>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |why: String| format!("{} is not a readable HdrHistogram log ({why}): give a .hlog written by hbgw-gen or hbgw --hlog", path.display());
    let mut out = Vec::new();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&text) {
        match entry.map_err(|e| bad(format!("{e:?}")))? {
            LogEntry::Interval(i) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(i.encoded_histogram()).map_err(|e| bad(e.to_string()))?;
                let h: Histogram<u64> = de.deserialize(&mut std::io::Cursor::new(bytes)).map_err(|e| bad(format!("{e:?}")))?;
                let tag = i.tag().map(|t| t.as_str().to_owned()).unwrap_or_else(|| format!("interval{}", out.len() + 1));
                out.push((tag, h));
            }
            _ => continue,
        }
    }
    if out.is_empty() {
        return Err(bad("no intervals".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_intervals_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hlog");
        let mut entries = Vec::new();
        for (k, tag) in ["load10", "load50"].iter().enumerate() {
            let mut h = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
            for v in 1..=1000u64 {
                h.record(v * (k as u64 + 1)).unwrap();
            }
            entries.push(Tagged { tag: tag.to_string(), start: Duration::from_secs(k as u64), length: Duration::from_secs(1), histogram: h });
        }
        write(&path, "test", &entries).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].0, "load50");
        assert_eq!(back[1].1.len(), 1000);
        assert!(back[1].1.equivalent(back[1].1.max(), 2000));
    }

    #[test]
    fn garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hlog");
        std::fs::write(&path, "not a log\n").unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.contains("not a readable HdrHistogram log") && !e.contains('\n'), "{e}");
    }
}
