//! Endpoints and their Security Heartbeat health, as the control plane writes
//! them and data-plane workers read them.
//!
//! An endpoint (one managed computer) has several interfaces, each a MAC
//! address with the IPv4/IPv6 addresses it reported; its health is one value
//! for the whole endpoint. Workers look health up by source/destination MAC
//! and by IP.
//!
//! # Concurrency design
//!
//! * Each endpoint's health is one [`AtomicU8`], its *slot*, in an array of
//!   such bytes (4096 to a block, the blocks reference-counted) that every
//!   index generation shares. Every generation that knows the endpoint names
//!   the *same* slot, so a health change ([`EndpointTableWriter::set_health`])
//!   is one atomic store, seen by the next lookup of every worker, even one
//!   still holding an old snapshot. The bytes are contiguous (100 KB for
//!   100,000 endpoints, so they stay in cache) rather than one heap block per
//!   endpoint: measured (perf/pipeline_stages.rs), following a per-endpoint
//!   pointer was a cache miss on most lookups.
//! * A slot number is never given to another endpoint within one array: a
//!   reader on an older generation could otherwise read the newcomer's health
//!   through a removed endpoint's MAC. Removed endpoints' bytes are reclaimed
//!   by starting a fresh array, which [`EndpointTableWriter::replace_all`]
//!   does, and the writer does on its own once dead slots outnumber live ones
//!   (and exceed [`COMPACT_MIN_DEAD`]): that publication is then a bulk swap
//!   like `replace_all`'s.
//! * Which MACs and IPs belong to which endpoint is an immutable index
//!   ([`EndpointSnapshot`]: hash maps MAC -> slot, IPv4 -> slot, IPv6 -> slot,
//!   built with FxHash) that the writer builds aside and publishes whole with
//!   [`arc_swap`]. A reader sees the old index or the new one, never half.
//!   [`EndpointTableWriter::replace_all`] gives every endpoint a fresh slot, so
//!   a bulk reload is atomic *including* health.
//! * A lookup reads a hash map and one atomic byte: no lock, no allocation,
//!   no write to shared memory. [`EndpointReader`] caches the current index
//!   (an [`arc_swap::Cache`]); refreshing it once per burst is one atomic load
//!   of the published pointer (plus a reference-count update only when the
//!   index actually changed).
//!
//! Only the control plane writes, through the one [`EndpointTableWriter`]
//! (not `Clone`; share it behind a mutex there if several tasks write). The
//! authoritative per-endpoint records stay in the writer.

use crate::epoch::StateEpoch;
use arc_swap::{ArcSwap, Cache};
use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The health an endpoint reports by Security Heartbeat, or why there is none.
///
/// Stored as one byte ([`EndpointHealth::as_u8`]) in an atomic.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointHealth {
    /// The MAC or IP is not a managed endpoint's (never seen, or unmanaged).
    #[default]
    Unknown = 0,
    /// No active threats, protection working.
    Green = 1,
    /// Warning: a PUA, inactive malware, or old signatures.
    Yellow = 2,
    /// At risk: active malware not removed, or protection not working.
    Red = 3,
    /// The endpoint sends traffic but missed three consecutive heartbeats.
    Missing = 4,
    /// Known to the gateway but does not send heartbeats at all.
    NoHeartbeat = 5,
}

impl EndpointHealth {
    /// Every value, in discriminant order.
    pub const ALL: [EndpointHealth; 6] = [
        EndpointHealth::Unknown,
        EndpointHealth::Green,
        EndpointHealth::Yellow,
        EndpointHealth::Red,
        EndpointHealth::Missing,
        EndpointHealth::NoHeartbeat,
    ];

    /// The byte stored in the atomic.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The value of a stored byte; bytes no variant has read as `Unknown`.
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => EndpointHealth::Green,
            2 => EndpointHealth::Yellow,
            3 => EndpointHealth::Red,
            4 => EndpointHealth::Missing,
            5 => EndpointHealth::NoHeartbeat,
            _ => EndpointHealth::Unknown,
        }
    }

    /// Whether a heartbeat colour is known (green, yellow or red).
    pub const fn has_heartbeat(self) -> bool {
        matches!(self, EndpointHealth::Green | EndpointHealth::Yellow | EndpointHealth::Red)
    }

    /// The lower-case name used in config, logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointHealth::Unknown => "unknown",
            EndpointHealth::Green => "green",
            EndpointHealth::Yellow => "yellow",
            EndpointHealth::Red => "red",
            EndpointHealth::Missing => "missing",
            EndpointHealth::NoHeartbeat => "no_heartbeat",
        }
    }
}

impl fmt::Display for EndpointHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The address as the low 48 bits of a `u64` (first byte most significant).
    pub const fn to_u64(self) -> u64 {
        let b = self.0;
        ((b[0] as u64) << 40)
            | ((b[1] as u64) << 32)
            | ((b[2] as u64) << 24)
            | ((b[3] as u64) << 16)
            | ((b[4] as u64) << 8)
            | (b[5] as u64)
    }
}

impl Hash for MacAddr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One integer write: cheaper than hashing a length-prefixed slice.
        state.write_u64(self.to_u64());
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// A MAC address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad MAC address `{0}`: write six hex bytes separated by colons, like aa:bb:cc:dd:ee:ff")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The control plane's name for one endpoint (for instance its heartbeat
/// session or Central endpoint number); the table never invents ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointId(pub u64);

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One network interface of an endpoint: its MAC and the addresses it reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInterface {
    /// The interface's MAC address.
    pub mac: MacAddr,
    /// IPv4 and IPv6 addresses reported on this interface.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// An endpoint as the control plane reports it to the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The control plane's id for it.
    pub id: EndpointId,
    /// Its interfaces.
    pub interfaces: Vec<EndpointInterface>,
    /// Its current health.
    pub health: EndpointHealth,
}

/// A write for an endpoint the table does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// `set_health` or `remove` named an id that was never upserted (or was removed).
    #[error("endpoint {0} is not in the endpoint table: upsert it (with its interfaces) before setting its health")]
    UnknownEndpoint(EndpointId),
}

/// Health bytes per block of the slot array.
const SLOTS_PER_BLOCK: usize = 4096;

/// Dead slots the writer tolerates before it compacts (see the module docs).
pub const COMPACT_MIN_DEAD: u32 = if cfg!(test) { 4 } else { 65_536 };

/// A block of health bytes; shared by every index generation.
struct HealthBlock([AtomicU8; SLOTS_PER_BLOCK]);

impl HealthBlock {
    fn new() -> Arc<Self> {
        Arc::new(HealthBlock([const { AtomicU8::new(0) }; SLOTS_PER_BLOCK]))
    }
}

impl fmt::Debug for HealthBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HealthBlock")
    }
}

/// An endpoint's health slot: its number in the slot array.
type Slot = u32;

#[inline]
fn slot_byte(blocks: &[Arc<HealthBlock>], slot: Slot) -> &AtomicU8 {
    let slot = slot as usize;
    &blocks[slot / SLOTS_PER_BLOCK].0[slot % SLOTS_PER_BLOCK]
}

#[inline]
fn load_health(blocks: &[Arc<HealthBlock>], slot: Slot) -> EndpointHealth {
    // Relaxed is enough: the byte is a value on its own, nothing else is
    // published through it, and a single location is always coherent.
    EndpointHealth::from_u8(slot_byte(blocks, slot).load(Ordering::Relaxed))
}

#[derive(Debug, Clone, Copy)]
struct IpEntry {
    slot: Slot,
    mac: MacAddr,
}

type FxMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// What an IP address is bound to: which endpoint, through which interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBinding {
    /// The endpoint that reported the address.
    pub endpoint: EndpointId,
    /// The MAC of the interface it was reported on.
    pub mac: MacAddr,
    /// The endpoint's health now.
    pub health: EndpointHealth,
}

/// One immutable generation of the endpoint index. Lookups take no lock,
/// allocate nothing and write nothing; health values are live (read from the
/// shared atomic slots), the MAC/IP bindings are those of this generation.
#[derive(Debug)]
pub struct EndpointSnapshot {
    generation: u64,
    endpoints: usize,
    /// The slot array's blocks (shared with the writer and other generations).
    health: Box<[Arc<HealthBlock>]>,
    /// Endpoint id by slot number (this generation's).
    ids: Box<[EndpointId]>,
    by_mac: FxMap<MacAddr, Slot>,
    by_v4: FxMap<u32, IpEntry>,
    by_v6: FxMap<u128, IpEntry>,
}

impl EndpointSnapshot {
    fn empty() -> Self {
        EndpointSnapshot {
            generation: 0,
            endpoints: 0,
            health: Box::new([]),
            ids: Box::new([]),
            by_mac: FxMap::default(),
            by_v4: FxMap::default(),
            by_v6: FxMap::default(),
        }
    }

    /// Counts up by one with every published index.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Endpoints in this generation.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }

    /// MAC addresses (interfaces) in this generation.
    pub fn mac_count(&self) -> usize {
        self.by_mac.len()
    }

    /// IP bindings in this generation.
    pub fn ip_count(&self) -> usize {
        self.by_v4.len() + self.by_v6.len()
    }

    /// Health of the endpoint owning `mac`; `Unknown` when none does.
    #[inline]
    pub fn health_by_mac(&self, mac: &MacAddr) -> EndpointHealth {
        match self.by_mac.get(mac) {
            Some(&slot) => load_health(&self.health, slot),
            None => EndpointHealth::Unknown,
        }
    }

    /// Health of the endpoint bound to `ip`; `Unknown` when none is.
    #[inline]
    pub fn health_by_ip(&self, ip: IpAddr) -> EndpointHealth {
        match self.ip_entry(ip) {
            Some(e) => load_health(&self.health, e.slot),
            None => EndpointHealth::Unknown,
        }
    }

    /// The endpoint owning `mac`.
    #[inline]
    pub fn endpoint_by_mac(&self, mac: &MacAddr) -> Option<EndpointId> {
        self.by_mac.get(mac).map(|&s| self.ids[s as usize])
    }

    /// The endpoint, interface and health bound to `ip`.
    #[inline]
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<IpBinding> {
        self.ip_entry(ip).map(|e| IpBinding {
            endpoint: self.ids[e.slot as usize],
            mac: e.mac,
            health: load_health(&self.health, e.slot),
        })
    }

    #[inline]
    fn ip_entry(&self, ip: IpAddr) -> Option<&IpEntry> {
        match ip {
            IpAddr::V4(a) => self.by_v4.get(&u32::from(a)),
            IpAddr::V6(a) => self.by_v6.get(&u128::from(a)),
        }
    }
}

/// A cloneable handle on the published endpoint index, for handing out
/// readers. Holds no lock and never blocks the writer.
#[derive(Debug, Clone)]
pub struct EndpointTable {
    shared: Arc<ArcSwap<EndpointSnapshot>>,
    epoch: Arc<StateEpoch>,
}

impl EndpointTable {
    /// A reader for one worker thread (not shared between threads).
    pub fn reader(&self) -> EndpointReader {
        EndpointReader { cache: Cache::new(Arc::clone(&self.shared)) }
    }

    /// The current index, held for as long as the returned `Arc` lives.
    pub fn load(&self) -> Arc<EndpointSnapshot> {
        self.shared.load_full()
    }

    /// The change counter the writer bumps on every health change and index.
    pub fn epoch(&self) -> &Arc<StateEpoch> {
        &self.epoch
    }
}

/// A worker's view of the endpoint table: a cached [`EndpointSnapshot`].
///
/// Call [`EndpointReader::snapshot`] once per burst and use the returned
/// reference for every packet of it.
pub struct EndpointReader {
    cache: Cache<Arc<ArcSwap<EndpointSnapshot>>, Arc<EndpointSnapshot>>,
}

impl EndpointReader {
    /// The newest published index: one atomic load when nothing changed.
    #[inline]
    pub fn snapshot(&mut self) -> &EndpointSnapshot {
        self.cache.load()
    }
}

impl fmt::Debug for EndpointReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointReader")
    }
}

#[derive(Debug)]
struct Record {
    slot: Slot,
    interfaces: Vec<EndpointInterface>,
}

/// The control plane's single writer of the endpoint table: holds the
/// authoritative records, stores health changes, and rebuilds and publishes
/// the index when MACs or IPs change.
///
/// A MAC or IP belongs to one endpoint: an upsert that reports a MAC or IP
/// another endpoint holds takes it over (the newer report wins).
#[derive(Debug)]
pub struct EndpointTableWriter {
    shared: Arc<ArcSwap<EndpointSnapshot>>,
    records: BTreeMap<EndpointId, Record>,
    mac_owner: FxMap<MacAddr, EndpointId>,
    ip_owner: FxMap<IpAddr, (EndpointId, MacAddr)>,
    generation: u64,
    /// Bumped after every health store and every published index.
    epoch: Arc<StateEpoch>,
    /// The slot array: its blocks, the next unused slot, slots of removed endpoints.
    health: Vec<Arc<HealthBlock>>,
    next_slot: Slot,
    dead_slots: u32,
}

impl Default for EndpointTableWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointTableWriter {
    /// An empty table (generation 0).
    pub fn new() -> Self {
        Self::with_epoch(StateEpoch::new())
    }

    /// An empty table that bumps `epoch` on every change (the gateway
    /// state's counter, shared with the policy and indicators).
    pub fn with_epoch(epoch: Arc<StateEpoch>) -> Self {
        EndpointTableWriter {
            epoch,
            shared: Arc::new(ArcSwap::from_pointee(EndpointSnapshot::empty())),
            records: BTreeMap::new(),
            mac_owner: FxMap::default(),
            ip_owner: FxMap::default(),
            generation: 0,
            health: Vec::new(),
            next_slot: 0,
            dead_slots: 0,
        }
    }

    /// The read handle to give to workers.
    pub fn table(&self) -> EndpointTable {
        EndpointTable { shared: Arc::clone(&self.shared), epoch: Arc::clone(&self.epoch) }
    }

    /// Endpoints held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no endpoint is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The generation of the last published index.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The endpoint as the table holds it now (interfaces after takeovers).
    pub fn get(&self, id: EndpointId) -> Option<Endpoint> {
        self.records.get(&id).map(|r| Endpoint {
            id,
            interfaces: r.interfaces.clone(),
            health: load_health(&self.health, r.slot),
        })
    }

    /// Sets an endpoint's health: one atomic store, seen by every reader's
    /// next lookup without a new index.
    pub fn set_health(&mut self, id: EndpointId, health: EndpointHealth) -> Result<(), EndpointError> {
        let record = self.records.get(&id).ok_or(EndpointError::UnknownEndpoint(id))?;
        slot_byte(&self.health, record.slot).store(health.as_u8(), Ordering::Relaxed);
        // After the store: a worker that sees the new count sees the new health.
        self.epoch.bump();
        Ok(())
    }

    /// Adds an endpoint or replaces its interfaces and health, then publishes
    /// a new index. The health of an endpoint already held changes at once
    /// (one store), before the new bindings are published.
    pub fn upsert(&mut self, endpoint: Endpoint) {
        self.apply_upsert(endpoint);
        self.publish();
    }

    /// Several upserts, published as one new index.
    pub fn upsert_many(&mut self, endpoints: impl IntoIterator<Item = Endpoint>) {
        for e in endpoints {
            self.apply_upsert(e);
        }
        self.publish();
    }

    /// Removes an endpoint and publishes a new index without it.
    pub fn remove(&mut self, id: EndpointId) -> Result<(), EndpointError> {
        let record = self.records.remove(&id).ok_or(EndpointError::UnknownEndpoint(id))?;
        self.release(id, &record.interfaces);
        self.dead_slots += 1;
        self.publish();
        Ok(())
    }

    /// Replaces the whole table (a reload after reconnecting to Central).
    /// Every endpoint gets a fresh health slot, so the swap is atomic
    /// including health: a reader's snapshot is wholly old or wholly new.
    pub fn replace_all(&mut self, endpoints: impl IntoIterator<Item = Endpoint>) {
        self.records.clear();
        self.mac_owner.clear();
        self.ip_owner.clear();
        self.fresh_slots();
        for e in endpoints {
            self.apply_upsert(e);
        }
        self.publish();
    }

    fn apply_upsert(&mut self, endpoint: Endpoint) {
        let Endpoint { id, interfaces, health } = endpoint;
        // Normalise the report: one entry per MAC, one owner per IP (last wins).
        let mut merged: Vec<EndpointInterface> = Vec::with_capacity(interfaces.len());
        for iface in interfaces {
            match merged.iter_mut().find(|m| m.mac == iface.mac) {
                Some(m) => m.ips.extend(iface.ips),
                None => merged.push(iface),
            }
        }
        let mut seen_ip = hashbrown::HashSet::<IpAddr, FxBuildHasher>::default();
        for iface in merged.iter_mut().rev() {
            iface.ips.reverse();
            iface.ips.retain(|ip| seen_ip.insert(*ip));
            iface.ips.reverse();
        }

        let slot = match self.records.remove(&id) {
            Some(old) => {
                self.release(id, &old.interfaces);
                old.slot
            }
            None => self.new_slot(),
        };
        slot_byte(&self.health, slot).store(health.as_u8(), Ordering::Relaxed);
        for iface in &merged {
            if let Some(prev) = self.mac_owner.insert(iface.mac, id) {
                if prev != id {
                    self.take_mac_from(prev, iface.mac);
                }
            }
            for ip in &iface.ips {
                if let Some((prev, prev_mac)) = self.ip_owner.insert(*ip, (id, iface.mac)) {
                    if prev != id {
                        self.take_ip_from(prev, prev_mac, *ip);
                    }
                }
            }
        }
        self.records.insert(id, Record { slot, interfaces: merged });
    }

    /// Drops the ownership entries `id` still holds for `interfaces`.
    fn release(&mut self, id: EndpointId, interfaces: &[EndpointInterface]) {
        for iface in interfaces {
            if self.mac_owner.get(&iface.mac) == Some(&id) {
                self.mac_owner.remove(&iface.mac);
            }
            for ip in &iface.ips {
                if self.ip_owner.get(ip).map(|o| o.0) == Some(id) {
                    self.ip_owner.remove(ip);
                }
            }
        }
    }

    /// Another endpoint took `mac`: drop that interface (and its IPs) from `from`.
    fn take_mac_from(&mut self, from: EndpointId, mac: MacAddr) {
        let Some(record) = self.records.get_mut(&from) else { return };
        let Some(pos) = record.interfaces.iter().position(|i| i.mac == mac) else { return };
        let iface = record.interfaces.remove(pos);
        for ip in &iface.ips {
            if self.ip_owner.get(ip) == Some(&(from, mac)) {
                self.ip_owner.remove(ip);
            }
        }
    }

    /// Another endpoint took `ip`: drop it from `from`'s interface `mac`.
    fn take_ip_from(&mut self, from: EndpointId, mac: MacAddr, ip: IpAddr) {
        let Some(record) = self.records.get_mut(&from) else { return };
        if let Some(iface) = record.interfaces.iter_mut().find(|i| i.mac == mac) {
            iface.ips.retain(|x| *x != ip);
        }
    }

    /// A slot array with no slot given out (old generations keep theirs).
    fn fresh_slots(&mut self) {
        self.health = Vec::new();
        self.next_slot = 0;
        self.dead_slots = 0;
    }

    /// The next unused slot (its byte is set by the caller).
    fn new_slot(&mut self) -> Slot {
        let slot = self.next_slot;
        if slot as usize == self.health.len() * SLOTS_PER_BLOCK {
            self.health.push(HealthBlock::new());
        }
        // 4 billion endpoints would exhaust far more memory first.
        self.next_slot = slot.checked_add(1).expect("fewer than 4 billion endpoint slots");
        slot
    }

    /// Moves every endpoint to a fresh slot array, health values carried over.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.health);
        self.fresh_slots();
        let ids: Vec<EndpointId> = self.records.keys().copied().collect();
        for id in ids {
            let health = load_health(&old, self.records[&id].slot);
            let slot = self.new_slot();
            slot_byte(&self.health, slot).store(health.as_u8(), Ordering::Relaxed);
            self.records.get_mut(&id).expect("id from records").slot = slot;
        }
    }

    /// Slots given out in the current array, and how many of them are dead.
    pub fn slot_usage(&self) -> (u32, u32) {
        (self.next_slot, self.dead_slots)
    }

    /// Builds a new index from the authoritative records and swaps it in.
    fn publish(&mut self) {
        if self.dead_slots >= COMPACT_MIN_DEAD && self.dead_slots as usize > self.records.len() {
            self.compact();
        }
        let mut ids = vec![EndpointId(0); self.next_slot as usize];
        for (id, r) in &self.records {
            ids[r.slot as usize] = *id;
        }
        let slot_of = |id: &EndpointId| self.records[id].slot;
        let mut by_mac = FxMap::with_capacity_and_hasher(self.mac_owner.len(), FxBuildHasher);
        for (mac, id) in &self.mac_owner {
            by_mac.insert(*mac, slot_of(id));
        }
        let mut by_v4 = FxMap::with_hasher(FxBuildHasher);
        let mut by_v6 = FxMap::with_hasher(FxBuildHasher);
        for (ip, (id, mac)) in &self.ip_owner {
            let entry = IpEntry { slot: slot_of(id), mac: *mac };
            match ip {
                IpAddr::V4(a) => {
                    by_v4.insert(u32::from(*a), entry);
                }
                IpAddr::V6(a) => {
                    by_v6.insert(u128::from(*a), entry);
                }
            }
        }
        self.generation += 1;
        self.shared.store(Arc::new(EndpointSnapshot {
            generation: self.generation,
            endpoints: self.records.len(),
            health: self.health.clone().into(),
            ids: ids.into(),
            by_mac,
            by_v4,
            by_v6,
        }));
        self.epoch.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn mac(n: u64) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, b[3], b[4], b[5], b[6], b[7]])
    }

    fn ep(id: u64, ifaces: &[(u64, &[&str])], health: EndpointHealth) -> Endpoint {
        Endpoint {
            id: EndpointId(id),
            interfaces: ifaces
                .iter()
                .map(|(m, ips)| EndpointInterface { mac: mac(*m), ips: ips.iter().map(|s| s.parse().unwrap()).collect() })
                .collect(),
            health,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mac_parse_and_display_round_trip() {
        let m: MacAddr = "AA:bb:0c:dd:ee:0F".parse().unwrap();
        assert_eq!(m.0, [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]);
        assert_eq!(m.to_string(), "aa:bb:0c:dd:ee:0f");
        assert_eq!("aa-bb-0c-dd-ee-0f".parse::<MacAddr>().unwrap(), m);
        assert_eq!(m.to_u64(), 0xaabb0cddee0f);
        for bad in ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb:cc:dd:ee:gg", "a:bb:cc:dd:ee:ff", "aabbccddeeff"] {
            let err = bad.parse::<MacAddr>().unwrap_err().to_string();
            assert!(err.contains("aa:bb:cc:dd:ee:ff") && !err.contains('\n'), "{err}");
        }
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"aa:bb:0c:dd:ee:0f\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), m);
    }

    #[test]
    fn health_byte_round_trips() {
        for h in EndpointHealth::ALL {
            assert_eq!(EndpointHealth::from_u8(h.as_u8()), h);
        }
        assert_eq!(EndpointHealth::from_u8(200), EndpointHealth::Unknown);
        assert!(EndpointHealth::Red.has_heartbeat());
        assert!(!EndpointHealth::Missing.has_heartbeat());
    }

    #[test]
    fn lookups_by_mac_and_ip() {
        let mut w = EndpointTableWriter::new();
        let mut r = w.table().reader();
        assert_eq!(r.snapshot().health_by_mac(&mac(1)), EndpointHealth::Unknown);
        w.upsert(ep(7, &[(1, &["10.0.0.1", "fe80::1"]), (2, &["10.0.1.1"])], EndpointHealth::Yellow));
        let s = r.snapshot();
        assert_eq!(s.generation(), 1);
        assert_eq!(s.endpoint_count(), 1);
        assert_eq!(s.mac_count(), 2);
        assert_eq!(s.ip_count(), 3);
        assert_eq!(s.health_by_mac(&mac(1)), EndpointHealth::Yellow);
        assert_eq!(s.health_by_mac(&mac(2)), EndpointHealth::Yellow);
        assert_eq!(s.health_by_mac(&mac(3)), EndpointHealth::Unknown);
        assert_eq!(s.health_by_ip(ip("fe80::1")), EndpointHealth::Yellow);
        assert_eq!(s.health_by_ip(ip("10.0.0.2")), EndpointHealth::Unknown);
        assert_eq!(s.endpoint_by_mac(&mac(2)), Some(EndpointId(7)));
        assert_eq!(
            s.endpoint_by_ip(ip("10.0.1.1")),
            Some(IpBinding { endpoint: EndpointId(7), mac: mac(2), health: EndpointHealth::Yellow })
        );
    }

    #[test]
    fn health_change_is_one_store_seen_by_an_existing_snapshot() {
        let mut w = EndpointTableWriter::new();
        w.upsert(ep(1, &[(1, &["10.0.0.1"])], EndpointHealth::Green));
        let table = w.table();
        let held = table.load(); // a worker's snapshot taken before the change
        let mut reader = table.reader();
        assert_eq!(reader.snapshot().health_by_mac(&mac(1)), EndpointHealth::Green);
        let generation = w.generation();
        w.set_health(EndpointId(1), EndpointHealth::Red).unwrap();
        assert_eq!(w.generation(), generation, "a health change publishes no new index");
        assert_eq!(held.health_by_mac(&mac(1)), EndpointHealth::Red);
        assert_eq!(held.health_by_ip(ip("10.0.0.1")), EndpointHealth::Red);
        assert_eq!(reader.snapshot().health_by_mac(&mac(1)), EndpointHealth::Red);
        // An upsert with new interfaces keeps the slot: the old snapshot still follows.
        w.upsert(ep(1, &[(1, &["10.0.0.1"]), (9, &[])], EndpointHealth::Missing));
        assert_eq!(held.health_by_mac(&mac(1)), EndpointHealth::Missing);
        assert_eq!(held.health_by_mac(&mac(9)), EndpointHealth::Unknown, "old bindings");
        assert_eq!(reader.snapshot().health_by_mac(&mac(9)), EndpointHealth::Missing);
    }

    #[test]
    fn unknown_endpoint_errors_name_the_fix() {
        let mut w = EndpointTableWriter::new();
        let err = w.set_health(EndpointId(5), EndpointHealth::Red).unwrap_err().to_string();
        assert!(err.contains("endpoint 5") && err.contains("upsert it"), "{err}");
        assert!(w.remove(EndpointId(5)).is_err());
    }

    #[test]
    fn remove_drops_all_bindings() {
        let mut w = EndpointTableWriter::new();
        let mut r = w.table().reader();
        w.upsert(ep(1, &[(1, &["10.0.0.1"])], EndpointHealth::Green));
        w.upsert(ep(2, &[(2, &["10.0.0.2"])], EndpointHealth::Red));
        w.remove(EndpointId(1)).unwrap();
        let s = r.snapshot();
        assert_eq!(s.endpoint_count(), 1);
        assert_eq!(s.health_by_mac(&mac(1)), EndpointHealth::Unknown);
        assert_eq!(s.health_by_ip(ip("10.0.0.1")), EndpointHealth::Unknown);
        assert_eq!(s.health_by_ip(ip("10.0.0.2")), EndpointHealth::Red);
        assert!(w.get(EndpointId(1)).is_none());
    }

    #[test]
    fn newer_report_takes_over_mac_and_ip() {
        let mut w = EndpointTableWriter::new();
        let mut r = w.table().reader();
        w.upsert(ep(1, &[(1, &["10.0.0.1"]), (2, &["10.0.0.2", "10.0.0.3"])], EndpointHealth::Green));
        // Endpoint 2 now has MAC 2 (dock moved) and got 10.0.0.1 by DHCP.
        w.upsert(ep(2, &[(2, &["10.0.0.9"]), (3, &["10.0.0.1"])], EndpointHealth::Red));
        let s = r.snapshot();
        assert_eq!(s.endpoint_by_mac(&mac(1)), Some(EndpointId(1)));
        assert_eq!(s.endpoint_by_mac(&mac(2)), Some(EndpointId(2)));
        assert_eq!(s.endpoint_by_ip(ip("10.0.0.1")).unwrap().endpoint, EndpointId(2));
        assert_eq!(s.endpoint_by_ip(ip("10.0.0.1")).unwrap().mac, mac(3));
        assert_eq!(s.health_by_ip(ip("10.0.0.2")), EndpointHealth::Unknown, "went with MAC 2's old record");
        assert_eq!(s.health_by_ip(ip("10.0.0.9")), EndpointHealth::Red);
        let one = w.get(EndpointId(1)).unwrap();
        assert_eq!(one.interfaces, vec![EndpointInterface { mac: mac(1), ips: vec![] }]);
        // Removing endpoint 1 must not drop what endpoint 2 took over.
        w.remove(EndpointId(1)).unwrap();
        let s = r.snapshot();
        assert_eq!(s.endpoint_by_ip(ip("10.0.0.1")).unwrap().endpoint, EndpointId(2));
        assert_eq!(s.health_by_mac(&mac(2)), EndpointHealth::Red);
        // Re-upserting endpoint 2 without MAC 3 releases it.
        w.upsert(ep(2, &[(2, &[])], EndpointHealth::Green));
        let s = r.snapshot();
        assert_eq!(s.health_by_mac(&mac(3)), EndpointHealth::Unknown);
        assert_eq!(s.health_by_ip(ip("10.0.0.1")), EndpointHealth::Unknown);
        assert_eq!(s.ip_count(), 0);
    }

    #[test]
    fn duplicate_macs_and_ips_in_one_report_merge() {
        let mut w = EndpointTableWriter::new();
        w.upsert(ep(1, &[(1, &["10.0.0.1"]), (1, &["10.0.0.2"]), (2, &["10.0.0.1"])], EndpointHealth::Green));
        let e = w.get(EndpointId(1)).unwrap();
        assert_eq!(e.interfaces.len(), 2);
        assert_eq!(e.interfaces[0].ips, vec![ip("10.0.0.2")]);
        assert_eq!(e.interfaces[1].ips, vec![ip("10.0.0.1")]);
        let s = w.table().load();
        assert_eq!(s.endpoint_by_ip(ip("10.0.0.1")).unwrap().mac, mac(2));
    }

    #[test]
    fn a_removed_endpoints_slot_is_not_given_to_the_next_one() {
        let mut w = EndpointTableWriter::new();
        w.upsert(ep(1, &[(1, &["10.0.0.1"])], EndpointHealth::Green));
        let held = w.table().load();
        w.remove(EndpointId(1)).unwrap();
        w.upsert(ep(2, &[(2, &["10.0.0.2"])], EndpointHealth::Red));
        // The old generation still maps MAC 1 to endpoint 1's slot: it must not read endpoint 2's health.
        assert_eq!(held.health_by_mac(&mac(1)), EndpointHealth::Green);
        assert_eq!(held.endpoint_by_ip(ip("10.0.0.1")).unwrap().endpoint, EndpointId(1));
        assert_eq!(w.slot_usage(), (2, 1));
    }

    #[test]
    fn dead_slots_are_reclaimed_by_a_fresh_array() {
        let mut w = EndpointTableWriter::new();
        let table = w.table();
        let mut r = table.reader();
        w.upsert_many((0..10).map(|i| ep(i, &[(i, &[])], if i % 2 == 0 { EndpointHealth::Green } else { EndpointHealth::Yellow })));
        let held = table.load();
        for i in 0..5 {
            w.remove(EndpointId(i)).unwrap();
        }
        assert_eq!(w.slot_usage(), (10, 5), "5 dead of 10: not more than the live ones yet");
        w.remove(EndpointId(5)).unwrap();
        assert_eq!(w.slot_usage(), (4, 0), "6 dead > 4 live: compacted");
        let s = r.snapshot();
        for i in 0..10 {
            let want = match i {
                0..=5 => EndpointHealth::Unknown,
                _ if i % 2 == 0 => EndpointHealth::Green,
                _ => EndpointHealth::Yellow,
            };
            assert_eq!(s.health_by_mac(&mac(i)), want, "{i}");
            assert_eq!(s.endpoint_by_mac(&mac(i)), (i > 5).then_some(EndpointId(i)));
        }
        w.set_health(EndpointId(7), EndpointHealth::Red).unwrap();
        assert_eq!(r.snapshot().health_by_mac(&mac(7)), EndpointHealth::Red);
        assert_eq!(w.get(EndpointId(7)).unwrap().health, EndpointHealth::Red);
        // A generation from before the compaction keeps its own array.
        assert_eq!(held.health_by_mac(&mac(7)), EndpointHealth::Yellow);
        assert_eq!(held.health_by_mac(&mac(0)), EndpointHealth::Green);
        // Slots keep counting past a block.
        w.upsert_many((100..100 + 2 * SLOTS_PER_BLOCK as u64).map(|i| ep(i, &[(i, &[])], EndpointHealth::Red)));
        w.set_health(EndpointId(100 + SLOTS_PER_BLOCK as u64 + 3), EndpointHealth::Green).unwrap();
        let s = r.snapshot();
        assert_eq!(s.health_by_mac(&mac(100 + SLOTS_PER_BLOCK as u64 + 3)), EndpointHealth::Green);
        assert_eq!(s.health_by_mac(&mac(100 + 2 * SLOTS_PER_BLOCK as u64 - 1)), EndpointHealth::Red);
        assert_eq!(s.health_by_mac(&mac(8)), EndpointHealth::Green);
    }

    /// Two whole generations alternate: all endpoints Green in one, all Red
    /// in the other. A reader's single snapshot must be wholly one or the other.
    #[test]
    fn bulk_swap_is_atomic_for_readers() {
        const N: u64 = 256;
        let generation = |health| {
            (0..N).map(move |i| ep(i, &[(i, &[])], health)).collect::<Vec<_>>()
        };
        let green = generation(EndpointHealth::Green);
        let red = generation(EndpointHealth::Red);
        let mut w = EndpointTableWriter::new();
        w.replace_all(green.clone());
        let table = w.table();
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let table = table.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut reader = table.reader();
                    let mut seen = [0u64; 2];
                    while !stop.load(Ordering::Relaxed) {
                        let s = reader.snapshot();
                        let first = s.health_by_mac(&mac(0));
                        for i in 1..N {
                            assert_eq!(s.health_by_mac(&mac(i)), first, "half-swapped snapshot");
                        }
                        seen[usize::from(first == EndpointHealth::Red)] += 1;
                    }
                    seen
                })
            })
            .collect();
        for round in 0..400 {
            w.replace_all(if round % 2 == 0 { red.clone() } else { green.clone() });
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let seen = r.join().unwrap();
            assert!(seen[0] + seen[1] > 0);
        }
    }
}
