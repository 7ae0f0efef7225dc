//! `qyt-agent`: reads checkpoint devices, keeps every reading durably on local disk, forwards it
//! to the hub and deletes it only once the hub acknowledges that it is stored.
//!
//! Data path: sources → intake (sequence numbers, group commit) → buffer → uplink → hub.

pub mod buffer;
pub mod metrics;
pub mod uplink;
// Lead's modules (config, http, run, sources) are wired in once intake and uplink land.
