//! Everything the control plane publishes to the data-plane workers, in one
//! place: the compiled policy, the threat indicator set (with its exclusions
//! and feed settings) and the endpoint table.
//!
//! # Concurrency design
//!
//! Workers read on every packet; the control plane writes rarely (a health
//! change now and then, a new policy or feed every few minutes). So the read
//! side must cost next to nothing and never wait:
//!
//! * **No lock, no write to shared memory per lookup.** A `dashmap` read takes
//!   its shard's `RwLock` for reading: an atomic read-modify-write on the lock
//!   word. Two workers reading the same shard bounce that cache line between
//!   their cores on every packet, and a writer holding the shard stalls them.
//!   dashmap stays where many writers meet (the control plane's own tables);
//!   workers get immutable data instead.
//! * **Bulk data is built aside and swapped whole** ([`arc_swap::ArcSwap`]):
//!   a new [`CompiledPolicy`] or a 1M-entry [`IndicatorSet`] is compiled off
//!   the fast path, then published with one pointer store. A worker sees the
//!   old one or the new one, never half. An indicator set swapped out is
//!   kept here until no worker holds it, and the control plane frees it
//!   ([`GatewayState::reclaim`]): a worker never frees one (a worker that
//!   dropped the last reference to a replaced 2.8M-indicator base freed it,
//!   and dropped nothing new for ~0.2 s: measured, perf/RESULTS.md).
//!   Indicators are published as an [`IndicatorOverlay`]: a large base set
//!   plus a small set of recent changes, so one new indicator among millions
//!   compiles only the change.
//! * **Per-endpoint health is one atomic byte** shared by every generation of
//!   the endpoint index (see [`crate::endpoint`]), so "heartbeat turned red"
//!   is one store and takes effect on the next packet, with no rebuild.
//! * **One change counter** ([`StateEpoch`]) is bumped after every
//!   publication above and every health store, so a worker can keep a
//!   verdict per flow and know, with one load, whether anything it was
//!   computed from has changed since.
//! * **Workers cache.** A [`WorkerView`] holds an [`arc_swap::Cache`] per
//!   item; [`WorkerView::refresh`] (once per burst) is one atomic load of each
//!   published pointer while nothing changed, and takes a reference count
//!   only when something did. Between refreshes the worker uses plain
//!   references.
//!
//! `benches/state_lookup.rs` measures this against a `DashMap`.

use crate::epoch::StateEpoch;
use crate::endpoint::{EndpointReader, EndpointSnapshot, EndpointTable, EndpointTableWriter};
use crate::indicator_overlay::IndicatorOverlay;
use crate::indicators::{ExclusionSet, IndicatorError, IndicatorSet, ThreatExclusion, ThreatFeedSettings};
use crate::policy::CompiledPolicy;
use arc_swap::{ArcSwap, Cache};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// Indicator sets swapped out that are kept while nobody calls
/// [`GatewayState::reclaim`]; past this many, publishing frees those no
/// worker holds itself.
const MAX_RETIRED: usize = 64;

/// The retired sets only `retired` holds, taken out of it. A worker's
/// reference is a counted one (its `arc_swap::Cache`; `swap` and `rcu` count
/// any guard still borrowed before they return), so a count of one means
/// no worker can reach the set any more.
fn take_unheld(retired: &mut Vec<Arc<IndicatorOverlay>>) -> Vec<Arc<IndicatorOverlay>> {
    let (unheld, held): (Vec<_>, Vec<_>) = retired.drain(..).partition(|o| Arc::strong_count(o) == 1);
    *retired = held;
    unheld
}

/// The state the control plane publishes and the workers read. Share it as
/// `Arc<GatewayState>`; the endpoint table's writer is handed out separately
/// by [`GatewayState::new`] (there is one).
#[derive(Debug)]
pub struct GatewayState {
    policy: Arc<ArcSwap<CompiledPolicy>>,
    indicators: Arc<ArcSwap<IndicatorOverlay>>,
    endpoints: EndpointTable,
    /// Bumped by every publication (here and by the endpoint writer).
    epoch: Arc<StateEpoch>,
    /// Indicator sets swapped out, until no worker holds them (the control
    /// plane's; workers never touch this lock).
    retired: Mutex<Vec<Arc<IndicatorOverlay>>>,
}

impl GatewayState {
    /// The state with a first policy and indicator set and an empty endpoint
    /// table, and the endpoint table's writer (for the control plane).
    pub fn new(policy: CompiledPolicy, indicators: impl Into<IndicatorOverlay>) -> (Arc<Self>, EndpointTableWriter) {
        let epoch = StateEpoch::new();
        let writer = EndpointTableWriter::with_epoch(Arc::clone(&epoch));
        let state = GatewayState {
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            indicators: Arc::new(ArcSwap::from_pointee(indicators.into())),
            endpoints: writer.table(),
            epoch,
            retired: Mutex::new(Vec::new()),
        };
        (Arc::new(state), writer)
    }

    /// Publishes a new policy; workers use it from their next refresh.
    pub fn set_policy(&self, policy: CompiledPolicy) {
        self.policy.store(Arc::new(policy));
        self.epoch.bump();
    }

    /// Publishes a new indicator set (a new feed, built aside).
    pub fn set_indicators(&self, indicators: IndicatorSet) {
        self.set_overlay(IndicatorOverlay::from_set(indicators));
    }

    /// Publishes indicators as a base set plus recent changes.
    pub fn set_overlay(&self, indicators: IndicatorOverlay) {
        let old = self.indicators.swap(Arc::new(indicators));
        self.epoch.bump();
        self.retire(old);
    }

    /// Publishes the current indicators with new feed settings (no rebuild).
    pub fn set_feed_settings(&self, settings: &ThreatFeedSettings) {
        let old = self.indicators.rcu(|current| current.with_settings(settings));
        self.epoch.bump();
        self.retire(old);
    }

    /// Publishes the current indicators with new exclusions (the indicators
    /// are not rebuilt).
    pub fn set_exclusions<'a>(
        &self,
        exclusions: impl IntoIterator<Item = &'a ThreatExclusion>,
    ) -> Result<(), IndicatorError> {
        let compiled = Arc::new(ExclusionSet::compile(exclusions)?);
        let old = self.indicators.rcu(|current| current.with_exclusion_set(Arc::clone(&compiled)));
        self.epoch.bump();
        self.retire(old);
        Ok(())
    }

    /// Keeps an indicator set swapped out until [`GatewayState::reclaim`]
    /// finds no worker holds it.
    fn retire(&self, old: Arc<IndicatorOverlay>) {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.push(old);
        if retired.len() > MAX_RETIRED {
            // Nobody reclaims (a test, a tool): free here, on the
            // publisher's thread, what no worker holds.
            let unheld = take_unheld(&mut retired);
            drop(retired);
            drop(unheld);
        }
    }

    /// The indicator sets swapped out that no worker (nor anyone else)
    /// holds any more: the caller drops them, and so frees them, on a
    /// thread of its choosing. Call it now and then from the control plane
    /// (after publishing, and on a timer).
    pub fn reclaim(&self) -> Vec<Arc<IndicatorOverlay>> {
        take_unheld(&mut self.retired.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Indicator sets swapped out and not yet reclaimed.
    pub fn retired(&self) -> usize {
        self.retired.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy.load_full()
    }

    /// The current indicators.
    pub fn indicators(&self) -> Arc<IndicatorOverlay> {
        self.indicators.load_full()
    }

    /// The endpoint table's read handle.
    pub fn endpoints(&self) -> &EndpointTable {
        &self.endpoints
    }

    /// The change counter every publication bumps (workers' flow caches
    /// check it before trusting a cached verdict).
    pub fn epoch(&self) -> &Arc<StateEpoch> {
        &self.epoch
    }

    /// A view for one worker thread.
    pub fn worker_view(&self) -> WorkerView {
        WorkerView {
            policy: Cache::new(Arc::clone(&self.policy)),
            indicators: Cache::new(Arc::clone(&self.indicators)),
            endpoints: self.endpoints.reader(),
        }
    }
}

/// One worker's cached view of the [`GatewayState`]. Not shared between
/// threads: each worker makes its own with [`GatewayState::worker_view`].
pub struct WorkerView {
    policy: Cache<Arc<ArcSwap<CompiledPolicy>>, Arc<CompiledPolicy>>,
    indicators: Cache<Arc<ArcSwap<IndicatorOverlay>>, Arc<IndicatorOverlay>>,
    endpoints: EndpointReader,
}

impl fmt::Debug for WorkerView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerView")
    }
}

/// What a worker uses for one burst.
#[derive(Debug, Clone, Copy)]
pub struct StateView<'a> {
    /// The policy.
    pub policy: &'a CompiledPolicy,
    /// Indicators, exclusions and feed settings.
    pub indicators: &'a IndicatorOverlay,
    /// Endpoint health by MAC and IP (health values are live).
    pub endpoints: &'a EndpointSnapshot,
}

impl WorkerView {
    /// The newest published state; call once per burst.
    #[inline]
    pub fn refresh(&mut self) -> StateView<'_> {
        StateView {
            policy: self.policy.load(),
            indicators: self.indicators.load(),
            endpoints: self.endpoints.snapshot(),
        }
    }

    /// The newest published indicators alone (what a frame's application
    /// hint is checked against): one pointer load, not three.
    #[inline]
    pub fn indicators(&mut self) -> &IndicatorOverlay {
        self.indicators.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{Endpoint, EndpointHealth, EndpointId, EndpointInterface, MacAddr};
    use crate::indicators::{FeedAction, IndicatorMatch, ThreatIndicator};
    use crate::policy::{DecisionReason, FlowKey, Policy, PortRole, Protocol, RuleAction};
    use std::net::IpAddr;
    use std::path::Path;

    #[test]
    fn a_worker_never_frees_a_set_it_lets_go_of() {
        let set = |a: &str| {
            let feed = [ThreatIndicator { kind: a.parse().unwrap(), audit_id: "A1".into(), feed: "mdr".into() }];
            IndicatorSet::build(&feed, &[], &ThreatFeedSettings::default()).unwrap()
        };
        let (state, _writer) = GatewayState::new(CompiledPolicy::default(), set("203.0.113.1"));
        let first = Arc::downgrade(&state.indicators());
        let mut view = state.worker_view();
        assert!(view.refresh().indicators.match_ip("203.0.113.1".parse().unwrap()).drops());

        state.set_indicators(set("203.0.113.2"));
        assert!(state.reclaim().is_empty(), "the worker still holds the first set");
        assert!(view.refresh().indicators.match_ip("203.0.113.2".parse().unwrap()).drops());
        assert!(first.upgrade().is_some(), "the worker let go of the first set without freeing it");
        let unheld = state.reclaim();
        assert_eq!((unheld.len(), state.retired()), (1, 0));
        drop(unheld);
        assert!(first.upgrade().is_none(), "freed by whoever dropped what reclaim gave");

        // Nobody reclaims: what no worker holds is freed by publishing.
        for n in 0..3 * MAX_RETIRED {
            state.set_indicators(set(&format!("198.51.100.{}", n % 250)));
        }
        view.refresh();
        assert!(state.retired() <= MAX_RETIRED + 1, "{} kept", state.retired());
    }

    #[test]
    fn worker_sees_each_publication_on_refresh() {
        let (state, mut writer) = GatewayState::new(CompiledPolicy::default(), IndicatorSet::empty());
        let mut view = state.worker_view();
        let src: IpAddr = "10.0.0.5".parse().unwrap();
        let dst: IpAddr = "203.0.113.9".parse().unwrap();
        let flow = FlowKey {
            ingress: PortRole::Lan,
            egress: PortRole::Wan,
            vlan: None,
            src,
            dst,
            protocol: Protocol::TCP,
            src_port: 50000,
            dst_port: 443,
        };
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        {
            let v = view.refresh();
            assert_eq!(v.policy.evaluate(&flow, EndpointHealth::Unknown, EndpointHealth::Unknown).action, RuleAction::Accept);
            assert_eq!(v.indicators.match_ip(dst), IndicatorMatch::NoMatch);
        }

        let policy = Policy::parse(
            "[[rule]]\nname = \"green only\"\naction = \"accept\"\nmin_source_heartbeat = \"green\"\n",
            Path::new("p.toml"),
        )
        .unwrap()
        .compile()
        .unwrap();
        state.set_policy(policy);
        let feed = [ThreatIndicator { kind: "203.0.113.0/24".parse().unwrap(), audit_id: "A1".into(), feed: "mdr".into() }];
        state.set_indicators(IndicatorSet::build(&feed, &[], &ThreatFeedSettings::default()).unwrap());
        writer.upsert(Endpoint {
            id: EndpointId(1),
            interfaces: vec![EndpointInterface { mac, ips: vec![src] }],
            health: EndpointHealth::Green,
        });

        let v = view.refresh();
        let health = v.endpoints.health_by_ip(src);
        assert_eq!(health, EndpointHealth::Green);
        assert_eq!(v.policy.evaluate(&flow, health, EndpointHealth::Unknown).action, RuleAction::Accept);
        assert!(v.indicators.match_ip(dst).drops());

        writer.set_health(EndpointId(1), EndpointHealth::Red).unwrap();
        let health = v.endpoints.health_by_mac(&mac);
        let d = v.policy.evaluate(&flow, health, EndpointHealth::Unknown);
        assert_eq!((d.action, d.reason), (RuleAction::Drop, DecisionReason::SourceHeartbeat));

        state.set_feed_settings(&ThreatFeedSettings { action: FeedAction::LogOnly, ..Default::default() });
        state.set_exclusions(&["203.0.113.9".parse().unwrap()]).unwrap();
        let v = view.refresh();
        assert!(matches!(v.indicators.match_ip(dst), IndicatorMatch::Excluded(h) if h.action == FeedAction::LogOnly));
        assert_eq!(state.indicators().settings().action, FeedAction::LogOnly);
    }
}
