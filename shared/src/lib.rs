//! # hbgw-shared
//!
//! What both planes of hbgw agree on: the configuration file's types and their
//! validation ([`config`]), the stats report that the control plane serves
//! and `hbgw stats` prints ([`stats`]), and the state the control plane writes
//! and data-plane workers read without locks ([`state`]): endpoint health
//! ([`endpoint`]), threat indicators ([`indicators`], published as a base set
//! plus recent changes, [`indicator_overlay`]) and the firewall policy
//! ([`policy`]), with one change counter every publication bumps
//! ([`epoch`]), and the files they can be loaded from without a Central
//! ([`feed_file`]).
//!
//! This crate owns plain data and pure functions only. It must never touch
//! DPDK, spawn threads, do I/O beyond reading the files it is named, or
//! depend on either plane: both planes depend on it, never the other way round.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod endpoint;
pub mod epoch;
pub mod feed_file;
pub mod indicator_overlay;
pub mod indicators;
pub mod policy;
pub mod state;
pub mod stats;
pub mod toml_file;
