//! `qyt-agent`: reads checkpoint devices, keeps every reading durably on local disk, forwards it
//! to the hub and deletes it only once the hub acknowledges that it is stored.
//!
//! Data path: sources → intake (sequence numbers, group commit) → buffer → uplink → hub.

pub mod buffer;
pub mod config;
pub mod decode;
pub mod http;
pub mod metrics;
pub mod offline;
pub mod run;
pub mod simulators;
pub mod sources;
pub mod uplink;
