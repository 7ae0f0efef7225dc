//! The agent's durable buffer: every accepted event is on disk here, under its sequence number,
//! until the hub acknowledges that it is stored.
//!
//! [`Buffer`] is the small storage trait the uplink reads and acks through; [`IntakeStore`]
//! extends it with the writer's operations that must be one commit each (append with the
//! device message ids it accepted, evict with the gap that declares it, remove damaged records
//! with theirs). Two implementations ([`redb_store::RedbBuffer`], the default, and
//! [`sled_store::SledBuffer`]) are held to one conformance suite. Above them,
//! [`intake::Intake`] owns sequence assignment, group commit, the size bound and eviction.

pub mod dedup_ids;
pub mod intake;
pub mod record;
pub mod redb_store;
pub mod sled_store;

#[cfg(test)]
mod conformance;

use qyt_proto::{EventClass, Seq};
use std::path::Path;

pub use dedup_ids::DedupEntry;
pub use record::StoredRecord;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error(
        "buffer storage at {path} failed: {detail}; check the disk (space, permissions, health)"
    )]
    Storage { path: String, detail: String },
    #[error("append out of order: got seq {got}, expected at least {expected}")]
    OutOfOrder { got: Seq, expected: Seq },
}

/// What opening a buffer found, for the agent to report and forward.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OpenReport {
    /// Records that failed their checksum or could not be parsed, by seq, ascending. Everything
    /// else is intact. They stay on disk (unreadable) until a commit removes them together with
    /// the gap that declares them ([`Remove::Seqs`], done by [`intake::Intake::start`]), so a
    /// crash before that commit reports them again at the next open.
    pub corrupt: Vec<Seq>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BufferStats {
    /// Events held (not yet acknowledged by the hub).
    pub events: u64,
    /// Sum of the encoded sizes of the events held.
    pub live_bytes: u64,
    /// The lowest seq held, if any.
    pub oldest_seq: Option<Seq>,
    /// `received_ms` of the lowest seq held.
    pub oldest_received_ms: Option<i64>,
}

/// Which implementation backs the buffer (config key `buffer.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    #[default]
    Redb,
    Sled,
}

/// Durable, ordered storage of records by seq. Implementations are internally synchronised:
/// one writer (the intake) and one reader/acker (the uplink) use it at once.
pub trait Buffer: Send + Sync + 'static {
    /// The next seq to assign: one above the highest ever appended (persisted, so never reused
    /// after a restart, even if every record has since been acked and deleted).
    fn next_seq(&self) -> Seq;

    /// The highest seq acknowledged by the hub (persisted); 0 if none.
    fn acked(&self) -> Seq;

    /// Up to `max_events` records with seq >= `from`, ascending, stopping before `max_bytes` of
    /// payload would be exceeded (but always at least one record if any exists).
    fn read_from(
        &self,
        from: Seq,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BufferError>;

    /// Deletes every record with seq <= `through` and persists `through` as acked (never moving
    /// it backwards). Returns how many records were deleted. Device message ids are kept: a
    /// broker may redeliver a message after its event was acked.
    fn ack_through(&self, through: Seq) -> Result<u64, BufferError>;

    fn stats(&self) -> BufferStats;

    /// Bytes the buffer occupies on disk right now (the files' sizes, not a counter).
    fn disk_bytes(&self) -> u64;

    /// Gives free file space back to the file system where the engine can (redb: `compact`).
    /// Returns whether anything was done.
    fn compact(&self) -> Result<bool, BufferError>;
}

/// What an [`IntakeStore::commit`] deletes before it appends.
#[derive(Clone, Copy)]
pub enum Remove<'a> {
    Nothing,
    /// Eviction: the oldest intact records whose class `droppable` accepts, until at least
    /// `bytes` of them are freed or none is left. Damaged records are never evicted: the next
    /// open reports them as corrupt instead.
    Oldest {
        droppable: &'a dyn Fn(EventClass) -> bool,
        bytes: u64,
    },
    /// Exactly these seqs, where held (the damaged records an open reported).
    Seqs(&'a [Seq]),
}

/// What a commit deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Ascending.
    pub seqs: Vec<Seq>,
    /// Their stored sizes, as counted in [`BufferStats::live_bytes`].
    pub bytes: u64,
}

/// What a commit appends: records (ascending seqs, the first at least `next_seq()`) and the
/// device message ids accepted with them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Append {
    pub records: Vec<StoredRecord>,
    pub ids: Vec<DedupEntry>,
}

/// The writer's side of a buffer: operations whose parts must survive a crash together, so
/// each is one durable commit. Kept apart from [`Buffer`], which is all the uplink needs.
pub trait IntakeStore: Buffer {
    /// In one durable commit (all of it survives kill -9 and power loss once this returns `Ok`,
    /// none of it if it fails or the process dies first): deletes what `remove` selects, then
    /// appends what `append` returns when told what was deleted — so that a gap event declaring
    /// evicted or damaged records is never separated from their deletion, nor a device message
    /// id from its event. Returns what was deleted. Does nothing (no commit) when there is
    /// nothing to delete or append. `append` runs inside the commit, holding the buffer's
    /// writer lock: it must not call the buffer.
    fn commit(
        &self,
        remove: Remove<'_>,
        append: &mut dyn FnMut(&Removed) -> Append,
    ) -> Result<Removed, BufferError>;

    /// The device message ids accepted at or after `since_ms`, ascending by time (then key).
    fn recent_ids(&self, since_ms: i64) -> Result<Vec<DedupEntry>, BufferError>;

    /// Forgets the device message ids accepted before `before_ms`, in a commit of its own;
    /// returns how many. Acks never delete ids: only their age does.
    fn prune_ids(&self, before_ms: i64) -> Result<u64, BufferError>;

    /// Appends records (ascending seqs, the first at least `next_seq()`) in one durable commit,
    /// without device ids: for tests and benchmarks that fill a buffer without an intake.
    fn append(&self, records: &[StoredRecord]) -> Result<(), BufferError> {
        self.commit(Remove::Nothing, &mut |_| Append {
            records: records.to_vec(),
            ids: Vec::new(),
        })
        .map(drop)
    }
}

/// Opens the configured engine in `dir` (created if missing).
pub fn open(
    engine: Engine,
    dir: &Path,
) -> Result<(std::sync::Arc<dyn IntakeStore>, OpenReport), BufferError> {
    match engine {
        Engine::Redb => {
            let (b, r) = redb_store::RedbBuffer::open(dir)?;
            Ok((std::sync::Arc::new(b), r))
        }
        Engine::Sled => {
            let (b, r) = sled_store::SledBuffer::open(dir)?;
            Ok((std::sync::Arc::new(b), r))
        }
    }
}
