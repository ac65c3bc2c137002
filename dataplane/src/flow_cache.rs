//! The per-worker flow cache: the verdict of a flow's last frame, reused for
//! its next frames while nothing the verdict depends on has changed.
//!
//! Most frames of a flow carry nothing the enforcer reads beyond their
//! headers: once the first has been decided, the next ones would be decided
//! the same way, through the same endpoint, indicator and rule lookups (each a
//! likely cache miss with 100,000 endpoints and 1,000,000 indicators). A hit
//! here costs one hash and one probe instead.
//!
//! What makes a cached verdict correct:
//!
//! * **The key is everything the decide stage reads from the headers**:
//!   ingress port slot, source and destination MAC, outer VLAN id, source
//!   and destination IP, IP protocol and ports (see [`FlowCacheKey::of`]).
//! * **The payload is read only for an application hint** (a DNS query, a
//!   TLS ClientHello, an HTTP request), and the decide stage checks that hint
//!   against the indicators before anything that depends on health or rules.
//!   So a frame with a hint uses its flow's cached verdict only after its
//!   own indicator lookup found nothing to log ([`crate::pipeline`]); a hit
//!   there is decided in full.
//! * **Every entry is tagged with the state's change counter**
//!   ([`hbgw_shared::epoch::StateEpoch`]), read before the state was: any
//!   new policy, indicator set, exclusion, feed setting, endpoint index or
//!   single health change makes every entry stale at once, so "one endpoint
//!   turns Red" still takes effect on the next packet.
//! * **Only silent decisions are stored.** A decision that logged an event
//!   (an indicator hit, a heartbeat drop) is recomputed every time, so the
//!   event stream and its rate limiting are exactly as without the cache.
//!
//! `dataplane/tests/flow_cache_differential.rs` runs random interleavings of
//! frames and state changes through a pipeline with and without the cache
//! and requires the same verdicts and events.
//!
//! The table is 2-way set-associative with one 64-byte entry per cache line,
//! allocated once. Tags are 32 bits: when the counter's upper half changes
//! the table is cleared, so a stale entry can never be mistaken for a
//! current one after the tag wraps. A worker prefetches a burst's sets
//! before deciding it ([`FlowCache::set_address`]).
//!
//! Each entry also remembers the seen-MAC period its source MAC was last
//! recorded in ([`crate::seen_macs::SeenMacs::period`]), so a hit skips the
//! seen-MAC probe until the set is next flushed. A seen-MAC period tag that
//! wraps (2^32 flushes, 13 years at 100 ms) costs at most one unreported
//! period for a flow idle that whole time.

use crate::epoch_sets::EpochSets;
use crate::parse::frame::{PROTO_TCP, PROTO_UDP};
use crate::parse::{app_hint_of, AppHint, Network, ParsedFrame};
use crate::verdict::{DropReason, Verdict};

/// Words of a key.
const KEY_WORDS: usize = 7;
/// The bits of the last key word that are key; the top byte holds the verdict.
const LAST_WORD_KEY_MASK: u64 = (1 << 56) - 1;

/// What identifies a flow for the decide stage (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowCacheKey([u64; KEY_WORDS]);

impl FlowCacheKey {
    /// The key of `pf`, arrived on port slot `ingress_slot`; `None` for
    /// frames that are not IP (the decide stage bridges or punts them
    /// without a lookup).
    #[inline]
    pub fn of(pf: &ParsedFrame<'_>, ingress_slot: usize) -> Option<Self> {
        let (src, dst, v6) = match &pf.network {
            Network::Ipv4(ip) => (u128::from(u32::from(ip.src)), u128::from(u32::from(ip.dst)), 0u64),
            Network::Ipv6(ip) => (u128::from(ip.src), u128::from(ip.dst), 1u64),
            _ => return None,
        };
        let mac = |m: [u8; 6]| u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]);
        // Outer VLAN: 0 = untagged, else 0x1000 | id (ids are 12 bits).
        let vlan = pf.vlans.outer().map_or(0, |id| 0x1000 | u64::from(id & 0x0fff));
        let (sp, dp) = pf.ports().unwrap_or((0, 0));
        let proto = u64::from(pf.ip_protocol().unwrap_or(0));
        Some(FlowCacheKey([
            (src >> 64) as u64,
            src as u64,
            (dst >> 64) as u64,
            dst as u64,
            mac(pf.src_mac) | (ingress_slot as u64 & 0xff) << 48 | v6 << 56,
            mac(pf.dst_mac) | vlan << 48,
            u64::from(sp) | u64::from(dp) << 16 | proto << 32,
        ]))
    }

    #[inline(always)]
    fn hash(&self) -> u64 {
        hash_words(&self.0)
    }

    /// The key of the most common frame, read straight from its bytes
    /// without parsing: untagged IPv4 without options, TCP or UDP, not a
    /// later fragment. `None` for anything else. Equal to [`FlowCacheKey::of`]
    /// for such a frame (tested), so a worker can find, and prefetch, the
    /// frame's set before deciding it.
    #[inline(always)]
    fn of_raw(frame: &[u8], ingress_slot: usize) -> Option<Self> {
        let f: &[u8; 38] = frame.get(..38)?.try_into().ok()?;
        let proto = f[23];
        let first_fragment = u16::from_be_bytes([f[20], f[21]]) & 0x1fff == 0;
        if f[12..14] != [0x08, 0x00] || f[14] != 0x45 || !first_fragment || (proto != 6 && proto != 17) {
            return None;
        }
        let mac = |m: &[u8]| u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]);
        let be32 = |b: &[u8]| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let be16 = |b: &[u8]| u64::from(u16::from_be_bytes([b[0], b[1]]));
        Some(FlowCacheKey([
            0,
            be32(&f[26..30]),
            0,
            be32(&f[30..34]),
            mac(&f[6..12]) | (ingress_slot as u64 & 0xff) << 48,
            mac(&f[0..6]),
            be16(&f[34..36]) | be16(&f[36..38]) << 16 | u64::from(proto) << 32,
        ]))
    }
}

/// What the flow cache reads from a frame it did not parse: the L4 protocol,
/// destination port and payload (enough to find the application hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawL4<'a> {
    /// `6` (TCP) or `17` (UDP).
    pub protocol: u8,
    /// The destination port.
    pub dst_port: u16,
    /// The TCP or UDP payload, as `parse_frame` cuts it.
    pub payload: &'a [u8],
}

impl<'a> RawL4<'a> {
    /// The application hint `parse_frame` would find in this frame.
    #[inline]
    pub fn app_hint(&self) -> Option<AppHint<'a>> {
        app_hint_of(self.protocol, self.dst_port, self.payload)
    }
}

impl FlowCacheKey {
    /// The key and L4 data of a frame of the most common kind
    /// ([`FlowCacheKey::of_raw`]) that also provably parses: its lengths
    /// pass the checks `parse_frame` makes (IPv4 total length within the
    /// frame, TCP data offset within the packet, UDP length within it). Its
    /// hint is then [`RawL4::app_hint`], so a cache hit needs no parse of the
    /// headers. `None` means only "parse it" (proptest: `Some((k, l4))`
    /// implies `parse_frame` succeeds with key `k` and hint `l4.app_hint()`).
    #[inline(always)]
    pub fn of_raw_parts(frame: &[u8], ingress_slot: usize) -> Option<(Self, RawL4<'_>)> {
        let key = Self::of_raw(frame, ingress_slot)?;
        let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        let l4 = frame.get(34..14 + total)?; // total >= 20 and within the frame
        let dst_port = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
        let (protocol, payload) = match frame[23] {
            PROTO_TCP => {
                let data_offset = usize::from(*l4.get(12)? >> 4) * 4;
                if data_offset < 20 {
                    return None;
                }
                (PROTO_TCP, l4.get(data_offset..)?)
            }
            _ => {
                let length = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
                (PROTO_UDP, l4.get(8..length)?)
            }
        };
        Some((key, RawL4 { protocol, dst_port, payload }))
    }
}

#[inline(always)]
fn hash_words(w: &[u64; KEY_WORDS]) -> u64 {
    // Two independent multiply chains (shorter latency than one over seven
    // words); the full key is compared on a probe, so the hash only has to
    // spread flows over the sets.
    let a = (w[1] ^ w[0].rotate_left(23) ^ w[6].rotate_left(41)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = (w[3] ^ w[2].rotate_left(29) ^ w[4] ^ w[5].rotate_left(13)).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (a ^ b.rotate_left(32)) ^ (a >> 29)
}

/// One cache line: key, verdict, tags.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Entry {
    /// The key; the last word's top byte is the encoded verdict (0: empty).
    words: [u64; KEY_WORDS],
    /// Low half of the state counter the verdict was computed at.
    state_tag: u32,
    /// The seen-MAC flush period the source MAC was last reported in.
    seen_period: u32,
}

fn encode(v: Verdict) -> u64 {
    match v {
        Verdict::Forward => 1,
        Verdict::Punt => 2,
        Verdict::Drop(r) => 3 + r.index() as u64,
    }
}

fn decode(code: u64) -> Verdict {
    match code {
        1 => Verdict::Forward,
        2 => Verdict::Punt,
        c => Verdict::Drop(DropReason::ALL[(c as usize - 3).min(DropReason::COUNT - 1)]),
    }
}

/// A cached verdict found by [`FlowCache::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the source MAC was already recorded in the current seen-MAC
    /// period (else the caller records it and calls [`FlowCache::mark_seen`]).
    pub seen_reported: bool,
    /// Where the entry is.
    index: usize,
}

/// Where a key that [`FlowCache::lookup`] did not find would go: hand it
/// back to [`FlowCache::insert`] (saves hashing the key again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss {
    set: usize,
}

/// A worker's flow cache (see the module docs).
#[derive(Debug)]
pub struct FlowCache {
    /// The entries, in sets of two, tagged under the state counter.
    entries: EpochSets<Entry>,
    /// Lookups that found a current entry.
    pub hits: u64,
    /// Lookups that did not (the frame was decided in full).
    pub misses: u64,
    /// Flush periods the cache still sits out (see [`FlowCache::end_period`]).
    bypass_left: u32,
    /// Inserts that pushed out a current entry of another flow: misses for
    /// want of room, not because a flow is new or the state changed.
    evictions: u64,
    /// `hits`, `misses` and `evictions` when the current period began.
    period_start: (u64, u64, u64),
    /// Periods sat out since creation.
    pub bypassed_periods: u64,
}

/// Below this share of hits in a period, the cache sits out the next ones.
pub const BYPASS_BELOW_PERCENT: u64 = 20;
/// How many periods it sits out before it tries again (one period on, this
/// many off: under sustained churn it costs a twelfth of what it would).
pub const BYPASS_PERIODS: u32 = 11;
/// A period with fewer lookups than this says nothing about the hit rate.
const MIN_LOOKUPS: u64 = 1024;

impl FlowCache {
    /// A cache of `entries` entries (rounded up to a power of two, at least
    /// 2), or `None` for 0 (the cache is off).
    pub fn new(entries: usize) -> Option<Self> {
        Some(FlowCache {
            entries: EpochSets::new(entries)?,
            hits: 0,
            misses: 0,
            bypass_left: 0,
            evictions: 0,
            period_start: (0, 0, 0),
            bypassed_periods: 0,
        })
    }

    /// Whether the cache is in use this period (else the pipeline decides
    /// every frame in full, as with no cache).
    #[inline(always)]
    pub fn active(&self) -> bool {
        self.bypass_left == 0
    }

    /// Ends a flush period (the worker's housekeeping). With many more
    /// concurrent flows than entries, most lookups miss, and a miss costs
    /// more than it saves (the probe of a table larger than the core's cache,
    /// and the insert): measured in `perf/pipeline_stages.rs`. So a period in
    /// which fewer than [`BYPASS_BELOW_PERCENT`]% of the lookups hit, and
    /// most misses pushed out another current flow (the table is too small
    /// for the flows, as opposed to cold: just started, or the state just
    /// changed), is followed by [`BYPASS_PERIODS`] without the cache; then
    /// the cache tries again. Entries kept meanwhile stay correct (their
    /// tags still guard them).
    pub fn end_period(&mut self) {
        let h = self.hits - self.period_start.0;
        let m = self.misses - self.period_start.1;
        let e = self.evictions - self.period_start.2;
        self.period_start = (self.hits, self.misses, self.evictions);
        if self.bypass_left > 0 {
            self.bypass_left -= 1;
            self.bypassed_periods += 1;
        } else if h + m >= MIN_LOOKUPS && h * 100 < (h + m) * BYPASS_BELOW_PERCENT && e * 2 > m {
            self.bypass_left = BYPASS_PERIODS;
        }
    }

    /// Entries held (a power of two).
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    /// The address of the set `frame` would use, if it is of the common
    /// kind [`FlowCacheKey::of_raw`] reads without parsing: for the worker
    /// to prefetch a burst's sets before deciding its frames (a set of a 4
    /// MiB table is usually a cache miss; a miss the worker waits on costs
    /// more than the lookups the cache saves).
    #[inline]
    pub fn set_address(&self, frame: &[u8], ingress_slot: usize) -> Option<*const u8> {
        if !self.active() {
            return None;
        }
        let key = FlowCacheKey::of_raw(frame, ingress_slot)?;
        Some(std::ptr::from_ref(&self.entries[self.set(&key)]).cast())
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[inline(always)]
    fn set(&self, key: &FlowCacheKey) -> usize {
        self.entries.set_of(key.hash())
    }

    #[inline(always)]
    fn matches(e: &Entry, key: &FlowCacheKey) -> bool {
        let w = &e.words;
        let k = &key.0;
        // Branch-free compare of all seven words; the verdict byte is masked
        // out of the last and must be non-zero (zero: an empty entry).
        let diff = (w[0] ^ k[0])
            | (w[1] ^ k[1])
            | (w[2] ^ k[2])
            | (w[3] ^ k[3])
            | (w[4] ^ k[4])
            | (w[5] ^ k[5])
            | ((w[6] ^ k[6]) & LAST_WORD_KEY_MASK);
        diff == 0 && w[6] >> 56 != 0
    }

    /// Starts using counter value `epoch`: clears the table when its upper
    /// half moved (the 32-bit tags would wrap). Call before lookups.
    #[inline(always)]
    fn sync_epoch(&mut self, epoch: u64) {
        self.entries.sync_epoch(epoch);
    }

    /// The cached verdict of `key` if it was computed at state counter
    /// `epoch`. `seen_period` is the worker's current seen-MAC period.
    #[inline]
    pub fn lookup(&mut self, key: &FlowCacheKey, epoch: u64, seen_period: u32) -> Result<Hit, Miss> {
        self.sync_epoch(epoch);
        let set = self.set(key);
        for i in set..set + 2 {
            let e = &self.entries[i];
            if Self::matches(e, key) {
                if e.state_tag != epoch as u32 {
                    break;
                }
                self.hits += 1;
                let seen_reported = e.seen_period == seen_period;
                return Ok(Hit { verdict: decode(e.words[KEY_WORDS - 1] >> 56), seen_reported, index: i });
            }
        }
        self.misses += 1;
        Err(Miss { set })
    }

    /// Notes that `hit`'s source MAC is recorded in seen-MAC period `period`.
    #[inline]
    pub fn mark_seen(&mut self, hit: &Hit, period: u32) {
        self.entries[hit.index].seen_period = period;
    }

    /// Stores `verdict` for `key`, computed at state counter `epoch`, with
    /// the source MAC reported in `seen_period`. Replaces the same key, else
    /// an empty or stale way, else the second way.
    #[inline]
    pub fn insert(&mut self, miss: Miss, key: &FlowCacheKey, epoch: u64, seen_period: u32, verdict: Verdict) {
        // No epoch sync here: the lookup that gave `miss` made it, with the
        // same `epoch` (an insert under another upper half would only tag an
        // entry the next lookup's sync clears).
        let set = miss.set;
        let tag = epoch as u32;
        let (a, b) = (&self.entries[set], &self.entries[set + 1]);
        let way = if Self::matches(a, key) || a.words[KEY_WORDS - 1] >> 56 == 0 || a.state_tag != tag {
            set
        } else if Self::matches(b, key) || b.words[KEY_WORDS - 1] >> 56 == 0 || b.state_tag != tag {
            set + 1
        } else {
            // Both current: the newer flow takes the second way, so a
            // long-lived flow in the first survives a stream of new ones.
            self.evictions += 1;
            set + 1
        };
        let mut words = key.0;
        words[KEY_WORDS - 1] = (words[KEY_WORDS - 1] & LAST_WORD_KEY_MASK) | encode(verdict) << 56;
        self.entries[way] = Entry { words, state_tag: tag, seen_period };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_frame;
    use crate::synth;

    fn udp(src_port: u16, dst_port: u16) -> Vec<u8> {
        synth::udp([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [10, 0, 0, 1], [10, 0, 0, 2], src_port, dst_port, b"x")
    }

    #[test]
    fn hit_only_at_the_same_epoch_and_key() {
        let mut c = FlowCache::new(8).unwrap();
        let f = udp(1000, 2000);
        let pf = parse_frame(&f).unwrap();
        let k = FlowCacheKey::of(&pf, 0).unwrap();
        let miss = c.lookup(&k, 5, 1).unwrap_err();
        c.insert(miss, &k, 5, 1, Verdict::Drop(DropReason::PolicyDrop));
        let hit = c.lookup(&k, 5, 1).unwrap();
        assert_eq!((hit.verdict, hit.seen_reported), (Verdict::Drop(DropReason::PolicyDrop), true));
        // A new seen period: to be recorded until the caller marks it.
        let hit = c.lookup(&k, 5, 2).unwrap();
        assert!(!hit.seen_reported);
        assert!(!c.lookup(&k, 5, 2).unwrap().seen_reported);
        c.mark_seen(&hit, 2);
        assert!(c.lookup(&k, 5, 2).unwrap().seen_reported);
        // Any state change makes it stale.
        assert!(c.lookup(&k, 6, 2).is_err());
        // Another port slot or another port number is another flow.
        assert!(c.lookup(&FlowCacheKey::of(&pf, 1).unwrap(), 5, 2).is_err());
        let g = udp(1001, 2000);
        assert!(c.lookup(&FlowCacheKey::of(&parse_frame(&g).unwrap(), 0).unwrap(), 5, 2).is_err());
        assert_eq!((c.hits, c.misses), (4, 4));
    }

    #[test]
    fn the_raw_key_is_the_parsed_key() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 9, 8, 7, 6, 5]);
        let frames = [
            synth::udp(a, b, [10, 0, 0, 1], [203, 0, 113, 9], 40000, 4500, &[0; 18]),
            synth::tcp(a, b, [10, 1, 2, 3], [198, 51, 100, 7], 1, 443, b""),
            synth::tcp(b, a, [255, 255, 255, 255], [0, 0, 0, 0], 65535, 0, b"\x01\x02"),
        ];
        for f in &frames {
            for slot in [0, 1, 7] {
                let parsed = FlowCacheKey::of(&parse_frame(f).unwrap(), slot).unwrap();
                assert_eq!(FlowCacheKey::of_raw(f, slot), Some(parsed));
            }
        }
        // Not the common kind: no raw key (the parsed one still exists).
        let vlan = synth::vlan_tcp(a, b, 7, [10, 0, 0, 1], [10, 0, 0, 2], 80);
        assert!(FlowCacheKey::of_raw(&vlan, 0).is_none());
        assert!(FlowCacheKey::of(&parse_frame(&vlan).unwrap(), 0).is_some());
        let v6 = synth::tcp6(a, b, [1; 16], [2; 16], 1, 2);
        assert!(FlowCacheKey::of_raw(&v6, 0).is_none());
        assert!(FlowCacheKey::of_raw(&frames[0][..37], 0).is_none());
    }

    #[test]
    fn raw_parts_give_the_hint_and_broken_frames_give_none() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 9, 8, 7, 6, 5]);
        let (x, y) = ([10, 0, 0, 1], [203, 0, 113, 9]);
        let hint = |f: &[u8]| FlowCacheKey::of_raw_parts(f, 0).map(|(_, l4)| l4.app_hint().is_some());
        let plain = synth::tcp(a, b, x, y, 40000, 443, b"");
        assert_eq!(hint(&plain), Some(false));
        assert_eq!(hint(&synth::udp(a, b, x, y, 1, 4500, &[0; 18])), Some(false));
        assert_eq!(hint(&synth::udp(a, b, x, y, 1, 53, &synth::dns_query("a.example"))), Some(true));
        assert_eq!(hint(&synth::tcp(a, b, x, y, 1, 53, &synth::dns_query_tcp("a.example"))), Some(true));
        assert_eq!(hint(&synth::tcp(a, b, x, y, 1, 443, &synth::client_hello("a.example"))), Some(true));
        assert_eq!(hint(&synth::tcp(a, b, x, y, 1, 80, &synth::http_get("a.example", "/"))), Some(true));
        // An IPv4 total length past the frame: parse_frame refuses it, so must this.
        let mut broken = plain.clone();
        broken[17] = broken[17].wrapping_add(1);
        assert!(parse_frame(&broken).is_err());
        assert!(FlowCacheKey::of_raw_parts(&broken, 0).is_none());
    }

    proptest::proptest! {
        /// Any bytes shaped like the common frame: raw parts mean the frame
        /// parses, with that key and that hint.
        #[test]
        fn raw_parts_imply_the_parse(
            mut f in proptest::collection::vec(proptest::prelude::any::<u8>(), 34..90),
            tcp in proptest::prelude::any::<bool>(),
            total in 0u16..80,
            first in proptest::prelude::any::<u8>(),
            offset in 0u8..16,
            udp_len in 0u16..60,
            dns in proptest::prelude::any::<bool>(),
        ) {
            f[12] = 8; f[13] = 0; f[14] = 0x45; f[20] &= 0xe0; f[21] = 0;
            f[23] = if tcp { 6 } else { 17 };
            f[16..18].copy_from_slice(&total.to_be_bytes());
            if f.len() > 46 { f[46] = offset << 4; }
            if f.len() > 39 && !tcp { f[38..40].copy_from_slice(&udp_len.to_be_bytes()); }
            if f.len() > 54 { f[54] = first; }
            if dns && f.len() > 37 { f[36] = 0; f[37] = 53; }
            if let Some((k, l4)) = FlowCacheKey::of_raw_parts(&f, 1) {
                let pf = parse_frame(&f);
                proptest::prop_assert!(pf.is_ok(), "{:?}", pf);
                let pf = pf.unwrap();
                proptest::prop_assert_eq!(pf.app, l4.app_hint());
                proptest::prop_assert_eq!(FlowCacheKey::of(&pf, 1), Some(k));
            }
        }

        /// Any bytes: a raw key, when there is one, is the parsed key.
        #[test]
        fn raw_and_parsed_keys_agree(mut f in proptest::collection::vec(proptest::prelude::any::<u8>(), 38..80), tcp in proptest::prelude::any::<bool>()) {
            f[12] = 8; f[13] = 0; f[14] = 0x45; f[20] &= 0xe0; f[21] = 0;
            f[23] = if tcp { 6 } else { 17 };
            let raw = FlowCacheKey::of_raw(&f, 3);
            if let Ok(pf) = parse_frame(&f) {
                proptest::prop_assert_eq!(raw, FlowCacheKey::of(&pf, 3));
            }
        }
    }

    #[test]
    fn a_period_of_misses_sits_the_cache_out_then_it_tries_again() {
        let mut c = FlowCache::new(64).unwrap();
        let keys: Vec<_> = (0..2000u16)
            .map(|p| {
                let f = udp(p, 9);
                FlowCacheKey::of(&parse_frame(&f).unwrap(), 0).unwrap()
            })
            .collect();
        // A cold table: every lookup misses, but into empty ways: stays on.
        for k in &keys[..64] {
            let miss = c.lookup(k, 1, 0).unwrap_err();
            c.insert(miss, k, 1, 0, Verdict::Forward);
        }
        for k in &keys[..1024] {
            let _ = c.lookup(k, 2, 0); // the state changed: all stale
        }
        c.end_period();
        assert!(c.active());
        // 2000 flows in 64 entries, each seen once: all miss, evicting.
        for k in &keys {
            let miss = c.lookup(k, 3, 0).unwrap_err();
            c.insert(miss, k, 3, 0, Verdict::Forward);
        }
        assert!(c.active());
        c.end_period();
        assert!(!c.active());
        assert!(c.set_address(&udp(1, 9), 0).is_none());
        for _ in 0..BYPASS_PERIODS {
            assert!(!c.active());
            c.end_period();
        }
        assert!(c.active());
        assert_eq!(c.bypassed_periods, u64::from(BYPASS_PERIODS));
        // A period of hits keeps it on.
        for _ in 0..2000 {
            let _ = c.lookup(&keys[1999], 3, 0).unwrap();
        }
        c.end_period();
        assert!(c.active());
        // Too few lookups to judge: stays on.
        let _ = c.lookup(&keys[0], 3, 0);
        c.end_period();
        assert!(c.active());
    }

    #[test]
    fn every_verdict_round_trips() {
        let mut all = vec![Verdict::Forward, Verdict::Punt];
        all.extend(DropReason::ALL.iter().map(|r| Verdict::Drop(*r)));
        for v in all {
            assert_eq!(decode(encode(v)), v);
            assert!(encode(v) < 256);
        }
    }

    #[test]
    fn the_upper_half_of_the_counter_clears_the_table() {
        let mut c = FlowCache::new(8).unwrap();
        let f = udp(1, 2);
        let k = FlowCacheKey::of(&parse_frame(&f).unwrap(), 0).unwrap();
        let miss = c.lookup(&k, 7, 0).unwrap_err();
        c.insert(miss, &k, 7, 0, Verdict::Forward);
        assert!(c.lookup(&k, 7, 0).is_ok());
        // Same low 32 bits, another upper half: must not hit.
        assert!(c.lookup(&k, 7 + (1 << 32), 0).is_err());
    }

    #[test]
    fn frames_with_application_hints_share_their_flows_key_and_arp_has_none() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (x, y) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let key = |f: &[u8]| FlowCacheKey::of(&parse_frame(f).unwrap(), 0);
        let dns = synth::udp(a, b, x, y, 5353, 53, &synth::dns_query("a.example"));
        assert_eq!(key(&dns), key(&synth::udp(a, b, x, y, 5353, 53, b"")));
        let tls = synth::tcp(a, b, x, y, 5, 443, &synth::client_hello("a.example"));
        assert_eq!(key(&tls), key(&synth::tcp(a, b, x, y, 5, 443, b"")));
        let http = synth::tcp(a, b, x, y, 5, 80, &synth::http_get("a.example", "/"));
        assert_eq!(key(&http), key(&synth::tcp(a, b, x, y, 5, 80, b"")));
        let mut arp = vec![0xffu8; 6];
        arp.extend_from_slice(&a);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&a);
        arp.extend_from_slice(&x);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&y);
        assert!(FlowCacheKey::of(&parse_frame(&arp).unwrap(), 0).is_none());
    }

    #[test]
    fn a_full_set_keeps_its_first_way_and_replaces_the_second() {
        // Two entries = one set: every key lands in it.
        let mut c = FlowCache::new(2).unwrap();
        let keys: Vec<_> = (0..3u16)
            .map(|p| {
                let f = udp(p, 9);
                FlowCacheKey::of(&parse_frame(&f).unwrap(), 0).unwrap()
            })
            .collect();
        for k in &keys {
            let miss = c.lookup(k, 1, 0).unwrap_err();
            c.insert(miss, k, 1, 0, Verdict::Forward);
        }
        assert!(c.lookup(&keys[0], 1, 0).is_ok());
        assert!(c.lookup(&keys[1], 1, 0).is_err());
        assert!(c.lookup(&keys[2], 1, 0).is_ok());
    }
}
