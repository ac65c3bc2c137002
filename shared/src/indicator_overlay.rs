//! The indicator state workers query: a large compiled *base*
//! [`IndicatorSet`] and a few small *layers* on top of it, one per recent
//! update, each with the audit IDs its update touched (added, replaced or
//! removed: [`TouchedIds`]). A layer *supersedes* every record of the
//! levels below it whose audit ID it touched: the update said what that
//! audit ID means now (the layer's own record for it, or nothing), so no
//! record of the change's audit IDs needs to be looked up, in the model or
//! in the sets, to publish it. Records added as fixed
//! ([`IndicatorSetBuilder::add_fixed_parts`]: third-party feeds', whose
//! audit IDs are not Central's) are never superseded.
//!
//! This module owns the lookup over those parts, answering exactly what one
//! set built from scratch would (the base's records in force in their
//! order, then each layer's in theirs): the most specific enabled
//! indicator wins, an equally specific later one (a newer layer's) wins over
//! an earlier one, and exclusions win over both. It lets the control plane
//! publish a change to a million-indicator state by compiling only that
//! change into a new layer ([`IndicatorOverlay::push_layer`]; at most
//! [`MAX_LAYERS`] of them: past that the smallest adjacent pair is merged),
//! and fold the layers into one
//! ([`IndicatorOverlay::layers_compacted`], [`IndicatorOverlay::fold_layers`])
//! or everything into a new base later ([`IndicatorOverlay::compacted`],
//! [`IndicatorOverlay::rebase`]) off the critical path.
//!
//! It must never make a lookup block, allocate or write shared memory: an
//! overlay is immutable once built and is published whole (see `state`), so
//! workers never see half an update. With no layers (the usual state after
//! a compaction) a lookup is the base set's own; with layers, the touched
//! audit IDs are probed only for a record that matched. It does not decide
//! *when* to compact, and does not know how many records are in force
//! while layers supersede some (that needs the owner's model: the Central
//! client's).

use crate::indicators::{
    audit_id_hash, ExclusionSet, IndicatorCounts, IndicatorError, IndicatorHit, IndicatorMatch, IndicatorSet,
    IndicatorSetBuilder, ThreatFeedSettings,
};
use hashbrown::HashTable;
use std::net::IpAddr;
use std::sync::Arc;

/// Layers an overlay has at most (see [`IndicatorOverlay::push_layer`]):
/// pushing one more merges the two adjacent layers that touched the fewest
/// audit IDs. Folding layers is the owner's background work; a merge here
/// is on an update's way to the workers, so it is the exception: the owner
/// folds long before this many pile up, unless updates come faster than
/// it can (each layer costs a lookup the flow cache does not answer one
/// more probe meanwhile).
pub const MAX_LAYERS: usize = 8;

/// Layers an overlay keeps above those a compaction under way folds (the
/// `frozen` of [`IndicatorOverlay::push_layer`]), at least, even past
/// [`MAX_LAYERS`]: so that a merge has a pair to choose from besides the
/// newest layer and the new one (merging those each time grows one layer
/// by every update, recompiled whole each time, for as long as the
/// compaction takes). Installing the compaction takes the frozen ones
/// away: at most `MAX_LAYERS + ABOVE_FROZEN` exist.
pub const ABOVE_FROZEN: usize = 3;

/// The layers an overlay with `frozen` layers under compaction keeps
/// before a push merges two (see [`IndicatorOverlay::push_layer`]).
fn layer_cap(frozen: usize) -> usize {
    MAX_LAYERS.max(frozen + ABOVE_FROZEN)
}

/// The audit IDs one update touched (added, replaced or removed), each
/// once, in the order first touched. One string, the ends of the IDs in it
/// and a table of their numbers by hash: built in one pass over an update
/// (a few allocations, not one per ID), probed only for a record that
/// matched a lookup.
#[derive(Debug, Clone, Default)]
pub struct TouchedIds {
    text: String,
    /// Where ID `i` ends in `text` (it starts where ID `i - 1` ends).
    ends: Vec<u32>,
    /// ID numbers, by the ID's hash.
    table: HashTable<u32>,
}

impl TouchedIds {
    /// None yet; room for `ids` IDs of `bytes` bytes in all.
    pub fn with_capacity(ids: usize, bytes: usize) -> Self {
        TouchedIds { text: String::with_capacity(bytes), ends: Vec::with_capacity(ids), table: HashTable::with_capacity(ids) }
    }

    /// The table's hash of an ID: its [`audit_id_hash`] (which every
    /// record keeps), spread over 64 bits (the table takes its buckets
    /// from the low bits, a tag from the top seven).
    #[inline]
    fn hash(id: &str) -> u64 {
        Self::spread(audit_id_hash(id))
    }

    #[inline]
    fn spread(h: u32) -> u64 {
        u64::from(h).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[inline]
    fn at<'t>(text: &'t str, ends: &[u32], i: usize) -> &'t str {
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        &text[start..ends[i] as usize]
    }

    /// ID number `i`.
    pub fn get(&self, i: usize) -> &str {
        Self::at(&self.text, &self.ends, i)
    }

    /// IDs held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The IDs, in the order first inserted.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Adds `id` unless it is held; returns its number and whether it is new.
    pub fn insert(&mut self, id: &str) -> Result<(usize, bool), IndicatorError> {
        let h = Self::hash(id);
        let TouchedIds { text, ends, table } = self;
        if let Some(&i) = table.find(h, |&i| Self::at(text, ends, i as usize) == id) {
            return Ok((i as usize, false));
        }
        let too_large = || IndicatorError::TooLarge("the touched audit IDs");
        let i = u32::try_from(ends.len()).map_err(|_| too_large())?;
        let end = u32::try_from(text.len() + id.len()).map_err(|_| too_large())?;
        text.push_str(id);
        ends.push(end);
        table.insert_unique(h, i, |&j| Self::hash(Self::at(text, ends, j as usize)));
        Ok((i as usize, true))
    }

    /// Whether `id` is held.
    #[inline]
    pub fn contains(&self, id: &str) -> bool {
        self.contains_hashed(Self::hash(id), id)
    }

    #[inline]
    fn contains_hashed(&self, hash: u64, id: &str) -> bool {
        self.find_hashed(hash, id).is_some()
    }

    #[inline]
    fn find_hashed(&self, hash: u64, id: &str) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        self.table.find(hash, |&i| self.get(i as usize) == id).map(|&i| i as usize)
    }

    /// The union of `parts`, in order.
    fn union<'p>(parts: impl IntoIterator<Item = &'p TouchedIds> + Clone) -> Result<TouchedIds, IndicatorError> {
        let (ids, bytes) = parts.clone().into_iter().fold((0, 0), |(n, b), t| (n + t.len(), b + t.text.len()));
        let mut all = TouchedIds::with_capacity(ids, bytes);
        for t in parts {
            for id in t.iter() {
                all.insert(id)?;
            }
        }
        Ok(all)
    }
}

/// Every audit ID an overlay's layers touched, with the newest level that
/// touched it: what a compaction asks of each record (one probe, where
/// [`IndicatorOverlay::superseded`] probes every layer above the record).
struct NewestTouch {
    ids: TouchedIds,
    /// By ID number: the newest level that touched it.
    level: Vec<u32>,
}

impl NewestTouch {
    fn of(layers: &[Layer]) -> Result<Self, IndicatorError> {
        let (n, bytes) = layers.iter().fold((0, 0), |(n, b), l| (n + l.touched.len(), b + l.touched.text.len()));
        let mut ids = TouchedIds::with_capacity(n, bytes);
        let mut level = Vec::with_capacity(n);
        // Newest first: an ID's first insertion is its newest level.
        for (i, l) in layers.iter().enumerate().rev() {
            for id in l.touched.iter() {
                if ids.insert(id)?.1 {
                    level.push(index(i + 1));
                }
            }
        }
        Ok(NewestTouch { ids, level })
    }

    /// Whether record `rec` of `set`, at `level`, is superseded.
    fn supersedes(&self, set: &IndicatorSet, level: usize, rec: u32) -> bool {
        let Some((h, id)) = set.supersedable_audit_id(rec) else { return false };
        self.ids.find_hashed(TouchedIds::spread(h), id).is_some_and(|n| self.level[n] as usize > level)
    }
}

/// Whether record `rec` of `set` is superseded by one of `above` (probed
/// by the hash the record keeps: its audit ID is read only when a touched
/// ID has the same).
#[inline]
fn superseded_by<'t>(mut above: impl Iterator<Item = &'t TouchedIds>, set: &IndicatorSet, rec: u32) -> bool {
    let Some((h, id)) = set.supersedable_audit_id(rec) else { return false };
    let h = TouchedIds::spread(h);
    above.any(|t| t.contains_hashed(h, id))
}

/// A base set, layers on top, one set of exclusions and feed settings.
#[derive(Debug, Clone)]
pub struct IndicatorOverlay {
    base: IndicatorSet,
    layers: Arc<[Layer]>,
}

/// One update's records, and the audit IDs it touched.
#[derive(Debug, Clone)]
pub struct Layer {
    set: IndicatorSet,
    touched: Arc<TouchedIds>,
    /// Index reported for this layer's record 0 (records below, superseded ones included).
    offset: u32,
}

impl Layer {
    /// Its records.
    pub fn set(&self) -> &IndicatorSet {
        &self.set
    }

    /// The audit IDs it touched (those of its records, and those it removed).
    pub fn touched(&self) -> &TouchedIds {
        &self.touched
    }
}

/// The layers of an overlay folded into one
/// ([`IndicatorOverlay::layers_compacted`]): their records in force, and
/// every audit ID they touched (what the one layer supersedes in the base).
#[derive(Debug, Clone)]
pub struct FoldedLayers {
    set: IndicatorSet,
    touched: TouchedIds,
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

    /// The base set (superseded records included).
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

    /// Whether record `rec` of `level` is superseded by a layer above it.
    #[inline]
    pub fn superseded(&self, level: usize, rec: u32) -> bool {
        match self.layers.get(level..) {
            Some(above) if !above.is_empty() => superseded_by(above.iter().map(|l| &*l.touched), self.level(level), rec),
            _ => false,
        }
    }

    /// Audit IDs the layers touched, all layers (each layer's counted once).
    pub fn touched_count(&self) -> usize {
        self.layers.iter().map(|l| l.touched.len()).sum()
    }

    /// This set with `set` on top as a new layer, superseding the records
    /// of this overlay's levels with an audit ID in `touched` (every audit
    /// ID the update touched: those of `set`'s records, which must be its
    /// only ones, and those it removed). When that would make more than
    /// [`MAX_LAYERS`] (or `frozen` + [`ABOVE_FROZEN`] if more), the two
    /// adjacent layers that touched the fewest audit IDs together are
    /// merged into one (one merge per push: its cost is on the update's
    /// way), never one of the `frozen` oldest (those a compaction under way
    /// folds: see [`IndicatorOverlay::rebase`]). Merging the smallest pair,
    /// not the newest layers, keeps each merge near the size of an update:
    /// while a compaction cannot land, the newest layer would otherwise
    /// grow by every update and be recompiled whole each time.
    pub fn push_layer(&self, set: IndicatorSet, touched: TouchedIds, frozen: usize) -> Result<IndicatorOverlay, IndicatorError> {
        let set = set.with_settings(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let cap = layer_cap(frozen);
        let mut layers: Vec<Layer> = self.layers.to_vec();
        layers.push(Layer { set, touched: Arc::new(touched), offset: 0 });
        let first = frozen.min(layers.len());
        if layers.len() > cap && layers.len() - first >= 2 {
            let i = (first..layers.len() - 1)
                .min_by_key(|&i| layers[i].touched.len() + layers[i + 1].touched.len())
                .unwrap_or(first);
            let merged = self.merged_pair(&layers[i], &layers[i + 1])?;
            layers.splice(i..=i + 1, [merged]);
        }
        let mut offset = self.base.len();
        for l in &mut layers {
            l.offset = index(offset);
            offset += l.set.len();
        }
        Ok(IndicatorOverlay { base: self.base.clone(), layers: layers.into() })
    }

    /// Whether the next [`IndicatorOverlay::push_layer`] with `frozen`
    /// merges two layers on its update's way (the layers are at their cap).
    pub fn merges_next_push(&self, frozen: usize) -> bool {
        self.layers.len() >= layer_cap(frozen)
    }

    /// Adjacent layers `lower` and `upper` as one: `lower`'s records that
    /// `upper` does not supersede, then `upper`'s, superseding what either
    /// touched (the layers above them supersede its records as they did
    /// theirs).
    fn merged_pair(&self, lower: &Layer, upper: &Layer) -> Result<Layer, IndicatorError> {
        let mut b = IndicatorSetBuilder::with_capacity(lower.set.len() + upper.set.len());
        lower.set.add_records_to(&mut b, |r| !superseded_by(std::iter::once(&*upper.touched), &lower.set, r))?;
        upper.set.add_records_to(&mut b, |_| true)?;
        let set = b.build(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let touched = TouchedIds::union([&*lower.touched, &*upper.touched])?;
        Ok(Layer { set, touched: Arc::new(touched), offset: 0 })
    }

    /// `base` (the compaction of this overlay's base and `folded` oldest
    /// layers) under this overlay's newer layers, which supersede its
    /// records as they did the levels it folds. Settings and exclusions
    /// stay this overlay's.
    pub fn rebase(&self, base: IndicatorSet, folded: usize) -> IndicatorOverlay {
        let base = base.with_settings(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let mut offset = base.len();
        let layers: Vec<Layer> = self.layers[folded.min(self.layers.len())..]
            .iter()
            .map(|l| {
                let layer = Layer { offset: index(offset), ..l.clone() };
                offset += l.set.len();
                layer
            })
            .collect();
        IndicatorOverlay { base, layers: layers.into() }
    }

    /// This overlay's layers, not its base, as one: their records in
    /// force, oldest first, and the audit IDs they touched (see
    /// [`IndicatorOverlay::fold_layers`]). Costs what the layers hold, not
    /// what the base does.
    pub fn layers_compacted(&self) -> Result<FoldedLayers, IndicatorError> {
        let newest = NewestTouch::of(&self.layers)?;
        let mut b = IndicatorSetBuilder::with_capacity(self.layers.iter().map(|l| l.set.len()).sum());
        for level in 1..=self.layers.len() {
            let set = self.level(level);
            set.add_records_to(&mut b, |r| !newest.supersedes(set, level, r))?;
        }
        let set = b.build(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        Ok(FoldedLayers { set, touched: newest.ids })
    }

    /// `merged` (the [`IndicatorOverlay::layers_compacted`] of an overlay
    /// whose layers were this one's `folded` oldest) as the one layer over
    /// this base in place of those, superseding what they superseded of
    /// the base; the newer layers stay above it. Settings and exclusions
    /// stay this overlay's.
    pub fn fold_layers(&self, merged: FoldedLayers, folded: usize) -> IndicatorOverlay {
        let folded = folded.min(self.layers.len());
        if folded == 0 {
            // Nothing folded (no layer then): no layer to put in their place.
            return self.clone();
        }
        let set = merged.set.with_settings(self.base.settings()).with_exclusion_set(self.base.exclusion_set());
        let mut offset = self.base.len();
        let mut layers = vec![Layer { set, touched: Arc::new(merged.touched), offset: index(offset) }];
        offset += layers[0].set.len();
        for l in &self.layers[folded..] {
            layers.push(Layer { offset: index(offset), ..l.clone() });
            offset += l.set.len();
        }
        IndicatorOverlay { base: self.base.clone(), layers: layers.into() }
    }

    /// One set answering like this overlay (builds a new base; seconds for
    /// millions of indicators: run it off the critical path). Fixed
    /// records stay fixed.
    pub fn compacted(&self) -> Result<IndicatorSet, IndicatorError> {
        let newest = NewestTouch::of(&self.layers)?;
        let mut b = IndicatorSetBuilder::with_capacity(self.records());
        for level in 0..=self.layers.len() {
            let set = self.level(level);
            set.add_records_to(&mut b, |r| !newest.supersedes(set, level, r))?;
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

    /// Names of the feeds the indicators came from (superseded ones included).
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

    /// Records held, all levels, superseded ones included: the indicators
    /// in force (duplicates included) when there are no layers, at most
    /// that many otherwise.
    pub fn records(&self) -> usize {
        self.base.len() + self.layers.iter().map(|l| l.set.len()).sum::<usize>()
    }

    /// Sizes, every level's added up (records superseded by a layer still
    /// counted until compacted: `total` is [`IndicatorOverlay::records`]).
    pub fn counts(&self) -> IndicatorCounts {
        let mut c = self.base.counts();
        for l in self.layers.iter() {
            let d = l.set.counts();
            c.ipv4 += d.ipv4;
            c.ipv6 += d.ipv6;
            c.domains += d.domains;
            c.urls += d.urls;
        }
        c.total = self.records();
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
        self.layered(|s, level| s.best_ip_where(ip, |r| !self.superseded(level, r)), || self.exclusions().excludes_ip(ip))
    }

    /// A DNS name: as [`IndicatorSet::match_domain`].
    #[inline]
    pub fn match_domain(&self, name: &[u8]) -> IndicatorMatch<'_> {
        if self.layers.is_empty() {
            return self.base.match_domain(name);
        }
        self.layered(|s, level| s.best_domain_where(name, |r| !self.superseded(level, r)), || self.exclusions().excludes_domain(name))
    }

    /// An HTTP request: as [`IndicatorSet::match_url`].
    #[inline]
    pub fn match_url(&self, host: &[u8], path: &[u8]) -> IndicatorMatch<'_> {
        if self.layers.is_empty() {
            return self.base.match_url(host, path);
        }
        self.layered(|s, level| s.best_url_where(host, path, |r| !self.superseded(level, r)), || self.exclusions().excludes_url(host, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicators::{
        AuditId, FeedAction, FeedSettings, IndicatorKind, IndicatorSetBuilder, ThreatExclusion, ThreatIndicator,
    };
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn build(inds: &[ThreatIndicator], excl: &[ThreatExclusion], settings: &ThreatFeedSettings) -> IndicatorSet {
        IndicatorSet::build(inds, excl, settings).unwrap()
    }

    /// `inds` compiled, those `fixed` says are fixed added as such.
    fn build_fixed(
        inds: &[ThreatIndicator],
        fixed: impl Fn(usize) -> bool,
        excl: &[ThreatExclusion],
        settings: &ThreatFeedSettings,
    ) -> IndicatorSet {
        let mut b = IndicatorSetBuilder::new();
        for (n, i) in inds.iter().enumerate() {
            if fixed(n) {
                b.add_fixed_parts(&i.kind, &i.audit_id.0, &i.feed).unwrap();
            } else {
                b.add(i).unwrap();
            }
        }
        b.build(settings).with_exclusions(excl).unwrap()
    }

    fn touched<'a>(ids: impl IntoIterator<Item = &'a str>) -> TouchedIds {
        let mut t = TouchedIds::default();
        for id in ids {
            t.insert(id).unwrap();
        }
        t
    }

    /// Base built from `base` (its first `fixed` fixed); then one layer
    /// adding `added` and removing the audit IDs `removed`, touching those
    /// and the added ones'.
    fn overlay(
        base: &[ThreatIndicator],
        fixed: usize,
        removed: &[&str],
        added: &[ThreatIndicator],
        excl: &[ThreatExclusion],
        settings: &ThreatFeedSettings,
    ) -> IndicatorOverlay {
        let o = IndicatorOverlay::from_set(build_fixed(base, |n| n < fixed, excl, settings));
        let t = touched(removed.iter().copied().chain(added.iter().map(|a| a.audit_id.0.as_str())));
        let mut d = IndicatorSetBuilder::new();
        for a in added {
            d.add(a).unwrap();
        }
        o.push_layer(d.build(&ThreatFeedSettings::default()), t, 0).unwrap()
    }

    fn ind(v: &str, audit: &str, feed: &str) -> ThreatIndicator {
        ThreatIndicator { kind: v.parse().unwrap(), audit_id: audit.into(), feed: feed.into() }
    }

    #[test]
    fn touched_ids_hold_each_id_once_in_order() {
        let mut t = TouchedIds::with_capacity(2, 4);
        assert_eq!(t.insert("b").unwrap(), (0, true));
        assert_eq!(t.insert("").unwrap(), (1, true));
        assert_eq!(t.insert("ab").unwrap(), (2, true));
        assert_eq!(t.insert("b").unwrap(), (0, false));
        for i in 0..200 {
            t.insert(&format!("id-{i}")).unwrap();
        }
        assert_eq!(t.len(), 203);
        assert!(t.contains("b") && t.contains("") && t.contains("ab") && t.contains("id-199"));
        assert!(!t.contains("a") && !t.contains("id-200") && !t.contains("bab"));
        assert_eq!(t.iter().take(3).collect::<Vec<_>>(), ["b", "", "ab"]);
        let u = TouchedIds::union([&touched(["x", "b"]), &t]).unwrap();
        assert_eq!(u.len(), 204);
        assert_eq!(u.iter().take(3).collect::<Vec<_>>(), ["x", "b", ""]);
        assert!(!TouchedIds::default().contains(""));
    }

    #[test]
    fn a_layer_supersedes_what_it_touched_and_the_more_specific_wins() {
        let base = [ind("10.0.0.0/8", "wide", "f"), ind("10.1.1.1", "narrow", "f"), ind("evil.example", "D", "f")];
        let added = [ind("10.1.0.0/16", "mid", "f"), ind("www.evil.example", "W", "g"), ind("http://x.example/p", "U", "f")];
        let o = overlay(&base, 0, &["narrow"], &added, &["10.9.0.0/16".parse().unwrap()], &ThreatFeedSettings::default());
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
        assert_eq!(o.records(), 6, "the superseded record still counted");
        assert_eq!(o.touched_count(), 4);
        // Settings apply to the layer's feeds too, without a rebuild.
        let mut s = ThreatFeedSettings::default();
        s.feeds.insert("g".into(), FeedSettings { enabled: true, action: FeedAction::LogOnly });
        let o2 = o.with_settings(&s);
        assert!(!o2.match_domain(b"www.evil.example").drops());
        assert!(o2.match_domain(b"evil.example").drops());
        // Compaction answers the same.
        let c = IndicatorOverlay::from_set(o.compacted().unwrap());
        assert_eq!(c.records(), 5);
        assert!(c.layers().is_empty());
        for q in ["10.1.1.1", "10.2.0.1", "10.9.0.1", "11.0.0.1"] {
            let ip = q.parse().unwrap();
            assert_eq!(summary(c.match_ip(ip)), summary(o.match_ip(ip)), "{q}");
        }
    }

    /// A fixed record (a third-party feed's) stays in force whatever audit
    /// ID a layer touches, through compactions too.
    #[test]
    fn fixed_records_are_never_superseded() {
        let base = [ind("198.51.100.7", "A1", "tp"), ind("203.0.113.9", "A1", "mdr")];
        let o = overlay(&base, 1, &["A1"], &[], &[], &ThreatFeedSettings::default());
        let feed = |o: &IndicatorOverlay, q: &str| o.match_ip(q.parse().unwrap()).hit().map(|h| h.feed.to_owned());
        assert_eq!(feed(&o, "198.51.100.7").as_deref(), Some("tp"), "fixed: stays");
        assert_eq!(feed(&o, "203.0.113.9"), None, "Central's A1: removed");
        let c = IndicatorOverlay::from_set(o.compacted().unwrap());
        assert_eq!(c.records(), 1);
        let again = c.push_layer(IndicatorSet::empty(), touched(["A1"]), 0).unwrap();
        assert_eq!(feed(&again, "198.51.100.7").as_deref(), Some("tp"), "still fixed after a compaction");
        let folded = again.fold_layers(again.layers_compacted().unwrap(), 1);
        assert_eq!(feed(&IndicatorOverlay::from_set(folded.compacted().unwrap()), "198.51.100.7").as_deref(), Some("tp"));
    }

    /// Past the cap the two adjacent layers that touched the fewest IDs
    /// merge, never a frozen one; the answers stay those of the layers.
    #[test]
    fn the_smallest_pair_of_layers_merges_past_the_cap() {
        let layer = |from: u32, n: u32| {
            let inds: Vec<ThreatIndicator> = (from..from + n).map(|i| ind(&format!("10.0.{}.{}", i / 256, i % 256), &format!("A{i}"), "f")).collect();
            (build(&inds, &[], &ThreatFeedSettings::default()), touched(inds.iter().map(|i| i.audit_id.0.as_str())))
        };
        let sizes = |o: &IndicatorOverlay| o.layers().iter().map(|l| l.touched().len()).collect::<Vec<usize>>();
        let mut o = IndicatorOverlay::default();
        let mut from = 0;
        for n in [40, 30, 20, 10, 8, 6, 2, 4] {
            let (set, t) = layer(from, n);
            o = o.push_layer(set, t, 0).unwrap();
            from += n;
        }
        assert_eq!(sizes(&o), [40, 30, 20, 10, 8, 6, 2, 4], "up to MAX_LAYERS: no merge");
        assert!(o.merges_next_push(0), "at MAX_LAYERS: the next push merges");
        assert!(!o.merges_next_push(8), "all frozen: ABOVE_FROZEN more before a merge");
        let (set, t) = layer(from, 5);
        let nine = o.push_layer(set, t, 0).unwrap();
        assert_eq!(sizes(&nine), [40, 30, 20, 10, 8, 6, 6, 5], "the smallest adjacent pair (2 + 4) merged");
        // All 8 frozen (a compaction folds them): ABOVE_FROZEN more, then a
        // merge among those only.
        let mut o = o;
        for k in 0..4 {
            assert_eq!(o.merges_next_push(8), k == 3, "{k} pushed over the frozen");
            let (set, t) = layer(from + k, 1);
            o = o.push_layer(set, t, 8).unwrap();
        }
        assert_eq!(sizes(&o), [40, 30, 20, 10, 8, 6, 2, 4, 2, 1, 1], "the lowest smallest pair above the frozen merged");
        for i in [0, 39, 40, 119, 120, 123] {
            let q = format!("10.0.{}.{}", i / 256, i % 256).parse().unwrap();
            assert_eq!(o.match_ip(q).hit().map(|h| h.audit_id.to_owned()), Some(format!("A{i}")));
        }
        let hit = o.match_ip("10.0.0.123".parse().unwrap()).hit().unwrap();
        assert_eq!(hit.index, 123, "hits numbered after the records below, merged ones included");
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

        /// A base (its first `fixed` records fixed) and one layer touching
        /// some audit IDs answers every lookup exactly like one set built
        /// from scratch from (the base without the records it supersedes)
        /// ++ the layer's, and so does its compaction.
        #[test]
        fn overlay_agrees_with_a_from_scratch_build(
            base in indicators(30),
            fixed in 0usize..8,
            removed_mask in prop::collection::vec(any::<bool>(), 4),
            added in indicators(12),
            excl in prop::collection::vec(exclusion(), 0..5),
            settings in settings(),
            q4 in prop::collection::vec(v4(), 8),
            q6 in prop::collection::vec(v6(), 6),
            qn in prop::collection::vec((name(), any::<bool>(), any::<bool>()), 8),
            qu in prop::collection::vec((name(), path()), 8),
            qu6 in prop::collection::vec((v6(), path()), 3),
        ) {
            let removed: Vec<String> = (0..4).filter(|&a| removed_mask[a]).map(|a| format!("audit-{a}")).collect();
            let removed: Vec<&str> = removed.iter().map(String::as_str).collect();
            let gone: HashSet<&str> = removed.iter().copied().chain(added.iter().map(|a| a.audit_id.0.as_str())).collect();
            let kept: Vec<ThreatIndicator> = base.iter().enumerate()
                .filter(|(n, b)| *n < fixed || !gone.contains(b.audit_id.0.as_str()))
                .map(|(_, b)| b.clone())
                .chain(added.iter().cloned())
                .collect();
            let reference = build(&kept, &excl, &settings);
            let o = overlay(&base, fixed, &removed, &added, &excl, &settings);
            let compacted = IndicatorOverlay::from_set(o.compacted().unwrap());
            prop_assert_eq!(compacted.records(), reference.len());
            prop_assert_eq!(o.records(), base.len() + added.len());
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
        /// Start a compaction of the overlay as it is now, into a new base...
        Mark,
        /// ...or of its layers into one...
        MarkLayers,
        /// ...and install it under whatever came in since.
        Install,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop::collection::vec((0u8..8, prop::option::weighted(0.8, (kind(), 0u8..3))), 0..6).prop_map(Op::Batch),
            1 => Just(Op::Compact),
            1 => Just(Op::Mark),
            1 => Just(Op::MarkLayers),
            1 => Just(Op::Install),
        ]
    }

    /// What the owner (the Central client) keeps to drive an overlay, as
    /// simple as it can be: the model in order of last change (fixed
    /// records, a third-party feed's, stay where they are), and a
    /// compaction under way.
    struct Owner {
        o: IndicatorOverlay,
        model: Vec<(ThreatIndicator, bool)>,
        mark: Option<Mark>,
    }

    enum Built {
        Base(IndicatorSet),
        Layers(FoldedLayers),
    }

    struct Mark {
        built: Built,
        folded: usize,
        /// The folded layers' touched IDs (where they are: no merge may
        /// touch those layers until the compaction is installed).
        frozen: Vec<*const TouchedIds>,
    }

    impl Owner {
        fn reference(&self, excl: &[ThreatExclusion], settings: &ThreatFeedSettings) -> IndicatorSet {
            let inds: Vec<ThreatIndicator> = self.model.iter().map(|(i, _)| i.clone()).collect();
            build(&inds, excl, settings)
        }

        fn apply(&mut self, op: &Op) {
            match op {
                Op::Batch(changes) => {
                    // The final state of each audit ID, in order of last change.
                    let mut mine: Vec<(String, Option<ThreatIndicator>)> = Vec::new();
                    let mut t = TouchedIds::default();
                    for (a, now) in changes {
                        let audit = format!("A{a}");
                        t.insert(&audit).unwrap();
                        mine.retain(|(x, _)| *x != audit);
                        let now = now.clone().map(|(kind, f)| ThreatIndicator { kind, audit_id: AuditId(audit.clone()), feed: format!("f{f}") });
                        mine.push((audit, now));
                    }
                    let mut b = IndicatorSetBuilder::new();
                    for (_, now) in &mine {
                        if let Some(i) = now {
                            b.add(i).unwrap();
                        }
                    }
                    let frozen = self.mark.as_ref().map_or(0, |m| m.folded);
                    self.o = self.o.push_layer(b.build(&ThreatFeedSettings::default()), t, frozen).unwrap();
                    for (audit, now) in mine {
                        self.model.retain(|(i, fixed)| *fixed || i.audit_id.0 != audit);
                        self.model.extend(now.map(|i| (i, false)));
                    }
                }
                Op::Compact => {
                    self.o = IndicatorOverlay::from_set(self.o.compacted().unwrap());
                    self.mark = None;
                }
                Op::Mark | Op::MarkLayers => {
                    if self.mark.is_none() {
                        let built = match op {
                            Op::Mark => Built::Base(self.o.compacted().unwrap()),
                            _ => Built::Layers(self.o.layers_compacted().unwrap()),
                        };
                        let frozen = self.o.layers().iter().map(|l| l.touched() as *const TouchedIds).collect();
                        self.mark = Some(Mark { built, folded: self.o.layers().len(), frozen });
                    }
                }
                Op::Install => {
                    if let Some(m) = self.mark.take() {
                        self.o = match m.built {
                            Built::Base(base) => self.o.rebase(base, m.folded),
                            Built::Layers(merged) => self.o.fold_layers(merged, m.folded),
                        };
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// After any sequence of add/remove/replace batches, compactions
        /// (into a new base or into one layer) and compactions outrun by
        /// batches, the layered overlay answers every lookup like one set
        /// built from scratch from the model (in order of last change), and
        /// so does its compaction; fixed records (whose audit IDs collide
        /// with the batches') stay in force; the layers stay bounded.
        #[test]
        fn layers_agree_with_a_from_scratch_build(
            start in indicators(12),
            fixed in indicators(4),
            ops in prop::collection::vec(op(), 1..24),
            excl in prop::collection::vec(exclusion(), 0..4),
            settings in settings(),
            q4 in prop::collection::vec(v4(), 8),
            q6 in prop::collection::vec(v6(), 4),
            qn in prop::collection::vec((name(), any::<bool>()), 8),
            qu in prop::collection::vec((name(), path()), 6),
        ) {
            // Unique audit IDs, as the owner keeps them; then the fixed
            // ones, as `build_set` adds a third-party feed's after Central's.
            let mut model: Vec<(ThreatIndicator, bool)> = Vec::new();
            for (n, mut i) in start.into_iter().enumerate() {
                i.audit_id = AuditId(format!("A{}", n % 8));
                model.retain(|(m, _)| m.audit_id != i.audit_id);
                model.push((i, false));
            }
            for (n, mut i) in fixed.into_iter().enumerate() {
                i.audit_id = AuditId(format!("A{}", n * 2));
                model.push((i, true));
            }
            let inds: Vec<ThreatIndicator> = model.iter().map(|(i, _)| i.clone()).collect();
            let base = build_fixed(&inds, |n| model[n].1, &excl, &settings);
            let mut w = Owner { o: IndicatorOverlay::from_set(base), model, mark: None };
            for op in &ops {
                w.apply(op);
                // Bounded: MAX_LAYERS, or ABOVE_FROZEN past the layers a
                // compaction under way folds.
                let bound = MAX_LAYERS.max(w.mark.as_ref().map_or(0, |m| m.folded + ABOVE_FROZEN));
                prop_assert!(w.o.layers().len() <= bound, "{} layers", w.o.layers().len());
                if let Some(m) = &w.mark {
                    let now: Vec<*const TouchedIds> = w.o.layers().iter().take(m.folded).map(|l| l.touched() as *const TouchedIds).collect();
                    prop_assert_eq!(&now, &m.frozen, "a layer a compaction folds was merged");
                }
                let reference = w.reference(&excl, &settings);
                let compacted = IndicatorOverlay::from_set(w.o.compacted().unwrap());
                prop_assert_eq!(compacted.records(), reference.len());
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
