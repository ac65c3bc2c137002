//! The table both per-worker caches ([`crate::flow_cache`],
//! [`crate::hint_cache`]) are built on: a power of two of entries in sets of
//! two adjacent ones, picked by the upper half of a key's hash, whose
//! entries carry the lower half of the state's change counter
//! (`hbgw_shared::epoch::StateEpoch`) as their tag; the table is cleared when
//! the upper half moves, so a 32-bit tag never wraps onto a live entry.
//!
//! It owns the storage and the counter's upper half only: what an entry
//! holds, when it matches and which way a new one replaces are each cache's
//! own. Never allocates after [`EpochSets::new`].

/// Entries in sets of two, tagged under one upper half of the state counter.
#[derive(Debug)]
pub struct EpochSets<E> {
    entries: Box<[E]>,
    /// Sets minus one.
    set_mask: usize,
    /// The upper half of the state counter the entries were tagged under.
    epoch_high: u32,
}

impl<E: Copy + Default> EpochSets<E> {
    /// `entries` entries (rounded up to a power of two, at least 2), or
    /// `None` for 0 (the cache is off).
    pub fn new(entries: usize) -> Option<Self> {
        if entries == 0 {
            return None;
        }
        let n = entries.max(2).next_power_of_two();
        Some(EpochSets { entries: vec![E::default(); n].into_boxed_slice(), set_mask: n / 2 - 1, epoch_high: 0 })
    }

    /// Entries held (a power of two).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.fill(E::default());
    }

    /// The first entry of the set of a key hashing to `hash` (the second
    /// follows it).
    #[inline(always)]
    pub fn set_of(&self, hash: u64) -> usize {
        (((hash >> 32) as usize) & self.set_mask) * 2
    }

    /// Starts using counter value `epoch`: clears the table when its upper
    /// half moved (the 32-bit tags would wrap). Call before lookups.
    #[inline(always)]
    pub fn sync_epoch(&mut self, epoch: u64) {
        let high = (epoch >> 32) as u32;
        if high != self.epoch_high {
            self.clear();
            self.epoch_high = high;
        }
    }
}

impl<E> std::ops::Index<usize> for EpochSets<E> {
    type Output = E;
    #[inline(always)]
    fn index(&self, i: usize) -> &E {
        &self.entries[i]
    }
}

impl<E> std::ops::IndexMut<usize> for EpochSets<E> {
    #[inline(always)]
    fn index_mut(&mut self, i: usize) -> &mut E {
        &mut self.entries[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_sets_and_the_upper_half_clearing() {
        assert!(EpochSets::<u64>::new(0).is_none());
        assert_eq!(EpochSets::<u64>::new(1).unwrap().capacity(), 2);
        let mut t = EpochSets::<u64>::new(5).unwrap();
        assert_eq!(t.capacity(), 8);
        for h in [0u64, 1 << 32, 3 << 32, u64::MAX] {
            let s = t.set_of(h);
            assert!(s % 2 == 0 && s + 1 < t.capacity(), "{h:#x} -> {s}");
        }
        assert_eq!(t.set_of(3 << 32), 6);
        t[3] = 7;
        t.sync_epoch(41); // same upper half: kept
        assert_eq!(t[3], 7);
        t.sync_epoch(1 << 32); // moved: cleared
        assert_eq!(t[3], 0);
        t[3] = 9;
        t.sync_epoch((1 << 32) + 5);
        assert_eq!(t[3], 9);
    }
}
