//! The HdrHistogram interval log (`--hlog FILE`): one compressed histogram per
//! stats interval, in the text format of HdrHistogram's `HistogramLogWriter`,
//! which the standard tools (Java `HistogramLogProcessor`, HdrHistogram's
//! Python `hdrh`, the Rust crate's `IntervalLogIterator`) read.
//!
//! Values are nanoseconds. The Java processor divides by 1e6 by default (it
//! assumes ns and prints ms); pass `-outputValueUnitRatio 1000` for µs.

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One completed interval of merged latency samples.
#[derive(Debug, Clone)]
pub struct IntervalHistogram {
    /// Seconds since the log's start time when the interval began.
    pub start: Duration,
    /// The interval's length.
    pub length: Duration,
    /// The samples (ns).
    pub histogram: Histogram<u64>,
}

/// An open interval log.
pub struct HlogFile {
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl HlogFile {
    /// Creates the file and writes the log header, with the start time now.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut serializer = V2DeflateSerializer::new();
        let now = SystemTime::now();
        // The builder writes the header; entries are written below with the
        // same format, one `IntervalLogWriter` per entry (it holds borrows).
        IntervalLogWriterBuilder::new()
            .add_comment("hbgw worker processing latency, nanoseconds (all workers merged)")
            .with_start_time(now)
            .with_base_time(now)
            .with_max_value_divisor(1.0)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        // Java's HistogramLogWriter writes this legend after the header; its
        // reader and the others skip it.
        writeln!(out, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")?;
        out.flush()?;
        Ok(Self { out, serializer })
    }

    /// Appends one interval.
    pub fn write_interval(&mut self, interval: &IntervalHistogram) -> std::io::Result<()> {
        // An entry-only writer: the header was written at creation; a builder
        // with no comments, start or base time writes no header lines, and the
        // filter below keeps it that way should the crate ever add some.
        let mut buf = Vec::new();
        {
            let mut w = IntervalLogWriterBuilder::new()
                .with_max_value_divisor(1.0)
                .begin_log_with(&mut buf, &mut self.serializer)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
            w.write_histogram(&interval.histogram, interval.start, interval.length, None::<Tag>)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        let text = String::from_utf8(buf).map_err(std::io::Error::other)?;
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with('"')) {
            writeln!(self.out, "{line}")?;
        }
        self.out.flush()
    }

    /// Flushes buffered lines to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn log_reads_back_with_the_reference_parser() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.hlog");
        let mut log = HlogFile::create(&path).unwrap();
        for i in 0..3u64 {
            let mut h = crate::stats::new_histogram();
            h.record_n(100 + i, 10).unwrap();
            h.record(5_000).unwrap();
            log.write_interval(&IntervalHistogram {
                start: Duration::from_secs(i),
                length: Duration::from_secs(1),
                histogram: h,
            })
            .unwrap();
        }
        drop(log);
        let text = std::fs::read(&path).unwrap();
        let mut intervals = 0;
        let mut saw_start = false;
        let mut deser = Deserializer::new();
        for entry in IntervalLogIterator::new(&text) {
            match entry.unwrap() {
                LogEntry::StartTime(_) => saw_start = true,
                LogEntry::BaseTime(_) => {}
                LogEntry::Interval(iv) => {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(iv.encoded_histogram()).unwrap();
                    let h: Histogram<u64> = deser.deserialize(&mut bytes.as_slice()).unwrap();
                    assert_eq!(h.len(), 11);
                    assert_eq!(h.max(), h.highest_equivalent(5_000));
                    assert_eq!(iv.start_timestamp(), Duration::from_secs(intervals));
                    intervals += 1;
                }
            }
        }
        assert!(saw_start);
        assert_eq!(intervals, 3);
        let legend_lines = String::from_utf8(text).unwrap().lines().filter(|l| l.starts_with('"')).count();
        assert_eq!(legend_lines, 1, "the legend appears once");
    }
}
