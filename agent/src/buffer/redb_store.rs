//! redb-backed buffer, the default engine: one file `<dir>/buffer.redb` holding the records,
//! the meta value and the accepted device message ids in three tables, every write one
//! durable commit (`Durability::Immediate`: an fsync before `commit` returns), freed pages given
//! back to the file system by [`Buffer::compact`].
//!
//! The bookkeeping shared with the sled engine (the persisted meta value, the in-memory tally
//! and the start-up scan) lives here too, so both engines count and recover the same way.

use super::{
    dedup_ids, record, Append, Buffer, BufferError, BufferStats, DedupEntry, IntakeStore,
    OpenReport, Remove, Removed, StoredRecord,
};
use qyt_proto::{EventClass, Seq};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "state";
/// Device message ids accepted, keyed by [`DedupEntry::encode`] (time first).
const IDS: TableDefinition<&[u8], ()> = TableDefinition::new("dedup_ids");

/// The file name of the redb engine inside the buffer directory.
pub const FILE_NAME: &str = "buffer.redb";

/// `next_seq` and `acked`, persisted in the same commit as the records they describe.
///
/// Layout: next_seq (8, BE) | acked (8, BE) | crc32 of the first 16 bytes (4, BE). The checksum
/// lets start-up tell a damaged value from a real one instead of trusting garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub next_seq: Seq,
    pub acked: Seq,
}

impl Meta {
    pub const LEN: usize = 20;

    pub fn encode(&self) -> [u8; Meta::LEN] {
        let mut v = [0u8; Meta::LEN];
        v[..8].copy_from_slice(&self.next_seq.0.to_be_bytes());
        v[8..16].copy_from_slice(&self.acked.0.to_be_bytes());
        let crc = crc32fast::hash(&v[..16]);
        v[16..].copy_from_slice(&crc.to_be_bytes());
        v
    }

    /// `None` when the value is not a meta value this build wrote (wrong size or checksum).
    pub fn decode(v: &[u8]) -> Option<Meta> {
        let v: &[u8; Meta::LEN] = v.try_into().ok()?;
        let [a, b, c] = [&v[..8], &v[8..16], &v[16..]];
        let crc = u32::from_be_bytes(c.try_into().ok()?);
        if crc32fast::hash(&v[..16]) != crc {
            return None;
        }
        Some(Meta {
            next_seq: Seq(u64::from_be_bytes(a.try_into().ok()?)),
            acked: Seq(u64::from_be_bytes(b.try_into().ok()?)),
        })
    }
}

/// What the buffer holds, kept in memory so that `stats()`, `next_seq()` and `acked()` never touch
/// the disk. Recomputed from the data at open, then changed only by the writer that committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub meta: Meta,
    pub events: u64,
    /// Sum of the stored value sizes (header included), as [`StoredRecord::encoded_len`].
    pub live_bytes: u64,
    pub oldest: Option<Oldest>,
}

impl Default for Meta {
    fn default() -> Meta {
        Meta {
            next_seq: Seq::FIRST,
            acked: Seq::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Oldest {
    pub seq: Seq,
    /// `None` if the oldest record's value no longer decodes (damaged while running).
    pub received_ms: Option<i64>,
}

impl Oldest {
    pub fn of(k: &[u8], v: &[u8]) -> Option<Oldest> {
        let seq = seq_of(k)?;
        Some(Oldest {
            seq,
            received_ms: StoredRecord::decode_value(seq, v)
                .ok()
                .map(|r| r.received_ms),
        })
    }
}

impl Tally {
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            events: self.events,
            live_bytes: self.live_bytes,
            oldest_seq: self.oldest.map(|o| o.seq),
            oldest_received_ms: self.oldest.and_then(|o| o.received_ms),
        }
    }

    /// Checks that `records` may be appended after what is held; returns their total size.
    pub fn check_append(&self, records: &[StoredRecord]) -> Result<u64, BufferError> {
        let mut expected = self.meta.next_seq;
        let mut bytes = 0;
        for r in records {
            if r.seq < expected {
                return Err(BufferError::OutOfOrder {
                    got: r.seq,
                    expected,
                });
            }
            expected = r.seq.next();
            bytes += r.encoded_len();
        }
        Ok(bytes)
    }

    /// The tally after deleting `removed`; `oldest` is left for the engine to look up.
    pub fn removed(mut self, removed: &Removed) -> Tally {
        self.events -= removed.seqs.len() as u64;
        self.live_bytes -= removed.bytes;
        self
    }

    /// The tally after appending `records` (already checked) of `bytes` in total.
    pub fn appended(mut self, records: &[StoredRecord], bytes: u64) -> Tally {
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            self.meta.next_seq = last.seq.next();
            self.events += records.len() as u64;
            self.live_bytes += bytes;
            if self.oldest.is_none() {
                self.oldest = Some(Oldest {
                    seq: first.seq,
                    received_ms: Some(first.received_ms),
                });
            }
        }
        self
    }
}

/// The seq a key stands for, if it is a well-formed (8-byte) key.
pub(super) fn seq_of(k: &[u8]) -> Option<Seq> {
    Some(Seq(u64::from_be_bytes(k.try_into().ok()?)))
}

/// The start-up scan over every stored record, shared by both engines.
#[derive(Debug, Default)]
pub(super) struct OpenScan {
    tally: Tally,
    min_key: Option<Seq>,
    max_key: Option<Seq>,
    corrupt: Vec<Seq>,
    /// Keys to delete at open: keys that are not seqs at all. (Damaged records are not deleted
    /// here but by the commit that declares them, see [`OpenReport::corrupt`].)
    pub remove: Vec<Vec<u8>>,
}

impl OpenScan {
    /// Looks at one stored pair, in key order.
    pub fn add(&mut self, k: &[u8], v: &[u8]) {
        let Some(seq) = seq_of(k) else {
            tracing::warn!(key = ?k, "buffer holds a key that is not a sequence number; removing it");
            self.remove.push(k.to_vec());
            return;
        };
        // Damaged records still had their seq assigned: next_seq must stay above them, and
        // they were not acked either. They are held (and counted) until they are declared.
        self.min_key = Some(self.min_key.map_or(seq, |m| m.min(seq)));
        self.max_key = Some(self.max_key.map_or(seq, |m| m.max(seq)));
        self.tally.events += 1;
        self.tally.live_bytes += v.len() as u64;
        let decoded = StoredRecord::decode_value(seq, v);
        if self.tally.oldest.is_none() {
            self.tally.oldest = Some(Oldest {
                seq,
                received_ms: decoded.as_ref().ok().map(|r| r.received_ms),
            });
        }
        if let Err(e) = decoded {
            tracing::warn!(%seq, error = %e, "buffered record is damaged; it is reported, then removed in the commit that declares it as a gap");
            self.corrupt.push(seq);
        }
    }

    /// The tally to run with, the meta to persist if it differs from `stored`, and the report.
    /// A missing or damaged meta is derived from the keys, and never lowers a stored next_seq.
    pub fn finish(mut self, stored: Option<&[u8]>) -> (Tally, Option<Meta>, OpenReport) {
        let stored_meta = stored.and_then(Meta::decode);
        if stored.is_some() && stored_meta.is_none() {
            tracing::warn!(
                "buffer meta (next seq, acked) is damaged; deriving it from the records held"
            );
        }
        let above_keys = self.max_key.map_or(Seq::FIRST, Seq::next);
        let meta = match stored_meta {
            Some(m) => Meta {
                next_seq: m.next_seq.max(above_keys),
                acked: m.acked,
            },
            None => Meta {
                next_seq: above_keys,
                acked: self.min_key.map_or(Seq::ZERO, |k| Seq(k.0 - 1)),
            },
        };
        self.tally.meta = meta;
        self.corrupt.sort();
        let write = (stored_meta != Some(meta)).then_some(meta);
        (
            self.tally,
            write,
            OpenReport {
                corrupt: self.corrupt,
            },
        )
    }
}

/// A poisoned lock only means another thread panicked mid-operation; every write is one engine
/// commit that either happened or did not, so the state behind the lock is still consistent.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn storage_error(path: &Path, what: &str, e: impl Display) -> BufferError {
    BufferError::Storage {
        path: path.display().to_string(),
        detail: format!("{what}: {e}"),
    }
}

pub struct RedbBuffer {
    path: PathBuf,
    /// Readers and writers share the database; `compact` (which needs `&mut`) takes it alone.
    db: RwLock<Database>,
    /// Serialises writers so the tally they update matches the order of their commits.
    writer: Mutex<()>,
    /// Only written by the holder of `writer`, after its commit; read by anyone, briefly.
    tally: Mutex<Tally>,
}

/// redb page cache size (see `open`).
const CACHE_BYTES: usize = 4 << 20;

/// The tables of one write transaction.
struct Tables<'t> {
    records: redb::Table<'t, &'static [u8], &'static [u8]>,
    meta: redb::Table<'t, &'static str, &'static [u8]>,
    ids: redb::Table<'t, &'static [u8], ()>,
}

impl RedbBuffer {
    /// Opens (or creates) `<dir>/buffer.redb` and reports damaged records (still held: see
    /// [`OpenReport::corrupt`]).
    pub fn open(dir: &Path) -> Result<(RedbBuffer, OpenReport), BufferError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage_error(dir, "creating the buffer directory", e))?;
        let path = dir.join(FILE_NAME);
        // redb's default page cache is 1 GiB and fills with everything written: an agent holding
        // a million-event backlog grew to ~280 MiB. The buffer is written once and read once
        // (in order), so a small cache costs nothing in speed and keeps a gateway's RSS small.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| storage_error(&path, "opening the redb database (if it is damaged beyond repair, keep it for analysis: a new, empty buffer would number events from 1 again, which the hub takes for duplicates)", e))?;
        let err = |what: &str, e: &dyn Display| storage_error(&path, what, e);

        let mut scan = OpenScan::default();
        let txn = db
            .begin_write()
            .map_err(|e| err("starting the start-up transaction", &e))?;
        let stored_meta = {
            let records = txn
                .open_table(RECORDS)
                .map_err(|e| err("opening the records table", &e))?;
            for item in records
                .range::<&[u8]>(..)
                .map_err(|e| err("scanning records", &e))?
            {
                let (k, v) = item.map_err(|e| err("scanning records", &e))?;
                scan.add(k.value(), v.value());
            }
            let meta = txn
                .open_table(META)
                .map_err(|e| err("opening the meta table", &e))?;
            let stored = meta.get(META_KEY).map_err(|e| err("reading meta", &e))?;
            stored.map(|g| g.value().to_vec())
        };
        let remove = std::mem::take(&mut scan.remove);
        let (tally, write_meta, report) = scan.finish(stored_meta.as_deref());
        if remove.is_empty() && write_meta.is_none() {
            txn.abort()
                .map_err(|e| err("ending the start-up transaction", &e))?;
        } else {
            {
                let mut records = txn
                    .open_table(RECORDS)
                    .map_err(|e| err("opening the records table", &e))?;
                for k in &remove {
                    records
                        .remove(k.as_slice())
                        .map_err(|e| err("removing a key that is not a sequence number", &e))?;
                }
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| err("opening the meta table", &e))?;
                meta.insert(META_KEY, tally.meta.encode().as_slice())
                    .map_err(|e| err("writing meta", &e))?;
            }
            txn.commit()
                .map_err(|e| err("committing the start-up repair", &e))?;
        }
        tracing::info!(
            path = %path.display(),
            events = tally.events,
            next_seq = %tally.meta.next_seq,
            acked = %tally.meta.acked,
            corrupt = report.corrupt.len(),
            "opened redb buffer"
        );
        Ok((
            RedbBuffer {
                path,
                db: RwLock::new(db),
                writer: Mutex::new(()),
                tally: Mutex::new(tally),
            },
            report,
        ))
    }

    fn err(&self, what: &str, e: impl Display) -> BufferError {
        storage_error(&self.path, what, e)
    }

    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    fn tally(&self) -> Tally {
        *lock(&self.tally)
    }

    /// Runs one durable write transaction over the tables; `f` returns the new tally, published
    /// only once the commit succeeded, or `None` when it changed nothing (the transaction is
    /// then aborted: no fsync for nothing).
    fn write<R>(
        &self,
        f: impl FnOnce(&mut Tables<'_>, Tally) -> Result<(Option<Tally>, R), BufferError>,
    ) -> Result<R, BufferError> {
        let _w = lock(&self.writer);
        let before = self.tally();
        let db = self.db();
        let mut txn = db
            .begin_write()
            .map_err(|e| self.err("starting a write transaction", e))?;
        txn.set_durability(Durability::Immediate);
        let (after, out) = {
            let mut tables = Tables {
                records: txn
                    .open_table(RECORDS)
                    .map_err(|e| self.err("opening the records table", e))?,
                meta: txn
                    .open_table(META)
                    .map_err(|e| self.err("opening the meta table", e))?,
                ids: txn
                    .open_table(IDS)
                    .map_err(|e| self.err("opening the device message id table", e))?,
            };
            f(&mut tables, before)?
        };
        match after {
            Some(after) => {
                txn.commit().map_err(|e| self.err("committing", e))?;
                *lock(&self.tally) = after;
            }
            None => txn
                .abort()
                .map_err(|e| self.err("ending an empty transaction", e))?,
        }
        Ok(out)
    }

    /// Test hook: overwrites the stored value of `seq` with `bad`, through redb itself, as disk
    /// damage would. Returns whether the record existed.
    #[cfg(test)]
    pub(crate) fn damage(&self, seq: Seq, bad: &[u8]) -> Result<bool, BufferError> {
        self.write(|tables, mut t| {
            let k = record::key(seq);
            let old = tables
                .records
                .get(k.as_slice())
                .map_err(|e| self.err("reading a record", e))?
                .map(|g| g.value().len() as u64);
            let Some(old) = old else {
                return Ok((None, false));
            };
            tables
                .records
                .insert(k.as_slice(), bad)
                .map_err(|e| self.err("damaging a record", e))?;
            t.live_bytes = t.live_bytes - old + bad.len() as u64;
            t.oldest =
                first_of(&tables.records).map_err(|e| self.err("reading the oldest record", e))?;
            Ok((Some(t), true))
        })
    }

    /// Test hook: overwrites the meta value with bytes that are not a meta value.
    #[cfg(test)]
    pub(crate) fn damage_meta(&self) -> Result<(), BufferError> {
        self.write(|tables, t| {
            tables
                .meta
                .insert(META_KEY, b"damaged".as_slice())
                .map_err(|e| self.err("damaging meta", e))?;
            Ok((Some(t), ()))
        })
    }
}

fn first_of(records: &redb::Table<&[u8], &[u8]>) -> Result<Option<Oldest>, redb::StorageError> {
    Ok(records
        .first()?
        .and_then(|(k, v)| Oldest::of(k.value(), v.value())))
}

impl Buffer for RedbBuffer {
    fn next_seq(&self) -> Seq {
        self.tally().meta.next_seq
    }

    fn acked(&self) -> Seq {
        self.tally().meta.acked
    }

    fn read_from(
        &self,
        from: Seq,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BufferError> {
        let db = self.db();
        let txn = db
            .begin_read()
            .map_err(|e| self.err("starting a read transaction", e))?;
        let records = txn
            .open_table(RECORDS)
            .map_err(|e| self.err("opening the records table", e))?;
        let start = record::key(from);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in records
            .range::<&[u8]>(start.as_slice()..)
            .map_err(|e| self.err("reading records", e))?
        {
            if out.len() >= max_events {
                break;
            }
            let (k, v) = item.map_err(|e| self.err("reading records", e))?;
            let r = decode_live(&self.path, k.value(), v.value())?;
            if !out.is_empty() && bytes + r.payload.len() > max_bytes {
                break;
            }
            bytes += r.payload.len();
            out.push(r);
        }
        Ok(out)
    }

    fn ack_through(&self, through: Seq) -> Result<u64, BufferError> {
        if through <= self.acked() {
            return Ok(0);
        }
        self.write(|tables, mut t| {
            // Keys first, then one `remove` each: redb 2.6's `retain_in` / `extract_from_if`
            // grew the file eightfold when deleting 20k records (measured), `remove` does not.
            let end = record::key(through);
            let mut keys = Vec::new();
            for item in tables
                .records
                .range::<&[u8]>(..=end.as_slice())
                .map_err(|e| self.err("finding acked records", e))?
            {
                let (k, _) = item.map_err(|e| self.err("finding acked records", e))?;
                keys.push(k.value().to_vec());
            }
            let (mut n, mut bytes) = (0u64, 0u64);
            for k in &keys {
                let removed = tables
                    .records
                    .remove(k.as_slice())
                    .map_err(|e| self.err("deleting acked records", e))?;
                if let Some(v) = removed {
                    n += 1;
                    bytes += v.value().len() as u64;
                }
            }
            t.meta.acked = through;
            t.events -= n;
            t.live_bytes -= bytes;
            t.oldest =
                first_of(&tables.records).map_err(|e| self.err("reading the oldest record", e))?;
            tables
                .meta
                .insert(META_KEY, t.meta.encode().as_slice())
                .map_err(|e| self.err("writing meta", e))?;
            Ok((Some(t), n))
        })
    }

    fn stats(&self) -> BufferStats {
        self.tally().stats()
    }

    fn disk_bytes(&self) -> u64 {
        match std::fs::metadata(&self.path) {
            Ok(m) => allocated(&m),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot stat the buffer file");
                0
            }
        }
    }

    fn compact(&self) -> Result<bool, BufferError> {
        // Exclusive: redb refuses to compact while any transaction is live, and compaction is
        // rare (the intake runs it with hysteresis), so holding off readers for it is acceptable.
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        db.compact().map_err(|e| self.err("compacting", e))
    }
}

impl IntakeStore for RedbBuffer {
    fn commit(
        &self,
        remove: Remove<'_>,
        append: &mut dyn FnMut(&Removed) -> Append,
    ) -> Result<Removed, BufferError> {
        self.write(|tables, t| {
            let removed = match remove {
                Remove::Nothing => Removed::default(),
                Remove::Oldest { droppable, bytes } => {
                    let mut victims = Removed::default();
                    for item in tables
                        .records
                        .range::<&[u8]>(..)
                        .map_err(|e| self.err("scanning for eviction", e))?
                    {
                        if victims.bytes >= bytes {
                            break;
                        }
                        let (k, v) = item.map_err(|e| self.err("scanning for eviction", e))?;
                        if let Some((seq, len)) = evictable(k.value(), v.value(), droppable) {
                            victims.seqs.push(seq);
                            victims.bytes += len;
                        }
                    }
                    for s in &victims.seqs {
                        tables
                            .records
                            .remove(record::key(*s).as_slice())
                            .map_err(|e| self.err("evicting a record", e))?;
                    }
                    victims
                }
                Remove::Seqs(seqs) => {
                    let mut gone = Removed::default();
                    for s in seqs {
                        let held = tables
                            .records
                            .remove(record::key(*s).as_slice())
                            .map_err(|e| self.err("removing a damaged record", e))?
                            .map(|v| v.value().len() as u64);
                        if let Some(len) = held {
                            gone.seqs.push(*s);
                            gone.bytes += len;
                        }
                    }
                    gone.seqs.sort_unstable();
                    gone
                }
            };
            let add = append(&removed);
            if removed.seqs.is_empty() && add.records.is_empty() && add.ids.is_empty() {
                return Ok((None, removed));
            }
            let added = t.check_append(&add.records)?;
            for r in &add.records {
                tables
                    .records
                    .insert(record::key(r.seq).as_slice(), r.encode_value().as_slice())
                    .map_err(|e| self.err("appending a record", e))?;
            }
            for id in &add.ids {
                tables
                    .ids
                    .insert(id.encode().as_slice(), ())
                    .map_err(|e| self.err("storing a device message id", e))?;
            }
            let mut after = t.removed(&removed).appended(&add.records, added);
            if !removed.seqs.is_empty() {
                after.oldest = first_of(&tables.records)
                    .map_err(|e| self.err("reading the oldest record", e))?;
            }
            if after.meta != t.meta {
                tables
                    .meta
                    .insert(META_KEY, after.meta.encode().as_slice())
                    .map_err(|e| self.err("writing meta", e))?;
            }
            Ok((Some(after), removed))
        })
    }

    fn recent_ids(&self, since_ms: i64) -> Result<Vec<DedupEntry>, BufferError> {
        let db = self.db();
        let txn = db
            .begin_read()
            .map_err(|e| self.err("starting a read transaction", e))?;
        let ids = match txn.open_table(IDS) {
            Ok(t) => t,
            // A buffer no id was ever stored in (the table is made by the first write).
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err("opening the device message id table", e)),
        };
        let from = dedup_ids::time_prefix(since_ms);
        let mut out = Vec::new();
        for item in ids
            .range::<&[u8]>(from.as_slice()..)
            .map_err(|e| self.err("reading device message ids", e))?
        {
            let (k, _) = item.map_err(|e| self.err("reading device message ids", e))?;
            match DedupEntry::decode(k.value()) {
                Some(e) => out.push(e),
                None => {
                    tracing::warn!(key = ?k.value(), "stored device message id is damaged; skipping it (it is pruned with its age)");
                }
            }
        }
        Ok(out)
    }

    fn prune_ids(&self, before_ms: i64) -> Result<u64, BufferError> {
        self.write(|tables, t| {
            let end = dedup_ids::time_prefix(before_ms);
            // Keys first, then one `remove` each, as in `ack_through` and for the same reason.
            let mut keys = Vec::new();
            for item in tables
                .ids
                .range::<&[u8]>(..end.as_slice())
                .map_err(|e| self.err("finding old device message ids", e))?
            {
                let (k, _) = item.map_err(|e| self.err("finding old device message ids", e))?;
                keys.push(k.value().to_vec());
            }
            for k in &keys {
                tables
                    .ids
                    .remove(k.as_slice())
                    .map_err(|e| self.err("pruning device message ids", e))?;
            }
            let n = keys.len() as u64;
            Ok(((n > 0).then_some(t), n))
        })
    }
}

/// The space a file takes on the file system (its allocated blocks, as `du` counts), not its
/// apparent length: redb extends its file ahead of use with a sparse tail (measured: 34 MB long,
/// 19 MB allocated, holding 8.6 MB of records), which takes no space until written.
pub(super) fn allocated(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks() * 512
}

/// Decodes a record for reading; a record damaged while the agent runs is an error (naming
/// it) rather than silently skipped, so nothing is sent around a hole the hub is not told of.
pub(super) fn decode_live(path: &Path, k: &[u8], v: &[u8]) -> Result<StoredRecord, BufferError> {
    let seq = seq_of(k).ok_or_else(|| {
        storage_error(
            path,
            "reading records",
            format!("key {k:?} is not a sequence number"),
        )
    })?;
    StoredRecord::decode_value(seq, v).map_err(|e| {
        storage_error(
            path,
            "reading records",
            format!("record seq {seq} is damaged ({e}); restart the agent to remove it and report it as a gap"),
        )
    })
}

/// The seq and size of a record if eviction may take it: intact and of a droppable class. Damaged
/// records are left for the next start-up, which reports them as corrupt rather than evicted.
pub(super) fn evictable(
    k: &[u8],
    v: &[u8],
    droppable: &dyn Fn(EventClass) -> bool,
) -> Option<(Seq, u64)> {
    let seq = seq_of(k)?;
    let r = StoredRecord::decode_value(seq, v).ok()?;
    droppable(r.class).then(|| (seq, r.encoded_len()))
}
