//! MDR threat feed indicators and threat exclusions, compiled into an
//! immutable [`IndicatorSet`] that workers query without locks or allocation.
//!
//! Indicators are IPv4/IPv6 addresses and networks, domains (a domain matches
//! itself and every subdomain, case-insensitively, trailing dot ignored) and
//! URLs (same host, path starting with the indicator's path; scheme, port and
//! fragment ignored). Each carries an [`AuditId`] (what an MDR analyst needs
//! to identify the feed entry) and the name of its source feed. Per-feed
//! [`FeedSettings`] turn a feed on or off and choose [`FeedAction::LogOnly`] or
//! [`FeedAction::LogAndDrop`]. [`ThreatExclusion`]s win over indicators: a
//! lookup that matches an indicator *and* an exclusion answers
//! [`IndicatorMatch::Excluded`], distinct from no match, so it can be logged.
//!
//! # How it is built
//!
//! The set is built aside (a million indicators in well under a few seconds
//! in release builds) and published whole with `arc-swap` by the owner (see
//! `state`). It is three independent parts behind `Arc`s, so changing
//! exclusions or feed settings does not rebuild a million indicators:
//!
//! * IP indicators: one FxHash map per prefix length present (masked network
//!   -> record), probed longest prefix first: a longest-prefix match in as
//!   many probes as there are distinct prefix lengths (typically a handful).
//!   For IPv4, a bitmap of the /24s any indicator touches (2 MiB) answers
//!   most misses before any probe.
//! * Domains: one [`hashbrown::HashTable`] of 12-byte entries pointing into a
//!   single byte arena of lower-cased names, plus a marker entry for each
//!   parent domain of a listed name (pointing into the same bytes); a lookup
//!   hashes label suffixes of the query case-insensitively (no copy, no
//!   allocation) from the top-level label down, compares ignoring ASCII case,
//!   and stops at the first suffix with nothing under it.
//! * URLs: a host table like the domain one, each host owning a run of paths
//!   sorted longest first, so the first prefix that matches is the longest.
//!
//! Per indicator the set keeps a 12-byte record (audit id span in one string
//! arena, feed number, next record with the same key) plus its key. When
//! several indicators have the same key (one address in two feeds), the most
//! recently added one whose feed is on answers; otherwise the most specific
//! (longest prefix, longest domain suffix, longest URL path) wins.

use hashbrown::{HashMap, HashTable};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rustc_hash::{FxBuildHasher, FxHasher};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

/// The id an MDR analyst gives an indicator; logged with every hit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AuditId(pub String);

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AuditId {
    fn from(s: &str) -> Self {
        AuditId(s.to_owned())
    }
}

/// What an indicator matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum IndicatorKind {
    /// One IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv4 network (host bits are ignored).
    Ipv4Net(Ipv4Net),
    /// One IPv6 address.
    Ipv6(Ipv6Addr),
    /// An IPv6 prefix (host bits are ignored).
    Ipv6Net(Ipv6Net),
    /// A domain and all its subdomains.
    Domain(String),
    /// A URL: its host, and every path that starts with its path.
    Url(String),
}

impl FromStr for IndicatorKind {
    type Err = IndicatorError;

    /// Guesses the kind: an IP address, a CIDR, a URL (has `://` or a `/`),
    /// else a domain.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(a) = canonical_ipv4(t.as_bytes()) {
            return Ok(IndicatorKind::Ipv4(a));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(match ip {
                IpAddr::V4(a) => IndicatorKind::Ipv4(a),
                IpAddr::V6(a) => IndicatorKind::Ipv6(a),
            });
        }
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(match net {
                IpNet::V4(n) => IndicatorKind::Ipv4Net(n),
                IpNet::V6(n) => IndicatorKind::Ipv6Net(n),
            });
        }
        check_cidr_like(t).map_err(|(problem, fix)| invalid(t, problem, fix))?;
        if t.contains("://") || t.contains('/') {
            split_url(t).map_err(|(problem, fix)| invalid(t, problem, fix))?;
            return Ok(IndicatorKind::Url(t.to_owned()));
        }
        normalize_name(t).map_err(|(problem, fix)| invalid(t, problem, fix))?;
        Ok(IndicatorKind::Domain(t.to_owned()))
    }
}

impl fmt::Display for IndicatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndicatorKind::Ipv4(a) => a.fmt(f),
            IndicatorKind::Ipv4Net(n) => n.fmt(f),
            IndicatorKind::Ipv6(a) => a.fmt(f),
            IndicatorKind::Ipv6Net(n) => n.fmt(f),
            IndicatorKind::Domain(d) => f.write_str(d),
            IndicatorKind::Url(u) => f.write_str(u),
        }
    }
}

/// One entry of a threat feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreatIndicator {
    /// What it matches.
    pub kind: IndicatorKind,
    /// The analyst's id for it.
    pub audit_id: AuditId,
    /// The feed it came from.
    pub feed: String,
}

/// What to do on a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedAction {
    /// Log the hit, let the traffic pass.
    LogOnly,
    /// Log the hit and drop the traffic.
    #[default]
    LogAndDrop,
}

/// One feed's switch and action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSettings {
    /// Whether the feed's indicators are looked at at all.
    pub enabled: bool,
    /// What a hit does.
    pub action: FeedAction,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings { enabled: true, action: FeedAction::LogAndDrop }
    }
}

/// Settings of every feed: the MDR threat feeds switch and action, and
/// overrides by feed name.
///
/// ```toml
/// enabled = true
/// action = "log_and_drop"   # or "log_only"
/// [feeds.noisy-feed]
/// enabled = false
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThreatFeedSettings {
    /// Whether feeds not named in `feeds` are looked at.
    pub enabled: bool,
    /// What a hit of a feed not named in `feeds` does.
    pub action: FeedAction,
    /// Per-feed overrides.
    pub feeds: BTreeMap<String, FeedSettings>,
}

impl Default for ThreatFeedSettings {
    fn default() -> Self {
        let d = FeedSettings::default();
        ThreatFeedSettings { enabled: d.enabled, action: d.action, feeds: BTreeMap::new() }
    }
}

impl ThreatFeedSettings {
    /// The settings that apply to `feed`.
    pub fn for_feed(&self, feed: &str) -> FeedSettings {
        self.feeds.get(feed).copied().unwrap_or(FeedSettings { enabled: self.enabled, action: self.action })
    }
}

/// Something never to flag, whatever the feeds say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum ThreatExclusion {
    /// One host address.
    Host(IpAddr),
    /// A network.
    Network(IpNet),
    /// A domain and its subdomains.
    Domain(String),
    /// A URL and every URL under its path.
    Url(String),
}

impl FromStr for ThreatExclusion {
    type Err = IndicatorError;

    /// Guesses the kind like [`IndicatorKind::from_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(ThreatExclusion::Host(ip));
        }
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(ThreatExclusion::Network(net));
        }
        let bad = |(problem, fix)| IndicatorError::InvalidExclusion { value: t.to_owned(), problem, fix };
        check_cidr_like(t).map_err(bad)?;
        if t.contains("://") || t.contains('/') {
            split_url(t).map_err(bad)?;
            return Ok(ThreatExclusion::Url(t.to_owned()));
        }
        normalize_name(t).map_err(bad)?;
        Ok(ThreatExclusion::Domain(t.to_owned()))
    }
}

/// An indicator or exclusion that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndicatorError {
    /// The indicator's value is malformed.
    #[error("threat indicator `{value}`: {problem}: {fix}")]
    InvalidIndicator {
        /// The value as given.
        value: String,
        /// What is wrong.
        problem: &'static str,
        /// What to do.
        fix: &'static str,
    },
    /// The exclusion's value is malformed.
    #[error("threat exclusion `{value}`: {problem}: {fix}")]
    InvalidExclusion {
        /// The value as given.
        value: String,
        /// What is wrong.
        problem: &'static str,
        /// What to do.
        fix: &'static str,
    },
    /// An audit id longer than a record can point at.
    #[error("threat indicator with audit id of {0} bytes: keep audit ids under 32768 bytes")]
    AuditIdTooLong(usize),
    /// The set outgrew its 32-bit offsets.
    #[error("indicator set too large ({0} exceeds 4 GiB or 4 billion entries): split the feed across gateways")]
    TooLarge(&'static str),
    /// More distinct feed names than a record can number.
    #[error("more than 65535 distinct feed names: name feeds by source, not by indicator")]
    TooManyFeeds,
}

fn invalid(value: &str, problem: &'static str, fix: &'static str) -> IndicatorError {
    IndicatorError::InvalidIndicator { value: value.to_owned(), problem, fix }
}

type Problem = (&'static str, &'static str);

/// An address, a slash and something that is no prefix length: a bad CIDR,
/// not a URL.
/// An IPv4 address in dotted-quad form (four decimal octets of one to
/// three digits, no leading zero, none over 255: what feeds carry), read
/// without the general parser (a fifth of a 100k batch's validation went
/// there); `None` for anything else, which the general parser then
/// decides. Accepts nothing `Ipv4Addr::from_str` refuses, with the same
/// value (a property test holds it to that).
#[inline]
fn canonical_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    if !(7..=15).contains(&s.len()) {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v = 0u32;
        while i < s.len() && i - start < 3 && s[i].is_ascii_digit() {
            v = v * 10 + u32::from(s[i] - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && s[start] == b'0') || v > 255 {
            return None;
        }
        *octet = v as u8;
    }
    (i == s.len()).then(|| Ipv4Addr::from(octets))
}

fn check_cidr_like(t: &str) -> Result<(), Problem> {
    match t.split_once('/') {
        Some((addr, _)) if !t.contains("://") && addr.parse::<IpAddr>().is_ok() => {
            Err(("bad network", "write a CIDR with a prefix length of 0-32 (IPv4) or 0-128 (IPv6), like 10.0.0.0/8"))
        }
        _ => Ok(()),
    }
}

/// Lower-cases a domain or host, drops one trailing dot and a leading `*.`,
/// and checks it is a plausible name.
fn normalize_name(s: &str) -> Result<String, Problem> {
    let mut t = s.trim();
    t = t.strip_suffix('.').unwrap_or(t);
    t = t.strip_prefix("*.").unwrap_or(t);
    if t.is_empty() {
        return Err(("empty name", "give a domain like example.com"));
    }
    if t.split('.').any(str::is_empty) {
        return Err(("empty label", "remove the doubled or leading dot"));
    }
    if t.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/:@?#*".contains(&b)) {
        return Err(("not a domain name", "give a bare domain like example.com (URLs need a scheme or a path)"));
    }
    // What DNS names can hold on the wire (letters, digits, hyphen; underscore
    // for service labels); internationalised names come as punycode (xn--).
    if t.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')) {
        return Err(("not a domain name", "use letters, digits, '-' and '.' only (internationalised names in punycode, xn--...)"));
    }
    if t.len() > 253 || t.split('.').any(|l| l.len() > 63) {
        return Err(("name too long", "a domain has at most 253 characters and labels of at most 63"));
    }
    Ok(t.to_ascii_lowercase())
}

/// Splits a URL into its normalised host and its path (`/` when empty; the
/// query is kept, the fragment dropped).
fn split_url(s: &str) -> Result<(String, String), Problem> {
    let t = s.trim();
    let rest = match t.find("://") {
        Some(i) => &t[i + 3..],
        None => t,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = std::str::from_utf8(strip_port(authority.as_bytes())).unwrap_or(authority);
    let host = if host.contains(':') {
        // An IPv6 literal (brackets removed): keep it as written, lower-cased.
        host.to_ascii_lowercase()
    } else {
        normalize_name(host).map_err(|_| ("URL without a valid host", "write it like http://host/path"))?
    };
    let tail = tail.split('#').next().unwrap_or("");
    let path = if tail.is_empty() {
        "/".to_owned()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_owned()
    };
    Ok((host, path))
}

/// `host:port` -> `host`, `[v6]:port` -> `v6`; an unbracketed IPv6 literal
/// (several colons) stays whole.
#[inline]
fn strip_port(host: &[u8]) -> &[u8] {
    if let Some(inner) = host.strip_prefix(b"[") {
        return match inner.iter().position(|&b| b == b']') {
            Some(i) => &inner[..i],
            None => inner,
        };
    }
    let mut colons = host.iter().enumerate().filter(|(_, &b)| b == b':');
    match (colons.next(), colons.next()) {
        (Some((i, _)), None) => &host[..i],
        _ => host,
    }
}

#[inline]
fn strip_dot(name: &[u8]) -> &[u8] {
    name.strip_suffix(b".").unwrap_or(name)
}

/// FxHash of `bytes` as if lower-cased (ASCII), eight bytes at a time.
#[inline]
fn hash_ci(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        a.make_ascii_lowercase();
        h.write_u64(u64::from_le_bytes(a));
    }
    // The last 0..7 bytes, assembled in a register: copying them into a
    // stack array was a `memcpy` call and a load that could not be
    // forwarded from its stores (measured: a quarter of the lookup's cycles
    // on one instruction, perf annotate of a worker). Same value as before.
    let mut last = 0u64;
    for (i, &b) in chunks.remainder().iter().enumerate() {
        last |= u64::from(b.to_ascii_lowercase()) << (8 * i);
    }
    h.write_u64(last);
    h.write_usize(bytes.len());
    h.finish()
}

const NONE: u32 = u32::MAX;

/// Per-indicator record: 12 bytes.
#[derive(Debug, Clone, Copy)]
struct Record {
    audit_off: u32,
    /// The audit ID's length, and [`FIXED`] for a fixed record.
    audit_len: u16,
    feed: u16,
    /// The next (earlier added) record with the same key, or `NONE`.
    next: u32,
    /// [`audit_id_hash`] of the audit ID: whether a layer of an overlay
    /// supersedes a record that matched is asked of its touched audit IDs
    /// by this hash, without reading the ID (a cache miss in a large set)
    /// unless one of them has the same hash.
    audit_hash: u32,
}

/// The hash of an audit ID that records keep and touched audit IDs are
/// found by (see `indicator_overlay`).
#[inline]
pub fn audit_id_hash(id: &str) -> u32 {
    let h = FxBuildHasher.hash_one(id);
    // The high half has the multiply's best-mixed bits.
    (h >> 32) as u32
}

/// The bit of [`Record::audit_len`] that marks a record no layer of an
/// overlay supersedes (see [`IndicatorSetBuilder::add_fixed_parts`]).
const FIXED: u16 = 0x8000;

/// The longest audit ID a set holds (the bit above is [`FIXED`]).
const MAX_AUDIT_LEN: usize = (FIXED - 1) as usize;

impl Record {
    #[inline]
    fn audit_range(&self) -> std::ops::Range<usize> {
        let start = self.audit_off as usize;
        start..start + usize::from(self.audit_len & !FIXED)
    }

    #[inline]
    fn fixed(&self) -> bool {
        self.audit_len & FIXED != 0
    }
}

trait PrefixKey: Copy + Eq + Hash {
    const BITS: u8;
    fn masked(self, len: u8) -> Self;
}

impl PrefixKey for u32 {
    const BITS: u8 = 32;
    #[inline]
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len)))
        }
    }
}

impl PrefixKey for u128 {
    const BITS: u8 = 128;
    #[inline]
    fn masked(self, len: u8) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len)))
        }
    }
}

type FxMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// Longest-prefix match: one hash map per prefix length present, longest first.
#[derive(Debug)]
struct Lpm<K> {
    lens: Vec<u8>,
    maps: Vec<FxMap<K, u32>>,
}

impl<K: PrefixKey> Default for Lpm<K> {
    fn default() -> Self {
        Lpm { lens: Vec::new(), maps: Vec::new() }
    }
}

impl<K: PrefixKey> Lpm<K> {
    /// Sets `value` for `key/len`; returns the value it replaces.
    fn insert(&mut self, key: K, len: u8, value: u32) -> Option<u32> {
        let len = len.min(K::BITS);
        let i = match self.lens.iter().position(|&l| l <= len) {
            Some(i) if self.lens[i] == len => i,
            Some(i) => {
                self.lens.insert(i, len);
                self.maps.insert(i, FxMap::default());
                i
            }
            None => {
                self.lens.push(len);
                self.maps.push(FxMap::default());
                self.lens.len() - 1
            }
        };
        self.maps[i].insert(key.masked(len), value)
    }

    /// Values of the prefixes holding `key`, longest first.
    #[inline]
    fn matches(&self, key: K) -> impl Iterator<Item = u32> + '_ {
        self.lens.iter().zip(&self.maps).filter_map(move |(&len, map)| map.get(&key.masked(len)).copied())
    }

    fn len(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum()
    }

    fn shrink(&mut self) {
        self.maps.iter_mut().for_each(|m| m.shrink_to_fit());
    }
}

#[derive(Debug, Clone, Copy)]
struct NameEntry {
    off: u32,
    /// Length in bytes, with [`HAS_CHILDREN`] in the top bit.
    len: u32,
    /// The name's value, or `NONE` for a parent domain that is only there
    /// because names under it are (see [`NameTable::insert_domain`]).
    value: u32,
}

/// In [`NameEntry::len`]: some name in the table is under this one.
const HAS_CHILDREN: u32 = 1 << 31;

/// Terminal hits a suffix walk keeps before it falls back to walking every
/// suffix (names listed at more nesting levels of one query than this are rare).
const WALK_HITS: usize = 8;

/// Lower-cased names in one arena, found case-insensitively.
#[derive(Debug, Default)]
struct NameTable {
    arena: Vec<u8>,
    table: HashTable<NameEntry>,
    /// Entries with a value (parent-only entries not counted).
    names: usize,
}

impl NameTable {
    #[inline]
    fn name<'a>(arena: &'a [u8], e: &NameEntry) -> &'a [u8] {
        &arena[e.off as usize..(e.off + (e.len & !HAS_CHILDREN)) as usize]
    }

    /// Sets `value` for the (already lower-cased) `name`; returns the value it
    /// replaces, and the name's offset in the arena.
    fn insert_at(&mut self, name: &[u8], value: u32) -> Result<(Option<u32>, u32), IndicatorError> {
        let NameTable { arena, table, names } = self;
        let hash = hash_ci(name);
        if let Some(e) = table.find_mut(hash, |e| Self::name(arena, e) == name) {
            let old = std::mem::replace(&mut e.value, value);
            if old == NONE {
                *names += 1;
            }
            return Ok(((old != NONE).then_some(old), e.off));
        }
        let off = u32::try_from(arena.len()).map_err(|_| IndicatorError::TooLarge("the name arena"))?;
        arena.extend_from_slice(name);
        u32::try_from(arena.len()).map_err(|_| IndicatorError::TooLarge("the name arena"))?;
        let entry = NameEntry { off, len: name.len() as u32, value };
        table.insert_unique(hash, entry, |e| hash_ci(Self::name(arena, e)));
        *names += 1;
        Ok((None, off))
    }

    /// Sets `value` for the (already lower-cased) `name`; returns the value it replaces.
    fn insert(&mut self, name: &[u8], value: u32) -> Result<Option<u32>, IndicatorError> {
        Ok(self.insert_at(name, value)?.0)
    }

    /// [`NameTable::insert`] for a table walked by [`NameTable::longest_suffix`]:
    /// every parent domain of `name` gets an entry marked [`HAS_CHILDREN`]
    /// (pointing into `name`'s bytes in the arena: no copy), so that a walk
    /// from the top-level label down can stop at the first suffix that has
    /// nothing under it.
    fn insert_domain(&mut self, name: &[u8], value: u32) -> Result<Option<u32>, IndicatorError> {
        let (old, off) = self.insert_at(name, value)?;
        let NameTable { arena, table, .. } = self;
        for (i, _) in name.iter().enumerate().filter(|&(_, &b)| b == b'.') {
            let parent = &name[i + 1..];
            let hash = hash_ci(parent);
            match table.find_mut(hash, |e| Self::name(arena, e) == parent) {
                Some(e) => e.len |= HAS_CHILDREN,
                None => {
                    let entry = NameEntry { off: off + i as u32 + 1, len: parent.len() as u32 | HAS_CHILDREN, value: NONE };
                    table.insert_unique(hash, entry, |e| hash_ci(Self::name(arena, e)));
                }
            }
        }
        Ok(old)
    }

    #[inline]
    fn entry(&self, name: &[u8]) -> Option<&NameEntry> {
        if self.table.is_empty() {
            return None;
        }
        self.table.find(hash_ci(name), |e| Self::name(&self.arena, e).eq_ignore_ascii_case(name))
    }

    /// The value of `name`, ignoring ASCII case.
    #[inline]
    fn get(&self, name: &[u8]) -> Option<u32> {
        self.entry(name).map(|e| e.value).filter(|&v| v != NONE)
    }

    /// The first value that `accept` takes among those of `name` and of each
    /// of its parent domains, longest first. For tables built with
    /// [`NameTable::insert_domain`] only.
    ///
    /// Walks from the last label down (`com`, `example.com`, ...) and stops at
    /// the first suffix with nothing under it: most names cost one or two
    /// probes, the first of which (a top-level domain) stays in cache, where
    /// walking up from the full name probed every suffix (measured, perf
    /// annotate: the suffix probes were the largest part of the lookup stage).
    #[inline]
    fn longest_suffix(&self, name: &[u8], accept: impl FnMut(u32) -> Option<u32>) -> Option<u32> {
        self.longest_suffix_len(name, accept).map(|(v, _)| v)
    }

    /// [`NameTable::longest_suffix`], with the length of the suffix that matched.
    #[inline]
    fn longest_suffix_len(&self, name: &[u8], mut accept: impl FnMut(u32) -> Option<u32>) -> Option<(u32, usize)> {
        if self.table.is_empty() {
            return None;
        }
        let mut hits = [(NONE, 0usize); WALK_HITS];
        let mut n = 0;
        let mut end = name.len();
        loop {
            // The next longer suffix: from just after the previous dot to the left.
            let start = name[..end].iter().rposition(|&b| b == b'.').map_or(0, |i| i + 1);
            let suffix = &name[start..];
            let Some(e) = self.entry(suffix) else { break };
            if e.value != NONE {
                if n == WALK_HITS {
                    return self.every_suffix(name, accept);
                }
                hits[n] = (e.value, suffix.len());
                n += 1;
            }
            if e.len & HAS_CHILDREN == 0 || start == 0 {
                break;
            }
            end = start - 1;
        }
        hits[..n].iter().rev().find_map(|&(v, len)| Some((accept(v)?, len)))
    }

    /// [`NameTable::longest_suffix`] by probing every suffix, longest first.
    #[cold]
    fn every_suffix(&self, name: &[u8], mut accept: impl FnMut(u32) -> Option<u32>) -> Option<(u32, usize)> {
        let mut rest = Some(name);
        std::iter::from_fn(move || loop {
            let current = rest?;
            rest = current.iter().position(|&b| b == b'.').map(|i| &current[i + 1..]);
            if let Some(v) = self.get(current) {
                return Some((v, current.len()));
            }
        })
        .find_map(|(v, len)| Some((accept(v)?, len)))
    }

    fn len(&self) -> usize {
        self.names
    }

    fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        let arena = &self.arena;
        self.table.shrink_to_fit(|e| hash_ci(Self::name(arena, e)));
    }
}

#[derive(Debug, Clone, Copy)]
struct UrlPath {
    off: u32,
    len: u32,
    value: u32,
}

/// Hosts, each with its paths sorted longest first.
#[derive(Debug, Default)]
struct UrlTable {
    /// Host -> group number.
    hosts: NameTable,
    /// Group -> `paths[start..end]`.
    groups: Vec<(u32, u32)>,
    paths: Vec<UrlPath>,
    arena: Vec<u8>,
    /// While building: (group, path, value).
    pending: Vec<(u32, UrlPath)>,
}

impl UrlTable {
    fn add(&mut self, host: &str, path: &str, value: u32) -> Result<(), IndicatorError> {
        let next_group = self.groups.len() as u32;
        let group = match self.hosts.get(host.as_bytes()) {
            Some(g) => g,
            None => {
                self.hosts.insert(host.as_bytes(), next_group)?;
                self.groups.push((0, 0));
                next_group
            }
        };
        let off = u32::try_from(self.arena.len()).map_err(|_| IndicatorError::TooLarge("the URL path arena"))?;
        self.arena.extend_from_slice(path.as_bytes());
        u32::try_from(self.arena.len()).map_err(|_| IndicatorError::TooLarge("the URL path arena"))?;
        self.pending.push((group, UrlPath { off, len: path.len() as u32, value }));
        Ok(())
    }

    /// Sorts paths by group, longest first, latest first among equals.
    fn finish(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then(b.1.len.cmp(&a.1.len)).then(b.1.value.cmp(&a.1.value))
        });
        self.paths = Vec::with_capacity(pending.len());
        let mut i = 0;
        while i < pending.len() {
            let group = pending[i].0;
            let start = self.paths.len() as u32;
            while i < pending.len() && pending[i].0 == group {
                self.paths.push(pending[i].1);
                i += 1;
            }
            self.groups[group as usize] = (start, self.paths.len() as u32);
        }
        self.arena.shrink_to_fit();
        self.hosts.shrink();
    }

    /// Values of the paths of `host` that prefix `path`, longest first.
    #[inline]
    fn matches<'a>(&'a self, host: &[u8], path: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        let (start, end) = match self.hosts.get(host) {
            Some(g) => self.groups[g as usize],
            None => (0, 0),
        };
        self.paths[start as usize..end as usize].iter().filter_map(move |p| {
            let prefix = &self.arena[p.off as usize..(p.off + p.len) as usize];
            path.starts_with(prefix).then_some(p.value)
        })
    }

    fn len(&self) -> usize {
        self.paths.len()
    }
}

/// Normalises the host and path a caller hands to a URL lookup.
#[inline]
fn lookup_host_path<'a>(host: &'a [u8], path: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    let host = strip_dot(strip_port(host));
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    (host, path)
}

/// The compiled indicators of every feed.
#[derive(Debug, Default)]
struct IndicatorIndex {
    records: Vec<Record>,
    audit_arena: String,
    feed_names: Vec<Box<str>>,
    v4: Lpm<u32>,
    /// One bit per IPv4 /24: set when some IPv4 indicator covers any of it
    /// (2 MiB; empty when there are no IPv4 indicators). A clear bit answers
    /// "no match" without probing the prefix maps, one hash probe per prefix
    /// length each. Traffic's own side of a flow (a LAN's few /24s) keeps its
    /// words in cache. Measured with perf/pipeline_stages.rs.
    v4_slash24: Box<[u64]>,
    v6: Lpm<u128>,
    domains: NameTable,
    urls: UrlTable,
}

impl IndicatorIndex {
    fn fill_v4_slash24(&mut self) {
        if self.v4.lens.is_empty() {
            return;
        }
        let mut bits = vec![0u64; (1 << 24) / 64];
        for (&len, map) in self.v4.lens.iter().zip(&self.v4.maps) {
            for &net in map.keys() {
                let first = (net >> 8) as usize;
                let count = if len >= 24 { 1 } else { 1usize << (24 - len) };
                if count >= 64 {
                    // A /18 or wider: whole words (`first` is aligned to `count`).
                    bits[first / 64..(first + count) / 64].fill(u64::MAX);
                } else {
                    for b in first..first + count {
                        bits[b / 64] |= 1 << (b % 64);
                    }
                }
            }
        }
        self.v4_slash24 = bits.into();
    }

    /// Whether some IPv4 indicator may hold `a` (false: none does).
    #[inline]
    fn v4_may_hold(&self, a: u32) -> bool {
        self.v4_slash24.get((a >> 14) as usize).is_some_and(|w| w >> ((a >> 8) & 63) & 1 != 0)
    }
}

/// Compiled threat exclusions.
#[derive(Debug, Default)]
pub struct ExclusionSet {
    v4: Lpm<u32>,
    v6: Lpm<u128>,
    domains: NameTable,
    urls: UrlTable,
    count: usize,
}

impl ExclusionSet {
    /// Compiles exclusions.
    pub fn compile<'a>(exclusions: impl IntoIterator<Item = &'a ThreatExclusion>) -> Result<Self, IndicatorError> {
        let mut set = ExclusionSet::default();
        for e in exclusions {
            let bad = |(problem, fix)| IndicatorError::InvalidExclusion { value: format!("{e:?}"), problem, fix };
            match e {
                ThreatExclusion::Host(IpAddr::V4(a)) => {
                    set.v4.insert(u32::from(*a), 32, 0);
                }
                ThreatExclusion::Host(IpAddr::V6(a)) => {
                    set.v6.insert(u128::from(*a), 128, 0);
                }
                ThreatExclusion::Network(IpNet::V4(n)) => {
                    set.v4.insert(u32::from(n.addr()), n.prefix_len(), 0);
                }
                ThreatExclusion::Network(IpNet::V6(n)) => {
                    set.v6.insert(u128::from(n.addr()), n.prefix_len(), 0);
                }
                ThreatExclusion::Domain(d) => {
                    set.domains.insert_domain(normalize_name(d).map_err(bad)?.as_bytes(), 0)?;
                }
                ThreatExclusion::Url(u) => {
                    let (host, path) = split_url(u).map_err(bad)?;
                    set.urls.add(&host, &path, 0)?;
                }
            }
            set.count += 1;
        }
        set.urls.finish();
        Ok(set)
    }

    /// Exclusions compiled.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `ip` is an excluded host or in an excluded network.
    #[inline]
    pub fn excludes_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.matches(u32::from(a)).next().is_some(),
            IpAddr::V6(a) => self.v6.matches(u128::from(a)).next().is_some(),
        }
    }

    /// Whether `name` is an excluded domain or under one.
    #[inline]
    pub fn excludes_domain(&self, name: &[u8]) -> bool {
        self.excludes_name(strip_dot(name))
    }

    #[inline]
    fn excludes_name(&self, name: &[u8]) -> bool {
        self.domains.longest_suffix(name, Some).is_some()
    }

    /// Whether the URL is under an excluded URL or its host is an excluded domain.
    #[inline]
    pub fn excludes_url(&self, host: &[u8], path: &[u8]) -> bool {
        let (host, path) = lookup_host_path(host, path);
        self.urls.matches(host, path).next().is_some() || self.excludes_name(host)
    }
}

/// An indicator that matched; borrowed from the [`IndicatorSet`], `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndicatorHit<'a> {
    /// Which indicator: its position in the order they were added.
    pub index: u32,
    /// Its audit id.
    pub audit_id: &'a str,
    /// Its feed's name.
    pub feed: &'a str,
    /// Its feed's action.
    pub action: FeedAction,
}

/// The outcome of one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndicatorMatch<'a> {
    /// No indicator of an enabled feed matches.
    NoMatch,
    /// An indicator matches and no exclusion does: apply `action`.
    Hit(IndicatorHit<'a>),
    /// An indicator matches but an exclusion wins: let it pass (and log if wanted).
    Excluded(IndicatorHit<'a>),
}

impl<'a> IndicatorMatch<'a> {
    /// The hit to act on (`None` for no match and for excluded).
    #[inline]
    pub fn hit(self) -> Option<IndicatorHit<'a>> {
        match self {
            IndicatorMatch::Hit(h) => Some(h),
            _ => None,
        }
    }

    /// Whether the traffic must be dropped.
    #[inline]
    pub fn drops(self) -> bool {
        matches!(self, IndicatorMatch::Hit(h) if h.action == FeedAction::LogAndDrop)
    }
}

/// Adds indicators one at a time (streamed from a feed), then compiles them.
#[derive(Debug, Default)]
pub struct IndicatorSetBuilder {
    index: IndicatorIndex,
    feed_ids: FxMap<Box<str>, u16>,
    /// The feed added last and its number (indicators come mostly in runs of one feed).
    last_feed: Option<u16>,
}

impl IndicatorSetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder with room for `n` indicators.
    pub fn with_capacity(n: usize) -> Self {
        let mut b = Self::default();
        b.index.records.reserve(n);
        b.index.audit_arena.reserve(n * 16);
        b
    }

    /// Indicators added so far.
    pub fn len(&self) -> usize {
        self.index.records.len()
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.index.records.is_empty()
    }

    /// Adds one indicator; returns its index (reported in hits).
    pub fn add(&mut self, indicator: &ThreatIndicator) -> Result<u32, IndicatorError> {
        self.add_parts(&indicator.kind, &indicator.audit_id.0, &indicator.feed)
    }

    /// Adds one indicator from its parts; returns its index.
    pub fn add_parts(&mut self, kind: &IndicatorKind, audit_id: &str, feed: &str) -> Result<u32, IndicatorError> {
        self.add_record(kind, audit_id, feed, false)
    }

    /// Adds one *fixed* indicator from its parts: one whose audit ID is not
    /// Central's, so that no layer of an overlay (a change from Central,
    /// naming the audit IDs it touches) supersedes it, whatever the audit
    /// ID (a third-party feed's indicator: see `indicator_overlay`).
    pub fn add_fixed_parts(&mut self, kind: &IndicatorKind, audit_id: &str, feed: &str) -> Result<u32, IndicatorError> {
        self.add_record(kind, audit_id, feed, true)
    }

    fn add_record(&mut self, kind: &IndicatorKind, audit_id: &str, feed: &str, fixed: bool) -> Result<u32, IndicatorError> {
        let ix = &mut self.index;
        let rec = u32::try_from(ix.records.len())
            .ok()
            .filter(|&r| r != NONE)
            .ok_or(IndicatorError::TooLarge("the indicator count"))?;
        if audit_id.len() > MAX_AUDIT_LEN {
            return Err(IndicatorError::AuditIdTooLong(audit_id.len()));
        }
        let audit_len = audit_id.len() as u16 | if fixed { FIXED } else { 0 };
        let feed = match self.last_feed.filter(|&f| *ix.feed_names[usize::from(f)] == *feed) {
            Some(f) => f,
            None => {
                let f = match self.feed_ids.get(feed) {
                    Some(&f) => f,
                    None => {
                        let f = u16::try_from(ix.feed_names.len()).map_err(|_| IndicatorError::TooManyFeeds)?;
                        ix.feed_names.push(feed.into());
                        self.feed_ids.insert(feed.into(), f);
                        f
                    }
                };
                self.last_feed = Some(f);
                f
            }
        };
        let audit_off =
            u32::try_from(ix.audit_arena.len()).map_err(|_| IndicatorError::TooLarge("the audit id arena"))?;
        audit_off.checked_add(audit_id.len() as u32).ok_or(IndicatorError::TooLarge("the audit id arena"))?;
        let bad = |(problem, fix)| invalid(&kind.to_string(), problem, fix);
        let previous = match kind {
            IndicatorKind::Ipv4(a) => ix.v4.insert(u32::from(*a), 32, rec),
            IndicatorKind::Ipv4Net(n) => ix.v4.insert(u32::from(n.addr()), n.prefix_len(), rec),
            IndicatorKind::Ipv6(a) => ix.v6.insert(u128::from(*a), 128, rec),
            IndicatorKind::Ipv6Net(n) => ix.v6.insert(u128::from(n.addr()), n.prefix_len(), rec),
            IndicatorKind::Domain(d) => ix.domains.insert_domain(normalize_name(d).map_err(bad)?.as_bytes(), rec)?,
            IndicatorKind::Url(u) => {
                let (host, path) = split_url(u).map_err(bad)?;
                ix.urls.add(&host, &path, rec)?;
                None
            }
        };
        ix.audit_arena.push_str(audit_id);
        ix.records.push(Record { audit_off, audit_len, feed, next: previous.unwrap_or(NONE), audit_hash: audit_id_hash(audit_id) });
        Ok(rec)
    }

    /// Compiles the indicators with no exclusions.
    pub fn build(self, settings: &ThreatFeedSettings) -> IndicatorSet {
        let mut index = self.index;
        index.urls.finish();
        index.records.shrink_to_fit();
        index.audit_arena.shrink_to_fit();
        index.v4.shrink();
        index.fill_v4_slash24();
        index.v6.shrink();
        index.domains.shrink();
        IndicatorSet::assemble(Arc::new(index), Arc::new(ExclusionSet::default()), settings)
    }
}

/// Sizes of a compiled set, for logs and stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IndicatorCounts {
    /// IPv4 addresses and networks.
    pub ipv4: usize,
    /// IPv6 addresses and prefixes.
    pub ipv6: usize,
    /// Distinct domains.
    pub domains: usize,
    /// URLs.
    pub urls: usize,
    /// Indicators added, duplicates included.
    pub total: usize,
    /// Exclusions.
    pub exclusions: usize,
}

/// Indicators, exclusions and feed settings, compiled and immutable; swap a
/// new one in whole to change any of them.
#[derive(Debug, Clone)]
pub struct IndicatorSet {
    index: Arc<IndicatorIndex>,
    exclusions: Arc<ExclusionSet>,
    /// Settings by feed number.
    feeds: Box<[FeedSettings]>,
    settings: ThreatFeedSettings,
}

impl Default for IndicatorSet {
    fn default() -> Self {
        Self::empty()
    }
}

impl IndicatorSet {
    /// No indicators, no exclusions: every lookup answers no match.
    pub fn empty() -> Self {
        Self::assemble(Arc::default(), Arc::default(), &ThreatFeedSettings::default())
    }

    /// Compiles indicators and exclusions.
    pub fn build<'a>(
        indicators: impl IntoIterator<Item = &'a ThreatIndicator>,
        exclusions: impl IntoIterator<Item = &'a ThreatExclusion>,
        settings: &ThreatFeedSettings,
    ) -> Result<Self, IndicatorError> {
        let mut b = IndicatorSetBuilder::new();
        for i in indicators {
            b.add(i)?;
        }
        b.build(settings).with_exclusions(exclusions)
    }

    fn assemble(index: Arc<IndicatorIndex>, exclusions: Arc<ExclusionSet>, settings: &ThreatFeedSettings) -> Self {
        let feeds = index.feed_names.iter().map(|n| settings.for_feed(n)).collect();
        IndicatorSet { index, exclusions, feeds, settings: settings.clone() }
    }

    /// The same indicators with these exclusions (the indicators are shared, not rebuilt).
    pub fn with_exclusions<'a>(
        &self,
        exclusions: impl IntoIterator<Item = &'a ThreatExclusion>,
    ) -> Result<Self, IndicatorError> {
        let exclusions = Arc::new(ExclusionSet::compile(exclusions)?);
        Ok(IndicatorSet { exclusions, ..self.clone() })
    }

    /// The same indicators and feed settings with already compiled exclusions.
    pub fn with_exclusion_set(&self, exclusions: Arc<ExclusionSet>) -> Self {
        IndicatorSet { exclusions, ..self.clone() }
    }

    /// The same indicators and exclusions with other feed settings.
    pub fn with_settings(&self, settings: &ThreatFeedSettings) -> Self {
        Self::assemble(Arc::clone(&self.index), Arc::clone(&self.exclusions), settings)
    }

    /// The feed settings in force.
    pub fn settings(&self) -> &ThreatFeedSettings {
        &self.settings
    }

    /// The compiled exclusions.
    pub fn exclusions(&self) -> &ExclusionSet {
        &self.exclusions
    }

    /// Names of the feeds the indicators came from.
    pub fn feed_names(&self) -> impl Iterator<Item = &str> {
        self.index.feed_names.iter().map(|n| &**n)
    }

    /// How much of what the set holds.
    pub fn counts(&self) -> IndicatorCounts {
        IndicatorCounts {
            ipv4: self.index.v4.len(),
            ipv6: self.index.v6.len(),
            domains: self.index.domains.len(),
            urls: self.index.urls.len(),
            total: self.index.records.len(),
            exclusions: self.exclusions.len(),
        }
    }

    /// Indicators added, duplicates included.
    pub fn len(&self) -> usize {
        self.index.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.records.is_empty()
    }

    /// The first record of the chain at `head` whose feed is on.
    #[inline]
    fn enabled(&self, mut rec: u32) -> Option<u32> {
        while rec != NONE {
            let r = &self.index.records[rec as usize];
            if self.feeds[r.feed as usize].enabled {
                return Some(rec);
            }
            rec = r.next;
        }
        None
    }

    #[inline]
    fn hit(&self, rec: u32) -> IndicatorHit<'_> {
        let r = &self.index.records[rec as usize];
        IndicatorHit {
            index: rec,
            audit_id: &self.index.audit_arena[r.audit_range()],
            feed: &self.index.feed_names[r.feed as usize],
            action: self.feeds[r.feed as usize].action,
        }
    }

    #[inline]
    fn outcome(&self, rec: Option<u32>, excluded: impl FnOnce() -> bool) -> IndicatorMatch<'_> {
        match rec {
            None => IndicatorMatch::NoMatch,
            Some(rec) if excluded() => IndicatorMatch::Excluded(self.hit(rec)),
            Some(rec) => IndicatorMatch::Hit(self.hit(rec)),
        }
    }

    /// Traffic to or from `ip`: the longest matching address/network indicator.
    #[inline]
    pub fn match_ip(&self, ip: IpAddr) -> IndicatorMatch<'_> {
        let rec = match ip {
            IpAddr::V4(a) if !self.index.v4_may_hold(u32::from(a)) => return IndicatorMatch::NoMatch,
            IpAddr::V4(a) => self.index.v4.matches(u32::from(a)).find_map(|h| self.enabled(h)),
            IpAddr::V6(a) => self.index.v6.matches(u128::from(a)).find_map(|h| self.enabled(h)),
        };
        self.outcome(rec, || self.exclusions.excludes_ip(ip))
    }

    /// A DNS name (any case, trailing dot or not): the longest matching domain
    /// indicator among the name and its parents.
    #[inline]
    pub fn match_domain(&self, name: &[u8]) -> IndicatorMatch<'_> {
        let name = strip_dot(name);
        let rec = self.index.domains.longest_suffix(name, |h| self.enabled(h));
        self.outcome(rec, || self.exclusions.excludes_name(name))
    }

    /// An HTTP request: `host` as in the Host header or SNI (a port and a
    /// trailing dot are ignored), `path` as in the request line (empty means
    /// `/`). Matches URL indicators only; check [`IndicatorSet::match_domain`]
    /// on the host as well for domain indicators.
    #[inline]
    pub fn match_url(&self, host: &[u8], path: &[u8]) -> IndicatorMatch<'_> {
        let (h, p) = lookup_host_path(host, path);
        let rec = self.index.urls.matches(h, p).find_map(|v| self.enabled(v));
        self.outcome(rec, || self.exclusions.excludes_url(host, path))
    }
}

// ---- Support for `indicator_overlay` (a base set plus recent changes) ----
//
// Additive on purpose: the lookups above stay as they are; these variants
// also report how specific a match is and skip records the overlay has
// removed, and `merged` folds an overlay back into one set.

impl<K: PrefixKey> Lpm<K> {
    /// Like [`Lpm::matches`], with each match's prefix length.
    #[inline]
    fn matches_len(&self, key: K) -> impl Iterator<Item = (u32, u8)> + '_ {
        self.lens.iter().zip(&self.maps).filter_map(move |(&len, map)| map.get(&key.masked(len)).map(|&v| (v, len)))
    }

    /// Every (key, prefix length, value).
    fn entries(&self) -> impl Iterator<Item = (K, u8, u32)> + '_ {
        self.lens.iter().zip(&self.maps).flat_map(|(&len, map)| map.iter().map(move |(&k, &v)| (k, len, v)))
    }
}

impl NameTable {
    /// Every (name, value).
    fn entries(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.table.iter().map(|e| (Self::name(&self.arena, e), e.value))
    }
}

impl UrlTable {
    /// Like [`UrlTable::matches`], with the length of each matching path.
    #[inline]
    fn matches_len<'a>(&'a self, host: &[u8], path: &'a [u8]) -> impl Iterator<Item = (u32, usize)> + 'a {
        let (start, end) = match self.hosts.get(host) {
            Some(g) => self.groups[g as usize],
            None => (0, 0),
        };
        self.paths[start as usize..end as usize].iter().filter_map(move |p| {
            let prefix = &self.arena[p.off as usize..(p.off + p.len) as usize];
            path.starts_with(prefix).then_some((p.value, prefix.len()))
        })
    }

    /// Every (host, path, value).
    fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8], u32)> + '_ {
        self.hosts.entries().flat_map(move |(host, g)| {
            let (start, end) = self.groups[g as usize];
            self.paths[start as usize..end as usize]
                .iter()
                .map(move |p| (host, &self.arena[p.off as usize..(p.off + p.len) as usize], p.value))
        })
    }
}

/// A record's key, as stored (already normalised).
enum StoredKey<'a> {
    V4(u32, u8),
    V6(u128, u8),
    Name(&'a [u8]),
    Url(&'a [u8], &'a [u8]),
}

impl IndicatorSet {
    /// The first record of the chain at `rec` whose feed is on and that `keep` keeps.
    #[inline]
    fn enabled_kept(&self, mut rec: u32, keep: &impl Fn(u32) -> bool) -> Option<u32> {
        while rec != NONE {
            let r = &self.index.records[rec as usize];
            if self.feeds[r.feed as usize].enabled && keep(rec) {
                return Some(rec);
            }
            rec = r.next;
        }
        None
    }

    /// The indicator [`IndicatorSet::match_ip`] would pick among the records
    /// `keep` keeps, and its prefix length; exclusions are not consulted.
    #[inline]
    pub fn best_ip_where(&self, ip: IpAddr, keep: impl Fn(u32) -> bool) -> Option<(u32, usize)> {
        match ip {
            // The /24 bitmap first, as `match_ip`: most addresses are in no listed /24.
            IpAddr::V4(a) if !self.index.v4_may_hold(u32::from(a)) => None,
            IpAddr::V4(a) => self.index.v4.matches_len(u32::from(a)).find_map(|(h, l)| Some((self.enabled_kept(h, &keep)?, l.into()))),
            IpAddr::V6(a) => self.index.v6.matches_len(u128::from(a)).find_map(|(h, l)| Some((self.enabled_kept(h, &keep)?, l.into()))),
        }
    }

    /// The indicator [`IndicatorSet::match_domain`] would pick among the
    /// records `keep` keeps, and the length of the domain it names (`name`
    /// without its trailing dot); exclusions are not consulted.
    #[inline]
    pub fn best_domain_where(&self, name: &[u8], keep: impl Fn(u32) -> bool) -> Option<(u32, usize)> {
        let name = strip_dot(name);
        // The top-down walk, as `match_domain` (not every suffix: with a
        // million names most probes would be cache misses for nothing).
        self.index.domains.longest_suffix_len(name, |h| self.enabled_kept(h, &keep))
    }

    /// The indicator [`IndicatorSet::match_url`] would pick among the records
    /// `keep` keeps, and the length of its path; exclusions are not consulted.
    #[inline]
    pub fn best_url_where(&self, host: &[u8], path: &[u8], keep: impl Fn(u32) -> bool) -> Option<(u32, usize)> {
        let (h, p) = lookup_host_path(host, path);
        self.index.urls.matches_len(h, p).find_map(|(v, l)| Some((self.enabled_kept(v, &keep)?, l)))
    }

    /// The hit record `rec` makes, with `index` as its reported index.
    #[inline]
    pub fn hit_at(&self, rec: u32, index: u32) -> IndicatorHit<'_> {
        IndicatorHit { index, ..self.hit(rec) }
    }

    /// The compiled exclusions, shared.
    pub fn exclusion_set(&self) -> Arc<ExclusionSet> {
        Arc::clone(&self.exclusions)
    }

    /// The [`audit_id_hash`] and audit ID of record `rec`, unless it is
    /// fixed (see [`IndicatorSetBuilder::add_fixed_parts`]): what a layer
    /// of an overlay that touched that audit ID supersedes. The ID's bytes
    /// are not read here (only its place in the arena).
    #[inline]
    pub fn supersedable_audit_id(&self, rec: u32) -> Option<(u32, &str)> {
        let r = self.index.records.get(rec as usize)?;
        (!r.fixed()).then(|| (r.audit_hash, &self.index.audit_arena[r.audit_range()]))
    }

    /// Every record's key, by record number.
    fn stored_keys(&self) -> Vec<Option<StoredKey<'_>>> {
        let ix = &*self.index;
        let mut keys: Vec<Option<StoredKey<'_>>> = Vec::with_capacity(ix.records.len());
        keys.resize_with(ix.records.len(), || None);
        let mut put = |head: u32, key: &dyn Fn() -> StoredKey<'static>| {
            let mut rec = head;
            while rec != NONE {
                keys[rec as usize] = Some(key());
                rec = ix.records[rec as usize].next;
            }
        };
        for (k, l, v) in ix.v4.entries() {
            put(v, &|| StoredKey::V4(k, l));
        }
        for (k, l, v) in ix.v6.entries() {
            put(v, &|| StoredKey::V6(k, l));
        }
        drop(put);
        for (name, head) in ix.domains.entries() {
            let mut rec = head;
            while rec != NONE {
                keys[rec as usize] = Some(StoredKey::Name(name));
                rec = ix.records[rec as usize].next;
            }
        }
        for (host, path, v) in ix.urls.entries() {
            keys[v as usize] = Some(StoredKey::Url(host, path));
        }
        keys
    }

    /// Adds this set's records that `keep` keeps to `b`, in their order,
    /// fixed ones as fixed (what merging sets, or compacting an overlay, is
    /// made of).
    pub fn add_records_to(&self, b: &mut IndicatorSetBuilder, keep: impl Fn(u32) -> bool) -> Result<(), IndicatorError> {
        let ix = &*self.index;
        for (rec, key) in self.stored_keys().into_iter().enumerate() {
            let (Some(key), true) = (key, keep(rec as u32)) else { continue };
            let r = &ix.records[rec];
            let audit = &ix.audit_arena[r.audit_range()];
            let feed = &*ix.feed_names[r.feed as usize];
            let kind = match key {
                StoredKey::V4(k, l) => IndicatorKind::Ipv4Net(Ipv4Net::new(Ipv4Addr::from(k), l).map_err(|_| IndicatorError::TooLarge("an IPv4 prefix"))?),
                StoredKey::V6(k, l) => IndicatorKind::Ipv6Net(Ipv6Net::new(Ipv6Addr::from(k), l).map_err(|_| IndicatorError::TooLarge("an IPv6 prefix"))?),
                StoredKey::Name(n) => IndicatorKind::Domain(String::from_utf8_lossy(n).into_owned()),
                StoredKey::Url(h, p) => {
                    // Host and path are stored split and normalised; join them
                    // the way `split_url` splits (an IPv6 host in brackets).
                    let host = String::from_utf8_lossy(h);
                    let host = if host.contains(':') { format!("[{host}]") } else { host.into_owned() };
                    IndicatorKind::Url(format!("http://{host}{}", String::from_utf8_lossy(p)))
                }
            };
            b.add_record(&kind, audit, feed, r.fixed())?;
        }
        Ok(())
    }

    /// One set holding `base`'s records that `keep` keeps, then all of
    /// `delta`'s, in that order (what compacting an overlay makes), with
    /// `base`'s exclusions and feed settings.
    pub fn merged(base: &IndicatorSet, keep: impl Fn(u32) -> bool, delta: &IndicatorSet) -> Result<IndicatorSet, IndicatorError> {
        let mut b = IndicatorSetBuilder::with_capacity(base.len() + delta.len());
        base.add_records_to(&mut b, keep)?;
        delta.add_records_to(&mut b, |_| true)?;
        Ok(b.build(&base.settings).with_exclusion_set(base.exclusion_set()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The dotted-quad fast path accepts nothing the standard parser
        /// refuses, with the same value; and every address in that form.
        #[test]
        fn canonical_ipv4_agrees_with_the_standard_parser(
            junk in "[0-9.]{0,16}|[0-9a-f.:/ +-]{0,18}",
            a in any::<u32>(),
            zeros in prop::collection::vec(0usize..2, 4),
        ) {
            if let Some(fast) = canonical_ipv4(junk.as_bytes()) {
                prop_assert_eq!(junk.parse::<Ipv4Addr>().ok(), Some(fast), "{:?}", junk);
            }
            let ip = Ipv4Addr::from(a);
            prop_assert_eq!(canonical_ipv4(ip.to_string().as_bytes()), Some(ip));
            // Leading zeros: left to the standard parser.
            let padded: Vec<String> = ip.octets().iter().zip(&zeros).map(|(o, &z)| format!("{}{o}", "0".repeat(z))).collect();
            let padded = padded.join(".");
            if let Some(fast) = canonical_ipv4(padded.as_bytes()) {
                prop_assert_eq!(padded.parse::<Ipv4Addr>().ok(), Some(fast), "{:?}", padded);
            }
        }
    }

    fn ind(value: &str, audit: &str, feed: &str) -> ThreatIndicator {
        ThreatIndicator { kind: value.parse().unwrap(), audit_id: audit.into(), feed: feed.to_owned() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(inds: &[ThreatIndicator], excl: &[&str]) -> IndicatorSet {
        let excl: Vec<ThreatExclusion> = excl.iter().map(|e| e.parse().unwrap()).collect();
        IndicatorSet::build(inds, &excl, &ThreatFeedSettings::default()).unwrap()
    }

    #[test]
    fn kinds_are_guessed() {
        assert_eq!("1.2.3.4".parse::<IndicatorKind>().unwrap(), IndicatorKind::Ipv4("1.2.3.4".parse().unwrap()));
        assert!(matches!("10.0.0.0/8".parse::<IndicatorKind>().unwrap(), IndicatorKind::Ipv4Net(_)));
        assert!(matches!("2001:db8::1".parse::<IndicatorKind>().unwrap(), IndicatorKind::Ipv6(_)));
        assert!(matches!("2001:db8::/32".parse::<IndicatorKind>().unwrap(), IndicatorKind::Ipv6Net(_)));
        assert!(matches!("Evil.COM.".parse::<IndicatorKind>().unwrap(), IndicatorKind::Domain(_)));
        assert!(matches!("http://evil.com/x".parse::<IndicatorKind>().unwrap(), IndicatorKind::Url(_)));
        assert!(matches!("evil.com/x".parse::<IndicatorKind>().unwrap(), IndicatorKind::Url(_)));
        for bad in ["", "a..b", "bad name.com", "http:///path", "10.0.0.0/33"] {
            let err = bad.parse::<IndicatorKind>().unwrap_err().to_string();
            assert!(err.starts_with("threat indicator `") && err.matches(": ").count() >= 2, "{err}");
            assert!(!err.contains('\n'));
        }
        let err = "a b".parse::<ThreatExclusion>().unwrap_err().to_string();
        assert!(err.starts_with("threat exclusion `a b`: "), "{err}");
    }

    #[test]
    fn url_split() {
        assert_eq!(split_url("HTTPS://user@Evil.com.:8443/a/b?q=1#frag").unwrap(), ("evil.com".into(), "/a/b?q=1".into()));
        assert_eq!(split_url("evil.com").unwrap(), ("evil.com".into(), "/".into()));
        assert_eq!(split_url("http://evil.com?x").unwrap(), ("evil.com".into(), "/?x".into()));
        assert_eq!(split_url("http://[2001:DB8::1]:80/p").unwrap(), ("2001:db8::1".into(), "/p".into()));
        assert_eq!(strip_port(b"a.com:80"), b"a.com");
        assert_eq!(strip_port(b"2001:db8::1"), b"2001:db8::1");
    }

    #[test]
    fn ip_longest_prefix_and_exclusions() {
        let s = set(
            &[
                ind("10.0.0.0/8", "A", "mdr"),
                ind("10.1.0.0/16", "B", "mdr"),
                ind("10.1.2.3", "C", "mdr"),
                ind("2001:db8::/32", "D", "mdr"),
                ind("2001:db8::1", "E", "mdr"),
            ],
            &["10.1.2.3", "10.200.0.0/16", "2001:db8:ffff::/48"],
        );
        let audit = |m: IndicatorMatch<'_>| match m {
            IndicatorMatch::Hit(h) => format!("hit {}", h.audit_id),
            IndicatorMatch::Excluded(h) => format!("excluded {}", h.audit_id),
            IndicatorMatch::NoMatch => "none".into(),
        };
        assert_eq!(audit(s.match_ip(ip("10.9.9.9"))), "hit A");
        assert_eq!(audit(s.match_ip(ip("10.1.9.9"))), "hit B");
        assert_eq!(audit(s.match_ip(ip("10.1.2.3"))), "excluded C");
        assert_eq!(audit(s.match_ip(ip("10.200.1.1"))), "excluded A");
        assert_eq!(audit(s.match_ip(ip("11.0.0.1"))), "none");
        assert_eq!(audit(s.match_ip(ip("2001:db8::1"))), "hit E");
        assert_eq!(audit(s.match_ip(ip("2001:db8::2"))), "hit D");
        assert_eq!(audit(s.match_ip(ip("2001:db8:ffff::2"))), "excluded D");
        assert_eq!(audit(s.match_ip(ip("2001:db9::1"))), "none");
        let hit = s.match_ip(ip("10.1.9.9")).hit().unwrap();
        assert_eq!((hit.index, hit.feed, hit.action), (1, "mdr", FeedAction::LogAndDrop));
        assert!(s.match_ip(ip("10.1.9.9")).drops());
        assert!(!s.match_ip(ip("10.1.2.3")).drops());
        assert_eq!(s.counts().ipv4, 3);
        assert_eq!(s.counts().exclusions, 3);
    }

    #[test]
    fn domains_match_subdomains_case_insensitively() {
        let s = set(&[ind("Evil.example.COM", "A", "f"), ind("bad.org.", "B", "f")], &["good.bad.org"]);
        for q in ["evil.example.com", "EVIL.Example.com.", "x.y.evil.example.com", "WWW.EVIL.EXAMPLE.COM"] {
            assert_eq!(s.match_domain(q.as_bytes()).hit().map(|h| h.audit_id), Some("A"), "{q}");
        }
        for q in ["example.com", "notevil.example.com", "evil.example.co", "com", "", ".", "evil.example.com.x"] {
            assert_eq!(s.match_domain(q.as_bytes()), IndicatorMatch::NoMatch, "{q}");
        }
        assert!(s.match_domain(b"bad.org").hit().is_some());
        assert!(matches!(s.match_domain(b"GOOD.bad.org"), IndicatorMatch::Excluded(h) if h.audit_id == "B"));
        assert!(matches!(s.match_domain(b"x.good.bad.org."), IndicatorMatch::Excluded(_)));
        // A name longer than eight bytes per chunk, mixed case.
        let s = set(&[ind("a-very-long-label-for-hashing.example.net", "L", "f")], &[]);
        assert!(s.match_domain(b"Sub.A-Very-Long-Label-For-Hashing.Example.NET").hit().is_some());
    }

    #[test]
    fn parent_domains_are_walk_markers_not_indicators() {
        let s = set(&[ind("a.b.example.com", "A", "f")], &[]);
        // The parents exist in the table only to steer the walk.
        for q in ["com", "example.com", "b.example.com", "x.b.example.com", "a.b.example.com.evil"] {
            assert_eq!(s.match_domain(q.as_bytes()), IndicatorMatch::NoMatch, "{q}");
        }
        assert_eq!(s.counts().domains, 1);
        // Odd query shapes: empty labels, leading dots.
        for q in ["x..a.b.example.com", ".a.b.example.com", "..", "a.b.example..com"] {
            let want = q.ends_with(".a.b.example.com");
            assert_eq!(s.match_domain(q.as_bytes()).hit().is_some(), want, "{q}");
        }
        // An indicator that is also a parent of another keeps both roles.
        let s = set(&[ind("a.b.example.com", "A", "f"), ind("example.com", "E", "f"), ind("b.example.com", "B", "f")], &[]);
        assert_eq!(s.counts().domains, 3);
        assert_eq!(s.match_domain(b"z.a.b.example.com").hit().map(|h| h.audit_id), Some("A"));
        assert_eq!(s.match_domain(b"z.b.example.com").hit().map(|h| h.audit_id), Some("B"));
        assert_eq!(s.match_domain(b"z.example.com").hit().map(|h| h.audit_id), Some("E"));
    }

    #[test]
    fn deeply_nested_indicators_fall_back_to_every_suffix() {
        // Twelve nested indicators a, a.a, ...: more hits on one walk than it keeps.
        let inds: Vec<_> = (1..=12).map(|n| ind(&vec!["a"; n].join("."), &format!("A{n}"), "f")).collect();
        let s = set(&inds, &[]);
        for n in 1..=14usize {
            let q = vec!["a"; n].join(".");
            let want = format!("A{}", n.min(12));
            assert_eq!(s.match_domain(q.as_bytes()).hit().map(|h| h.audit_id), Some(want.as_str()), "{q}");
        }
        // With the longest ones' feed off, the next longest answers.
        let mut settings = ThreatFeedSettings::default();
        settings.feeds.insert("off".into(), FeedSettings { enabled: false, action: FeedAction::LogAndDrop });
        let mut inds = inds;
        inds.extend((13..=14).map(|n| ind(&vec!["a"; n].join("."), &format!("A{n}"), "off")));
        let s = IndicatorSet::build(&inds, &[], &settings).unwrap();
        assert_eq!(s.match_domain(vec!["a"; 14].join(".").as_bytes()).hit().map(|h| h.audit_id), Some("A12"));
    }

    #[test]
    fn urls_match_host_and_path_prefix() {
        let s = set(
            &[
                ind("http://evil.com/malware/", "A", "f"),
                ind("https://evil.com/malware/payload.exe", "B", "f"),
                ind("evil.com/", "C", "f"),
                ind("http://other.com/x?id=1", "D", "f"),
            ],
            &["http://evil.com/malware/ok/", "excluded.org"],
        );
        let audit = |h: &[u8], p: &[u8]| s.match_url(h, p).hit().map(|h| h.audit_id);
        assert_eq!(audit(b"evil.com", b"/malware/x"), Some("A"));
        assert_eq!(audit(b"EVIL.com:8080", b"/malware/payload.exe?z"), Some("B"));
        assert_eq!(audit(b"evil.com.", b"/index.html"), Some("C"));
        assert_eq!(audit(b"evil.com", b""), Some("C"));
        assert_eq!(audit(b"other.com", b"/x?id=1&more"), Some("D"));
        assert_eq!(audit(b"other.com", b"/x"), None);
        assert_eq!(audit(b"sub.evil.com", b"/malware/"), None, "URL hosts are exact");
        assert!(matches!(s.match_url(b"evil.com", b"/malware/ok/1"), IndicatorMatch::Excluded(h) if h.audit_id == "A"));
        let s2 = set(&[ind("http://excluded.org/p", "E", "f")], &["excluded.org"]);
        assert!(matches!(s2.match_url(b"excluded.org", b"/p"), IndicatorMatch::Excluded(_)));
    }

    #[test]
    fn feed_settings_switch_and_choose_action_without_rebuild() {
        let inds = [ind("10.0.0.0/8", "wide", "f1"), ind("10.1.1.1", "narrow", "f2"), ind("10.1.1.1", "dup", "f3")];
        let s = set(&inds, &[]);
        assert_eq!(s.match_ip(ip("10.1.1.1")).hit().unwrap().audit_id, "dup", "latest duplicate wins");
        let mut settings = ThreatFeedSettings::default();
        settings.feeds.insert("f3".into(), FeedSettings { enabled: false, action: FeedAction::LogAndDrop });
        settings.feeds.insert("f2".into(), FeedSettings { enabled: true, action: FeedAction::LogOnly });
        let s2 = s.with_settings(&settings);
        assert!(Arc::ptr_eq(&s.index, &s2.index));
        let hit = s2.match_ip(ip("10.1.1.1")).hit().unwrap();
        assert_eq!((hit.audit_id, hit.action), ("narrow", FeedAction::LogOnly));
        assert!(!s2.match_ip(ip("10.1.1.1")).drops());
        settings.feeds.insert("f2".into(), FeedSettings { enabled: false, action: FeedAction::LogOnly });
        let s3 = s.with_settings(&settings);
        assert_eq!(s3.match_ip(ip("10.1.1.1")).hit().unwrap().audit_id, "wide", "falls back to a shorter prefix");
        settings.enabled = false;
        assert_eq!(s.with_settings(&settings).match_ip(ip("10.1.1.1")), IndicatorMatch::NoMatch);
        let names: Vec<_> = s.feed_names().collect();
        assert_eq!(names, ["f1", "f2", "f3"]);
    }

    #[test]
    fn empty_set_matches_nothing() {
        let s = IndicatorSet::empty();
        assert_eq!(s.match_ip(ip("1.2.3.4")), IndicatorMatch::NoMatch);
        assert_eq!(s.match_domain(b"a.b"), IndicatorMatch::NoMatch);
        assert_eq!(s.match_url(b"a.b", b"/"), IndicatorMatch::NoMatch);
        assert!(s.is_empty());
    }

    #[test]
    fn settings_toml() {
        let s: ThreatFeedSettings =
            toml::from_str("enabled = true\naction = \"log_only\"\n[feeds.noisy]\nenabled = false\n").unwrap();
        assert_eq!(s.action, FeedAction::LogOnly);
        assert!(!s.for_feed("noisy").enabled);
        assert_eq!(s.for_feed("other").action, FeedAction::LogOnly);
    }

    // ---- differential tests against a linear scan ----

    /// The obviously-right reference: scan everything, keep the most specific
    /// (ties: the later one), then scan the exclusions.
    struct Oracle<'a> {
        inds: &'a [ThreatIndicator],
        excl: &'a [ThreatExclusion],
        settings: &'a ThreatFeedSettings,
    }

    fn under(name: &str, domain: &str) -> bool {
        name == domain || name.ends_with(&format!(".{domain}"))
    }

    impl Oracle<'_> {
        fn best(&self, spec: impl Fn(&IndicatorKind) -> Option<usize>) -> Option<u32> {
            let mut best: Option<(usize, u32)> = None;
            for (i, ind) in self.inds.iter().enumerate() {
                if !self.settings.for_feed(&ind.feed).enabled {
                    continue;
                }
                if let Some(s) = spec(&ind.kind) {
                    if best.map_or(true, |(b, _)| s >= b) {
                        best = Some((s, i as u32));
                    }
                }
            }
            best.map(|b| b.1)
        }

        fn ip(&self, ip: IpAddr) -> (Option<u32>, bool) {
            let rec = self.best(|k| match (k, ip) {
                (IndicatorKind::Ipv4(a), IpAddr::V4(q)) if *a == q => Some(32),
                (IndicatorKind::Ipv6(a), IpAddr::V6(q)) if *a == q => Some(128),
                (IndicatorKind::Ipv4Net(n), IpAddr::V4(q)) if n.contains(&q) => Some(n.prefix_len().into()),
                (IndicatorKind::Ipv6Net(n), IpAddr::V6(q)) if n.contains(&q) => Some(n.prefix_len().into()),
                _ => None,
            });
            let excluded = self.excl.iter().any(|e| match e {
                ThreatExclusion::Host(h) => *h == ip,
                ThreatExclusion::Network(n) => n.contains(&ip),
                _ => false,
            });
            (rec, excluded)
        }

        fn domain_excluded(&self, name: &str) -> bool {
            self.excl.iter().any(|e| matches!(e, ThreatExclusion::Domain(d) if under(name, &normalize_name(d).unwrap())))
        }

        fn domain(&self, query: &str) -> (Option<u32>, bool) {
            let q = query.strip_suffix('.').unwrap_or(query).to_ascii_lowercase();
            let rec = self.best(|k| match k {
                IndicatorKind::Domain(d) => {
                    let d = normalize_name(d).unwrap();
                    under(&q, &d).then_some(d.len())
                }
                _ => None,
            });
            (rec, self.domain_excluded(&q))
        }

        fn url(&self, host: &str, path: &str) -> (Option<u32>, bool) {
            let h = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            let rec = self.best(|k| match k {
                IndicatorKind::Url(u) => {
                    let (uh, up) = split_url(u).unwrap();
                    (uh == h && path.starts_with(&up)).then_some(up.len())
                }
                _ => None,
            });
            let excluded = self.domain_excluded(&h)
                || self.excl.iter().any(|e| match e {
                    ThreatExclusion::Url(u) => {
                        let (uh, up) = split_url(u).unwrap();
                        uh == h && path.starts_with(&up)
                    }
                    _ => false,
                });
            (rec, excluded)
        }
    }

    fn summary(m: IndicatorMatch<'_>) -> (Option<u32>, bool) {
        match m {
            IndicatorMatch::NoMatch => (None, false),
            IndicatorMatch::Hit(h) => (Some(h.index), false),
            IndicatorMatch::Excluded(h) => (Some(h.index), true),
        }
    }

    fn oracle_summary((rec, excluded): (Option<u32>, bool)) -> (Option<u32>, bool) {
        (rec, rec.is_some() && excluded)
    }

    // Small value spaces so that indicators, exclusions and queries collide.
    fn v4() -> impl Strategy<Value = Ipv4Addr> {
        (0u8..2, 0u8..4, 0u8..8).prop_map(|(a, b, c)| Ipv4Addr::new(10, a, b * 64, c))
    }
    fn v6() -> impl Strategy<Value = Ipv6Addr> {
        (0u16..2, 0u16..4, 0u16..8).prop_map(|(a, b, c)| Ipv6Addr::new(0x2001, 0xdb8, a, 0, 0, b << 12, 0, c))
    }
    fn name() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "Ab", "c0", "x-y"]), 1..4).prop_map(|l| l.join("."))
    }
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["p", "q", "pq", "p?x=1"]), 0..3)
            .prop_map(|s| format!("/{}", s.join("/")))
    }
    fn kind() -> impl Strategy<Value = IndicatorKind> {
        prop_oneof![
            v4().prop_map(IndicatorKind::Ipv4),
            (v4(), 0u8..=32).prop_map(|(a, l)| IndicatorKind::Ipv4Net(Ipv4Net::new(a, l).unwrap())),
            v6().prop_map(IndicatorKind::Ipv6),
            (v6(), 0u8..=128).prop_map(|(a, l)| IndicatorKind::Ipv6Net(Ipv6Net::new(a, l).unwrap())),
            name().prop_map(IndicatorKind::Domain),
            (name(), path()).prop_map(|(h, p)| IndicatorKind::Url(format!("http://{h}{p}"))),
        ]
    }
    fn exclusion() -> impl Strategy<Value = ThreatExclusion> {
        prop_oneof![
            v4().prop_map(|a| ThreatExclusion::Host(a.into())),
            v6().prop_map(|a| ThreatExclusion::Host(a.into())),
            (v4(), 8u8..=32).prop_map(|(a, l)| ThreatExclusion::Network(Ipv4Net::new(a, l).unwrap().into())),
            (v6(), 32u8..=128).prop_map(|(a, l)| ThreatExclusion::Network(Ipv6Net::new(a, l).unwrap().into())),
            name().prop_map(ThreatExclusion::Domain),
            (name(), path()).prop_map(|(h, p)| ThreatExclusion::Url(format!("{h}{p}"))),
        ]
    }
    fn indicators() -> impl Strategy<Value = Vec<ThreatIndicator>> {
        prop::collection::vec(
            (kind(), 0u8..3).prop_map(|(kind, f)| ThreatIndicator {
                kind,
                audit_id: AuditId(format!("audit-{f}")),
                feed: format!("f{f}"),
            }),
            0..40,
        )
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
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn lookups_agree_with_linear_scan(
            inds in indicators(),
            excl in prop::collection::vec(exclusion(), 0..6),
            settings in settings(),
            q4 in prop::collection::vec(v4(), 8),
            q6 in prop::collection::vec(v6(), 8),
            qn in prop::collection::vec((name(), any::<bool>(), any::<bool>()), 8),
            qu in prop::collection::vec((name(), path()), 8),
        ) {
            let set = IndicatorSet::build(&inds, &excl, &settings).unwrap();
            let oracle = Oracle { inds: &inds, excl: &excl, settings: &settings };
            for q in q4.iter().map(|&a| IpAddr::from(a)).chain(q6.iter().map(|&a| IpAddr::from(a))) {
                prop_assert_eq!(summary(set.match_ip(q)), oracle_summary(oracle.ip(q)), "ip {}", q);
            }
            for (n, upper, dot) in &qn {
                let mut q = if *upper { n.to_ascii_uppercase() } else { n.clone() };
                if *dot { q.push('.'); }
                prop_assert_eq!(summary(set.match_domain(q.as_bytes())), oracle_summary(oracle.domain(&q)), "domain {}", q);
            }
            for (h, p) in &qu {
                prop_assert_eq!(summary(set.match_url(h.as_bytes(), p.as_bytes())), oracle_summary(oracle.url(h, p)), "url {} {}", h, p);
            }
            // The hit carries its indicator's audit id, feed and the feed's action.
            for q in q4.iter().map(|&a| IpAddr::from(a)) {
                if let Some(h) = set.match_ip(q).hit() {
                    let i = &inds[h.index as usize];
                    prop_assert_eq!(h.audit_id, i.audit_id.0.as_str());
                    prop_assert_eq!(h.feed, i.feed.as_str());
                    prop_assert_eq!(h.action, settings.for_feed(&i.feed).action);
                }
            }
        }

        #[test]
        fn cidr_lookup_agrees_with_linear_scan_on_wide_space(
            nets in prop::collection::vec((any::<u32>(), 0u8..=32), 0..60),
            queries in prop::collection::vec(any::<u32>(), 32),
        ) {
            // Queries derived from the networks too, so that many hit.
            let inds: Vec<ThreatIndicator> = nets.iter().enumerate().map(|(i, &(a, l))| ThreatIndicator {
                kind: IndicatorKind::Ipv4Net(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap()),
                audit_id: AuditId(i.to_string()),
                feed: "f".into(),
            }).collect();
            let settings = ThreatFeedSettings::default();
            let set = IndicatorSet::build(&inds, &[], &settings).unwrap();
            let oracle = Oracle { inds: &inds, excl: &[], settings: &settings };
            let near = nets.iter().zip(&queries).map(|(&(a, _), &q)| a ^ (q & 0xff));
            for q in queries.iter().copied().chain(near).map(|q| IpAddr::from(Ipv4Addr::from(q))) {
                prop_assert_eq!(summary(set.match_ip(q)), oracle_summary(oracle.ip(q)));
            }
        }
    }
}
