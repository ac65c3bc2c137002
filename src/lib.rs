//! # hbgw
//!
//! The gateway process: the DPDK layer ([`dpdk`], the only `unsafe` code in
//! hbgw) and the wiring that turns a command line into running workers —
//! EAL start, ports, mempool, workers launched on lcores, the control-plane
//! thread, and an orderly stop ([`gateway`]). The command line itself is in
//! [`cli`]; the built-in traffic source for a NIC-less run is in [`demo`].
//!
//! What it owns: the lifetime of every DPDK object. What it must never do:
//! put per-packet logic here (that is `hbgw-dataplane`'s), let a worker share
//! a queue with another, or start EAL without `--no-pci` or an allow-list
//! the user named.

pub mod cli;
pub mod demo;
pub mod dpdk;
pub mod gateway;
