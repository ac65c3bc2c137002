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
//! starts a new map when the current one is full and moves
//! [`MOVES_PER_INSERT`] old entries into it per insert, in each batch's
//! [`HeldMap::settle`]: the doubling's cost is spread over the batches
//! that follow (moves per insert > 1, so the old map is empty long before
//! the new one fills). Meanwhile a lookup that misses the new map probes
//! the old one too.
//!
//! It owns only the two tables; it must never reorder what callers see of
//! an entry (an entry is in exactly one table) nor move entries anywhere
//! but in `settle` and `insert`.

use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;

type Table<V> = IndexMap<Box<str>, V, FxBuildHasher>;

/// Old entries moved into the new table per entry inserted while a
/// doubling is under way (in [`HeldMap::settle`]).
pub const MOVES_PER_INSERT: usize = 2;

/// A map from `Box<str>` keys, doubling incrementally (see the module docs).
#[derive(Debug, Clone)]
pub struct HeldMap<V> {
    cur: Table<V>,
    /// Entries not yet moved into `cur` (empty: no doubling under way).
    old: Table<V>,
    /// Inserts since the last `settle` while a doubling was under way.
    owed: usize,
}

impl<V> Default for HeldMap<V> {
    fn default() -> Self {
        HeldMap { cur: Table::default(), old: Table::default(), owed: 0 }
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
        let owed = std::mem::take(&mut self.owed);
        if self.old.is_empty() {
            return;
        }
        let n = owed.saturating_mul(MOVES_PER_INSERT);
        // From the end: nothing else in the old map moves.
        let from = self.old.len().saturating_sub(n);
        let moved: Vec<(Box<str>, V)> = self.old.drain(from..).collect();
        self.cur.extend(moved);
        if self.old.is_empty() {
            self.old = Table::default();
        }
    }

    /// The full table becomes the old one, under a new one twice the size.
    /// A doubling still under way is finished first (only when inserts
    /// outran `settle`).
    fn start_growing(&mut self) {
        if !self.old.is_empty() {
            let rest = std::mem::take(&mut self.old);
            self.cur.extend(rest);
        }
        let room = (2 * self.cur.len()).max(1024);
        let fresh = Table::with_capacity_and_hasher(room, FxBuildHasher);
        let full = std::mem::replace(&mut self.cur, fresh);
        self.old = full;
    }
}

impl<V> FromIterator<(Box<str>, V)> for HeldMap<V> {
    fn from_iter<I: IntoIterator<Item = (Box<str>, V)>>(iter: I) -> Self {
        HeldMap { cur: iter.into_iter().collect(), ..Default::default() }
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
        let mut batches = 0;
        while m.growing() {
            for i in 0..100u32 {
                m.insert(format!("b{batches}-{i}").into(), i);
            }
            m.settle();
            batches += 1;
        }
        assert!(batches <= cap / (100 * MOVES_PER_INSERT) + 1, "{batches} batches");
        assert_eq!(m.len(), cap + 1 + 100 * batches);
        assert_eq!(m.get("k7"), Some(&7));
    }

    proptest! {
        /// Against a BTreeMap: the same entries after any inserts,
        /// replacements, removes and settles, doublings included.
        #[test]
        fn agrees_with_a_plain_map(ops in proptest::collection::vec((0u8..5, 0u16..3000, any::<u32>()), 1..8000)) {
            let mut m: HeldMap<u32> = HeldMap::default();
            let mut want: BTreeMap<String, u32> = BTreeMap::new();
            for (op, k, v) in ops {
                let key = format!("a{k}");
                match op {
                    0..=2 => prop_assert_eq!(m.insert(key.clone().into(), v), want.insert(key, v)),
                    3 => prop_assert_eq!(m.remove(&key), want.remove(&key)),
                    _ => m.settle(),
                }
                prop_assert_eq!(m.len(), want.len());
                prop_assert_eq!(m.get(&format!("a{}", v % 3000)), want.get(&format!("a{}", v % 3000)));
            }
            let got: BTreeMap<String, u32> = m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
