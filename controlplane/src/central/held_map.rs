//! The map behind the gateway's model of what Central shared (indicators
//! by audit ID): a hash map that grows without stopping the update that
//! makes it grow.
//!
//! A standard hash map doubles all at once: every entry is moved into a
//! table twice the size within one insert. Past 3.67M indicators that one
//! insert made a 100k batch's commit take 0.6 s alone and 1.8-2.3 s next
//! to the rest of the control plane's work (measured here), and the next
//! update from Central waited behind it. Most of that is first touches of
//! the new table's pages (on this VM a page first touched costs ~10 us):
//! entries land at random places in it.
//!
//! So this map, first, keeps its entries in insertion order in a vector
//! beside a table of indices (`indexmap`): an insert writes 8 bytes at a
//! random place and appends the entry, and a larger vector is a
//! reallocation whose pages are touched only as it fills. Second, it
//! starts a new map ([`GROWTH`] times the entries) when the current one is
//! full, and moves the old entries into it: ahead of need while the
//! control plane is idle ([`HeldMap::settle_ahead`], in small steps that
//! give way to an update), and otherwise [`MOVES_PER_INSERT`] per insert,
//! in each batch's [`HeldMap::settle`]: the doubling's cost is spread over
//! idle time and the batches that follow (the old map is always empty
//! before the new one fills). Meanwhile a lookup that misses the new map
//! probes the old one too.
//!
//! It owns only the two tables; it must never hold an entry in both, nor
//! move entries anywhere but in `insert`, `settle` and `settle_ahead`.

use indexmap::map::raw_entry_v1::RawEntryMut;
use indexmap::map::RawEntryApiV1;
use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

type Table<V> = IndexMap<Box<str>, V, FxBuildHasher>;

/// Old entries moved into the new table per entry inserted while a
/// doubling is under way (in [`HeldMap::settle`], less what was moved
/// ahead).
pub const MOVES_PER_INSERT: usize = 1;

/// The new map's room, in entries of the full one: with one move per
/// insert the old map is empty after as many inserts as it held, when the
/// new one holds twice that; the rest is slack for a batch's inserts
/// before its `settle`.
pub const GROWTH: f64 = 2.25;

/// Batches smaller than this are looked up in their own order
/// ([`HeldMap::get_batch`]): sorting them would cost more than it saves.
const SWEEP_FROM: usize = if cfg!(test) { 8 } else { 4096 };

/// A key's hash as the tables compute it (`str`'s `Hash` under
/// `FxBuildHasher`), so that the `_hashed_nocheck` calls find what `get`
/// and `insert` put.
fn key_hash(key: &str) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// The `i` of `which` in the order of their home buckets in `table`
/// (`hashes[i]`: the key's hash): a counting sort on the top 12 bits of
/// the home bucket, stable (a key's touches keep their order).
fn table_order<V>(table: &Table<V>, hashes: &[u64], which: impl Iterator<Item = u32> + Clone) -> Vec<u32> {
    // hashbrown's home bucket is `hash & (buckets - 1)`, and it keeps 7/8
    // of its buckets usable; a wrong guess of the bucket count only makes
    // the order less sequential.
    let buckets = (table.capacity().max(8) * 8 / 7).next_power_of_two();
    let bits = buckets.trailing_zeros();
    let region_bits = bits.min(12);
    let region = |i: u32| (hashes[i as usize] as usize & (buckets - 1)) >> (bits - region_bits);
    let mut start = vec![0u32; (1 << region_bits) + 1];
    let mut n = 0;
    for i in which.clone() {
        start[region(i) + 1] += 1;
        n += 1;
    }
    for r in 1..start.len() {
        start[r] += start[r - 1];
    }
    let mut order = vec![0u32; n];
    for i in which {
        let r = region(i);
        order[start[r] as usize] = i;
        start[r] += 1;
    }
    order
}

/// Looks up `keys[i]` for each `i` of `which` in `table`, in table order,
/// into `out[i]`; the `i` not found.
fn sweep<'m, V>(table: &'m Table<V>, keys: &[&str], hashes: &[u64], which: &[u32], out: &mut [Option<&'m V>]) -> Vec<u32> {
    let mut missed = Vec::new();
    for i in table_order(table, hashes, which.iter().copied()) {
        match table.raw_entry_v1().from_key_hashed_nocheck(hashes[i as usize], keys[i as usize]) {
            Some((_, v)) => out[i as usize] = Some(v),
            None => missed.push(i),
        }
    }
    missed
}

/// Sets each of `entries` (`hashes[i]`: the hash of the `i`th key) in
/// `table`, in table order; a later entry of a key replaces an earlier.
fn set_in_order<V>(table: &mut Table<V>, entries: Vec<(Box<str>, V)>, hashes: &[u64]) {
    let order = table_order(table, hashes, 0..entries.len() as u32);
    let mut slots: Vec<Option<(Box<str>, V)>> = entries.into_iter().map(Some).collect();
    for i in order {
        let Some((k, v)) = slots[i as usize].take() else { continue };
        let hash = hashes[i as usize];
        match table.raw_entry_mut_v1().from_key_hashed_nocheck(hash, &*k) {
            RawEntryMut::Occupied(mut e) => {
                e.insert(v);
            }
            RawEntryMut::Vacant(e) => {
                e.insert_hashed_nocheck(hash, k, v);
            }
        }
    }
}

/// A map from `Box<str>` keys, doubling incrementally (see the module docs).
#[derive(Debug, Clone)]
pub struct HeldMap<V> {
    cur: Table<V>,
    /// Entries not yet moved into `cur` (empty: no doubling under way).
    old: Table<V>,
    /// Inserts since the last `settle` while a doubling was under way.
    owed: usize,
    /// Entries moved ahead of need (by `settle_ahead`), not yet owed.
    ahead: usize,
}

impl<V> Default for HeldMap<V> {
    fn default() -> Self {
        HeldMap { cur: Table::default(), old: Table::default(), owed: 0, ahead: 0 }
    }
}

impl<V> HeldMap<V> {
    /// Room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        HeldMap { cur: Table::with_capacity_and_hasher(n, FxBuildHasher), ..Default::default() }
    }

    /// The entry of `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&V> {
        match self.cur.get(key) {
            Some(v) => Some(v),
            None if !self.old.is_empty() => self.old.get(key),
            None => None,
        }
    }

    /// The entries of `keys` (in their order), looked up in the order of
    /// their places in the table rather than the batch's.
    ///
    /// A batch's keys are mostly new: each lookup is one read of the
    /// table's control bytes at a random place (4 MB at 2.6M entries), out
    /// of the caches when an update comes after a quiet second. In table
    /// order the reads sweep the table about once, nearly in address
    /// order, which the CPU's prefetchers follow (measured: see
    /// perf/RESULTS.md). The sort is a counting sort on the top bits of a
    /// key's home bucket, stable, so it costs two passes over the batch.
    pub fn get_batch<'m>(&'m self, keys: &[&str]) -> Vec<Option<&'m V>> {
        let mut out = vec![None; keys.len()];
        if keys.len() < SWEEP_FROM {
            for (o, k) in out.iter_mut().zip(keys) {
                *o = self.get(k);
            }
            return out;
        }
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let all: Vec<u32> = (0..keys.len() as u32).collect();
        let missed = sweep(&self.cur, keys, &hashes, &all, &mut out);
        if !self.old.is_empty() && !missed.is_empty() {
            sweep(&self.old, keys, &hashes, &missed, &mut out);
        }
        out
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.cur.len() + self.old.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Box<str>, &V)> {
        self.cur.iter().chain(self.old.iter())
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &Box<str>> {
        self.iter().map(|(k, _)| k)
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Whether a doubling is under way.
    pub fn growing(&self) -> bool {
        !self.old.is_empty()
    }

    /// Sets `key`'s entry; the one it replaces, if any.
    pub fn insert(&mut self, key: Box<str>, value: V) -> Option<V> {
        let before = if self.old.is_empty() { None } else { self.old.swap_remove(&*key) };
        if self.cur.len() == self.cur.capacity() && !self.cur.contains_key(&*key) {
            self.start_growing();
        }
        if !self.old.is_empty() {
            self.owed += 1;
        }
        self.cur.insert(key, value).or(before)
    }

    /// Sets each `(key, value)` of `batch`, in order (a later one of a
    /// key replaces an earlier), as [`HeldMap::insert`] would, but in
    /// table order (see [`HeldMap::get_batch`]).
    pub fn insert_batch(&mut self, batch: Vec<(Box<str>, V)>) {
        if batch.len() < SWEEP_FROM || self.cur.len() + batch.len() > self.cur.capacity() {
            // Small, or the table fills within it (a doubling starts).
            for (k, v) in batch {
                self.insert(k, v);
            }
            return;
        }
        let n = batch.len() as u32;
        let hashes: Vec<u64> = batch.iter().map(|(k, _)| key_hash(k)).collect();
        if !self.old.is_empty() {
            // A key still in the old map moves out of it (replaced).
            for i in table_order(&self.old, &hashes, 0..n) {
                let key = &*batch[i as usize].0;
                if let RawEntryMut::Occupied(e) = self.old.raw_entry_mut_v1().from_key_hashed_nocheck(hashes[i as usize], key) {
                    e.swap_remove();
                }
            }
            if !self.old.is_empty() {
                self.owed += batch.len();
            }
        }
        set_in_order(&mut self.cur, batch, &hashes);
    }

    /// Removes `key`'s entry.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        match self.cur.swap_remove(key) {
            Some(v) => Some(v),
            None if !self.old.is_empty() => self.old.swap_remove(key),
            None => None,
        }
    }

    /// Moves the old entries owed for the inserts since the last call
    /// (call it after each batch of inserts: one pass over the old table
    /// per call, not per insert).
    pub fn settle(&mut self) {
        let owed = std::mem::take(&mut self.owed).saturating_mul(MOVES_PER_INSERT);
        let credit = owed.min(self.ahead);
        self.ahead -= credit;
        self.move_old(owed - credit);
    }

    /// Moves up to `n` old entries ahead of need (call it while idle, in
    /// small steps); whether a doubling is still under way.
    pub fn settle_ahead(&mut self, n: usize) -> bool {
        self.ahead += self.move_old(n);
        self.growing()
    }

    /// Moves up to `n` old entries into the new map; how many.
    fn move_old(&mut self, n: usize) -> usize {
        if self.old.is_empty() || n == 0 {
            return 0;
        }
        // From the end: nothing else in the old map moves.
        let from = self.old.len().saturating_sub(n);
        let moved: Vec<(Box<str>, V)> = self.old.drain(from..).collect();
        let count = moved.len();
        self.put_new(moved);
        if self.old.is_empty() {
            self.old = Table::default();
            self.ahead = 0;
        }
        count
    }

    /// Inserts `entries`, none of them in either table, into the new one
    /// in table order (see [`HeldMap::get_batch`]).
    fn put_new(&mut self, entries: Vec<(Box<str>, V)>) {
        if entries.len() < SWEEP_FROM {
            self.cur.extend(entries);
            return;
        }
        self.cur.reserve(entries.len());
        let hashes: Vec<u64> = entries.iter().map(|(k, _)| key_hash(k)).collect();
        set_in_order(&mut self.cur, entries, &hashes);
    }

    /// The full table becomes the old one, under a new one [`GROWTH`]
    /// times its entries. A doubling still under way is finished first
    /// (only when inserts outran `settle`).
    fn start_growing(&mut self) {
        if !self.old.is_empty() {
            let rest = std::mem::take(&mut self.old);
            self.cur.extend(rest);
        }
        (self.ahead, self.owed) = (0, 0);
        let room = ((self.cur.len() as f64 * GROWTH) as usize).max(1024);
        let fresh = Table::with_capacity_and_hasher(room, FxBuildHasher);
        let full = std::mem::replace(&mut self.cur, fresh);
        self.old = full;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn doubling_moves_entries_a_batch_at_a_time_and_finishes() {
        let mut m: HeldMap<u32> = HeldMap::with_capacity(1000);
        let cap = m.cur.capacity();
        for i in 0..cap as u32 {
            m.insert(format!("k{i}").into(), i);
        }
        assert!(!m.growing());
        m.insert("one more".into(), 0);
        assert!(m.growing(), "the full table became the old one");
        assert_eq!(m.old.len(), cap);
        m.settle();
        assert_eq!(
            m.old.len(),
            cap - MOVES_PER_INSERT,
            "one insert owes {MOVES_PER_INSERT} moves; the ones before the doubling none"
        );
        let room = m.cur.capacity();
        let mut batches = 0;
        while m.growing() {
            for i in 0..100u32 {
                m.insert(format!("b{batches}-{i}").into(), i);
            }
            m.settle();
            batches += 1;
            assert_eq!(m.cur.capacity(), room, "the new map never grows on its own");
        }
        assert!(batches <= cap / (100 * MOVES_PER_INSERT) + 1, "{batches} batches");
        assert_eq!(m.len(), cap + 1 + 100 * batches);
        assert_eq!(m.get("k7"), Some(&7));
    }

    #[test]
    fn moves_made_ahead_while_idle_are_not_made_again() {
        let mut m: HeldMap<u32> = HeldMap::with_capacity(1000);
        let cap = m.cur.capacity();
        for i in 0..=cap as u32 {
            m.insert(format!("k{i}").into(), i);
        }
        assert_eq!(m.old.len(), cap);
        assert!(m.settle_ahead(300));
        assert_eq!(m.old.len(), cap - 300);
        for i in 0..100u32 {
            m.insert(format!("n{i}").into(), i);
        }
        m.settle();
        assert_eq!(m.old.len(), cap - 300, "101 moves owed, 300 made ahead");
        for i in 0..250u32 {
            m.insert(format!("p{i}").into(), i);
        }
        m.settle();
        assert_eq!(m.old.len(), cap - 300 - (101 + 250 - 300), "what was not made ahead is made now");
        while m.settle_ahead(100) {}
        assert!(!m.growing());
        assert_eq!(m.len(), cap + 1 + 100 + 250);
        assert_eq!(m.get("k3"), Some(&3));
    }

    proptest! {
        /// Against a BTreeMap: the same entries after any inserts,
        /// replacements, removes and settles, doublings included.
        #[test]
        fn agrees_with_a_plain_map(ops in proptest::collection::vec((0u8..8, 0u16..3000, any::<u32>()), 1..8000)) {
            let mut m: HeldMap<u32> = HeldMap::default();
            let mut want: BTreeMap<String, u32> = BTreeMap::new();
            for (op, k, v) in ops {
                let key = format!("a{k}");
                match op {
                    0..=2 => prop_assert_eq!(m.insert(key.clone().into(), v), want.insert(key, v)),
                    3 => prop_assert_eq!(m.remove(&key), want.remove(&key)),
                    4 => m.settle(),
                    5 => {
                        // A batch, in table order: keys from k, some twice
                        // (the later value wins).
                        let n = (v % 40) as u16;
                        let batch: Vec<(Box<str>, u32)> =
                            (0..n).map(|j| (format!("a{}", (k + j % (1 + (v % 7) as u16)) % 3000).into(), v ^ u32::from(j))).collect();
                        for (key, val) in &batch {
                            want.insert(key.to_string(), *val);
                        }
                        m.insert_batch(batch);
                    }
                    6 => {
                        let keys: Vec<String> = (0..(v % 40) as u16).map(|j| format!("a{}", (k + j * 7) % 3000)).collect();
                        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                        let got = m.get_batch(&refs);
                        let expect: Vec<Option<&u32>> = keys.iter().map(|key| want.get(key)).collect();
                        prop_assert_eq!(got, expect);
                    }
                    _ => {
                        m.settle_ahead(v as usize % 64);
                    }
                }
                prop_assert_eq!(m.len(), want.len());
                prop_assert_eq!(m.get(&format!("a{}", v % 3000)), want.get(&format!("a{}", v % 3000)));
            }
            let got: BTreeMap<String, u32> = m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
