//! One trial on DPDK ports: send the template cycle at a rate for a while on
//! the tx port, receive on the rx port, then stop sending and drain. The
//! loop runs on the calling (main) lcore; sending and receiving share it.
//!
//! Loss is counted over the frames the device under test is expected to send
//! back: calibration ([`Generator::calibrate`]) learns which templates a
//! policy drops on purpose (an indicator, a red endpoint), and those are
//! neither expected nor counted as lost. Frames the tx port refuses (its
//! ring is full because the DUT does not keep up) count as lost: they were
//! offered and not carried.

use crate::measure::Receiver;
use crate::pacer::Pacer;
use crate::stamp;
use hbgw::dpdk::mbuf::{DpdkIo, Mbuf};
use hbgw::dpdk::mempool::Mempool;
use hbgw::dpdk::port::{Port, PortSetup};
use hbgw::dpdk::{rdtsc, tsc_hz};
use hbgw_dataplane::io::PacketIo;
use std::time::{Duration, Instant};

const MAX_BURST: usize = 64;

/// The generator's ports, pool and frames.
pub struct Generator {
    io: DpdkIo,
    pool: Mempool,
    tx: Port,
    rx: Port,
    templates: Vec<Vec<u8>>,
    /// Per template: whether the DUT sends it back (calibration).
    forwarded: Vec<bool>,
    next_seq: u64,
    tsc_hz: u64,
    burst: usize,
}

/// How one trial runs.
#[derive(Debug, Clone, Copy)]
pub struct TrialSettings {
    /// Frames per second (`None`: as fast as the ports take them).
    pub rate_pps: Option<f64>,
    /// How long to send.
    pub duration: Duration,
    /// How long to keep receiving after the last frame was sent.
    pub drain: Duration,
}

/// What a trial counted.
#[derive(Debug)]
pub struct TrialReport {
    /// The rate asked.
    pub asked_pps: Option<f64>,
    /// Seconds spent sending.
    pub secs: f64,
    /// Frames offered (sent or refused by the tx port).
    pub offered: u64,
    /// Frames the tx port took.
    pub sent: u64,
    /// Frames the tx port refused (ring full).
    pub refused: u64,
    /// Frames not even offered because the pool was empty.
    pub alloc_failed: u64,
    /// Offered frames the DUT is expected to send back.
    pub expected: u64,
    /// Frames that came back on the tx port (e.g. a reject's RST).
    pub returned: u64,
    /// Receive-side accounting.
    pub rx: Receiver,
}

impl TrialReport {
    /// Offered frames per second.
    pub fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.secs.max(1e-9)
    }

    /// Frames received per second of sending.
    pub fn received_pps(&self) -> f64 {
        self.rx.received as f64 / self.secs.max(1e-9)
    }

    /// Expected frames that did not come back.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.rx.received - self.rx.unexpected)
    }

    /// [`Self::lost`] as a fraction of the expected frames.
    pub fn loss(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        self.lost() as f64 / self.expected as f64
    }

    /// The tester did not manage to offer the asked rate (within 1%).
    pub fn tester_limited(&self) -> bool {
        self.asked_pps.is_some_and(|r| self.offered_pps() < r * 0.99) || self.alloc_failed > 0
    }
}

impl Generator {
    /// Sets up `tx` and `rx` (one queue each), starts them and waits up to
    /// `link_timeout` for both links.
    pub fn new(tx: Port, rx: Port, templates: Vec<Vec<u8>>, burst: usize, link_timeout: Duration) -> Result<Self, String> {
        if tx == rx {
            return Err(format!("--tx-port and --rx-port are both {}: name two ports", tx.name));
        }
        let pool = Mempool::new("hbgw_gen_pool", 16383, 256)?;
        let setup = PortSetup { rx_queues: 1, tx_queues: 1, rx_descriptors: 1024, tx_descriptors: 1024 };
        for (k, p) in [&tx, &rx].into_iter().enumerate() {
            p.setup(setup, &pool)?;
            if let Err(e) = p.start() {
                if k == 1 {
                    tx.stop_and_close();
                }
                // A memif client cannot start without its server's socket.
                return Err(if p.driver() == "net_memif" {
                    format!("{e}: is the device under test running, with the net_memif server on the same socket?")
                } else {
                    e
                });
            }
        }
        let deadline = Instant::now() + link_timeout;
        for p in [&tx, &rx] {
            loop {
                if p.link()?.up {
                    break;
                }
                if Instant::now() >= deadline {
                    for q in [&tx, &rx] {
                        q.stop_and_close();
                    }
                    return Err(format!(
                        "port {} has no link after {:.0} s: is the device under test running (for net_memif: its server side on the same socket)?",
                        p.name,
                        link_timeout.as_secs_f64()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let n = templates.len();
        Ok(Generator {
            io: DpdkIo::new(),
            pool,
            tx,
            rx,
            templates,
            forwarded: vec![true; n],
            next_seq: 0,
            tsc_hz: tsc_hz().max(1),
            burst: burst.clamp(1, MAX_BURST),
        })
    }

    /// The TSC frequency.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// The frames' templates.
    pub fn templates(&self) -> &[Vec<u8>] {
        &self.templates
    }

    /// The links' stated speed (the lower of the two), if any.
    pub fn link_speed_mbps(&self) -> Option<u32> {
        let a = self.tx.link().ok()?.speed_mbps?;
        let b = self.rx.link().ok()?.speed_mbps?;
        Some(a.min(b))
    }

    /// Sends every template `rounds` times at `rate_pps` and records which
    /// ones the DUT sends back; returns how many templates it drops on
    /// purpose. An error when it sends back none at all.
    pub fn calibrate(&mut self, rate_pps: f64, rounds: usize) -> Result<usize, String> {
        self.forwarded.iter_mut().for_each(|f| *f = true);
        let n = self.templates.len();
        let secs = (n * rounds) as f64 / rate_pps;
        let mut seen = vec![0u32; n];
        let report = self.run_inner(
            TrialSettings { rate_pps: Some(rate_pps), duration: Duration::from_secs_f64(secs), drain: Duration::from_millis(200) },
            Some(&mut seen),
        );
        if report.rx.received == 0 {
            return Err(format!(
                "calibration: the device under test sent back none of {} frames at {:.0} pps: check that it forwards between {} and {}",
                report.sent, rate_pps, self.tx.name, self.rx.name
            ));
        }
        self.forwarded = seen.iter().map(|&c| c > 0).collect();
        Ok(self.forwarded.iter().filter(|f| !**f).count())
    }

    /// Runs one trial.
    pub fn run(&mut self, settings: TrialSettings) -> TrialReport {
        self.run_inner(settings, None)
    }

    fn run_inner(&mut self, settings: TrialSettings, mut per_template: Option<&mut Vec<u32>>) -> TrialReport {
        let hz = self.tsc_hz;
        let t = self.templates.len() as u64;
        let first_seq = self.next_seq;
        let mut rx = Receiver::new(first_seq, self.templates.len(), hz);
        let (mut offered, mut sent, mut refused, mut alloc_failed, mut expected, mut returned) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let mut txb = [Mbuf::default(); MAX_BURST];
        let mut rxb = [Mbuf::default(); MAX_BURST];
        let start = rdtsc();
        let end = start + (settings.duration.as_secs_f64() * hz as f64) as u64;
        let drain_end = end + (settings.drain.as_secs_f64() * hz as f64) as u64;
        let mut pacer = Pacer::new(start, hz, settings.rate_pps);
        let mut now = start;
        let mut last_rx = start;
        loop {
            let sending = now < end;
            if sending {
                let due = pacer.due(now, self.burst);
                if due > 0 {
                    if self.io.alloc_bulk(&self.pool, &mut txb[..due]) {
                        for (i, m) in txb[..due].iter().enumerate() {
                            let seq = self.next_seq + i as u64;
                            let tpl = &self.templates[(seq % t) as usize];
                            let room = self.io.frame_room(m);
                            room[..tpl.len()].copy_from_slice(tpl);
                            stamp::write(&mut room[..tpl.len()], seq, now);
                            self.io.set_frame_len(m, tpl.len());
                        }
                        let n = self.io.tx_burst(self.tx.id, 0, &txb[..due]);
                        for i in 0..due {
                            if self.forwarded[((self.next_seq + i as u64) % t) as usize] {
                                expected += 1;
                            }
                        }
                        if n < due {
                            self.io.free(&txb[n..due]);
                        }
                        offered += due as u64;
                        sent += n as u64;
                        refused += (due - n) as u64;
                        // Only frames that left carry their sequence number.
                        self.next_seq += n as u64;
                    } else {
                        alloc_failed += due as u64;
                    }
                }
            }
            let k = self.io.rx_burst(self.rx.id, 0, &mut rxb);
            if k > 0 {
                let at = rdtsc();
                last_rx = at;
                for m in &rxb[..k] {
                    let s = stamp::read(self.io.frame(m));
                    if let (Some(counts), Some((seq, _))) = (per_template.as_deref_mut(), s) {
                        if seq >= first_seq {
                            counts[(seq % t) as usize] += 1;
                        }
                    }
                    rx.record(s, at, &self.forwarded);
                }
                self.io.free(&rxb[..k]);
            }
            let back = self.io.rx_burst(self.tx.id, 0, &mut rxb);
            if back > 0 {
                returned += back as u64;
                self.io.free(&rxb[..back]);
            }
            now = rdtsc();
            if !sending {
                // Draining: stop early once everything expected is back, or
                // nothing arrived for a tenth of the drain time.
                let quiet = now.saturating_sub(last_rx) > (drain_end - end) / 10;
                if now >= drain_end || rx.received >= sent || (quiet && now > end + (drain_end - end) / 10) {
                    break;
                }
            }
        }
        let secs = (end - start) as f64 / hz as f64;
        // Frames the tx port refused are lost for the expected-back count
        // only if their template is forwarded; `expected` counted them above.
        TrialReport { asked_pps: settings.rate_pps, secs, offered, sent, refused, alloc_failed, expected, returned, rx }
    }

    /// Stops and closes both ports (after a trial, never during one: a
    /// net_memif peer may crash if its partner leaves mid-traffic).
    pub fn close(self) {
        self.tx.stop_and_close();
        self.rx.stop_and_close();
    }
}
