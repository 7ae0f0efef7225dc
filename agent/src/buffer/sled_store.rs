//! sled-backed buffer, the alternative engine: a sled database in `<dir>/sled/`, every write
//! one `apply_batch` followed by a `flush` (sled's only durability point).
//!
//! Known limits, measured on the target machine: ~74k events/s durable, and sled never gives file
//! space back (its files stay at their high-water mark after the buffer drains), so `compact`
//! does nothing and the on-disk size bound can only be held as a high-water mark. Prefer redb.

use super::redb_store::{
    allocated, decode_live, evictable, lock, storage_error, Oldest, OpenScan, Tally,
};
use super::{
    dedup_ids, record, Append, Buffer, BufferError, BufferStats, DedupEntry, IntakeStore,
    OpenReport, Remove, Removed, StoredRecord,
};
use qyt_proto::Seq;
use std::fmt::Display;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The directory of the sled engine inside the buffer directory.
pub const DIR_NAME: &str = "sled";

/// The meta value lives in the records tree itself, so that it is written by the same
/// `apply_batch` as the records (sled batches are atomic per tree only). The empty key sorts
/// before every 8-byte seq key, so no seq range ever meets it.
const META_KEY: &[u8] = b"";

/// The smallest seq key: every record range starts here, which skips the meta key.
const FIRST_KEY: [u8; 8] = [0; 8];

/// The largest seq key: every record range ends here, which skips the device message ids.
const LAST_KEY: [u8; 8] = [0xFF; 8];

/// Device message ids live in the records tree too, so that they are written by the same
/// `apply_batch` as their events: under `LAST_KEY` followed by [`DedupEntry::encode`]. Such a
/// key is longer than `LAST_KEY` with it as prefix, so it sorts after every seq key.
fn id_key(encoded: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(LAST_KEY.len() + encoded.len());
    k.extend_from_slice(&LAST_KEY);
    k.extend_from_slice(encoded);
    k
}

pub struct SledBuffer {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    /// Serialises writers so the tally they update matches the order of their commits.
    writer: Mutex<()>,
    /// Only written by the holder of `writer`, after its flush; read by anyone, briefly.
    tally: Mutex<Tally>,
}

impl SledBuffer {
    /// Opens (or creates) `<dir>/sled/` and reports damaged records (still held: see
    /// [`OpenReport::corrupt`]).
    pub fn open(dir: &Path) -> Result<(SledBuffer, OpenReport), BufferError> {
        let dir = dir.join(DIR_NAME);
        let err = |what: &str, e: &dyn Display| storage_error(&dir, what, e);
        let db = open_db(&dir).map_err(|e| {
            if is_lock_error(&e) {
                err("opening the sled database: another process holds it (is a second agent running on this buffer directory?)", &e)
            } else {
                err("opening the sled database (if it is damaged beyond repair, keep it for analysis: a new, empty buffer would number events from 1 again, which the hub takes for duplicates)", &e)
            }
        })?;
        let records = db
            .open_tree("records")
            .map_err(|e| err("opening the records tree", &e))?;

        let mut scan = OpenScan::default();
        for item in records.range(FIRST_KEY..=LAST_KEY) {
            let (k, v) = item.map_err(|e| err("scanning records", &e))?;
            scan.add(&k, &v);
        }
        let stored = records.get(META_KEY).map_err(|e| err("reading meta", &e))?;
        let remove = std::mem::take(&mut scan.remove);
        let (tally, write_meta, report) = scan.finish(stored.as_deref());
        if !remove.is_empty() || write_meta.is_some() {
            let mut batch = sled::Batch::default();
            for k in remove {
                batch.remove(k);
            }
            batch.insert(META_KEY, tally.meta.encode().as_slice());
            records
                .apply_batch(batch)
                .map_err(|e| err("committing the start-up repair", &e))?;
            db.flush()
                .map_err(|e| err("flushing the start-up repair", &e))?;
        }
        tracing::info!(
            path = %dir.display(),
            events = tally.events,
            next_seq = %tally.meta.next_seq,
            acked = %tally.meta.acked,
            corrupt = report.corrupt.len(),
            "opened sled buffer"
        );
        Ok((
            SledBuffer {
                dir,
                db,
                records,
                writer: Mutex::new(()),
                tally: Mutex::new(tally),
            },
            report,
        ))
    }

    fn err(&self, what: &str, e: impl Display) -> BufferError {
        storage_error(&self.dir, what, e)
    }

    fn tally(&self) -> Tally {
        *lock(&self.tally)
    }

    /// Applies `batch` atomically and durably.
    fn apply(&self, batch: sled::Batch) -> Result<(), BufferError> {
        self.records
            .apply_batch(batch)
            .map_err(|e| self.err("committing", e))?;
        self.db
            .flush()
            .map_err(|e| self.err("flushing to disk", e))?;
        Ok(())
    }

    /// The oldest record held, as seen after a commit.
    fn oldest(&self) -> Result<Option<Oldest>, BufferError> {
        match self.records.range(FIRST_KEY..=LAST_KEY).next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item.map_err(|e| self.err("reading the oldest record", e))?;
                Ok(Oldest::of(&k, &v))
            }
        }
    }

    /// Test hook: overwrites the stored value of `seq` with `bad`, through sled itself, as disk
    /// damage would. Returns whether the record existed.
    #[cfg(test)]
    pub(crate) fn damage(&self, seq: Seq, bad: &[u8]) -> Result<bool, BufferError> {
        let _w = lock(&self.writer);
        let k = record::key(seq);
        let Some(old) = self
            .records
            .get(k)
            .map_err(|e| self.err("reading a record", e))?
        else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        batch.insert(&k, bad);
        self.apply(batch)?;
        let mut t = self.tally();
        t.live_bytes = t.live_bytes - old.len() as u64 + bad.len() as u64;
        t.oldest = self.oldest()?;
        *lock(&self.tally) = t;
        Ok(true)
    }

    /// Test hook: overwrites the meta value with bytes that are not a meta value.
    #[cfg(test)]
    pub(crate) fn damage_meta(&self) -> Result<(), BufferError> {
        let _w = lock(&self.writer);
        let mut batch = sled::Batch::default();
        batch.insert(META_KEY, b"damaged".as_slice());
        self.apply(batch)
    }
}

impl Buffer for SledBuffer {
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
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self.records.range(record::key(from)..=LAST_KEY) {
            if out.len() >= max_events {
                break;
            }
            let (k, v) = item.map_err(|e| self.err("reading records", e))?;
            let r = decode_live(&self.dir, &k, &v)?;
            if !out.is_empty() && bytes + r.payload.len() > max_bytes {
                break;
            }
            bytes += r.payload.len();
            out.push(r);
        }
        Ok(out)
    }

    fn ack_through(&self, through: Seq) -> Result<u64, BufferError> {
        let _w = lock(&self.writer);
        let mut t = self.tally();
        if through <= t.meta.acked {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        let (mut n, mut bytes) = (0u64, 0u64);
        for item in self.records.range(FIRST_KEY..=record::key(through)) {
            let (k, v) = item.map_err(|e| self.err("finding acked records", e))?;
            n += 1;
            bytes += v.len() as u64;
            batch.remove(k);
        }
        t.meta.acked = through;
        batch.insert(META_KEY, t.meta.encode().as_slice());
        self.apply(batch)?;
        t.events -= n;
        t.live_bytes -= bytes;
        t.oldest = self.oldest()?;
        *lock(&self.tally) = t;
        Ok(n)
    }

    fn stats(&self) -> BufferStats {
        self.tally().stats()
    }

    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }

    /// sled 0.34 cannot give file space back; its freed space is reused by later writes.
    fn compact(&self) -> Result<bool, BufferError> {
        Ok(false)
    }
}

impl IntakeStore for SledBuffer {
    fn commit(
        &self,
        remove: Remove<'_>,
        append: &mut dyn FnMut(&Removed) -> Append,
    ) -> Result<Removed, BufferError> {
        let _w = lock(&self.writer);
        let t = self.tally();
        let mut batch = sled::Batch::default();
        let mut removed = Removed::default();
        match remove {
            Remove::Nothing => {}
            Remove::Oldest { droppable, bytes } => {
                for item in self.records.range(FIRST_KEY..=LAST_KEY) {
                    if removed.bytes >= bytes {
                        break;
                    }
                    let (k, v) = item.map_err(|e| self.err("scanning for eviction", e))?;
                    if let Some((seq, len)) = evictable(&k, &v, droppable) {
                        removed.seqs.push(seq);
                        removed.bytes += len;
                        batch.remove(k);
                    }
                }
            }
            Remove::Seqs(seqs) => {
                // Sorted and deduplicated: the batch is applied only at the end, so a seq
                // listed twice would otherwise be counted twice.
                let mut seqs = seqs.to_vec();
                seqs.sort_unstable();
                seqs.dedup();
                for s in seqs {
                    let k = record::key(s);
                    let held = self
                        .records
                        .get(k)
                        .map_err(|e| self.err("reading a damaged record", e))?;
                    if let Some(v) = held {
                        removed.seqs.push(s);
                        removed.bytes += v.len() as u64;
                        batch.remove(&k);
                    }
                }
            }
        }
        let add = append(&removed);
        if removed.seqs.is_empty() && add.records.is_empty() && add.ids.is_empty() {
            return Ok(removed);
        }
        let added = t.check_append(&add.records)?;
        for r in &add.records {
            batch.insert(&record::key(r.seq), r.encode_value());
        }
        for id in &add.ids {
            batch.insert(id_key(&id.encode()), &[] as &[u8]);
        }
        let mut after = t.removed(&removed).appended(&add.records, added);
        if after.meta != t.meta {
            batch.insert(META_KEY, after.meta.encode().as_slice());
        }
        self.apply(batch)?;
        if !removed.seqs.is_empty() {
            after.oldest = self.oldest()?;
        }
        *lock(&self.tally) = after;
        Ok(removed)
    }

    fn recent_ids(&self, since_ms: i64) -> Result<Vec<DedupEntry>, BufferError> {
        let mut out = Vec::new();
        for item in self
            .records
            .range(id_key(&dedup_ids::time_prefix(since_ms))..)
        {
            let (k, _) = item.map_err(|e| self.err("reading device message ids", e))?;
            match k.get(LAST_KEY.len()..).and_then(DedupEntry::decode) {
                Some(e) => out.push(e),
                None => {
                    tracing::warn!(key = ?k, "stored device message id is damaged; skipping it (it is pruned with its age)");
                }
            }
        }
        Ok(out)
    }

    fn prune_ids(&self, before_ms: i64) -> Result<u64, BufferError> {
        let _w = lock(&self.writer);
        let end = id_key(&dedup_ids::time_prefix(before_ms));
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self
            .records
            .range((Bound::Excluded(LAST_KEY.to_vec()), Bound::Excluded(end)))
        {
            let (k, _) = item.map_err(|e| self.err("finding old device message ids", e))?;
            batch.remove(k);
            n += 1;
        }
        if n > 0 {
            self.apply(batch)?;
        }
        Ok(n)
    }
}

/// How long an open waits for sled's file lock. sled releases it only once its background
/// threads let go of the database, a moment after the last handle was dropped (sled issues #1234
/// and #1289), so an open right after a close in the same process can find it still held. A lock
/// held by another process still fails after this.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_db(dir: &Path) -> sled::Result<sled::Db> {
    // Every commit flushes itself, so sled's background flusher would only add fsyncs.
    let cfg = sled::Config::new().path(dir).flush_every_ms(None);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match cfg.open() {
            Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// sled reports a held lock as an `Other` I/O error, recognisable only by its message.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Total size of the files under `dir` (sled keeps several: config, the log, snapshots, blobs).
fn dir_bytes(dir: &Path) -> u64 {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot list the buffer directory");
            return 0;
        }
    };
    let mut total = 0;
    for entry in entries.flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&entry.path()),
            Ok(m) => total += allocated(&m),
            // A snapshot file sled removed between listing and stat: it no longer takes space.
            Err(_) => {}
        }
    }
    total
}
