//! One frame in, one verdict out: `parse` -> `enforce` -> verdict.
//!
//! A pipeline is either the plain **bridge** (no policy: every well-formed
//! frame crosses unchanged, and the payload is never read, so no-policy
//! forwarding pays no cache miss per packet) or **enforcing**: each frame is
//! looked up in the [`crate::flow_cache`] (the most common kind of frame
//! straight from its bytes, any other after it is parsed in place,
//! [`crate::parse`]): a frame whose flow was decided since the state last
//! changed takes that verdict once its application hint, if any, matched
//! no indicator (or the [`crate::hint_cache`] knows it matches none). Any other frame has its source MAC noted for the
//! missing-heartbeat timers ([`crate::seen_macs`]) and is decided by
//! [`crate::enforce`] against the state the control plane publishes. In tap
//! mode every verdict is computed, counted and logged, and nothing is dropped.

use crate::counters::{bump, WorkerCounters};
use crate::enforce::{EnforcementConfig, Enforcer, MalformedAction, PortContext};
use crate::events::{EventGate, EventSender};
use crate::flow_cache::{FlowCache, FlowCacheKey, Hit};
use crate::parse::{parse_frame, AppHint, Malformed};
use crate::seen_macs::{SeenMac, SeenMacs, SeenMacsFlusher};
use crate::verdict::{DropReason, Verdict};
use hbgw_shared::epoch::StateEpoch;
use hbgw_shared::state::WorkerView;
use std::sync::Arc;

/// Bytes in an Ethernet II header (dst MAC, src MAC, EtherType).
pub const ETHERNET_HEADER_LEN: usize = 14;

/// Everything an enforcing pipeline owns.
pub struct Enforcing {
    /// The decide stage.
    pub enforcer: Enforcer,
    /// Verdicts of recent flows (`None`: off).
    pub flows: Option<FlowCache>,
    /// The state's change counter, which validates `flows`.
    pub epoch: Arc<StateEpoch>,
    /// This worker's cached view of the published state.
    pub view: WorkerView,
    /// Role of each port slot and of its bridge peer.
    pub ports: Box<[PortContext]>,
    /// Where events go.
    pub events: EventSender,
    /// Folds identical events before they reach `events`.
    pub gate: EventGate,
    /// The current burst's TSC (set by [`Pipeline::begin_burst`]).
    pub now: u64,
    /// Source MACs seen since the last flush.
    pub seen: SeenMacs,
    /// Hands `seen` to the control plane.
    pub seen_flusher: SeenMacsFlusher,
    /// Counters for malformed and tap-mode figures.
    pub counters: Arc<WorkerCounters>,
}

enum Mode {
    Bridge,
    Enforce(Box<Enforcing>),
}

/// The per-worker pipeline. Each worker owns one.
pub struct Pipeline {
    mode: Mode,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.mode {
            Mode::Bridge => "Pipeline::Bridge",
            Mode::Enforce(_) => "Pipeline::Enforce",
        })
    }
}

impl Pipeline {
    /// A bridge pipeline with no policy.
    pub fn bridge() -> Self {
        Pipeline { mode: Mode::Bridge }
    }

    /// An enforcing pipeline.
    pub fn enforcing(parts: Enforcing) -> Self {
        Pipeline { mode: Mode::Enforce(Box::new(parts)) }
    }

    /// Decides what happens to `frame`, which arrived on port slot
    /// `ingress_slot`. Must not allocate, lock or log.
    ///
    /// The bridge case stays a length check inlined into the worker loop; the
    /// enforcing path is a call (measured: inlining it into the loop cost the
    /// plain bridge ~8% of its rate).
    #[inline(always)]
    pub fn verdict(&mut self, frame: &[u8], ingress_slot: usize) -> Verdict {
        match &mut self.mode {
            Mode::Bridge => {
                if frame.len() < ETHERNET_HEADER_LEN {
                    Verdict::Drop(DropReason::Runt)
                } else {
                    Verdict::Forward
                }
            }
            Mode::Enforce(ctx) => enforce(ctx, frame, ingress_slot),
        }
    }

    /// Where the flow cache keeps `frame`'s verdict, when that can be told
    /// from its bytes alone: the worker prefetches it for a whole burst
    /// before deciding the burst's frames ([`crate::io::PacketIo::prefetch`]).
    #[inline]
    pub fn prefetch_address(&self, frame: &[u8], ingress_slot: usize) -> Option<*const u8> {
        match &self.mode {
            Mode::Enforce(ctx) => ctx.flows.as_ref()?.set_address(frame, ingress_slot),
            Mode::Bridge => None,
        }
    }

    /// Whether this is the plain bridge (no policy), for the worker's fast path.
    #[inline(always)]
    pub fn is_bridge(&self) -> bool {
        matches!(self.mode, Mode::Bridge)
    }

    /// Stamps the burst about to be decided (the event gate's clock).
    #[inline]
    pub fn begin_burst(&mut self, now: u64) {
        if let Mode::Enforce(ctx) = &mut self.mode {
            ctx.now = now;
        }
    }

    /// Periodic work off the per-packet path: hands seen MACs to the control
    /// plane and publishes lost-event counts. Call every flush period.
    pub fn housekeeping(&mut self) {
        if let Mode::Enforce(ctx) = &mut self.mode {
            ctx.seen_flusher.flush(&mut ctx.seen);
            let misc = &ctx.counters.misc;
            misc.events_lost.store(ctx.events.lost, std::sync::atomic::Ordering::Relaxed);
            misc.events_folded_lost.store(ctx.gate.evicted, std::sync::atomic::Ordering::Relaxed);
            misc.seen_macs_overflow.store(ctx.seen.overflowed, std::sync::atomic::Ordering::Relaxed);
            if let Some(flows) = &mut ctx.flows {
                flows.end_period();
                misc.flow_cache_hits.store(flows.hits, std::sync::atomic::Ordering::Relaxed);
                misc.flow_cache_misses.store(flows.misses, std::sync::atomic::Ordering::Relaxed);
                misc.flow_cache_bypassed_periods.store(flows.bypassed_periods, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some((hits, misses)) = ctx.enforcer.hint_cache_counts() {
                misc.hint_cache_hits.store(hits, std::sync::atomic::Ordering::Relaxed);
                misc.hint_cache_misses.store(misses, std::sync::atomic::Ordering::Relaxed);
            }
            // Let go of state replaced since the last frame that needed it
            // (cache hits do not refresh the view).
            ctx.view.refresh();
        }
    }
}

#[inline(never)]
fn enforce(ctx: &mut Enforcing, frame: &[u8], ingress_slot: usize) -> Verdict {
    let config_tap = ctx.enforcer.config().tap_mode;
    // Read before any state: a verdict computed now is tagged with this
    // count, and any write during the computation makes the tag stale.
    let epoch = ctx.epoch.current();
    // The common frame (untagged IPv4 TCP/UDP whose lengths provably parse)
    // is looked up from its bytes: a hit needs no parse of its headers, only
    // of its application data, if it has any.
    let mut pending = None;
    let mut decide_in_full = false;
    if let Some(flows) = ctx.flows.as_mut().filter(|f| f.active()) {
        if let Some((key, l4)) = FlowCacheKey::of_raw_parts(frame, ingress_slot) {
            match flows.lookup(&key, epoch, ctx.seen.period()) {
                Ok(hit) => {
                    let app = l4.app_hint();
                    if reuse(ctx, &hit, app, epoch) {
                        let src_mac = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
                        return cached(ctx, hit, src_mac, ingress_slot, config_tap);
                    }
                    // The hint matched an indicator: decided (and logged) in full.
                    decide_in_full = true;
                }
                Err(miss) => pending = Some((key, miss)),
            }
        }
    }
    // Borrowed from the `Result` in place: moving the ~190-byte frame out of
    // it was a `memcpy` call per packet (measured, perf annotate).
    let parsed = parse_frame(frame);
    let pf = match &parsed {
        Ok(pf) => pf,
        &Err(m) => {
            let port = ctx.counters.port(ingress_slot);
            bump(&port.malformed[m.index()], 1);
            if m == Malformed::EthernetTruncated {
                return tap(ctx, config_tap, ingress_slot, DropReason::Runt);
            }
            return match ctx.enforcer.config().malformed {
                MalformedAction::Drop => tap(ctx, config_tap, ingress_slot, DropReason::Malformed),
                MalformedAction::Forward => Verdict::Forward,
            };
        }
    };
    let key = match (&mut ctx.flows, pending) {
        (_, Some(pending)) => Some(pending),
        (Some(flows), None) if flows.active() && !decide_in_full => match FlowCacheKey::of(pf, ingress_slot) {
            Some(key) => match flows.lookup(&key, epoch, ctx.seen.period()) {
                Ok(hit) => {
                    if reuse(ctx, &hit, pf.app, epoch) {
                        return cached(ctx, hit, pf.src_mac, ingress_slot, config_tap);
                    }
                    None
                }
                Err(miss) => Some((key, miss)),
            },
            None => None,
        },
        _ => None,
    };
    let seen = ctx.seen.insert(SeenMac::new(pf.src_mac, ingress_slot));
    let Enforcing { enforcer, view, ports, events, gate, now, .. } = ctx;
    let state = view.refresh();
    let port = ports[ingress_slot];
    let now = *now;
    let mut logged = false;
    let decision = enforcer.decide(pf, ingress_slot as u16, port, &state, &mut |e| {
        logged = true;
        gate.offer(e, now, events)
    });
    // Only a silent decision is reused: one that logged is made again for
    // every frame, so events and their folding are as without the cache.
    // A silent decision of a frame with a hint is also its flow's verdict:
    // the hint matched nothing that counts.
    if let (Some((key, miss)), Some(flows), false) = (key, &mut ctx.flows, logged) {
        // A MAC the full seen set refused is not marked: the next hit retries.
        let period = if seen { ctx.seen.period() } else { ctx.seen.period().wrapping_sub(1) };
        flows.insert(miss, &key, epoch, period, decision.verdict);
    }
    match decision.verdict {
        Verdict::Drop(reason) => tap(ctx, config_tap, ingress_slot, reason),
        v => v,
    }
}

/// Whether a frame of a flow with a cached verdict takes that verdict: its
/// application hint, if any, is checked against the indicators first, as the
/// decide stage would, and only if that finds nothing to log is the flow's
/// verdict the frame's (a punt comes before any indicator).
#[inline(always)]
fn reuse(ctx: &mut Enforcing, hit: &Hit, app: Option<AppHint<'_>>, epoch: u64) -> bool {
    app.is_none() || hit.verdict == Verdict::Punt || ctx.enforcer.app_hint_is_silent(app, &mut ctx.view, epoch)
}

/// A frame that takes its flow's cached verdict: its source MAC is still
/// recorded once per seen-MAC period.
#[inline(always)]
fn cached(ctx: &mut Enforcing, hit: Hit, src_mac: [u8; 6], ingress_slot: usize, config_tap: bool) -> Verdict {
    if !hit.seen_reported && ctx.seen.insert(SeenMac::new(src_mac, ingress_slot)) {
        if let Some(flows) = &mut ctx.flows {
            flows.mark_seen(&hit, ctx.seen.period());
        }
    }
    match hit.verdict {
        Verdict::Drop(reason) => tap(ctx, config_tap, ingress_slot, reason),
        v => v,
    }
}

/// In tap mode a drop is counted as "would drop" and the frame forwarded.
#[inline]
fn tap(ctx: &Enforcing, tap_mode: bool, slot: usize, reason: DropReason) -> Verdict {
    if tap_mode {
        bump(&ctx.counters.port(slot).tap_would_drop[reason.index()], 1);
        Verdict::Forward
    } else {
        Verdict::Drop(reason)
    }
}

/// An enforcing pipeline on its own, with the channels a gateway would wire
/// to the control plane: for tests, benchmarks and tools that drive one
/// pipeline directly.
pub struct Standalone {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Its events.
    pub events: crossbeam_channel::Receiver<crate::events::WorkerEvent>,
    /// Its seen-MAC reports.
    pub seen_macs: crate::seen_macs::SeenMacsExchange,
    /// Its counters.
    pub counters: Arc<WorkerCounters>,
}

impl Standalone {
    /// An enforcing pipeline over `state` for ports with these contexts;
    /// identical events within `gate_window` cycles are folded (0: none).
    pub fn new(
        state: &hbgw_shared::state::GatewayState,
        config: EnforcementConfig,
        ports: Vec<PortContext>,
        gate_window: u64,
    ) -> Standalone {
        const CAPACITY: usize = 65_536;
        let (mut senders, events) = crate::events::channel(1, CAPACITY);
        let (mut flushers, seen_macs) = crate::seen_macs::exchange(1, CAPACITY);
        let counters = Arc::new(WorkerCounters::new(ports.len()));
        let pipeline = Pipeline::enforcing(Enforcing {
            flows: FlowCache::new(config.flow_cache_entries),
            epoch: state.epoch().clone(),
            enforcer: Enforcer::new(config),
            view: state.worker_view(),
            ports: ports.into_boxed_slice(),
            events: senders.remove(0),
            gate: EventGate::new(4096, gate_window),
            now: 0,
            seen: SeenMacs::new(CAPACITY),
            seen_flusher: flushers.remove(0),
            counters: counters.clone(),
        });
        Standalone { pipeline, events, seen_macs, counters }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_forwards_frames_and_drops_runts() {
        let mut p = Pipeline::bridge();
        assert_eq!(p.verdict(&[0u8; 60], 0), Verdict::Forward);
        assert_eq!(p.verdict(&[0u8; 14], 0), Verdict::Forward);
        assert_eq!(p.verdict(&[0u8; 13], 0), Verdict::Drop(DropReason::Runt));
        assert_eq!(p.verdict(&[], 0), Verdict::Drop(DropReason::Runt));
    }
}
