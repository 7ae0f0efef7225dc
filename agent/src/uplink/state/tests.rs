use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const TIMEOUT: Duration = Duration::from_secs(10);

fn limits(window: usize, batch: usize) -> Limits {
    Limits {
        max_batch_events: batch,
        max_batch_payload: 1 << 20,
        max_inflight_batches: window,
        ack_timeout: TIMEOUT,
        storage_retry: Duration::from_secs(1),
    }
}

fn send(a: Option<Action>) -> SendRequest {
    match a {
        Some(Action::Send(r)) => r,
        other => panic!("expected a send, got {other:?}"),
    }
}

fn published(first: u64, last: u64) -> SendOutcome {
    SendOutcome::Published((first..=last).map(Seq).collect())
}

/// The next send, completing any delete asked for first.
fn next_send(s: &mut UplinkState, now: Instant) -> SendRequest {
    loop {
        match s.poll_action(now) {
            Some(Action::Delete { through }) => s.on_deleted(through, true, now),
            other => return send(other),
        }
    }
}

/// Publishes `[from, last]` (as if the buffer held every seq) and reports it.
fn publish(s: &mut UplinkState, now: Instant, last: u64) -> SendRequest {
    let r = next_send(s, now);
    assert!(last <= r.through.0, "{r:?}");
    s.on_sent(r, published(r.from.0, last), now);
    r
}

fn connected(acked: u64, next: u64, window: usize) -> (UplinkState, Instant) {
    let mut s = UplinkState::new(limits(window, 3), Seq(acked), Seq(next));
    assert!(!s.on_connected());
    (s, Instant::now())
}

#[test]
fn range_set_merges_splits_and_overlaps() {
    let mut r = RangeSet::default();
    r.insert(5, 7);
    r.insert(1, 2);
    r.insert(3, 4); // touches both neighbours: one range
    assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 7)]);
    r.insert(10, 12);
    r.insert(9, 9);
    assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 7), (9, 12)]);
    r.remove(3, 10);
    assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 2), (11, 12)]);
    assert!(r.overlaps(2, 5) && r.overlaps(12, 99) && !r.overlaps(3, 10) && !r.overlaps(5, 4));
    assert_eq!((r.first(), r.max_end()), (Some((1, 2)), Some(12)));
    r.insert(7, 6); // empty: ignored
    r.remove(0, u64::MAX);
    assert!(r.is_empty());
}

#[test]
fn sends_nothing_until_connected_and_data_is_durable() {
    let mut s = UplinkState::new(limits(2, 3), Seq(0), Seq(1));
    let now = Instant::now();
    assert_eq!(s.poll_action(now), None);
    s.on_durable(Seq(5));
    assert_eq!(s.poll_action(now), None, "not connected");
    s.on_connected();
    let r = next_send(&mut s, now);
    assert_eq!(
        (r.kind, r.from, r.through, r.max_events),
        (SendKind::New, Seq(1), Seq(4), 3)
    );
    assert_eq!(s.poll_action(now), None, "one read at a time");
}

#[test]
fn window_bounds_batches_in_flight_and_acks_free_it() {
    let (mut s, now) = connected(0, 10, 2);
    publish(&mut s, now, 3);
    let r = publish(&mut s, now, 6);
    assert_eq!(r.from, Seq(4));
    assert_eq!(s.poll_action(now), None, "window of 2 is full");
    assert_eq!(s.inflight_batches(), 2);

    let out = s.on_ack(Seq(3), &[], now);
    assert_eq!(out.advanced_to, Some(Seq(3)));
    assert_eq!(s.poll_action(now), Some(Action::Delete { through: Seq(3) }));
    let r = next_send(&mut s, now);
    assert_eq!((r.from, r.through), (Seq(7), Seq(9)));
    s.on_sent(r, published(7, 9), now);
    assert_eq!(
        s.poll_action(now),
        None,
        "delete still running, window full, no more data"
    );
    s.on_deleted(Seq(3), true, now);
    s.on_ack(Seq(9), &[], now);
    assert_eq!(s.poll_action(now), Some(Action::Delete { through: Seq(9) }));
    assert_eq!(s.inflight_batches(), 0);
    assert_eq!(s.next_deadline(), None, "nothing in flight: no ack clock");
}

#[test]
fn deletes_run_while_disconnected() {
    let (mut s, now) = connected(0, 4, 4);
    publish(&mut s, now, 3);
    s.on_disconnected();
    s.on_ack(Seq(3), &[], now);
    assert_eq!(s.poll_action(now), Some(Action::Delete { through: Seq(3) }));
    assert_eq!(s.poll_action(now), None);
}

#[test]
fn acks_never_move_backwards_nor_past_what_was_sent() {
    let (mut s, now) = connected(0, 100, 4);
    publish(&mut s, now, 3);
    let out = s.on_ack(Seq(50), &[], now);
    assert_eq!(
        (out.beyond_sent, out.advanced_to),
        (Some(Seq(50)), Some(Seq(3)))
    );
    assert_eq!(s.acked(), Seq(3));
    let out = s.on_ack(Seq(1), &[[Seq(2), Seq(3)]], now);
    assert!(out.stale);
    assert_eq!(s.acked(), Seq(3));
    assert_eq!(s.poll_action(now), Some(Action::Delete { through: Seq(3) }));
    // A failed delete is retried, after the storage pause.
    s.on_deleted(Seq(3), false, now);
    let r = now + Duration::from_millis(10);
    assert_eq!(s.poll_action(r), None);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(1)));
    assert_eq!(
        s.poll_action(now + Duration::from_secs(1)),
        Some(Action::Delete { through: Seq(3) })
    );
}

#[test]
fn missing_ranges_that_were_lost_are_resent_once() {
    let (mut s, t0) = connected(0, 100, 8);
    publish(&mut s, t0, 3); // b1 [1,3]
    publish(&mut s, t0, 6); // b2 [4,6] lost on the way
    publish(&mut s, t0, 9); // b3 [7,9]
                            // The hub got b1 and b3.
    let out = s.on_ack(Seq(3), &[[Seq(4), Seq(6)]], t0);
    assert!(out.resend_queued);
    let r = next_send(&mut s, t0);
    assert_eq!(
        (r.kind, r.from, r.through),
        (SendKind::Resend, Seq(4), Seq(6))
    );
    // An ack built before the resend arrived asks again: the resend is in flight, not resent.
    let out = s.on_ack(Seq(3), &[[Seq(4), Seq(6)]], t0);
    assert!(
        !out.resend_queued,
        "range being read again is not queued twice"
    );
    s.on_sent(r, published(4, 6), t0);
    let out = s.on_ack(Seq(3), &[[Seq(4), Seq(6)]], t0);
    assert!(!out.resend_queued, "resent batch is still on its way");
    // Normal flow continues after the resend.
    let r = next_send(&mut s, t0);
    assert_eq!((r.kind, r.from), (SendKind::New, Seq(10)));
    s.on_sent(r, published(10, 12), t0);
    // The resend was lost too, and [10,12] (published after it) arrived: resend again.
    let out = s.on_ack(Seq(3), &[[Seq(4), Seq(6)]], t0);
    assert!(out.resend_queued);
    assert_eq!(next_send(&mut s, t0).from, Seq(4));
}

#[test]
fn missing_ranges_never_sent_or_already_acked_are_ignored() {
    let (mut s, now) = connected(0, 100, 8);
    publish(&mut s, now, 3);
    let out = s.on_ack(
        Seq(3),
        &[[Seq(2), Seq(2)], [Seq(20), Seq(30)], [Seq(9), Seq(5)]],
        now,
    );
    assert!(!out.resend_queued, "{out:?}");
    assert_eq!(next_send(&mut s, now).kind, SendKind::New);
}

#[test]
fn holes_in_the_buffer_are_read_once_not_on_every_ack() {
    let (mut s, now) = connected(0, 100, 8);
    let r = next_send(&mut s, now);
    // 1..=3 were evicted: the batch starts at 4.
    s.on_sent(r, published(4, 6), now);
    publish(&mut s, now, 9);
    let out = s.on_ack(Seq(0), &[[Seq(1), Seq(3)]], now);
    assert!(!out.resend_queued, "a known hole is not resent: {out:?}");
    // A hole the hub reports that this agent did not know about is read once.
    let out = s.on_ack(Seq(0), &[[Seq(1), Seq(3)], [Seq(5), Seq(5)]], now);
    assert!(out.resend_queued);
    let r = next_send(&mut s, now);
    assert_eq!((r.from, r.through), (Seq(5), Seq(5)));
    s.on_sent(r, SendOutcome::Nothing, now);
    let out = s.on_ack(Seq(0), &[[Seq(1), Seq(3)], [Seq(5), Seq(5)]], now);
    assert!(!out.resend_queued);
}

#[test]
fn acks_that_prove_nothing_still_clock_the_window() {
    // Seqs 1..=3 were evicted; the hub waits for the gap event (seq 10) before contiguous moves.
    let (mut s, now) = connected(0, 11, 2);
    let r = next_send(&mut s, now);
    s.on_sent(r, published(4, 6), now);
    publish(&mut s, now, 9);
    assert_eq!(s.poll_action(now), None, "window full");
    s.on_ack(Seq(0), &[[Seq(1), Seq(3)]], now);
    let r = next_send(&mut s, now);
    assert_eq!(
        r.from,
        Seq(10),
        "an ack frees a slot even when contiguous is stuck"
    );
    s.on_sent(r, published(10, 10), now);
    s.on_ack(Seq(10), &[], now);
    assert_eq!(s.acked(), Seq(10));
}

#[test]
fn ack_timeout_goes_back_to_the_oldest_unacked() {
    let (mut s, t0) = connected(0, 100, 8);
    publish(&mut s, t0, 3);
    publish(&mut s, t0, 6);
    assert_eq!(s.next_deadline(), Some(t0 + TIMEOUT));
    assert!(!s.tick(t0 + TIMEOUT - Duration::from_millis(1)));
    // Progress restarts the clock.
    let t1 = t0 + Duration::from_secs(5);
    s.on_ack(Seq(3), &[], t1);
    assert!(!s.tick(t0 + TIMEOUT));
    assert_eq!(s.next_deadline(), Some(t1 + TIMEOUT));
    assert!(s.tick(t1 + TIMEOUT));
    let r = next_send(&mut s, t1 + TIMEOUT);
    assert_eq!((r.kind, r.from), (SendKind::New, Seq(4)));
    assert_eq!(s.next_deadline(), None);
    assert!(
        !s.tick(t1 + TIMEOUT * 3),
        "nothing in flight after the go-back"
    );
}

#[test]
fn reconnect_resends_from_oldest_unacked_and_ignores_old_sends() {
    let (mut s, now) = connected(0, 100, 8);
    publish(&mut s, now, 3);
    let old = next_send(&mut s, now);
    s.on_disconnected();
    assert_eq!(s.poll_action(now), None);
    // The read that was under way when the connection dropped still got published.
    s.on_sent(old, published(4, 6), now);
    assert_eq!(s.sent_through(), Seq(6));
    assert!(
        s.on_connected(),
        "published but unacked events are sent again"
    );
    assert_eq!(s.inflight_batches(), 0);
    let r = next_send(&mut s, now);
    assert_eq!(r.from, Seq(1));
    assert_ne!(r.epoch, old.epoch);
}

#[test]
fn failed_reads_pause_storage_then_retry_the_same_range() {
    let (mut s, now) = connected(0, 10, 4);
    let r = next_send(&mut s, now);
    s.on_sent(r, SendOutcome::ReadFailed, now);
    assert_eq!(s.poll_action(now), None);
    let later = now + Duration::from_secs(1);
    assert_eq!(s.next_deadline(), Some(later));
    assert_eq!(next_send(&mut s, later).from, Seq(1));
}

#[test]
fn restart_picks_up_from_the_persisted_ack() {
    let mut s = UplinkState::new(limits(4, 100), Seq(41), Seq(50));
    assert!(!s.on_connected());
    let r = next_send(&mut s, Instant::now());
    assert_eq!((r.from, r.through), (Seq(42), Seq(49)));
    // An ack from before the restart is stale.
    assert!(s.on_ack(Seq(40), &[], Instant::now()).stale);
}

// ---- A scripted, misbehaving network and hub, driven by proptest. ----

/// The hub's side: stores what arrives (and what gap records declare) and acks each batch.
#[derive(Default)]
struct Hub {
    stored: BTreeSet<u64>,
}

impl Hub {
    fn contiguous(&self) -> u64 {
        let mut c = 0;
        while self.stored.contains(&(c + 1)) {
            c += 1;
        }
        c
    }

    fn receive(&mut self, batch: &[u64], gaps: &BTreeMap<u64, Vec<u64>>) -> (u64, Vec<[Seq; 2]>) {
        for s in batch {
            self.stored.insert(*s);
            if let Some(declared) = gaps.get(s) {
                self.stored.extend(declared);
            }
        }
        let c = self.contiguous();
        let mut missing: Vec<[Seq; 2]> = Vec::new();
        let top = self.stored.iter().next_back().copied().unwrap_or(0);
        for s in c + 1..top {
            if !self.stored.contains(&s) {
                match missing.last_mut() {
                    Some(r) if r[1].0 + 1 == s => r[1] = Seq(s),
                    _ => missing.push([Seq(s), Seq(s)]),
                }
            }
        }
        (c, missing)
    }
}

#[derive(Debug, Clone)]
enum Op {
    DeliverToHub(usize),
    LoseToHub(usize),
    DuplicateToHub(usize),
    DeliverAck(usize),
    LoseAck(usize),
    DuplicateAck(usize),
    Advance(u64),
    Disconnect,
    Connect,
    MoreData,
    FailNextRead,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize).prop_map(Op::DeliverToHub),
        1 => (0..4usize).prop_map(Op::LoseToHub),
        1 => (0..4usize).prop_map(Op::DuplicateToHub),
        6 => (0..4usize).prop_map(Op::DeliverAck),
        1 => (0..4usize).prop_map(Op::LoseAck),
        1 => (0..4usize).prop_map(Op::DuplicateAck),
        2 => (0..15_000u64).prop_map(Op::Advance),
        1 => Just(Op::Disconnect),
        2 => Just(Op::Connect),
        1 => Just(Op::MoreData),
        1 => Just(Op::FailNextRead),
    ]
}

struct Sim {
    state: UplinkState,
    /// The agent's buffer: seq -> the seqs a gap record declares (empty for plain events).
    buffer: BTreeMap<u64, Vec<u64>>,
    gaps: BTreeMap<u64, Vec<u64>>,
    hub: Hub,
    to_hub: VecDeque<Vec<u64>>,
    to_agent: VecDeque<(u64, Vec<[Seq; 2]>)>,
    now: Instant,
    /// Durable end the intake has reached; `visible` is what the uplink has been told.
    total_end: u64,
    visible: u64,
    fail_next_read: bool,
    last_acked: u64,
    window: usize,
}

impl Sim {
    /// `n` events, of which `evicted` were dropped and are declared by a gap record at `n + 1`.
    fn new(n: u64, evicted: BTreeSet<u64>, window: usize, batch: usize) -> Sim {
        let mut buffer: BTreeMap<u64, Vec<u64>> = (1..=n)
            .filter(|s| !evicted.contains(s))
            .map(|s| (s, Vec::new()))
            .collect();
        let mut gaps = BTreeMap::new();
        if !evicted.is_empty() {
            let declared: Vec<u64> = evicted.into_iter().collect();
            buffer.insert(n + 1, declared.clone());
            gaps.insert(n + 1, declared);
        }
        let total_end = buffer
            .keys()
            .next_back()
            .map_or(1, |last| last + 1)
            .max(n + 1);
        let visible = (total_end / 2).max(1);
        Sim {
            state: UplinkState::new(limits(window, batch), Seq(0), Seq(visible)),
            buffer,
            gaps,
            hub: Hub::default(),
            to_hub: VecDeque::new(),
            to_agent: VecDeque::new(),
            now: Instant::now(),
            total_end,
            visible,
            fail_next_read: false,
            last_acked: 0,
            window,
        }
    }

    fn drive(&mut self) {
        while let Some(a) = self.state.poll_action(self.now) {
            match a {
                Action::Send(r) => {
                    if std::mem::take(&mut self.fail_next_read) {
                        self.state.on_sent(r, SendOutcome::ReadFailed, self.now);
                        continue;
                    }
                    let batch: Vec<u64> = self
                        .buffer
                        .range(r.from.0..=r.through.0)
                        .take(r.max_events)
                        .map(|(s, _)| *s)
                        .collect();
                    let outcome = if batch.is_empty() {
                        SendOutcome::Nothing
                    } else {
                        self.to_hub.push_back(batch.clone());
                        SendOutcome::Published(batch.iter().copied().map(Seq).collect())
                    };
                    self.state.on_sent(r, outcome, self.now);
                }
                Action::Delete { through } => {
                    assert!(
                        through.0 <= self.hub.contiguous(),
                        "deleting through {through} but the hub has stored only through {}",
                        self.hub.contiguous()
                    );
                    self.buffer.retain(|s, _| *s > through.0);
                    self.state.on_deleted(through, true, self.now);
                }
            }
            self.check();
        }
    }

    fn check(&mut self) {
        let acked = self.state.acked().0;
        assert!(
            acked >= self.last_acked,
            "acked went back from {} to {acked}",
            self.last_acked
        );
        assert!(acked <= self.state.sent_through().0);
        assert!(self.state.inflight_batches() <= self.window);
        self.last_acked = acked;
    }

    fn ack(&mut self, (c, missing): (u64, Vec<[Seq; 2]>)) {
        self.state.on_ack(Seq(c), &missing, self.now);
        self.check();
    }

    fn apply(&mut self, op: Op) {
        let pick = |len: usize, i: usize| (len > 0).then(|| i % len);
        match op {
            Op::DeliverToHub(i) => {
                if let Some(i) = pick(self.to_hub.len(), i) {
                    let b = self.to_hub.remove(i).unwrap_or_default();
                    let ack = self.hub.receive(&b, &self.gaps);
                    self.to_agent.push_back(ack);
                }
            }
            Op::LoseToHub(i) => {
                if let Some(i) = pick(self.to_hub.len(), i) {
                    self.to_hub.remove(i);
                }
            }
            Op::DuplicateToHub(i) => {
                if let Some(i) = pick(self.to_hub.len(), i) {
                    let b = self.to_hub[i].clone();
                    self.to_hub.push_back(b);
                }
            }
            Op::DeliverAck(i) => {
                if let Some(i) = pick(self.to_agent.len(), i) {
                    if let Some(a) = self.to_agent.remove(i) {
                        self.ack(a);
                    }
                }
            }
            Op::LoseAck(i) => {
                if let Some(i) = pick(self.to_agent.len(), i) {
                    self.to_agent.remove(i);
                }
            }
            Op::DuplicateAck(i) => {
                if let Some(i) = pick(self.to_agent.len(), i) {
                    let a = self.to_agent[i].clone();
                    self.to_agent.push_back(a);
                }
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(ms);
                self.state.tick(self.now);
            }
            Op::Disconnect => {
                if self.state.is_connected() {
                    self.state.on_disconnected();
                    // A clean session loses what the broker held for the agent.
                    self.to_agent.clear();
                }
            }
            Op::Connect => {
                if !self.state.is_connected() {
                    self.state.on_connected();
                }
            }
            Op::MoreData => {
                self.visible = self.total_end;
                self.state.on_durable(Seq(self.visible));
            }
            Op::FailNextRead => self.fail_next_read = true,
        }
        self.drive();
    }

    /// A reliable network from here on: everything must end up stored and deleted.
    fn heal(&mut self) {
        self.apply(Op::MoreData);
        self.apply(Op::Connect);
        for _ in 0..100_000 {
            if self.state.acked().0 == self.total_end - 1 && self.buffer.is_empty() {
                return;
            }
            if !self.to_hub.is_empty() {
                self.apply(Op::DeliverToHub(0));
            } else if !self.to_agent.is_empty() {
                self.apply(Op::DeliverAck(0));
            } else {
                let next = self.state.next_deadline().unwrap_or(self.now + TIMEOUT);
                self.apply(Op::Advance(
                    (next.saturating_duration_since(self.now)).as_millis() as u64 + 1,
                ));
            }
        }
        panic!(
            "no convergence: acked {} of {}, buffer holds {:?}, hub contiguous {}",
            self.state.acked(),
            self.total_end - 1,
            self.buffer.keys().take(10).collect::<Vec<_>>(),
            self.hub.contiguous()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_misbehaving_network_never_loses_or_wrongly_deletes(
        n in 1u64..60,
        evicted in proptest::collection::btree_set(1u64..30, 0..6),
        window in 1usize..5,
        batch in 1usize..6,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let evicted: BTreeSet<u64> = evicted.into_iter().filter(|s| *s <= n).collect();
        let mut sim = Sim::new(n, evicted, window, batch);
        for o in ops {
            sim.apply(o);
        }
        sim.heal();
        prop_assert_eq!(sim.hub.contiguous(), sim.total_end - 1);
    }
}

/// Found by the proptest: the batch holding the gap event was lost, and a repeated ack then
/// released it from the window without proof. The ack clock must keep running while anything
/// published is unacked, not only while batches are counted in flight.
#[test]
fn a_lost_tail_released_by_a_repeated_ack_is_resent_after_the_timeout() {
    let mut sim = Sim::new(8, [1].into_iter().collect(), 1, 4);
    sim.apply(Op::MoreData);
    sim.apply(Op::Connect);
    // [2,5] arrives; the hub waits for seq 1 (declared by the gap event at 9).
    sim.apply(Op::DeliverToHub(0));
    sim.apply(Op::DeliverAck(0));
    // [6,9] is lost; a repeat of the last ack frees its window slot.
    sim.apply(Op::LoseToHub(0));
    sim.ack((0, vec![[Seq(1), Seq(1)]]));
    assert_eq!(sim.state.inflight_batches(), 0);
    assert!(
        sim.state.next_deadline().is_some(),
        "unacked events keep the ack clock running"
    );
    sim.heal();
}
