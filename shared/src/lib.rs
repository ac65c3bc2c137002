//! # hbgw-shared
//!
//! What both planes of hbgw agree on: the configuration file's types and their
//! validation ([`config`]), and the stats report that the control plane serves
//! and `hbgw stats` prints ([`stats`]).
//!
//! This crate owns plain data and pure functions only. It must never touch
//! DPDK, spawn threads, do I/O beyond reading the config text it is handed, or
//! depend on either plane: both planes depend on it, never the other way round.
#![deny(missing_docs)]

pub mod config;
pub mod stats;
