//! The uplink's ack and resend logic as a pure state machine: no I/O and no clock reads, so
//! every decision can be tested step by step (and against a lossy scripted hub) without a broker.
//!
//! The task feeds it inputs (connected, disconnected, new durable data, a send finished, an ack
//! arrived, time passed) and asks [`UplinkState::poll_action`] what to do next: send a batch read
//! from the buffer, or delete what the hub has stored.
//!
//! Guarantees kept here, whatever the hub or the network does:
//! - `acked` never moves backwards and never passes the highest seq this process has published,
//!   so nothing is deleted that the hub cannot have stored;
//! - at most `max_inflight_batches` batches are awaiting the hub at once;
//! - after a (re)connect, and after `ack_timeout` without ack progress while anything published
//!   is unacked, sending starts again from the oldest unacked event (go-back-N): rumqttc drops
//!   in-flight QoS 1 publishes on a reconnect, and the hub dedups by `(site, seq)` anyway;
//! - a `missing` range is resent when the ack shows it was lost on the way (a batch published
//!   after it has arrived), not while its resend may still be on its way.
//!
//! A window slot is freed when an ack covers the batch (`contiguous`), shows it arrived (it lies
//! below a missing range without overlapping one), shows it lost (then its missing part is
//! resent), or, when an ack shows none of these, for the oldest batch: the hub answers every
//! batch and batches arrive in order ("ack clocking"). The last keeps the window moving while
//! the hub's `contiguous` waits on a hole (events evicted here, declared by a gap event further
//! on); the ack timeout covers what it may wrongly free.
//!
//! Seqs a read found absent are remembered as holes: the hub may report them missing until the
//! gap event declaring them arrives, and they are neither reread nor treated as lost.

use qyt_proto::Seq;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The limits the state machine enforces, derived from the uplink's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Most payload bytes of events in one batch (the envelope's overhead already subtracted).
    pub max_batch_payload: usize,
    /// Most batches published and not yet acknowledged.
    pub max_inflight_batches: usize,
    /// Time without ack progress, while anything published is unacknowledged, after which
    /// everything unacked is sent again.
    pub ack_timeout: Duration,
    /// Pause before touching the buffer again after a read or delete failed.
    pub storage_retry: Duration,
}

/// Why a batch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// The next events after everything sent since the last (re)connect or go-back.
    New,
    /// A range the hub reported missing, sent again.
    Resend,
}

/// Read the records with `from <= seq <= through` (at most `max_events` of them, within
/// `max_bytes` of payload) and publish them as one batch, then report with
/// [`UplinkState::on_sent`], passing this request back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRequest {
    /// Which connection / go-back round this belongs to; a result from an older one only
    /// updates what is known to have been published.
    pub epoch: u64,
    pub kind: SendKind,
    pub from: Seq,
    pub through: Seq,
    pub max_events: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send(SendRequest),
    /// Delete every event with seq <= `through` (the hub has stored them), then report with
    /// [`UplinkState::on_deleted`].
    Delete {
        through: Seq,
    },
}

/// How a [`SendRequest`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// A batch was handed to the MQTT client; these are its seqs, ascending, at least one.
    Published(Vec<Seq>),
    /// The buffer holds no record in the requested range (evicted, or already acked).
    Nothing,
    /// Reading the buffer failed; storage is left alone for `storage_retry`.
    ReadFailed,
}

/// What an ack did, for the task's logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Older than an ack already applied (its `contiguous` is lower): ignored entirely.
    pub stale: bool,
    /// `contiguous` named seqs above anything this process has published; it was applied only
    /// up to `sent_through`.
    pub beyond_sent: Option<Seq>,
    /// The new acked seq, if it moved.
    pub advanced_to: Option<Seq>,
    /// Events the hub reported missing were queued to be sent again.
    pub resend_queued: bool,
}

/// Inclusive `[first, last]` ranges of seqs, disjoint and not adjacent, keyed by `first`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn first(&self) -> Option<(u64, u64)> {
        self.0.iter().next().map(|(a, b)| (*a, *b))
    }

    pub(crate) fn max_end(&self) -> Option<u64> {
        self.0.values().next_back().copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(|(a, b)| (*a, *b))
    }

    pub(crate) fn insert(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        let (mut lo, mut hi) = (a, b);
        // Every range that overlaps or touches [a, b] is merged into it.
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=b.saturating_add(1))
            .rev()
            .take_while(|(_, e)| **e >= a.saturating_sub(1))
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.0.insert(lo, hi);
    }

    pub(crate) fn remove(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .0
            .range(..=b)
            .rev()
            .take_while(|(_, e)| **e >= a)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in overlapping {
            self.0.remove(&s);
            if s < a {
                self.0.insert(s, a - 1);
            }
            if e > b {
                self.0.insert(b + 1, e);
            }
        }
    }

    pub(crate) fn overlaps(&self, a: u64, b: u64) -> bool {
        a <= b && self.0.range(..=b).next_back().is_some_and(|(_, e)| *e >= a)
    }
}

/// One published batch awaiting the hub: it covers `[first, last]` (holes in the buffer inside
/// that span count as covered: there is nothing else to send for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    first: u64,
    last: u64,
    /// Publication order, to tell a batch lost in transit (something published after it has
    /// arrived) from one still on its way.
    order: u64,
}

/// What a published batch covered: `[from, last]`, and the seqs in it the buffer lacks.
fn coverage(from: u64, seqs: &[Seq]) -> Option<(u64, RangeSet)> {
    let last = seqs.last()?.0;
    let mut holes = RangeSet::default();
    let mut expected = from;
    for s in seqs {
        if s.0 > expected {
            holes.insert(expected, s.0 - 1);
        }
        expected = expected.max(s.0 + 1);
    }
    Some((last, holes))
}

#[derive(Debug, Clone)]
pub struct UplinkState {
    limits: Limits,
    connected: bool,
    epoch: u64,
    /// Highest seq the hub has acknowledged as stored (all of `1..=acked`).
    acked: u64,
    /// Highest seq deleted from the buffer (or being deleted, while `delete_pending`).
    deleted: u64,
    delete_pending: bool,
    /// The next seq to be assigned: every seq below it is durable or gone.
    durable_end: u64,
    /// Next seq to read for new data in this epoch.
    cursor: u64,
    /// Highest seq ever published by this process (the ceiling for acks).
    sent_through: u64,
    inflight: VecDeque<InFlight>,
    next_order: u64,
    resend: RangeSet,
    /// Seqs below `durable_end` a read found absent (evicted, or acked before this run). They
    /// never come back (seqs are not reused), so a hub asking for them gets no reread each time.
    holes: RangeSet,
    pending: Option<SendRequest>,
    /// The go-back clock: the last ack progress, or the first publication since the last
    /// restart or since everything was acked. Runs while anything published is unacked.
    progress_at: Option<Instant>,
    storage_retry_at: Option<Instant>,
}

impl UplinkState {
    /// `acked` is what the buffer has persisted as acknowledged; `next_seq` the next seq it
    /// will assign.
    pub fn new(limits: Limits, acked: Seq, next_seq: Seq) -> UplinkState {
        let acked = acked.0;
        UplinkState {
            limits,
            connected: false,
            epoch: 0,
            acked,
            deleted: acked,
            delete_pending: false,
            durable_end: next_seq.0.max(acked + 1),
            cursor: acked + 1,
            // Whatever is at or below the persisted ack was published by an earlier run.
            sent_through: acked,
            inflight: VecDeque::new(),
            next_order: 0,
            resend: RangeSet::default(),
            holes: RangeSet::default(),
            pending: None,
            progress_at: None,
            storage_retry_at: None,
        }
    }

    pub fn acked(&self) -> Seq {
        Seq(self.acked)
    }

    pub fn sent_through(&self) -> Seq {
        Seq(self.sent_through)
    }

    pub fn inflight_batches(&self) -> usize {
        self.inflight.len()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The broker accepted a connection. Everything unacked is sent again from the oldest, since
    /// whatever was in flight on the previous connection may be lost. Returns whether that
    /// means going back over events already published (a resend).
    pub fn on_connected(&mut self) -> bool {
        self.connected = true;
        self.restart_from_acked()
    }

    pub fn on_disconnected(&mut self) {
        self.connected = false;
        // What was in flight may be lost with the connection; the next `on_connected` starts
        // over from `acked`, and a send still under way is now of an old epoch.
        self.epoch += 1;
        self.inflight.clear();
        self.resend = RangeSet::default();
        self.progress_at = None;
    }

    /// The intake made events durable; `next_seq` is the next seq it will assign.
    pub fn on_durable(&mut self, next_seq: Seq) {
        self.durable_end = self.durable_end.max(next_seq.0);
    }

    /// The next thing to do, if any. Call until it returns `None` after every input.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(at) = self.storage_retry_at {
            if now < at {
                return None;
            }
            self.storage_retry_at = None;
        }
        if !self.delete_pending && self.acked > self.deleted {
            self.delete_pending = true;
            return Some(Action::Delete {
                through: Seq(self.acked),
            });
        }
        if !self.connected
            || self.pending.is_some()
            || self.inflight.len() >= self.limits.max_inflight_batches
        {
            return None;
        }
        let (kind, from, through) = if let Some((a, b)) = self.resend.first() {
            (SendKind::Resend, a, b)
        } else if self.cursor < self.durable_end {
            (SendKind::New, self.cursor, self.durable_end - 1)
        } else {
            return None;
        };
        let req = SendRequest {
            epoch: self.epoch,
            kind,
            from: Seq(from),
            through: Seq(through),
            max_events: self.limits.max_batch_events,
            max_bytes: self.limits.max_batch_payload,
        };
        self.pending = Some(req);
        Some(Action::Send(req))
    }

    /// A [`SendRequest`] finished. Published seqs must lie in `[req.from, req.through]`.
    pub fn on_sent(&mut self, req: SendRequest, outcome: SendOutcome, now: Instant) {
        if self.pending == Some(req) {
            self.pending = None;
        }
        let (covered_through, published) = match &outcome {
            SendOutcome::ReadFailed => {
                self.storage_retry_at = Some(now + self.limits.storage_retry);
                return;
            }
            SendOutcome::Published(seqs) => match coverage(req.from.0, seqs) {
                Some((last, holes)) => {
                    // Published is published, whichever epoch asked for it: the hub may ack it.
                    self.sent_through = self.sent_through.max(last);
                    for (a, b) in holes.iter() {
                        self.holes.insert(a, b);
                    }
                    (last, true)
                }
                None => {
                    self.holes.insert(req.from.0, req.through.0);
                    (req.through.0, false)
                }
            },
            SendOutcome::Nothing => {
                self.holes.insert(req.from.0, req.through.0);
                (req.through.0, false)
            }
        };
        if req.epoch != self.epoch {
            return;
        }
        match req.kind {
            SendKind::New => self.cursor = self.cursor.max(covered_through + 1),
            SendKind::Resend => self.resend.remove(req.from.0, covered_through),
        }
        if published && covered_through > self.acked {
            self.progress_at.get_or_insert(now);
            self.inflight.push_back(InFlight {
                first: req.from.0.max(self.acked + 1),
                last: covered_through,
                order: self.next_order,
            });
            self.next_order += 1;
        }
    }

    /// A delete requested by [`Action::Delete`] finished.
    pub fn on_deleted(&mut self, through: Seq, ok: bool, now: Instant) {
        self.delete_pending = false;
        if ok {
            self.deleted = self.deleted.max(through.0);
        } else {
            self.storage_retry_at = Some(now + self.limits.storage_retry);
        }
    }

    /// An ack from the hub (already checked to be for this site).
    pub fn on_ack(&mut self, contiguous: Seq, missing: &[[Seq; 2]], now: Instant) -> AckOutcome {
        let mut out = AckOutcome::default();
        if contiguous.0 < self.acked {
            // The hub's contiguous only grows, so this was overtaken by an ack already applied;
            // its missing ranges are as old as it is.
            out.stale = true;
            return out;
        }
        let before = self.inflight.len();
        if contiguous.0 > self.sent_through {
            out.beyond_sent = Some(contiguous);
        }
        let c = contiguous.0.min(self.sent_through);
        if c > self.acked {
            self.acked = c;
            out.advanced_to = Some(Seq(c));
            self.cursor = self.cursor.max(c + 1);
            self.resend.remove(0, c);
            self.holes.remove(0, c);
            self.inflight.retain(|e| e.last > c);
            for e in &mut self.inflight {
                e.first = e.first.max(c + 1);
            }
        }

        // Missing ranges that can matter: above what is acked, within what was published, and
        // not known to be absent here (those wait for the gap event that declares them).
        let mut miss = RangeSet::default();
        for [a, b] in missing {
            let (a, b) = (a.0.max(self.acked + 1), b.0.min(self.sent_through));
            miss.insert(a, b);
        }
        for (a, b) in self.holes.iter() {
            miss.remove(a, b);
        }

        let mut released = self.inflight.len() < before;
        if let Some(hi) = miss.max_end() {
            // The hub has everything in (contiguous, hi] outside the missing ranges, so batches
            // there have arrived.
            let mut newest_arrived = None;
            self.inflight.retain(|e| {
                let arrived = e.last <= hi && !miss.overlaps(e.first, e.last);
                if arrived {
                    newest_arrived = newest_arrived.max(Some(e.order));
                }
                !arrived
            });
            // Something above `hi` has arrived too: if it is in flight, it is in one of the
            // batches reaching above `hi`, so at least the earliest published of them got there.
            let beyond = self
                .inflight
                .iter()
                .filter(|e| e.last > hi)
                .map(|e| e.order)
                .min();
            // MQTT keeps one client's QoS 1 messages in order, so a batch published before one
            // that arrived, and overlapping a missing range, was lost on the way; later ones may
            // still be on their way and are left alone.
            if let Some(t) = newest_arrived.max(beyond) {
                self.inflight
                    .retain(|e| !(e.order < t && miss.overlaps(e.first, e.last)));
            }
            released |= self.inflight.len() < before;
        }
        if !released
            && self
                .inflight
                .front()
                .is_some_and(|e| !miss.overlaps(e.first, e.last))
        {
            // Ack clocking: the hub answers each batch it commits, and batches arrive in the
            // order they were published, so an ack that proved nothing else still means the
            // oldest batch got there (unless the hub lacks part of it: then this ack is a
            // repeat). Without this, a hole the hub waits on (events evicted here, declared by
            // a gap event further on) would hold every window slot until the ack timeout, and
            // the go-back would fill the window the same way again.
            self.inflight.pop_front();
            released = true;
        }

        if !miss.is_empty() {
            // Resend what is missing, was published in this epoch (below the cursor), and is not
            // already in flight, queued or being read.
            let mut todo = miss;
            todo.remove(self.cursor, u64::MAX);
            for e in &self.inflight {
                todo.remove(e.first, e.last);
            }
            if let Some(p) = self.pending.filter(|p| p.epoch == self.epoch) {
                todo.remove(p.from.0, p.through.0);
            }
            for (a, b) in self.resend.iter() {
                todo.remove(a, b);
            }
            if !todo.is_empty() {
                out.resend_queued = true;
                for (a, b) in todo.iter() {
                    self.resend.insert(a, b);
                }
            }
        }

        if released || out.advanced_to.is_some() {
            self.progress_at = self.unacked().then_some(now);
        }
        out
    }

    /// Something published is not acknowledged yet.
    fn unacked(&self) -> bool {
        self.sent_through > self.acked
    }

    /// Time passed. Returns whether the ack timeout expired and sending went back to the
    /// oldest unacked event.
    pub fn tick(&mut self, now: Instant) -> bool {
        match self.progress_at {
            Some(at) if self.connected && self.unacked() && now >= at + self.limits.ack_timeout => {
                self.restart_from_acked();
                true
            }
            _ => false,
        }
    }

    /// When [`UplinkState::tick`] or [`UplinkState::poll_action`] next has something to do
    /// without any other input.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ack = match self.progress_at {
            Some(at) if self.connected && self.unacked() => Some(at + self.limits.ack_timeout),
            _ => None,
        };
        match (ack, self.storage_retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn restart_from_acked(&mut self) -> bool {
        self.epoch += 1;
        self.inflight.clear();
        self.resend = RangeSet::default();
        self.progress_at = None;
        self.cursor = self.acked + 1;
        // Going back over published, unacked events is a resend; starting on fresh data is not.
        self.unacked()
    }
}

#[cfg(test)]
mod tests;
