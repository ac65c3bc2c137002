//! Sending at a set rate: how many frames are due at a given TSC reading.
//! Frames not sent when due (the loop was late) are sent in the next bursts,
//! at most one burst at a time, so a late loop never produces a long
//! line-rate spike; what it cannot catch up shows as an offered rate below the
//! target, which the trial reports (tester-limited).

/// Frames due since `start`, at `rate` frames per second.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    start: u64,
    /// Frames per TSC cycle (`None`: as fast as possible).
    per_cycle: Option<f64>,
    /// Frames handed out so far.
    issued: u64,
}

impl Pacer {
    /// Starts pacing at `start` (a TSC reading) with `rate_pps` (`None`: unlimited).
    pub fn new(start: u64, tsc_hz: u64, rate_pps: Option<f64>) -> Self {
        Pacer { start, per_cycle: rate_pps.map(|r| r / tsc_hz.max(1) as f64), issued: 0 }
    }

    /// How many frames to send now, at most `burst`; counts them as issued.
    #[inline]
    pub fn due(&mut self, now: u64, burst: usize) -> usize {
        let n = match self.per_cycle {
            None => burst,
            Some(pc) => {
                let owed = (now.saturating_sub(self.start) as f64 * pc) as u64;
                (owed.saturating_sub(self.issued) as usize).min(burst)
            }
        };
        self.issued += n as u64;
        n
    }

    /// Frames handed out so far.
    #[cfg(test)]
    pub fn issued(&self) -> u64 {
        self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_rate() {
        // 1 GHz clock, 1 Mpps: one frame per 1000 cycles.
        let mut p = Pacer::new(0, 1_000_000_000, Some(1e6));
        assert_eq!(p.due(0, 32), 0);
        assert_eq!(p.due(999, 32), 0);
        assert_eq!(p.due(1000, 32), 1);
        assert_eq!(p.due(10_000, 32), 9);
        // A late loop catches up one burst at a time.
        assert_eq!(p.due(1_000_000, 32), 32);
        assert_eq!(p.due(1_000_000, 32), 32);
        assert_eq!(p.issued(), 74);
    }

    #[test]
    fn unlimited_sends_full_bursts() {
        let mut p = Pacer::new(0, 1, None);
        assert_eq!(p.due(0, 32), 32);
        assert_eq!(p.due(0, 32), 32);
    }
}
