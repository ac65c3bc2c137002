//! The per-worker quiet-hint cache: application hints (DNS query names, TLS
//! SNI, HTTP host and path) that matched no threat indicator, remembered
//! until the state changes.
//!
//! A frame of a flow whose verdict is in the [`crate::flow_cache`] still has
//! its hint checked against the indicators before it takes that verdict
//! ([`crate::enforce::Enforcer::app_hint_is_silent`]): a DNS name, a TLS
//! server name or an HTTP host is one or more probes of name tables of a
//! million indicators, and an HTTP host's probe of the URL host table is
//! usually a cache miss (measured, perf annotate of `perf/pipeline_stages.rs`).
//! The same names recur across frames and flows (a client asks for the same
//! names again and again), so this cache remembers, for one exact hint, that
//! every lookup it takes answered "no match".
//!
//! What makes a remembered answer correct:
//!
//! * **The whole hint is the key, stored in the entry and compared in
//!   full**: the kind of hint and its bytes, never a hash alone (a crafted
//!   name whose hash collides with a remembered one only misses). Names are
//!   compared lower-cased, as the indicator lookups compare them
//!   (case-insensitively); an HTTP path exactly, as URL indicators match it.
//!   A hint whose bytes do not fit an entry is not cached.
//! * **Only "no match" is stored**: a lookup that found an indicator, even
//!   one an exclusion overrides, is never remembered, so a hit is always
//!   computed (and logged) in full.
//! * **Entries are tagged with the state's change counter**
//!   ([`hbgw_shared::epoch::StateEpoch`]) read before the state was, as the
//!   flow cache's are: any publication (indicators, exclusions, feed
//!   settings, and the others) makes every entry stale at once. When the
//!   counter's upper half changes the table is cleared, so a 32-bit tag
//!   never wraps onto a stale entry.
//!
//! `dataplane/tests/flow_cache_differential.rs` runs random interleavings of
//! frames and state changes through pipelines with and without the caches
//! and requires the same verdicts and events.
//!
//! The table is 2-way set-associative, one 64-byte entry per cache line,
//! allocated once; a lookup builds the key in registers (no copy, no
//! allocation) and reads one set.

use crate::epoch_sets::EpochSets;
use crate::parse::dns::DnsQuery;

/// Words of key bytes in an entry: hints of up to 56 bytes are cached.
const KEY_WORDS: usize = 7;
/// The most key bytes an entry holds.
pub const MAX_KEY_BYTES: usize = KEY_WORDS * 8;

/// Which lookups a hint takes (part of the key: the same bytes as another
/// kind are another question).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// A DNS query name, in wire form (length-prefixed labels).
    Dns = 1,
    /// A TLS server name.
    Sni = 2,
    /// An HTTP Host header (port stripped) and request path.
    Http = 3,
}

/// One exact hint, as an entry stores it: lower-cased name bytes (and an
/// HTTP path as sent) in `words`, zero-padded; kind and lengths in `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintKey {
    words: [u64; KEY_WORDS],
    /// Kind (bits 0..8, never 0), first part's length (8..16), second
    /// part's length (16..24); bits 32..64 are left for the state tag.
    meta: u64,
}

/// Each byte of `w` lower-cased (ASCII letters only), eight at once.
#[inline(always)]
fn lower(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte, on its low seven bits (no carry crosses a byte): the top bit
    // of `ge_a` says ">= 'A'", of `gt_z` "> 'Z'"; bytes >= 0x80 are no letters.
    let low7 = w & !HIGH;
    let ge_a = low7 + ONES * u64::from(0x80 - b'A');
    let gt_z = low7 + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = ge_a & !gt_z & !w & HIGH;
    w | upper >> 2
}

/// The eight bytes of `bytes` from `at`, little-endian, zero-padded past its
/// end. Loaded straight from the packet: a last partial word is the last
/// eight bytes shifted (or, for a name shorter than a word, assembled byte by
/// byte), never a copy read back (a load of bytes just stored narrower
/// waits for the stores: measured, perf annotate).
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let n = bytes.len();
    let le = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    match bytes.get(at..at + 8) {
        Some(b) => le(b),
        None if at >= n => 0,
        None if n >= 8 => le(&bytes[n - 8..]) >> (8 * (8 - (n - at))),
        None => bytes[at..].iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b)),
    }
}

impl HintKey {
    /// `a` (lower-cased) in the first words, then `b` (lower-cased if
    /// `fold_b`) from the next whole word; `None` if they do not fit. Built
    /// word by word with constant indices, so the key stays in registers.
    #[inline(always)]
    fn new(kind: Kind, a: &[u8], b: &[u8], fold_b: bool) -> Option<HintKey> {
        let next = a.len().div_ceil(8);
        if next + b.len().div_ceil(8) > KEY_WORDS {
            return None;
        }
        let words = std::array::from_fn(|i| {
            if i < next {
                lower(word(a, 8 * i))
            } else {
                let w = word(b, 8 * (i - next));
                if fold_b {
                    lower(w)
                } else {
                    w
                }
            }
        });
        // Both lengths are at most MAX_KEY_BYTES (< 256) here.
        let meta = kind as u64 | (a.len() as u64) << 8 | (b.len() as u64) << 16;
        Some(HintKey { words, meta })
    }

    /// The key of a DNS query's name (its wire form, lower-cased: one to one
    /// with the text form the indicators are matched with); `None` if too long.
    #[inline(always)]
    pub fn dns(query: &DnsQuery<'_>) -> Option<HintKey> {
        Self::new(Kind::Dns, query.qname_wire(), &[], true)
    }

    /// The key of a TLS server name; `None` if too long.
    #[inline(always)]
    pub fn sni(name: &[u8]) -> Option<HintKey> {
        Self::new(Kind::Sni, name, &[], true)
    }

    /// The key of an HTTP request's host (lower-cased) and path (as sent:
    /// URL paths match case-sensitively); `None` if together too long.
    #[inline(always)]
    pub fn http(host: &[u8], path: &[u8]) -> Option<HintKey> {
        Self::new(Kind::Http, host, path, false)
    }

    #[inline(always)]
    fn hash(&self) -> u64 {
        // One multiply per word, all independent, summed: a short chain (the
        // set's load waits on it) over every word (fixed work, no branch on
        // the length). The full key is compared on a probe, so the hash only
        // has to spread hints over the sets.
        const K: [u64; KEY_WORDS] = [
            0x9E37_79B9_7F4A_7C15,
            0xC2B2_AE3D_27D4_EB4F,
            0x1656_67B1_9E37_79F9,
            0xD6E8_FEB8_6659_FD93,
            0xA076_1D64_78BD_642F,
            0xE703_7ED1_A0B4_28DB,
            0x8EBC_6AF0_9C88_C6E3,
        ];
        let w = &self.words;
        let h = (w[0] ^ self.meta).wrapping_mul(K[0]).wrapping_add(w[1].wrapping_mul(K[1]))
            ^ w[2].wrapping_mul(K[2]).wrapping_add(w[3].wrapping_mul(K[3]))
            ^ w[4].wrapping_mul(K[4]).wrapping_add(w[5].wrapping_mul(K[5]))
            ^ w[6].wrapping_mul(K[6]);
        // The high half of `h` has seen every bit of every product's low
        // half; fold the low half's bits in too.
        h ^ h.rotate_left(32).wrapping_mul(K[0])
    }
}

/// One cache line: a key and its state tag.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Entry {
    words: [u64; KEY_WORDS],
    /// The key's `meta` with the state tag (low half of the counter) in bits
    /// 32..64; 0: empty.
    meta: u64,
}

/// Where a key that [`HintCache::lookup`] did not find would go: hand it
/// back to [`HintCache::insert`] (saves hashing the key again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss {
    set: usize,
}

/// A worker's quiet-hint cache (see the module docs).
#[derive(Debug)]
pub struct HintCache {
    /// The entries, in sets of two, tagged under the state counter.
    entries: EpochSets<Entry>,
    /// Lookups that found the hint quiet.
    pub hits: u64,
    /// Lookups that did not (the hint was looked up in the indicators).
    pub misses: u64,
}

impl HintCache {
    /// A cache of `entries` entries (rounded up to a power of two, at least
    /// 2), or `None` for 0 (the cache is off).
    pub fn new(entries: usize) -> Option<Self> {
        Some(HintCache {
            entries: EpochSets::new(entries)?,
            hits: 0,
            misses: 0,
        })
    }

    /// Entries held (a power of two).
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[inline(always)]
    fn set(&self, key: &HintKey) -> usize {
        self.entries.set_of(key.hash())
    }

    /// Whether `e` holds `key` tagged `meta` (the key's meta with the tag).
    #[inline(always)]
    fn matches(e: &Entry, key: &HintKey, meta: u64) -> bool {
        let (w, k) = (&e.words, &key.words);
        // Every word: the key bytes, then kind, lengths and state tag in
        // `meta` (an empty entry's `meta` is 0, never a key's: its kind is
        // not 0).
        let diff = (w[0] ^ k[0])
            | (w[1] ^ k[1])
            | (w[2] ^ k[2])
            | (w[3] ^ k[3])
            | (w[4] ^ k[4])
            | (w[5] ^ k[5])
            | (w[6] ^ k[6])
            | (e.meta ^ meta);
        diff == 0
    }

    /// `key`'s meta tagged with counter value `epoch`.
    #[inline(always)]
    fn tagged(key: &HintKey, epoch: u64) -> u64 {
        key.meta | (epoch as u32 as u64) << 32
    }

    /// Starts using counter value `epoch`: clears the table when its upper
    /// half moved (the 32-bit tags would wrap). Call before lookups.
    #[inline(always)]
    fn sync_epoch(&mut self, epoch: u64) {
        self.entries.sync_epoch(epoch);
    }

    /// `Ok` if `key` matched no indicator in the state at counter `epoch`.
    #[inline(always)]
    pub fn lookup(&mut self, key: &HintKey, epoch: u64) -> Result<(), Miss> {
        self.sync_epoch(epoch);
        let set = self.set(key);
        let meta = Self::tagged(key, epoch);
        if Self::matches(&self.entries[set], key, meta) || Self::matches(&self.entries[set + 1], key, meta) {
            self.hits += 1;
            return Ok(());
        }
        self.misses += 1;
        Err(Miss { set })
    }

    /// Remembers that `key` matched no indicator in the state at counter
    /// `epoch` (read before that state was). Takes an empty or stale way,
    /// else the second way, so a hint that keeps recurring in the first
    /// survives a stream of new ones.
    #[inline]
    pub fn insert(&mut self, miss: Miss, key: &HintKey, epoch: u64) {
        let set = miss.set;
        let tag = epoch as u32;
        let first = &self.entries[set];
        let way = if first.meta == 0 || (first.meta >> 32) as u32 != tag { set } else { set + 1 };
        self.entries[way] = Entry { words: key.words, meta: Self::tagged(key, epoch) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::dns::parse_query;

    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    fn dns(name: &str) -> HintKey {
        HintKey::dns(&parse_query(&query(name)).unwrap()).unwrap()
    }

    #[test]
    fn lower_cases_ascii_letters_only() {
        let all: Vec<u8> = (0..=255).collect();
        for c in all.chunks(8) {
            let w = u64::from_le_bytes(c.try_into().unwrap());
            let want: Vec<u8> = c.iter().map(u8::to_ascii_lowercase).collect();
            assert_eq!(lower(w).to_le_bytes().to_vec(), want);
        }
    }

    #[test]
    fn keys_fold_case_in_names_but_not_in_paths() {
        assert_eq!(dns("WWW.Example.COM"), dns("www.example.com"));
        assert_eq!(HintKey::sni(b"A.Example"), HintKey::sni(b"a.example"));
        assert_eq!(HintKey::http(b"Host.Example", b"/p"), HintKey::http(b"host.example", b"/p"));
        assert_ne!(HintKey::http(b"host.example", b"/P"), HintKey::http(b"host.example", b"/p"));
        // Other kinds, other splits, other lengths are other keys.
        assert_ne!(HintKey::sni(b"a.example"), HintKey::http(b"a.example", b""));
        assert_ne!(HintKey::http(b"ab", b"/c"), HintKey::http(b"a", b"b/c"));
        assert_ne!(HintKey::sni(b"a.example"), HintKey::sni(b"a.example\0"));
        assert_ne!(dns("a.b"), dns("ab"));
    }

    #[test]
    fn keys_hold_every_byte_of_every_length() {
        // Two names that differ in one byte, at every position of every
        // length up to the limit, are different keys; over the limit: none.
        for n in 1..=MAX_KEY_BYTES {
            let a = vec![b'a'; n];
            assert!(HintKey::sni(&a).is_some());
            for i in 0..n {
                let mut b = a.clone();
                b[i] = b'b';
                assert_ne!(HintKey::sni(&a), HintKey::sni(&b), "{n} {i}");
                // Host and path each start a word: they fit when their words do.
                let fits = i.div_ceil(8) + (n - i).div_ceil(8) <= KEY_WORDS;
                let (ka, kb) = (HintKey::http(&a[..i], &a[i..]), HintKey::http(&b[..i], &b[i..]));
                assert_eq!((ka.is_some(), kb.is_some()), (fits, fits), "{n} {i}");
                assert!(!fits || ka != kb, "{n} {i}");
            }
        }
        assert!(HintKey::sni(&[b'a'; MAX_KEY_BYTES + 1]).is_none());
        assert!(HintKey::http(&[b'a'; 8], &[b'/'; MAX_KEY_BYTES - 7]).is_none());
        assert!(HintKey::http(&[b'a'; 8], &[b'/'; MAX_KEY_BYTES - 8]).is_some());
        assert!(HintKey::dns(&parse_query(&query(&["a"; 28].join("."))).unwrap()).is_none());
    }

    #[test]
    fn a_key_that_differs_in_any_byte_misses() {
        // One set: every key lands in it; what tells them apart is the compare.
        let mut c = HintCache::new(2).unwrap();
        for n in 1..=MAX_KEY_BYTES {
            let a = vec![b'a'; n];
            let ka = HintKey::sni(&a).unwrap();
            for i in 0..n {
                let mut b = a.clone();
                b[i] = b'b';
                let miss = c.lookup(&ka, 1).unwrap_err();
                c.insert(miss, &ka, 1);
                assert!(c.lookup(&HintKey::sni(&b).unwrap(), 1).is_err(), "{n} {i}");
                assert!(c.lookup(&HintKey::sni(&a[..n - 1]).unwrap_or(ka), 1).is_err() || n == 1, "{n}");
                c.clear();
            }
        }
    }

    #[test]
    fn hit_only_at_the_same_epoch_and_key() {
        let mut c = HintCache::new(8).unwrap();
        let (a, b) = (dns("a.example"), dns("b.example"));
        let miss = c.lookup(&a, 5).unwrap_err();
        c.insert(miss, &a, 5);
        assert!(c.lookup(&a, 5).is_ok());
        assert!(c.lookup(&dns("A.EXAMPLE"), 5).is_ok());
        assert!(c.lookup(&b, 5).is_err());
        assert!(c.lookup(&HintKey::sni(b"a.example").unwrap(), 5).is_err());
        // Any state change makes it stale.
        assert!(c.lookup(&a, 6).is_err());
        assert!(c.lookup(&a, 4).is_err());
        assert_eq!((c.hits, c.misses), (2, 5));
    }

    #[test]
    fn the_upper_half_of_the_counter_clears_the_table() {
        let mut c = HintCache::new(8).unwrap();
        let a = HintKey::sni(b"a.example").unwrap();
        let miss = c.lookup(&a, 7).unwrap_err();
        c.insert(miss, &a, 7);
        assert!(c.lookup(&a, 7).is_ok());
        // Same low 32 bits, another upper half: must not hit.
        assert!(c.lookup(&a, 7 + (1 << 32)).is_err());
        assert!(c.lookup(&a, 7).is_err());
    }

    #[test]
    fn a_full_set_keeps_its_first_way_and_replaces_the_second() {
        // Two entries = one set: every key lands in it.
        let mut c = HintCache::new(2).unwrap();
        let keys: Vec<HintKey> = ["a", "b", "c"].iter().map(|n| HintKey::sni(n.as_bytes()).unwrap()).collect();
        for k in &keys {
            let miss = c.lookup(k, 1).unwrap_err();
            c.insert(miss, k, 1);
        }
        assert!(c.lookup(&keys[0], 1).is_ok());
        assert!(c.lookup(&keys[1], 1).is_err());
        assert!(c.lookup(&keys[2], 1).is_ok());
        // At a new state the stale first way is reused first.
        let miss = c.lookup(&keys[1], 2).unwrap_err();
        c.insert(miss, &keys[1], 2);
        assert!(c.lookup(&keys[1], 2).is_ok());
        assert!(c.lookup(&keys[0], 2).is_err());
    }

    #[test]
    fn sizes_round_up_and_zero_is_off() {
        assert!(HintCache::new(0).is_none());
        assert_eq!(HintCache::new(1).unwrap().capacity(), 2);
        assert_eq!(HintCache::new(1000).unwrap().capacity(), 1024);
    }
}
