//! One model-based suite for every [`IntakeStore`] engine: random sequences of operations
//! (appends with device message ids, evictions that append in the same commit, removal of
//! damaged records, id queries and pruning), restarts and damage, each compared with a plain
//! `BTreeMap` model after every step.

use super::redb_store::RedbBuffer;
use super::sled_store::SledBuffer;
use super::{
    Append, Buffer, BufferError, BufferStats, DedupEntry, IntakeStore, OpenReport, Remove, Removed,
    StoredRecord,
};
use proptest::prelude::*;
use qyt_proto::{EventClass, Seq};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What the suite needs from an engine beyond the trait: opening and test-only damage.
pub(crate) trait TestEngine: IntakeStore + Sized {
    fn open(dir: &Path) -> Result<(Self, OpenReport), BufferError>;
    fn damage(&self, seq: Seq, bad: &[u8]) -> Result<bool, BufferError>;
    fn damage_meta(&self) -> Result<(), BufferError>;
}

impl TestEngine for RedbBuffer {
    fn open(dir: &Path) -> Result<(Self, OpenReport), BufferError> {
        RedbBuffer::open(dir)
    }
    fn damage(&self, seq: Seq, bad: &[u8]) -> Result<bool, BufferError> {
        RedbBuffer::damage(self, seq, bad)
    }
    fn damage_meta(&self) -> Result<(), BufferError> {
        RedbBuffer::damage_meta(self)
    }
}

impl TestEngine for SledBuffer {
    fn open(dir: &Path) -> Result<(Self, OpenReport), BufferError> {
        SledBuffer::open(dir)
    }
    fn damage(&self, seq: Seq, bad: &[u8]) -> Result<bool, BufferError> {
        SledBuffer::damage(self, seq, bad)
    }
    fn damage_meta(&self) -> Result<(), BufferError> {
        SledBuffer::damage_meta(self)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    rec: StoredRecord,
    /// Size of the stored value (differs from the record's once damaged).
    stored_len: u64,
    damaged: bool,
}

#[derive(Debug, Clone)]
struct Model {
    records: BTreeMap<u64, Entry>,
    next_seq: u64,
    acked: u64,
    /// Device message ids, in the engines' order (time, then key).
    ids: BTreeSet<DedupEntry>,
}

impl Model {
    fn new() -> Model {
        Model {
            records: BTreeMap::new(),
            next_seq: 1,
            acked: 0,
            ids: BTreeSet::new(),
        }
    }

    fn stats(&self) -> BufferStats {
        let first = self.records.values().next();
        BufferStats {
            events: self.records.len() as u64,
            live_bytes: self.records.values().map(|e| e.stored_len).sum(),
            oldest_seq: first.map(|e| e.rec.seq),
            oldest_received_ms: first.filter(|e| !e.damaged).map(|e| e.rec.received_ms),
        }
    }

    /// Appends records and ids together, or (records out of order) neither.
    fn append(&mut self, recs: &[StoredRecord], ids: &[DedupEntry]) -> Result<(), ()> {
        let mut expected = self.next_seq;
        for r in recs {
            if r.seq.0 < expected {
                return Err(());
            }
            expected = r.seq.0 + 1;
        }
        for r in recs {
            self.records.insert(
                r.seq.0,
                Entry {
                    rec: r.clone(),
                    stored_len: r.encoded_len(),
                    damaged: false,
                },
            );
        }
        if let Some(last) = recs.last() {
            self.next_seq = last.seq.0 + 1;
        }
        self.ids.extend(ids.iter().cloned());
        Ok(())
    }

    /// `None` where the engine must fail (a damaged record in the way).
    fn read_from(
        &self,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<Vec<StoredRecord>> {
        let mut out: Vec<StoredRecord> = Vec::new();
        let mut bytes = 0;
        for e in self.records.range(from..).map(|(_, e)| e) {
            if out.len() >= max_events {
                break;
            }
            if e.damaged {
                return None;
            }
            if !out.is_empty() && bytes + e.rec.payload.len() > max_bytes {
                break;
            }
            bytes += e.rec.payload.len();
            out.push(e.rec.clone());
        }
        Some(out)
    }

    /// Deletes records only: ids stay until pruned.
    fn ack_through(&mut self, through: u64) -> u64 {
        if through <= self.acked {
            return 0;
        }
        let keep = self.records.split_off(&(through + 1));
        let n = self.records.len() as u64;
        self.records = keep;
        self.acked = through;
        n
    }

    fn evict(&mut self, droppable: impl Fn(EventClass) -> bool, bytes: u64) -> Removed {
        let mut out = Removed::default();
        for e in self.records.values() {
            if out.bytes >= bytes {
                break;
            }
            if !e.damaged && droppable(e.rec.class) {
                out.bytes += e.rec.encoded_len();
                out.seqs.push(e.rec.seq);
            }
        }
        for s in &out.seqs {
            self.records.remove(&s.0);
        }
        out
    }

    fn remove_seqs(&mut self, seqs: &[Seq]) -> Removed {
        let mut out = Removed::default();
        for s in seqs.iter().collect::<BTreeSet<_>>() {
            if let Some(e) = self.records.remove(&s.0) {
                out.seqs.push(*s);
                out.bytes += e.stored_len;
            }
        }
        out
    }

    fn damaged(&self) -> Vec<Seq> {
        self.records
            .iter()
            .filter(|(_, e)| e.damaged)
            .map(|(k, _)| Seq(*k))
            .collect()
    }

    fn recent_ids(&self, since_ms: i64) -> Vec<DedupEntry> {
        self.ids
            .iter()
            .filter(|e| e.accepted_ms >= since_ms)
            .cloned()
            .collect()
    }

    fn prune_ids(&mut self, before_ms: i64) -> u64 {
        let before = self.ids.len();
        self.ids.retain(|e| e.accepted_ms >= before_ms);
        (before - self.ids.len()) as u64
    }
}

/// Records to append: from `skip` above `next_seq`, each `gap` (the second field) above the
/// previous.
type RecSpec = Vec<(u8, u64, i64, Vec<u8>)>;

fn records(next_seq: u64, skip: u64, spec: &RecSpec) -> Vec<StoredRecord> {
    let mut seq = next_seq + skip;
    spec.iter()
        .map(|(class, gap, received_ms, payload)| {
            seq += gap;
            let r = StoredRecord {
                seq: Seq(seq),
                class: EventClass::ALL[*class as usize % EventClass::ALL.len()],
                received_ms: *received_ms,
                payload: payload.clone(),
            };
            seq += 1;
            r
        })
        .collect()
}

/// A record declaring `removed`, as the intake's gap events do.
fn declaring(seq: u64, removed: &Removed) -> StoredRecord {
    StoredRecord {
        seq: Seq(seq),
        class: EventClass::Gap,
        received_ms: 0,
        payload: format!("{:?}", removed.seqs).into_bytes(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        skip: u64,
        recs: RecSpec,
        ids: Vec<DedupEntry>,
    },
    /// An append starting below next_seq (when any seq was used), with ids: must be refused,
    /// ids included.
    AppendStale {
        back: u64,
        ids: Vec<DedupEntry>,
    },
    Read {
        from: u64,
        max_events: usize,
        max_bytes: usize,
    },
    Ack {
        through: u64,
    },
    /// `how` 0: a commit that only evicts; 1: a commit that evicts and appends a record declaring the
    /// evicted seqs, with ids; 2: the same with the appended record out of order, which must
    /// leave everything as it was (nothing evicted).
    Evict {
        mask: u8,
        bytes: u64,
        how: u8,
        ids: Vec<DedupEntry>,
    },
    /// Removes the damaged records and the `picks`-th held ones (and a seq never used) in a
    /// commit that appends a record declaring them, as the intake does at start-up.
    RemoveSeqs {
        picks: Vec<usize>,
        ids: Vec<DedupEntry>,
    },
    RecentIds {
        since_ms: i64,
    },
    PruneIds {
        before_ms: i64,
    },
    Restart,
    Corrupt {
        pick: usize,
        how: u8,
        at: usize,
    },
}

/// Times spread widely and clustered near 0, so that queries fall both between and on them.
fn time() -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), -4i64..4, (-4i64..4).prop_map(|t| t * 1000)]
}

fn ids() -> impl Strategy<Value = Vec<DedupEntry>> {
    // Few distinct keys, so that the same key comes back at another time.
    let id = (time(), 0u8..5).prop_map(|(accepted_ms, k)| DedupEntry {
        accepted_ms,
        key: format!("src\u{0}dev/+\u{0}{}", k),
    });
    prop::collection::vec(id, 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    let rec = (
        0u8..8,
        0u64..3,
        any::<i64>(),
        prop::collection::vec(any::<u8>(), 0..300),
    );
    prop_oneof![
        6 => (0u64..3, prop::collection::vec(rec, 0..8), ids()).prop_map(|(skip, recs, ids)| Op::Append { skip, recs, ids }),
        1 => (1u64..5, ids()).prop_map(|(back, ids)| Op::AppendStale { back, ids }),
        4 => (0u64..1000, 0usize..12, 0usize..1500).prop_map(|(from, max_events, max_bytes)| Op::Read { from, max_events, max_bytes }),
        3 => (0u64..1000).prop_map(|through| Op::Ack { through }),
        3 => (any::<u8>(), 0u64..2000, 0u8..3, ids()).prop_map(|(mask, bytes, how, ids)| Op::Evict { mask, bytes, how, ids }),
        1 => (prop::collection::vec(any::<usize>(), 0..3), ids()).prop_map(|(picks, ids)| Op::RemoveSeqs { picks, ids }),
        2 => time().prop_map(|since_ms| Op::RecentIds { since_ms }),
        1 => time().prop_map(|before_ms| Op::PruneIds { before_ms }),
        2 => Just(Op::Restart),
        2 => (any::<usize>(), 0u8..3, any::<usize>()).prop_map(|(pick, how, at)| Op::Corrupt { pick, how, at }),
    ]
}

fn check<E: TestEngine>(b: &E, m: &Model, step: usize, op: &Op) {
    assert_eq!(
        b.next_seq(),
        Seq(m.next_seq),
        "next_seq after step {step} {op:?}"
    );
    assert_eq!(b.acked(), Seq(m.acked), "acked after step {step} {op:?}");
    assert_eq!(b.stats(), m.stats(), "stats after step {step} {op:?}");
    // The whole content, where nothing damaged is in the way of reading it.
    if let Some(all) = m.read_from(0, usize::MAX, usize::MAX) {
        let got = b
            .read_from(Seq(0), usize::MAX, usize::MAX)
            .expect("read everything");
        assert_eq!(got, all, "contents after step {step} {op:?}");
    }
    assert_eq!(
        b.recent_ids(i64::MIN).expect("read ids"),
        m.recent_ids(i64::MIN),
        "ids after step {step} {op:?}"
    );
}

fn run<E: TestEngine>(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut b, report) = E::open(dir.path()).expect("open new buffer");
    assert_eq!(report, OpenReport::default());
    let mut m = Model::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Append { skip, recs, ids } => {
                let recs = records(m.next_seq, *skip, recs);
                // Without ids, through `Buffer::append`, which the uplink's tests use.
                let got = if ids.is_empty() {
                    b.append(&recs)
                } else {
                    b.commit(Remove::Nothing, &mut |_| Append {
                        records: recs.clone(),
                        ids: ids.clone(),
                    })
                    .map(drop)
                };
                assert_eq!(
                    got.is_ok(),
                    m.append(&recs, ids).is_ok(),
                    "append at step {step}: {got:?}"
                );
            }
            Op::AppendStale { back, ids } => {
                if m.next_seq > *back {
                    let r = StoredRecord {
                        seq: Seq(m.next_seq - back),
                        class: EventClass::Raw,
                        received_ms: 0,
                        payload: b"{}".to_vec(),
                    };
                    let got = b.commit(Remove::Nothing, &mut |_| Append {
                        records: vec![r.clone()],
                        ids: ids.clone(),
                    });
                    assert!(
                        matches!(got, Err(BufferError::OutOfOrder { .. })),
                        "stale append at step {step}: {got:?}"
                    );
                }
            }
            Op::Read {
                from,
                max_events,
                max_bytes,
            } => {
                let from = from % (m.next_seq + 2);
                let got = b.read_from(Seq(from), *max_events, *max_bytes);
                match m.read_from(from, *max_events, *max_bytes) {
                    Some(want) => {
                        assert_eq!(got.expect("read"), want, "read at step {step} {op:?}")
                    }
                    None => assert!(
                        got.is_err(),
                        "read over a damaged record at step {step} succeeded"
                    ),
                }
            }
            Op::Ack { through } => {
                let through = through % (m.next_seq + 2);
                let got = b.ack_through(Seq(through)).expect("ack");
                assert_eq!(got, m.ack_through(through), "ack at step {step} {op:?}");
            }
            Op::Evict {
                mask,
                bytes,
                how,
                ids,
            } => {
                let droppable = |c: EventClass| mask & (1 << c.code()) != 0;
                if *how == 0 {
                    // Eviction alone: a commit that appends nothing.
                    let remove = Remove::Oldest {
                        droppable: &droppable,
                        bytes: *bytes,
                    };
                    let got = b
                        .commit(remove, &mut |_| Append::default())
                        .expect("evict")
                        .seqs;
                    assert_eq!(
                        got,
                        m.evict(droppable, *bytes).seqs,
                        "evict at step {step} {op:?}"
                    );
                    check(&b, &m, step, op);
                    continue;
                }
                // Out of order when `how` is 2 and a seq below next_seq exists.
                let stale = *how == 2 && m.next_seq > 1;
                let at = if stale { m.next_seq - 1 } else { m.next_seq };
                let mut after = m.clone();
                let want = after.evict(droppable, *bytes);
                let appended = after.append(&[declaring(at, &want)], ids);
                assert_eq!(appended.is_ok(), !stale);
                let mut told = None;
                let got = b.commit(
                    Remove::Oldest {
                        droppable: &droppable,
                        bytes: *bytes,
                    },
                    &mut |removed| {
                        told = Some(removed.clone());
                        Append {
                            records: vec![declaring(at, removed)],
                            ids: ids.clone(),
                        }
                    },
                );
                assert_eq!(told.as_ref(), Some(&want), "told at step {step} {op:?}");
                if stale {
                    assert!(
                        matches!(got, Err(BufferError::OutOfOrder { .. })),
                        "stale evict-and-append at step {step}: {got:?}"
                    );
                } else {
                    assert_eq!(got.expect("evict and append"), want, "step {step} {op:?}");
                    m = after;
                }
            }
            Op::RemoveSeqs { picks, ids } => {
                let mut seqs = m.damaged();
                let held: Vec<u64> = m.records.keys().copied().collect();
                if !held.is_empty() {
                    seqs.extend(picks.iter().map(|p| Seq(held[p % held.len()])));
                }
                seqs.push(Seq(m.next_seq + 7));
                let want = m.remove_seqs(&seqs);
                let at = m.next_seq;
                m.append(&[declaring(at, &want)], ids)
                    .expect("a declaration at next_seq is in order");
                let got = b
                    .commit(Remove::Seqs(&seqs), &mut |removed| Append {
                        records: vec![declaring(at, removed)],
                        ids: ids.clone(),
                    })
                    .expect("remove seqs");
                assert_eq!(got, want, "remove at step {step} {op:?}");
            }
            Op::RecentIds { since_ms } => {
                assert_eq!(
                    b.recent_ids(*since_ms).expect("recent ids"),
                    m.recent_ids(*since_ms),
                    "recent ids at step {step} {op:?}"
                );
            }
            Op::PruneIds { before_ms } => {
                assert_eq!(
                    b.prune_ids(*before_ms).expect("prune ids"),
                    m.prune_ids(*before_ms),
                    "prune at step {step} {op:?}"
                );
            }
            Op::Restart => {
                drop(b);
                let (nb, report) = E::open(dir.path()).expect("reopen");
                b = nb;
                // Damaged records are reported and still held, until a commit removes them.
                assert_eq!(report.corrupt, m.damaged(), "corrupt report at step {step}");
            }
            Op::Corrupt { pick, how, at } => {
                if m.records.is_empty() {
                    continue;
                }
                let k = *m
                    .records
                    .keys()
                    .nth(pick % m.records.len())
                    .expect("picked within len");
                let e = m.records.get_mut(&k).expect("picked key exists");
                let bad = match how {
                    0 => {
                        let mut v = e.rec.encode_value();
                        let i = at % v.len();
                        v[i] ^= 0x20;
                        v
                    }
                    1 => vec![1, 2, 3, 4, 5],
                    _ => Vec::new(),
                };
                assert!(b.damage(Seq(k), &bad).expect("damage"));
                e.damaged = true;
                e.stored_len = bad.len() as u64;
            }
        }
        check(&b, &m, step, op);
    }
    // Whatever happened, a final restart keeps every record and id.
    drop(b);
    let (b, report) = E::open(dir.path()).expect("final reopen");
    assert_eq!(report.corrupt, m.damaged(), "corrupt report at the end");
    check(&b, &m, ops.len(), &Op::Restart);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redb_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run::<RedbBuffer>(&ops);
    }

    #[test]
    fn sled_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run::<SledBuffer>(&ops);
    }
}

fn rec(seq: u64, class: EventClass, len: usize) -> StoredRecord {
    StoredRecord {
        seq: Seq(seq),
        class,
        received_ms: 1_700_000_000_000 + seq as i64,
        payload: vec![b'x'; len],
    }
}

fn next_seq_survives_full_ack<E: TestEngine>() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (b, _) = E::open(dir.path()).expect("open");
        b.append(
            &(1..=10)
                .map(|s| rec(s, EventClass::Seal, 50))
                .collect::<Vec<_>>(),
        )
        .expect("append");
        assert_eq!(b.ack_through(Seq(10)).expect("ack"), 10);
        assert_eq!(b.stats(), BufferStats::default());
    }
    let (b, report) = E::open(dir.path()).expect("reopen");
    assert!(report.corrupt.is_empty());
    assert_eq!((b.next_seq(), b.acked()), (Seq(11), Seq(10)));
    assert!(matches!(
        b.append(&[rec(10, EventClass::Seal, 5)]),
        Err(BufferError::OutOfOrder { .. })
    ));
}

#[test]
fn redb_next_seq_survives_restart_after_everything_was_acked() {
    next_seq_survives_full_ack::<RedbBuffer>();
}

#[test]
fn sled_next_seq_survives_restart_after_everything_was_acked() {
    next_seq_survives_full_ack::<SledBuffer>();
}

fn damaged_meta_is_derived_from_keys<E: TestEngine>() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (b, _) = E::open(dir.path()).expect("open");
        b.append(
            &(1..=5)
                .map(|s| rec(s, EventClass::Position, 20))
                .collect::<Vec<_>>(),
        )
        .expect("append");
        b.ack_through(Seq(2)).expect("ack");
        b.damage_meta().expect("damage meta");
    }
    let (b, report) = E::open(dir.path()).expect("reopen");
    assert!(report.corrupt.is_empty());
    assert_eq!((b.next_seq(), b.acked()), (Seq(6), Seq(2)));
    assert_eq!(b.stats().events, 3);
    drop(b);
    // The derived meta was written back: a second open agrees without deriving again.
    let (b, _) = E::open(dir.path()).expect("reopen again");
    assert_eq!((b.next_seq(), b.acked()), (Seq(6), Seq(2)));
}

#[test]
fn redb_damaged_meta_is_derived_from_keys() {
    damaged_meta_is_derived_from_keys::<RedbBuffer>();
}

#[test]
fn sled_damaged_meta_is_derived_from_keys() {
    damaged_meta_is_derived_from_keys::<SledBuffer>();
}

#[test]
fn redb_gives_space_back_after_drain_and_compact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, _) = RedbBuffer::open(dir.path()).expect("open");
    let empty = b.disk_bytes();
    for chunk in 0..20u64 {
        let recs: Vec<StoredRecord> = (1..=1000)
            .map(|i| rec(chunk * 1000 + i, EventClass::Position, 200))
            .collect();
        b.append(&recs).expect("append");
    }
    let full = b.disk_bytes();
    assert!(
        full > empty + 20_000 * 200,
        "file grew with the data: {empty} -> {full}"
    );
    b.ack_through(Seq(20_000)).expect("ack all");
    assert!(b.compact().expect("compact"));
    let after = b.disk_bytes();
    assert!(
        after < full / 2,
        "compact gave space back: {full} -> {after}"
    );
}

#[test]
#[ignore = "benchmark: run in release mode with --ignored --nocapture"]
fn append_rate() {
    fn measure<E: TestEngine>(name: &str, per_commit: u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (b, _) = E::open(dir.path()).expect("open");
        let total = 200_000u64;
        let started = std::time::Instant::now();
        for c in 0..total / per_commit {
            let recs: Vec<StoredRecord> = (1..=per_commit)
                .map(|i| rec(c * per_commit + i, EventClass::Position, 236))
                .collect();
            b.append(&recs).expect("append");
        }
        let s = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {per_commit} records of 250 bytes per commit: {:.0} records/s durable, {} bytes on disk",
            total as f64 / s,
            b.disk_bytes()
        );
    }
    for per_commit in [100, 1000] {
        measure::<RedbBuffer>("redb", per_commit);
        measure::<SledBuffer>("sled", per_commit);
    }
}
