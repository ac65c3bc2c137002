//! # hbgw-dataplane
//!
//! The path of a packet through a worker, free of DPDK so that every line of it
//! runs in unit tests on byte buffers:
//!
//! * [`io`] — the small I/O trait a worker polls ([`io::PacketIo`]), and an
//!   in-memory implementation ([`io::mem::MemIo`]) for tests;
//! * [`pipeline`] — one frame in, one [`verdict::Verdict`] out;
//! * [`worker`] — the poll loop: `rx_burst` -> pipeline -> `tx_burst`, unsent
//!   frames freed and counted;
//! * [`counters`] and [`latency`] — what a worker publishes for the control
//!   plane: single-writer counters and an HDR histogram of processing latency.
//!
//! What this crate must never do on the per-packet path: take a lock,
//! allocate, make a syscall, log, or block on the control plane. Everything a
//! worker hands over goes through bounded channels with `try_send`, and what
//! does not fit is counted, never waited for.
#![deny(missing_docs)]

pub mod counters;
pub mod io;
pub mod latency;
pub mod pipeline;
pub mod verdict;
pub mod worker;
