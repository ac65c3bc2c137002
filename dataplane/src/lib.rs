//! # hbgw-dataplane
//!
//! The path of a packet through a worker, free of DPDK so that every line of it
//! runs in unit tests on byte buffers:
//!
//! * [`io`] — the small I/O trait a worker polls ([`io::PacketIo`]), and an
//!   in-memory implementation ([`io::mem::MemIo`]) for tests;
//! * [`parse`] — zero-copy parsers from Ethernet up to DNS / TLS SNI / HTTP
//!   hints, every input handled without a panic or an allocation;
//! * [`pipeline`] — one frame in, one [`verdict::Verdict`] out: parse, then
//!   [`enforce`] (exclusions -> threat indicators -> lateral movement ->
//!   heartbeat rules -> default) against the state the control plane
//!   publishes ([`hbgw_shared::state`]); [`events`] carries what it logs;
//!   [`flow_cache`] keeps the verdict of a flow's frames that carry no
//!   application hint, valid until the state's change counter moves;
//!   [`hint_cache`] remembers the hints that matched no indicator, so that a
//!   flow-cached frame with a hint seen before skips the indicator lookups;
//!   both are built on [`epoch_sets`] (two-way sets tagged with the counter);
//! * [`worker`] — the poll loop: `rx_burst` -> pipeline -> `tx_burst`, unsent
//!   frames freed and counted;
//! * [`seen_macs`] — which source MACs sent traffic on which port, flushed
//!   to the control plane for its missing-heartbeat timers;
//! * [`reject`] — the TCP RST / ICMP unreachable answer of a `reject` rule;
//! * [`synth`] — frame builders for tests, the traffic source and `explain`;
//! * [`counters`] and [`latency`] — what a worker publishes for the control
//!   plane: single-writer counters and an HDR histogram of processing latency.
//!
//! What this crate must never do on the per-packet path: take a lock,
//! allocate, make a syscall, log, or block on the control plane. Everything a
//! worker hands over goes through bounded channels with `try_send`, and what
//! does not fit is counted, never waited for.
#![deny(missing_docs)]

pub mod counters;
pub mod enforce;
pub mod epoch_sets;
pub mod events;
pub mod flow_cache;
pub mod hint_cache;
pub mod io;
pub mod latency;
pub mod parse;
pub mod pipeline;
pub mod reject;
pub mod seen_macs;
pub mod synth;
pub mod verdict;
pub mod worker;
