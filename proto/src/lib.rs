//! The wire contract between `qyt-agent` and `qyt-hub`.
//!
//! Pure data and (de)serialisation: no I/O, no clocks. Both sides depend on this crate so that the
//! shape of an event, a batch or an ack can only change in one place, under [`PROTOCOL_VERSION`].

mod body;
mod ids;
mod topics;
mod wire;

pub use body::{
    AlarmKind, AlarmReport, Body, Direction, DropReason, EventClass, Fix, GapBody, GatePassage,
    PositionReading, SealReading, SealState, StatusReport, WeightReading,
};
pub use ids::{IdError, SealId, Seq, SiteId};
pub use topics::Topics;
pub use wire::{
    decode_ack, decode_batch, decode_status, encode, Ack, AgentStatus, Batch, Event, Presence,
    SourceHealth, SourceState, WireError, MAX_BATCH_BYTES, PROTOCOL_VERSION,
};
