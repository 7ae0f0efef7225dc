//! Building blocks of `qyt-bench`: the hub and the agent as real processes, the gateway's
//! Mosquitto with publishing devices, and the peer baseline script.

pub mod gateway;
pub mod peer;
pub mod system;
