//! One model-based suite for every [`Buffer`] engine: random sequences of operations, restarts
//! and damage, each compared with a plain `BTreeMap` model after every step.

use super::redb_store::RedbBuffer;
use super::sled_store::SledBuffer;
use super::{Buffer, BufferError, BufferStats, OpenReport, StoredRecord};
use proptest::prelude::*;
use qyt_proto::{EventClass, Seq};
use std::collections::BTreeMap;
use std::path::Path;

/// What the suite needs from an engine beyond the trait: opening and test-only damage.
pub(crate) trait TestEngine: Buffer + Sized {
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
}

impl Model {
    fn new() -> Model {
        Model {
            records: BTreeMap::new(),
            next_seq: 1,
            acked: 0,
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

    fn append(&mut self, recs: &[StoredRecord]) -> Result<(), ()> {
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

    fn evict(&mut self, droppable: impl Fn(EventClass) -> bool, bytes: u64) -> Vec<Seq> {
        if bytes == 0 {
            return Vec::new();
        }
        let mut freed = 0;
        let mut out = Vec::new();
        for e in self.records.values() {
            if freed >= bytes {
                break;
            }
            if !e.damaged && droppable(e.rec.class) {
                freed += e.rec.encoded_len();
                out.push(e.rec.seq);
            }
        }
        for s in &out {
            self.records.remove(&s.0);
        }
        out
    }

    /// What a restart reports: damaged records, which it removes.
    fn restart(&mut self) -> Vec<Seq> {
        let corrupt: Vec<u64> = self
            .records
            .iter()
            .filter(|(_, e)| e.damaged)
            .map(|(k, _)| *k)
            .collect();
        for k in &corrupt {
            self.records.remove(k);
        }
        corrupt.into_iter().map(Seq).collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Records from `skip` above next_seq, each `gap` (the second field) above the previous.
    Append {
        skip: u64,
        recs: Vec<(u8, u64, i64, Vec<u8>)>,
    },
    /// An append starting below next_seq (when any seq was used): must be refused.
    AppendStale {
        back: u64,
    },
    Read {
        from: u64,
        max_events: usize,
        max_bytes: usize,
    },
    Ack {
        through: u64,
    },
    Evict {
        mask: u8,
        bytes: u64,
    },
    Restart,
    Corrupt {
        pick: usize,
        how: u8,
        at: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let rec = (
        0u8..7,
        0u64..3,
        any::<i64>(),
        prop::collection::vec(any::<u8>(), 0..300),
    );
    prop_oneof![
        6 => (0u64..3, prop::collection::vec(rec, 0..8)).prop_map(|(skip, recs)| Op::Append { skip, recs }),
        1 => (1u64..5).prop_map(|back| Op::AppendStale { back }),
        4 => (0u64..1000, 0usize..12, 0usize..1500).prop_map(|(from, max_events, max_bytes)| Op::Read { from, max_events, max_bytes }),
        3 => (0u64..1000).prop_map(|through| Op::Ack { through }),
        3 => (any::<u8>(), 0u64..2000).prop_map(|(mask, bytes)| Op::Evict { mask, bytes }),
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
}

fn run<E: TestEngine>(ops: &[Op]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut b, report) = E::open(dir.path()).expect("open new buffer");
    assert_eq!(report, OpenReport::default());
    let mut m = Model::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Append { skip, recs } => {
                let mut seq = m.next_seq + skip;
                let recs: Vec<StoredRecord> = recs
                    .iter()
                    .map(|(class, gap, received_ms, payload)| {
                        seq += gap;
                        let r = StoredRecord {
                            seq: Seq(seq),
                            class: EventClass::ALL[*class as usize],
                            received_ms: *received_ms,
                            payload: payload.clone(),
                        };
                        seq += 1;
                        r
                    })
                    .collect();
                let got = b.append(&recs);
                assert_eq!(
                    got.is_ok(),
                    m.append(&recs).is_ok(),
                    "append at step {step}: {got:?}"
                );
            }
            Op::AppendStale { back } => {
                if m.next_seq > *back {
                    let r = StoredRecord {
                        seq: Seq(m.next_seq - back),
                        class: EventClass::Raw,
                        received_ms: 0,
                        payload: b"{}".to_vec(),
                    };
                    let got = b.append(&[r]);
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
            Op::Evict { mask, bytes } => {
                let droppable = |c: EventClass| mask & (1 << c.code()) != 0;
                let got = b.evict_oldest(&droppable, *bytes).expect("evict");
                assert_eq!(
                    got,
                    m.evict(droppable, *bytes),
                    "evict at step {step} {op:?}"
                );
            }
            Op::Restart => {
                drop(b);
                let (nb, report) = E::open(dir.path()).expect("reopen");
                b = nb;
                assert_eq!(report.corrupt, m.restart(), "corrupt report at step {step}");
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
    // Whatever happened, a final restart keeps every intact record.
    drop(b);
    let (b, report) = E::open(dir.path()).expect("final reopen");
    assert_eq!(report.corrupt, m.restart(), "corrupt report at the end");
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
