//! The indicator state workers query: a large compiled *base*
//! [`IndicatorSet`], a small *delta* set of indicators added since the base
//! was built, and *tombstones* (base records removed or replaced since).
//!
//! This module owns the lookup over those three parts, answering exactly
//! what one set built from scratch would (the base's kept records in their
//! order, then the delta's): the most specific enabled indicator wins, an
//! equally specific later one (the delta's) wins over an earlier one, and
//! exclusions win over both. It lets the control plane publish a change to
//! a million-indicator state by compiling only the change, and fold the
//! delta into a new base later ([`IndicatorOverlay::compacted`]) off the
//! critical path.
//!
//! It must never make a lookup block, allocate or write shared memory: an
//! overlay is immutable once built and is published whole (see `state`).
//! It does not decide *when* to compact, and keeps no audit-ID bookkeeping:
//! that is the owner's (the Central client's) job.

use crate::indicators::{
    ExclusionSet, IndicatorCounts, IndicatorError, IndicatorHit, IndicatorMatch, IndicatorSet, ThreatFeedSettings,
};
use hashbrown::HashSet;
use rustc_hash::FxBuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

/// Base records no longer in force, by record number.
#[derive(Debug, Clone, Default)]
pub struct Tombstones(HashSet<u32, FxBuildHasher>);

impl Tombstones {
    /// None.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks base record `rec` removed; false if it already was.
    pub fn insert(&mut self, rec: u32) -> bool {
        self.0.insert(rec)
    }

    /// Whether base record `rec` is removed.
    #[inline]
    pub fn contains(&self, rec: u32) -> bool {
        !self.0.is_empty() && self.0.contains(&rec)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Base + delta - tombstones, with one set of exclusions and feed settings.
#[derive(Debug, Clone)]
pub struct IndicatorOverlay {
    base: IndicatorSet,
    delta: IndicatorSet,
    tombstones: Arc<Tombstones>,
}

impl Default for IndicatorOverlay {
    fn default() -> Self {
        Self::from_set(IndicatorSet::empty())
    }
}

impl From<IndicatorSet> for IndicatorOverlay {
    fn from(set: IndicatorSet) -> Self {
        Self::from_set(set)
    }
}

impl IndicatorOverlay {
    /// A whole set, nothing on top.
    pub fn from_set(base: IndicatorSet) -> Self {
        let delta = IndicatorSet::empty().with_settings(base.settings()).with_exclusion_set(base.exclusion_set());
        IndicatorOverlay { base, delta, tombstones: Arc::default() }
    }

    /// `base` minus `tombstones` plus `delta`. The base's exclusions and feed
    /// settings apply to both.
    pub fn new(base: IndicatorSet, delta: &IndicatorSet, tombstones: Arc<Tombstones>) -> Self {
        let delta = delta.with_settings(base.settings()).with_exclusion_set(base.exclusion_set());
        IndicatorOverlay { base, delta, tombstones }
    }

    /// The base set (tombstoned records included).
    pub fn base(&self) -> &IndicatorSet {
        &self.base
    }

    /// Indicators added since the base was built.
    pub fn delta(&self) -> &IndicatorSet {
        &self.delta
    }

    /// Base records removed since it was built.
    pub fn tombstones(&self) -> &Arc<Tombstones> {
        &self.tombstones
    }

    /// One set answering like this overlay (builds a new base; seconds for
    /// millions of indicators: run it off the critical path).
    pub fn compacted(&self) -> Result<IndicatorSet, IndicatorError> {
        let t = &self.tombstones;
        IndicatorSet::merged(&self.base, |r| !t.contains(r), &self.delta)
    }

    /// The same indicators with other feed settings (nothing rebuilt).
    pub fn with_settings(&self, settings: &ThreatFeedSettings) -> Self {
        IndicatorOverlay {
            base: self.base.with_settings(settings),
            delta: self.delta.with_settings(settings),
            tombstones: Arc::clone(&self.tombstones),
        }
    }

    /// The same indicators with other exclusions (nothing rebuilt).
    pub fn with_exclusion_set(&self, exclusions: Arc<ExclusionSet>) -> Self {
        IndicatorOverlay {
            base: self.base.with_exclusion_set(Arc::clone(&exclusions)),
            delta: self.delta.with_exclusion_set(exclusions),
            tombstones: Arc::clone(&self.tombstones),
        }
    }

    /// The feed settings in force.
    pub fn settings(&self) -> &ThreatFeedSettings {
        self.base.settings()
    }

    /// The compiled exclusions.
    pub fn exclusions(&self) -> &ExclusionSet {
        self.base.exclusions()
    }

    /// Names of the feeds the indicators came from (tombstoned ones included).
    pub fn feed_names(&self) -> impl Iterator<Item = &str> {
        let base: Vec<&str> = self.base.feed_names().collect();
        let extra: Vec<&str> = self.delta.feed_names().filter(|n| !base.contains(n)).collect();
        base.into_iter().chain(extra)
    }

    /// Indicators in force, duplicates included.
    pub fn len(&self) -> usize {
        (self.base.len() - self.tombstones.len().min(self.base.len())) + self.delta.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes: `total` is exact; the per-kind figures add the base's and the
    /// delta's distinct keys (tombstoned keys still counted) until compacted.
    pub fn counts(&self) -> IndicatorCounts {
        let (b, d) = (self.base.counts(), self.delta.counts());
        IndicatorCounts {
            ipv4: b.ipv4 + d.ipv4,
            ipv6: b.ipv6 + d.ipv6,
            domains: b.domains + d.domains,
            urls: b.urls + d.urls,
            total: self.len(),
            exclusions: b.exclusions,
        }
    }

    #[inline]
    fn pick(&self, base: Option<(u32, usize)>, delta: Option<(u32, usize)>, excluded: impl FnOnce() -> bool) -> IndicatorMatch<'_> {
        let hit: IndicatorHit<'_> = match (base, delta) {
            (b, Some((rec, len))) if b.is_none_or(|(_, blen)| len >= blen) => {
                let index = u32::try_from(self.base.len()).unwrap_or(u32::MAX).saturating_add(rec);
                self.delta.hit_at(rec, index)
            }
            (Some((rec, _)), _) => self.base.hit_at(rec, rec),
            (None, _) => return IndicatorMatch::NoMatch,
        };
        if excluded() {
            IndicatorMatch::Excluded(hit)
        } else {
            IndicatorMatch::Hit(hit)
        }
    }

    /// Traffic to or from `ip`: as [`IndicatorSet::match_ip`].
    #[inline]
    pub fn match_ip(&self, ip: IpAddr) -> IndicatorMatch<'_> {
        let t = &*self.tombstones;
        let base = self.base.best_ip_where(ip, |r| !t.contains(r));
        let delta = if self.delta.is_empty() { None } else { self.delta.best_ip_where(ip, |_| true) };
        self.pick(base, delta, || self.exclusions().excludes_ip(ip))
    }

    /// A DNS name: as [`IndicatorSet::match_domain`].
    #[inline]
    pub fn match_domain(&self, name: &[u8]) -> IndicatorMatch<'_> {
        let t = &*self.tombstones;
        let base = self.base.best_domain_where(name, |r| !t.contains(r));
        let delta = if self.delta.is_empty() { None } else { self.delta.best_domain_where(name, |_| true) };
        self.pick(base, delta, || self.exclusions().excludes_domain(name))
    }

    /// An HTTP request: as [`IndicatorSet::match_url`].
    #[inline]
    pub fn match_url(&self, host: &[u8], path: &[u8]) -> IndicatorMatch<'_> {
        let t = &*self.tombstones;
        let base = self.base.best_url_where(host, path, |r| !t.contains(r));
        let delta = if self.delta.is_empty() { None } else { self.delta.best_url_where(host, path, |_| true) };
        self.pick(base, delta, || self.exclusions().excludes_url(host, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::{
        AuditId, FeedAction, FeedSettings, IndicatorKind, IndicatorSetBuilder, ThreatExclusion, ThreatIndicator,
    };
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn build(inds: &[ThreatIndicator], excl: &[ThreatExclusion], settings: &ThreatFeedSettings) -> IndicatorSet {
        IndicatorSet::build(inds, excl, settings).unwrap()
    }

    /// Base built from `base`; then `removed` (positions in `base`) taken
    /// out through tombstones and `added` put in the delta.
    fn overlay(
        base: &[ThreatIndicator],
        removed: &[usize],
        added: &[ThreatIndicator],
        excl: &[ThreatExclusion],
        settings: &ThreatFeedSettings,
    ) -> IndicatorOverlay {
        let b = build(base, excl, settings);
        let mut t = Tombstones::new();
        for &i in removed {
            let ind = &base[i];
            let t0 = t.clone();
            let rec = b.find_record(&ind.kind, &ind.audit_id.0, &ind.feed, |r| !t0.contains(r)).expect("a base record");
            assert!(t.insert(rec));
        }
        let mut d = IndicatorSetBuilder::new();
        for a in added {
            d.add(a).unwrap();
        }
        IndicatorOverlay::new(b, &d.build(&ThreatFeedSettings::default()), Arc::new(t))
    }

    fn ind(v: &str, audit: &str, feed: &str) -> ThreatIndicator {
        ThreatIndicator { kind: v.parse().unwrap(), audit_id: audit.into(), feed: feed.into() }
    }

    #[test]
    fn delta_adds_tombstones_remove_and_the_more_specific_wins() {
        let base = [ind("10.0.0.0/8", "wide", "f"), ind("10.1.1.1", "narrow", "f"), ind("evil.example", "D", "f")];
        let added = [ind("10.1.0.0/16", "mid", "f"), ind("www.evil.example", "W", "g"), ind("http://x.example/p", "U", "f")];
        let o = overlay(&base, &[1], &added, &["10.9.0.0/16".parse().unwrap()], &ThreatFeedSettings::default());
        let audit = |m: IndicatorMatch<'_>| m.hit().map(|h| h.audit_id.to_owned());
        assert_eq!(audit(o.match_ip("10.1.1.1".parse().unwrap())).as_deref(), Some("mid"), "removed narrow, delta /16 wins");
        assert_eq!(audit(o.match_ip("10.2.0.1".parse().unwrap())).as_deref(), Some("wide"));
        assert!(matches!(o.match_ip("10.9.0.1".parse().unwrap()), IndicatorMatch::Excluded(h) if h.audit_id == "wide"));
        assert_eq!(audit(o.match_domain(b"a.WWW.evil.example.")).as_deref(), Some("W"));
        assert_eq!(audit(o.match_domain(b"evil.example")).as_deref(), Some("D"));
        assert_eq!(audit(o.match_url(b"x.example", b"/p/q")).as_deref(), Some("U"));
        assert_eq!(o.match_url(b"x.example", b"/q"), IndicatorMatch::NoMatch);
        let hit = o.match_domain(b"www.evil.example").hit().unwrap();
        assert_eq!((hit.index, hit.feed), (3 + 1, "g"), "delta hits are numbered after the base");
        assert_eq!(o.len(), 5);
        // Settings apply to the delta's feeds too, without a rebuild.
        let mut s = ThreatFeedSettings::default();
        s.feeds.insert("g".into(), FeedSettings { enabled: true, action: FeedAction::LogOnly });
        let o2 = o.with_settings(&s);
        assert!(!o2.match_domain(b"www.evil.example").drops());
        assert!(o2.match_domain(b"evil.example").drops());
        // Compaction answers the same.
        let c = IndicatorOverlay::from_set(o.compacted().unwrap());
        assert_eq!(c.len(), 5);
        assert!(c.tombstones().is_empty() && c.delta().is_empty());
        for q in ["10.1.1.1", "10.2.0.1", "10.9.0.1", "11.0.0.1"] {
            let ip = q.parse().unwrap();
            assert_eq!(summary(c.match_ip(ip)), summary(o.match_ip(ip)), "{q}");
        }
    }

    fn summary(m: IndicatorMatch<'_>) -> Option<(String, String, FeedAction, bool)> {
        match m {
            IndicatorMatch::NoMatch => None,
            IndicatorMatch::Hit(h) => Some((h.audit_id.into(), h.feed.into(), h.action, false)),
            IndicatorMatch::Excluded(h) => Some((h.audit_id.into(), h.feed.into(), h.action, true)),
        }
    }

    // Small value spaces so that indicators, removals and queries collide.
    fn v4() -> impl Strategy<Value = Ipv4Addr> {
        (0u8..2, 0u8..4, 0u8..8).prop_map(|(a, b, c)| Ipv4Addr::new(10, a, b * 64, c))
    }
    fn v6() -> impl Strategy<Value = Ipv6Addr> {
        (0u16..2, 0u16..8).prop_map(|(a, c)| Ipv6Addr::new(0x2001, 0xdb8, a, 0, 0, 0, 0, c))
    }
    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "Ab", "c0"]), 1..4).prop_map(|l| l.join("."))
    }
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["p", "q", "pq"]), 0..3).prop_map(|s| format!("/{}", s.join("/")))
    }
    fn kind() -> impl Strategy<Value = IndicatorKind> {
        prop_oneof![
            v4().prop_map(IndicatorKind::Ipv4),
            (v4(), 0u8..=32).prop_map(|(a, l)| IndicatorKind::Ipv4Net(ipnet::Ipv4Net::new(a, l).unwrap())),
            v6().prop_map(IndicatorKind::Ipv6),
            (v6(), 0u8..=128).prop_map(|(a, l)| IndicatorKind::Ipv6Net(ipnet::Ipv6Net::new(a, l).unwrap())),
            name().prop_map(IndicatorKind::Domain),
            (name(), path()).prop_map(|(h, p)| IndicatorKind::Url(format!("http://{h}{p}"))),
            (v6(), path()).prop_map(|(h, p)| IndicatorKind::Url(format!("http://[{h}]:8080{p}"))),
        ]
    }
    fn indicators(max: usize) -> impl Strategy<Value = Vec<ThreatIndicator>> {
        prop::collection::vec(
            (kind(), 0u8..3, 0u8..4).prop_map(|(kind, f, a)| ThreatIndicator {
                kind,
                audit_id: AuditId(format!("audit-{a}")),
                feed: format!("f{f}"),
            }),
            0..max,
        )
    }
    fn exclusion() -> impl Strategy<Value = ThreatExclusion> {
        prop_oneof![
            v4().prop_map(|a| ThreatExclusion::Host(a.into())),
            (v4(), 8u8..=32).prop_map(|(a, l)| ThreatExclusion::Network(ipnet::Ipv4Net::new(a, l).unwrap().into())),
            (v6(), 64u8..=128).prop_map(|(a, l)| ThreatExclusion::Network(ipnet::Ipv6Net::new(a, l).unwrap().into())),
            name().prop_map(ThreatExclusion::Domain),
            (name(), path()).prop_map(|(h, p)| ThreatExclusion::Url(format!("{h}{p}"))),
        ]
    }
    fn settings() -> impl Strategy<Value = ThreatFeedSettings> {
        prop::collection::vec((any::<bool>(), any::<bool>()), 3).prop_map(|v| ThreatFeedSettings {
            feeds: v
                .into_iter()
                .enumerate()
                .map(|(i, (enabled, drop))| {
                    let action = if drop { FeedAction::LogAndDrop } else { FeedAction::LogOnly };
                    (format!("f{i}"), FeedSettings { enabled, action })
                })
                .collect(),
            ..ThreatFeedSettings::default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// base + delta - tombstones answers every lookup exactly like one
        /// set built from scratch from (base without the removed) ++ delta,
        /// and so does its compaction.
        #[test]
        fn overlay_agrees_with_a_from_scratch_build(
            base in indicators(30),
            removed_mask in prop::collection::vec(any::<bool>(), 30),
            added in indicators(12),
            excl in prop::collection::vec(exclusion(), 0..5),
            settings in settings(),
            q4 in prop::collection::vec(v4(), 8),
            q6 in prop::collection::vec(v6(), 6),
            qn in prop::collection::vec((name(), any::<bool>(), any::<bool>()), 8),
            qu in prop::collection::vec((name(), path()), 8),
            qu6 in prop::collection::vec((v6(), path()), 3),
        ) {
            let removed: Vec<usize> = (0..base.len()).filter(|&i| removed_mask[i]).collect();
            let kept: Vec<ThreatIndicator> = base.iter().enumerate().filter(|(i, _)| !removed_mask[*i]).map(|(_, b)| b.clone()).chain(added.iter().cloned()).collect();
            let reference = build(&kept, &excl, &settings);
            let o = overlay(&base, &removed, &added, &excl, &settings);
            let compacted = IndicatorOverlay::from_set(o.compacted().unwrap());
            prop_assert_eq!(o.len(), reference.len());
            prop_assert_eq!(compacted.len(), reference.len());
            for candidate in [&o, &compacted] {
                for q in q4.iter().map(|&a| IpAddr::from(a)).chain(q6.iter().map(|&a| IpAddr::from(a))) {
                    prop_assert_eq!(summary(candidate.match_ip(q)), summary(reference.match_ip(q)), "ip {}", q);
                }
                for (n, upper, dot) in &qn {
                    let mut q = if *upper { n.to_ascii_uppercase() } else { n.clone() };
                    if *dot { q.push('.'); }
                    prop_assert_eq!(summary(candidate.match_domain(q.as_bytes())), summary(reference.match_domain(q.as_bytes())), "domain {}", q);
                }
                let v6hosts: Vec<(String, String)> = qu6.iter().map(|(h, p)| (format!("[{h}]:80"), p.clone())).collect();
                for (h, p) in qu.iter().chain(&v6hosts) {
                    prop_assert_eq!(summary(candidate.match_url(h.as_bytes(), p.as_bytes())), summary(reference.match_url(h.as_bytes(), p.as_bytes())), "url {} {}", h, p);
                }
            }
        }
    }
}
