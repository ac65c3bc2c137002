//! The indicator state workers query: a large compiled *base*
//! [`IndicatorSet`] and a few small *layers* on top of it, one per recent
//! update, each with the records of lower levels it hides (*hides*: records
//! removed or replaced by the update).
//!
//! This module owns the lookup over those parts, answering exactly what one
//! set built from scratch would (the base's kept records in their order,
//! then each layer's kept records in theirs): the most specific enabled
//! indicator wins, an equally specific later one (a newer layer's) wins over
//! an earlier one, and exclusions win over both. It lets the control plane
//! publish a change to a million-indicator state by compiling only that
//! change into a new layer ([`IndicatorOverlay::push_layer`]; at most
//! [`MAX_LAYERS`] of them: past that the newest are merged, cheap while they
//! are small), and fold the layers into one
//! ([`IndicatorOverlay::layers_compacted`], [`IndicatorOverlay::fold_layers`])
//! or everything into a new base later ([`IndicatorOverlay::compacted`],
//! [`IndicatorOverlay::rebase`]) off the critical path.
//!
//! It must never make a lookup block, allocate or write shared memory: an
//! overlay is immutable once built and is published whole (see `state`), so
//! workers never see half an update. With no layers (the usual state after
//! a compaction) a lookup is the base set's own. It does not decide *when*
//! to compact, and keeps no audit-ID bookkeeping: that is the owner's (the
//! Central client's) job.

use crate::indicators::{
    ExclusionSet, IndicatorCounts, IndicatorError, IndicatorHit, IndicatorMatch, IndicatorSet, IndicatorSetBuilder,
    ThreatFeedSettings,
};
use hashbrown::HashSet;
use rustc_hash::FxBuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

/// Layers an overlay normally has at most: pushing one more merges the
/// newest together.
pub const MAX_LAYERS: usize = 4;

/// Layers an overlay may have while a compaction is under way (see `frozen`
/// in [`IndicatorOverlay::push_layer`]), one more past the frozen ones at
/// most. A compaction of millions of indicators takes seconds; merging the
/// updates that come meanwhile into one growing layer would put an ever
/// larger compile on each update's way to the workers, so each keeps its
/// own layer (every lookup pays one more probe per layer until the
/// compaction lands, and the layers above it stay until the next one).
pub const MAX_LAYERS_COMPACTING: usize = 8;

/// Records of lower levels (0: the base, `i`: layer `i`) no longer in force.
#[derive(Debug, Clone, Default)]
pub struct Hides(HashSet<u64, FxBuildHasher>);

#[inline]
fn key(level: usize, rec: u32) -> u64 {
    ((level as u64) << 32) | u64::from(rec)
}

impl Hides {
    /// None.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks record `rec` of level `level` removed; false if it already was.
    pub fn insert(&mut self, level: usize, rec: u32) -> bool {
        self.0.insert(key(level, rec))
    }

    /// Whether record `rec` of level `level` is removed.
    #[inline]
    pub fn contains(&self, level: usize, rec: u32) -> bool {
        !self.0.is_empty() && self.0.contains(&key(level, rec))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every (level, record).
    pub fn iter(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.0.iter().map(|&k| ((k >> 32) as usize, k as u32))
    }
}

/// One update's records, and what of the levels below it hides.
#[derive(Debug, Clone)]
pub struct Layer {
    set: IndicatorSet,
    hides: Arc<Hides>,
    /// Index reported for this layer's record 0 (records below, hidden ones included).
    offset: u32,
}

impl Layer {
    /// Its records.
    pub fn set(&self) -> &IndicatorSet {
        &self.set
    }

    /// Lower records it hides.
    pub fn hides(&self) -> &Hides {
        &self.hides
    }
}

/// A base set, layers on top, one set of exclusions and feed settings.
#[derive(Debug, Clone)]
pub struct IndicatorOverlay {
    base: IndicatorSet,
    layers: Arc<[Layer]>,
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

fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl IndicatorOverlay {
    /// A whole set, nothing on top.
    pub fn from_set(base: IndicatorSet) -> Self {
        IndicatorOverlay { base, layers: Arc::new([]) }
    }

    /// The base set (hidden records included).
    pub fn base(&self) -> &IndicatorSet {
        &self.base
    }

    /// The layers, oldest first (layer `i` is level `i + 1`).
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The set of `level` (0: the base).
    pub fn level(&self, level: usize) -> &IndicatorSet {
        match level {
            0 => &self.base,
            l => &self.layers[l - 1].set,
        }
    }

    /// Whether record `rec` of `level` is hidden by a level above it.
    #[inline]
    pub fn hidden(&self, level: usize, rec: u32) -> bool {
        self.layers.get(level..).is_some_and(|above| above.iter().any(|l| l.hides.contains(level, rec)))
    }

    /// Hidden records, all levels.
    pub fn hidden_count(&self) -> usize {
        self.layers.iter().map(|l| l.hides.len()).sum()
    }

    /// This set with `set` on top as a new layer hiding `hides` (records of
    /// this overlay's levels). When that would make more than
    /// [`MAX_LAYERS`] ([`MAX_LAYERS_COMPACTING`] while `frozen` > 0), the
    /// new set is merged with the newest layers instead, never with the
    /// `frozen` oldest ones (those a compaction under way folds: see
    /// [`IndicatorOverlay::rebase`]); then there may be one more.
    pub fn push_layer(&self, set: IndicatorSet, hides: Hides, frozen: usize) -> Result<IndicatorOverlay, IndicatorError> {
        let set = set.with_settings(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let n = self.layers.len();
        let cap = if frozen > 0 { MAX_LAYERS_COMPACTING } else { MAX_LAYERS };
        let start = frozen.max(cap - 1);
        let mut layers: Vec<Layer> = self.layers.to_vec();
        if n < cap || start >= n {
            let offset = index(self.base.len() + self.layers.iter().map(|l| l.set.len()).sum::<usize>());
            layers.push(Layer { set, hides: Arc::new(hides), offset });
            return Ok(IndicatorOverlay { base: self.base.clone(), layers: layers.into() });
        }
        // Merge layers[start..] and `set` (the top of the stack: nothing
        // above them hides their records but themselves and `hides`).
        let group = &self.layers[start..];
        let mut b = IndicatorSetBuilder::with_capacity(group.iter().map(|l| l.set.len()).sum::<usize>() + set.len());
        for (i, l) in group.iter().enumerate() {
            let level = start + 1 + i;
            l.set.add_records_to(&mut b, |r| !hides.contains(level, r) && !group[i + 1..].iter().any(|h| h.hides.contains(level, r)))?;
        }
        set.add_records_to(&mut b, |_| true)?;
        let mut merged = Hides::new();
        for (level, rec) in group.iter().flat_map(|l| l.hides.iter()).chain(hides.iter()) {
            if level <= start {
                merged.insert(level, rec);
            }
        }
        let set = b.build(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let offset = group[0].offset;
        layers.truncate(start);
        layers.push(Layer { set, hides: Arc::new(merged), offset });
        Ok(IndicatorOverlay { base: self.base.clone(), layers: layers.into() })
    }

    /// `base` (the compaction of this overlay's base and `folded` oldest
    /// layers) under this overlay's newer layers: their hides of the folded
    /// levels are dropped, `base_hides` (records of `base` the newer layers
    /// replace or remove) are the newer layers' now. Settings and exclusions
    /// stay this overlay's.
    pub fn rebase(&self, base: IndicatorSet, base_hides: Hides, folded: usize) -> IndicatorOverlay {
        let base = base.with_settings(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let mut offset = base.len();
        let mut extra = Some(base_hides);
        let layers: Vec<Layer> = self.layers[folded.min(self.layers.len())..]
            .iter()
            .map(|l| {
                let mut hides = extra.take().unwrap_or_default();
                for (level, rec) in l.hides.iter() {
                    if level > folded {
                        hides.insert(level - folded, rec);
                    }
                }
                let layer = Layer { set: l.set.clone(), hides: Arc::new(hides), offset: index(offset) };
                offset += l.set.len();
                layer
            })
            .collect();
        IndicatorOverlay { base, layers: layers.into() }
    }

    /// This overlay's layers, not its base, as one set: the records in
    /// force, oldest first (see [`IndicatorOverlay::fold_layers`]). Costs
    /// what the layers hold, not what the base does.
    pub fn layers_compacted(&self) -> Result<IndicatorSet, IndicatorError> {
        let mut b = IndicatorSetBuilder::with_capacity(self.layers.iter().map(|l| l.set.len()).sum());
        for level in 1..=self.layers.len() {
            self.level(level).add_records_to(&mut b, |r| !self.hidden(level, r))?;
        }
        Ok(b.build(self.base.settings()).with_exclusion_set(self.base.exclusion_set()))
    }

    /// `merged` (the [`IndicatorOverlay::layers_compacted`] of an overlay
    /// whose layers were this one's `folded` oldest) as the one layer over
    /// this base in place of those, hiding what they hid of the base; the
    /// newer layers above it, their hides of the folded levels dropped,
    /// `merged_hides` (records of `merged`, level 1, the newer layers
    /// replace or remove) theirs now, and their hides of newer levels
    /// renumbered. Settings and exclusions stay this overlay's.
    pub fn fold_layers(&self, merged: IndicatorSet, merged_hides: Hides, folded: usize) -> IndicatorOverlay {
        let folded = folded.min(self.layers.len());
        let merged = merged.with_settings(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let mut below = Hides::new();
        for (_, rec) in self.layers[..folded].iter().flat_map(|l| l.hides.iter()).filter(|&(level, _)| level == 0) {
            below.insert(0, rec);
        }
        let mut offset = self.base.len();
        let mut layers = vec![Layer { set: merged, hides: Arc::new(below), offset: index(offset) }];
        offset += layers[0].set.len();
        let mut extra = Some(merged_hides);
        for l in &self.layers[folded..] {
            let mut hides = extra.take().unwrap_or_default();
            for (level, rec) in l.hides.iter() {
                if level == 0 {
                    hides.insert(0, rec);
                } else if level > folded {
                    hides.insert(level - folded + 1, rec);
                }
            }
            layers.push(Layer { set: l.set.clone(), hides: Arc::new(hides), offset: index(offset) });
            offset += l.set.len();
        }
        IndicatorOverlay { base: self.base.clone(), layers: layers.into() }
    }

    /// One set answering like this overlay (builds a new base; seconds for
    /// millions of indicators: run it off the critical path).
    pub fn compacted(&self) -> Result<IndicatorSet, IndicatorError> {
        let mut b = IndicatorSetBuilder::with_capacity(self.len());
        for level in 0..=self.layers.len() {
            self.level(level).add_records_to(&mut b, |r| !self.hidden(level, r))?;
        }
        Ok(b.build(self.base.settings()).with_exclusion_set(self.base.exclusion_set()))
    }

    fn map_sets(&self, f: impl Fn(&IndicatorSet) -> IndicatorSet) -> Self {
        let layers: Vec<Layer> = self.layers.iter().map(|l| Layer { set: f(&l.set), ..l.clone() }).collect();
        IndicatorOverlay { base: f(&self.base), layers: layers.into() }
    }

    /// The same indicators with other feed settings (nothing rebuilt).
    pub fn with_settings(&self, settings: &ThreatFeedSettings) -> Self {
        self.map_sets(|s| s.with_settings(settings))
    }

    /// The same indicators with other exclusions (nothing rebuilt).
    pub fn with_exclusion_set(&self, exclusions: Arc<ExclusionSet>) -> Self {
        self.map_sets(|s| s.with_exclusion_set(Arc::clone(&exclusions)))
    }

    /// The feed settings in force.
    pub fn settings(&self) -> &ThreatFeedSettings {
        self.base.settings()
    }

    /// The compiled exclusions.
    pub fn exclusions(&self) -> &ExclusionSet {
        self.base.exclusions()
    }

    /// Names of the feeds the indicators came from (hidden ones included).
    pub fn feed_names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self.base.feed_names().collect();
        for l in self.layers.iter() {
            for n in l.set.feed_names() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names.into_iter()
    }

    /// Indicators in force, duplicates included.
    pub fn len(&self) -> usize {
        let all = self.base.len() + self.layers.iter().map(|l| l.set.len()).sum::<usize>();
        all - self.hidden_count().min(all)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes: `total` is exact; the per-kind figures add every level's
    /// distinct keys (hidden keys still counted) until compacted.
    pub fn counts(&self) -> IndicatorCounts {
        let mut c = self.base.counts();
        for l in self.layers.iter() {
            let d = l.set.counts();
            c.ipv4 += d.ipv4;
            c.ipv6 += d.ipv6;
            c.domains += d.domains;
            c.urls += d.urls;
        }
        c.total = self.len();
        c
    }

    /// The best of every level's best: `best(set, level)` is that level's
    /// (record, specificity) among its records in force; a more specific
    /// one wins, an equally specific newer level wins.
    #[inline(never)]
    fn layered(
        &self,
        best: impl Fn(&IndicatorSet, usize) -> Option<(u32, usize)>,
        excluded: impl FnOnce() -> bool,
    ) -> IndicatorMatch<'_> {
        let mut found: Option<(usize, u32, usize)> = None;
        for level in 0..=self.layers.len() {
            if let Some((rec, len)) = best(self.level(level), level) {
                if found.map_or(true, |(_, _, l)| len >= l) {
                    found = Some((level, rec, len));
                }
            }
        }
        let Some((level, rec, _)) = found else { return IndicatorMatch::NoMatch };
        let hit: IndicatorHit<'_> = match level {
            0 => self.base.hit_at(rec, rec),
            l => {
                let layer = &self.layers[l - 1];
                layer.set.hit_at(rec, layer.offset.saturating_add(rec))
            }
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
        if self.layers.is_empty() {
            return self.base.match_ip(ip);
        }
        self.layered(|s, level| s.best_ip_where(ip, |r| !self.hidden(level, r)), || self.exclusions().excludes_ip(ip))
    }

    /// A DNS name: as [`IndicatorSet::match_domain`].
    #[inline]
    pub fn match_domain(&self, name: &[u8]) -> IndicatorMatch<'_> {
        if self.layers.is_empty() {
            return self.base.match_domain(name);
        }
        self.layered(|s, level| s.best_domain_where(name, |r| !self.hidden(level, r)), || self.exclusions().excludes_domain(name))
    }

    /// An HTTP request: as [`IndicatorSet::match_url`].
    #[inline]
    pub fn match_url(&self, host: &[u8], path: &[u8]) -> IndicatorMatch<'_> {
        if self.layers.is_empty() {
            return self.base.match_url(host, path);
        }
        self.layered(|s, level| s.best_url_where(host, path, |r| !self.hidden(level, r)), || self.exclusions().excludes_url(host, path))
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
    /// out and `added` put on top, as one layer.
    fn overlay(
        base: &[ThreatIndicator],
        removed: &[usize],
        added: &[ThreatIndicator],
        excl: &[ThreatExclusion],
        settings: &ThreatFeedSettings,
    ) -> IndicatorOverlay {
        let o = IndicatorOverlay::from_set(build(base, excl, settings));
        let mut hides = Hides::new();
        for &i in removed {
            let ind = &base[i];
            let rec = o.base().find_record(&ind.kind, &ind.audit_id.0, &ind.feed, |r| !hides.contains(0, r)).expect("a base record");
            assert!(hides.insert(0, rec));
        }
        let mut d = IndicatorSetBuilder::new();
        for a in added {
            d.add(a).unwrap();
        }
        o.push_layer(d.build(&ThreatFeedSettings::default()), hides, 0).unwrap()
    }

    fn ind(v: &str, audit: &str, feed: &str) -> ThreatIndicator {
        ThreatIndicator { kind: v.parse().unwrap(), audit_id: audit.into(), feed: feed.into() }
    }

    #[test]
    fn a_layer_adds_hides_remove_and_the_more_specific_wins() {
        let base = [ind("10.0.0.0/8", "wide", "f"), ind("10.1.1.1", "narrow", "f"), ind("evil.example", "D", "f")];
        let added = [ind("10.1.0.0/16", "mid", "f"), ind("www.evil.example", "W", "g"), ind("http://x.example/p", "U", "f")];
        let o = overlay(&base, &[1], &added, &["10.9.0.0/16".parse().unwrap()], &ThreatFeedSettings::default());
        let audit = |m: IndicatorMatch<'_>| m.hit().map(|h| h.audit_id.to_owned());
        assert_eq!(audit(o.match_ip("10.1.1.1".parse().unwrap())).as_deref(), Some("mid"), "removed narrow, the layer's /16 wins");
        assert_eq!(audit(o.match_ip("10.2.0.1".parse().unwrap())).as_deref(), Some("wide"));
        assert!(matches!(o.match_ip("10.9.0.1".parse().unwrap()), IndicatorMatch::Excluded(h) if h.audit_id == "wide"));
        assert_eq!(audit(o.match_domain(b"a.WWW.evil.example.")).as_deref(), Some("W"));
        assert_eq!(audit(o.match_domain(b"evil.example")).as_deref(), Some("D"));
        assert_eq!(audit(o.match_url(b"x.example", b"/p/q")).as_deref(), Some("U"));
        assert_eq!(o.match_url(b"x.example", b"/q"), IndicatorMatch::NoMatch);
        let hit = o.match_domain(b"www.evil.example").hit().unwrap();
        assert_eq!((hit.index, hit.feed), (3 + 1, "g"), "layer hits are numbered after the base");
        assert_eq!(o.len(), 5);
        // Settings apply to the layer's feeds too, without a rebuild.
        let mut s = ThreatFeedSettings::default();
        s.feeds.insert("g".into(), FeedSettings { enabled: true, action: FeedAction::LogOnly });
        let o2 = o.with_settings(&s);
        assert!(!o2.match_domain(b"www.evil.example").drops());
        assert!(o2.match_domain(b"evil.example").drops());
        // Compaction answers the same.
        let c = IndicatorOverlay::from_set(o.compacted().unwrap());
        assert_eq!(c.len(), 5);
        assert!(c.layers().is_empty());
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

        /// base - removed + one layer answers every lookup exactly like one
        /// set built from scratch from (base without the removed) ++ added,
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

    /// An update as the owner sends it: audit ID -> the indicator now
    /// (`None`: removed), in order; or a compaction step.
    #[derive(Debug, Clone)]
    enum Op {
        Batch(Vec<(u8, Option<(IndicatorKind, u8)>)>),
        /// Compact now (nothing came in meanwhile).
        Compact,
        /// Start a compaction (of the overlay as it is now)...
        Mark,
        /// ...and install it under whatever came in since.
        Install,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop::collection::vec((0u8..8, prop::option::weighted(0.8, (kind(), 0u8..3))), 0..6).prop_map(Op::Batch),
            1 => Just(Op::Compact),
            1 => Just(Op::Mark),
            1 => Just(Op::Install),
        ]
    }

    /// What the owner (the Central client) keeps to drive an overlay, as
    /// simple as it can be: the model in order of last change, the audit
    /// IDs changed since the base was built, a compaction under way.
    struct Owner {
        o: IndicatorOverlay,
        model: Vec<ThreatIndicator>,
        touched: std::collections::HashSet<String>,
        mark: Option<Mark>,
    }

    struct Mark {
        built: IndicatorSet,
        folded: usize,
        before: std::collections::HashMap<String, Option<ThreatIndicator>>,
        touched_since: std::collections::HashSet<String>,
    }

    impl Owner {
        fn current(&self, audit: &str) -> Option<&ThreatIndicator> {
            self.model.iter().find(|i| i.audit_id.0 == audit)
        }

        fn apply(&mut self, op: &Op) {
            match op {
                Op::Batch(changes) => {
                    // The final state of each audit ID, in order of last change.
                    let mut mine: Vec<(String, Option<ThreatIndicator>)> = Vec::new();
                    for (a, now) in changes {
                        let audit = format!("A{a}");
                        mine.retain(|(x, _)| *x != audit);
                        let now = now.clone().map(|(kind, f)| ThreatIndicator { kind, audit_id: AuditId(audit.clone()), feed: format!("f{f}") });
                        mine.push((audit, now));
                    }
                    let o = &self.o;
                    let mut hides = Hides::new();
                    for (audit, _) in &mine {
                        let Some(old) = self.current(audit) else { continue };
                        let levels: Vec<usize> = if self.touched.contains(audit) { (1..=o.layers().len()).rev().collect() } else { vec![0] };
                        let found = levels.into_iter().find_map(|level| {
                            let h = &hides;
                            let rec = o.level(level).find_record(&old.kind, audit, &old.feed, |r| !o.hidden(level, r) && !h.contains(level, r))?;
                            Some((level, rec))
                        });
                        let (level, rec) = found.expect("the record in force");
                        hides.insert(level, rec);
                    }
                    let mut b = IndicatorSetBuilder::new();
                    for (_, now) in &mine {
                        if let Some(i) = now {
                            b.add(i).unwrap();
                        }
                    }
                    let frozen = self.mark.as_ref().map_or(0, |m| m.folded);
                    self.o = o.push_layer(b.build(&ThreatFeedSettings::default()), hides, frozen).unwrap();
                    for (audit, now) in mine {
                        if let Some(m) = self.mark.as_mut() {
                            if !m.before.contains_key(&audit) {
                                let was = self.model.iter().find(|i| i.audit_id.0 == audit).cloned();
                                m.before.insert(audit.clone(), was);
                            }
                            m.touched_since.insert(audit.clone());
                        }
                        self.model.retain(|i| i.audit_id.0 != audit);
                        self.model.extend(now);
                        self.touched.insert(audit);
                    }
                }
                Op::Compact => {
                    self.o = IndicatorOverlay::from_set(self.o.compacted().unwrap());
                    self.touched.clear();
                    self.mark = None;
                }
                Op::Mark => {
                    if self.mark.is_none() {
                        let built = self.o.compacted().unwrap();
                        let folded = self.o.layers().len();
                        self.mark = Some(Mark { built, folded, before: Default::default(), touched_since: Default::default() });
                    }
                }
                Op::Install => {
                    if let Some(m) = self.mark.take() {
                        let mut hides = Hides::new();
                        for (audit, before) in &m.before {
                            if let Some(old) = before {
                                let h = &hides;
                                let rec = m.built.find_record(&old.kind, audit, &old.feed, |r| !h.contains(0, r)).expect("in the compaction");
                                hides.insert(0, rec);
                            }
                        }
                        self.o = self.o.rebase(m.built, hides, m.folded);
                        self.touched = m.touched_since;
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// After any sequence of add/remove/replace batches, compactions
        /// and compactions outrun by batches, the layered overlay answers
        /// every lookup like one set built from scratch from the model (in
        /// order of last change), and so does its compaction; the layers
        /// stay bounded.
        #[test]
        fn layers_agree_with_a_from_scratch_build(
            start in indicators(12),
            ops in prop::collection::vec(op(), 1..14),
            excl in prop::collection::vec(exclusion(), 0..4),
            settings in settings(),
            q4 in prop::collection::vec(v4(), 8),
            q6 in prop::collection::vec(v6(), 4),
            qn in prop::collection::vec((name(), any::<bool>()), 8),
            qu in prop::collection::vec((name(), path()), 6),
        ) {
            // Unique audit IDs, as the owner keeps them.
            let mut model: Vec<ThreatIndicator> = Vec::new();
            for (n, mut i) in start.into_iter().enumerate() {
                i.audit_id = AuditId(format!("A{}", n % 8));
                model.retain(|m| m.audit_id != i.audit_id);
                model.push(i);
            }
            let mut w = Owner { o: IndicatorOverlay::from_set(build(&model, &excl, &settings)), model, touched: Default::default(), mark: None };
            for op in &ops {
                w.apply(op);
                // Bounded: MAX_LAYERS normally, more while a compaction is
                // under way and until the push after it lands.
                let bound = if w.mark.is_some() || w.o.layers().len() > MAX_LAYERS { MAX_LAYERS_COMPACTING + 1 } else { MAX_LAYERS };
                prop_assert!(w.o.layers().len() <= bound, "{} layers", w.o.layers().len());
                let reference = build(&w.model, &excl, &settings);
                let compacted = IndicatorOverlay::from_set(w.o.compacted().unwrap());
                prop_assert_eq!(w.o.len(), reference.len());
                prop_assert_eq!(compacted.len(), reference.len());
                for candidate in [&w.o, &compacted] {
                    for q in q4.iter().map(|&a| IpAddr::from(a)).chain(q6.iter().map(|&a| IpAddr::from(a))) {
                        prop_assert_eq!(summary(candidate.match_ip(q)), summary(reference.match_ip(q)), "ip {} after {:?}", q, op);
                    }
                    for (n, dot) in &qn {
                        let q = if *dot { format!("{n}.") } else { n.clone() };
                        prop_assert_eq!(summary(candidate.match_domain(q.as_bytes())), summary(reference.match_domain(q.as_bytes())), "domain {}", q);
                    }
                    for (h, p) in &qu {
                        prop_assert_eq!(summary(candidate.match_url(h.as_bytes(), p.as_bytes())), summary(reference.match_url(h.as_bytes(), p.as_bytes())), "url {} {}", h, p);
                    }
                }
            }
        }
    }
}
