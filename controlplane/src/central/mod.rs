//! Central: the management service the gateway registers with, and the
//! gateway's side of it.
//!
//! * [`protocol`] — the wire format and the gateway's validated model of
//!   what Central shared ([`protocol::SyncedState`]; its indicators by
//!   audit ID in a [`held_map::HeldMap`], which grows without a stop);
//! * [`http`] — HTTPS client and server plumbing (rustls, hyper);
//! * [`client`] — the gateway's client: enrollment, sync, last-known-good
//!   state (its journal: [`state_journal`]), log and health upload
//!   ([`spool`]), third-party feeds; the journal folded into the state
//!   file ([`indicator_fold`]);
//! * [`feeds`] — plain-list and STIX 2.1 feed parsing;
//! * the reference Central (`hbgw-central`): [`ca`] (it issues endpoint and
//!   server certificates), [`store`] (SQLite), [`server`] (the API).
//!
//! The protocol is in `docs/central-protocol.md`. Nothing here touches a
//! worker: the gateway's client publishes through `GatewayState`'s setters
//! only, and only whole, validated updates.

pub mod ca;
pub mod client;
pub mod feeds;
pub mod held_map;
pub mod http;
pub mod indicator_fold;
pub mod protocol;
pub mod server;
pub mod spool;
pub mod state_journal;
pub mod store;
