//! RFC 2544 throughput search: the highest offered rate at which the device
//! under test loses no more than the tolerated fraction of frames, found by
//! binary search between zero and the starting (line or configured) rate,
//! one trial per step. Pure: a trial is a closure, so the search is tested
//! against modelled devices.

/// What one trial at a rate showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialOutcome {
    /// Frames offered per second (what the tester achieved).
    pub offered_pps: f64,
    /// Fraction of frames expected back that did not come back.
    pub loss: f64,
    /// The tester could not offer the asked rate (its own limit, not the DUT's).
    pub tester_limited: bool,
}

/// The search's settings.
#[derive(Debug, Clone, Copy)]
pub struct SearchSpec {
    /// The rate tried first, and the search's upper bound (pps).
    pub max_pps: f64,
    /// Stop when the bracket is narrower than this fraction of `max_pps`.
    pub resolution: f64,
    /// Loss fraction still counted as a pass (0 for RFC 2544 NDR).
    pub loss_tolerance: f64,
}

/// The search's result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// The highest rate that passed (0 when none did).
    pub rate_pps: f64,
    /// Every trial, in order: (asked rate, outcome).
    pub trials: Vec<(f64, TrialOutcome)>,
    /// Whether the tester's own limit bounded the search (the result is then
    /// a lower bound of what the DUT can do).
    pub tester_limited: bool,
}

fn passes(o: &TrialOutcome, spec: &SearchSpec) -> bool {
    !o.tester_limited && o.loss <= spec.loss_tolerance
}

/// Runs the search; `trial(rate)` runs one trial at `rate` pps.
///
/// A trial the tester could not run at the asked rate fails, and lowers the
/// upper bound to what the tester did offer. The result is marked
/// tester-limited when no trial above it failed because of the DUT.
pub fn throughput(spec: &SearchSpec, mut trial: impl FnMut(f64) -> TrialOutcome) -> SearchResult {
    let mut trials = Vec::new();
    let mut dut_failed = false;
    let (mut lo, mut hi) = (0.0f64, spec.max_pps);
    let mut rate = spec.max_pps;
    let step = (spec.max_pps * spec.resolution).max(1.0);
    loop {
        let o = trial(rate);
        trials.push((rate, o));
        if passes(&o, spec) {
            lo = rate;
            if rate >= hi {
                break;
            }
        } else if o.tester_limited {
            // Search below what the tester managed; try that rate next.
            hi = rate.min(o.offered_pps * 0.999);
            if hi - lo > step {
                rate = hi;
                continue;
            }
        } else {
            dut_failed = true;
            hi = rate;
        }
        if hi - lo <= step {
            break;
        }
        rate = (lo + hi) / 2.0;
    }
    SearchResult { rate_pps: lo, trials, tester_limited: !dut_failed && lo < spec.max_pps }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DUT that forwards up to `cap` pps and drops the excess; a tester
    /// that can offer up to `tester` pps.
    fn model(cap: f64, tester: f64) -> impl FnMut(f64) -> TrialOutcome {
        move |rate| {
            let offered = rate.min(tester);
            TrialOutcome {
                offered_pps: offered,
                loss: if offered > cap { (offered - cap) / offered } else { 0.0 },
                tester_limited: offered < rate * 0.99,
            }
        }
    }

    fn spec(max: f64) -> SearchSpec {
        SearchSpec { max_pps: max, resolution: 0.005, loss_tolerance: 0.0 }
    }

    #[test]
    fn finds_the_capacity_within_the_resolution() {
        let r = throughput(&spec(14.88e6), model(6.3e6, 1e9));
        assert!(r.rate_pps <= 6.3e6 && r.rate_pps > 6.3e6 - 14.88e6 * 0.005, "{}", r.rate_pps);
        assert!(!r.tester_limited);
        assert!(r.trials.len() <= 10, "{} trials", r.trials.len());
    }

    #[test]
    fn line_rate_passes_at_once() {
        let r = throughput(&spec(1e6), model(2e6, 1e9));
        assert_eq!((r.rate_pps, r.trials.len()), (1e6, 1));
    }

    #[test]
    fn a_slow_tester_bounds_the_result_and_says_so() {
        let r = throughput(&spec(20e6), model(30e6, 8e6));
        assert!(r.tester_limited);
        assert!(r.rate_pps <= 8e6 && r.rate_pps > 7.9e6, "{}", r.rate_pps);
        // A DUT slower than the tester is not tester-limited, even if the
        // first trial was.
        let r = throughput(&spec(20e6), model(5e6, 8e6));
        assert!(!r.tester_limited);
        assert!(r.rate_pps <= 5e6 && r.rate_pps > 4.8e6, "{}", r.rate_pps);
    }

    #[test]
    fn a_device_that_loses_everything_gives_zero() {
        let r = throughput(&spec(1e6), |rate| TrialOutcome { offered_pps: rate, loss: 1.0, tester_limited: false });
        assert_eq!(r.rate_pps, 0.0);
    }

    #[test]
    fn tolerated_loss_passes() {
        let s = SearchSpec { loss_tolerance: 0.01, ..spec(10e6) };
        // Loses 0.5% everywhere: a PDR search with 1% tolerance takes line rate.
        let r = throughput(&s, |rate| TrialOutcome { offered_pps: rate, loss: 0.005, tester_limited: false });
        assert_eq!(r.rate_pps, 10e6);
    }
}
