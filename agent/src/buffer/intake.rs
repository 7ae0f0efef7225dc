//! Intake: the single writer that turns submitted events into durable records.
//!
//! Sources call [`Intake::submit`]; one OS thread (the writer) takes what is queued, assigns
//! sequence numbers (it is the only appender, so the buffer's `next_seq` is its counter), builds
//! and encodes each [`qyt_proto::Event`], holds the buffer to its size bound and commits the
//! whole group in one [`IntakeStore::commit`] before answering every submitter. One fsync then
//! covers many events, which is what makes ≥100k durable events/s possible on a small gateway.
//!
//! Grouping needs no timer under load: what arrives during one commit forms the next group.
//! Only a lone submission on an idle queue waits, up to `commit_delay_ms`, for company, so a
//! source that submits one event at a time and waits for each gets about one commit per
//! `commit_delay_ms`; sources should keep several submissions in flight or submit in chunks.
//!
//! # Size bound
//!
//! `max_bytes` bounds the buffer's files on disk, measured with [`super::Buffer::disk_bytes`] (a stat)
//! at every commit. Neither engine's file size follows its live data closely: both keep the
//! space freed by acks and evictions inside their files and reuse it before growing (redb until
//! `compact`, which only gives back space in large steps; sled always), and both take about
//! twice the encoded size when they grow (measured with ~200-byte events: redb 2.2×, sled
//! 2.5×). So the writer steers the files to a soft bound an eighth under `max_bytes` with two
//! measures:
//!
//! - while `disk + 2 × incoming` stays under the soft bound, the group simply fits;
//! - past it, the writer compacts, and if the files are still too big it sets a *live cap*:
//!   the live bytes they hold, scaled to the soft bound. From then on a group fits while
//!   `live + incoming` stays under the cap, as it goes into space freed inside the files. If
//!   the files still grow past the soft bound and their size when the cap was set, the cap
//!   drops by an eighth; when a compaction brings them back under, the cap is dropped.
//!
//! When a group does not fit, the writer evicts droppable events (classes not in `never_drop`,
//! never a gap) oldest first until live bytes are an eighth below the cap, then (once that is
//! committed) compacts so the file really shrinks. That eighth is the hysteresis: the next eviction and compaction come
//! after another eighth of the cap has been written. The eviction, the gap event (reason
//! `buffer_full`) that declares exactly the evicted seqs, and the group are one commit
//! ([`IntakeStore::commit`]): a crash keeps all three or none, so the hub is never left waiting
//! for seqs that no longer exist. If there was not enough to evict, submissions are taken in
//! order while they fit under the cap; the rest are refused with [`IntakeError::Full`] (their
//! device or broker keeps them) — once nothing droppable is left, droppable ones too.
//!
//! redb stays under `max_bytes` this way (measured: steady at 88% of it while evicting). sled
//! cannot be held exactly: it appends every delete (ack or eviction) to its log and never
//! returns space, so its files overshoot by a margin that depends on when its background
//! threads reclaim segments (measured 10–13%), and the cap ratchets down as they do. Use redb
//! where the bound matters.
//!
//! Damaged records found at open are removed by the first commit, the one that appends the gap
//! event (reason `corrupt`) declaring them; a crash before it finds them again at the next open.
//!
//! # Device message ids
//!
//! A source that recognises redeliveries (MQTT) gives each event its message's key
//! ([`PendingEvent::dedup_key`]). The writer stores the keys of the accepted events in the
//! group's commit, so after kill -9 a redelivered message is still known: the source loads the
//! recent keys with [`Intake::recent_dedup_keys`] when it starts. Acks do not delete keys (a
//! broker may redeliver after the hub stored the event); the writer forgets them once they are
//! `dedup_retain_ms` old, at most once a minute, in a commit of its own. They take disk space
//! like records do, so they count against `max_bytes`.
//!
//! # Minimum bound
//!
//! [`MIN_MAX_BYTES`]: a new redb file takes 1.6 MB of address space (0.55 MB allocated), and a
//! compacted one holding a few MB of events takes several times that (3.7× measured after a
//! half drain). sled starts small but grows in 512 KiB segments and keeps 2.5× its live data.
//! Below a few MB the fixed part dominates and the live cap would be a handful of events. At
//! 16 MiB either engine holds about 20k events of 330 bytes before evicting (measured).

use super::{
    Append, BufferError, DedupEntry, IntakeStore, OpenReport, Remove, Removed, StoredRecord,
};
use crate::metrics::{DropKind, Metrics};
use chrono::{DateTime, Utc};
use qyt_proto::{Body, DropReason, Event, EventClass, GapBody, Seq, SiteId};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The smallest `max_bytes` that makes sense for either engine (see the module docs).
pub const MIN_MAX_BYTES: u64 = 16 << 20;

/// Disk bytes a group is assumed to add per encoded byte while the files are still growing.
const GROWTH_PER_BYTE: u64 = 2;

/// The `source` of the gap events the agent writes itself.
pub const GAP_SOURCE: &str = "qyt-agent";

/// How often, at most, the writer prunes old device message ids: each prune is a commit (and
/// an fsync) of its own, and ids a minute past their retention do no harm.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One event as a source hands it over; the intake gives it its seq and site.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub observed_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub source: Arc<str>,
    pub body: Body,
    /// The source's key for the device message this event came from, if it recognises
    /// redeliveries: stored in the event's commit, see [`Intake::recent_dedup_keys`].
    pub dedup_key: Option<String>,
}

/// How the intake works; the defaults are those of the config file's `[buffer]`.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Bound on the bytes the buffer occupies on disk.
    pub max_bytes: u64,
    /// Classes never evicted when the buffer is full: refused at intake instead.
    pub never_drop: Vec<EventClass>,
    /// Longest time the writer waits to gather a group commit when the queue is idle.
    pub commit_delay_ms: u64,
    /// Events in a group commit beyond which the writer takes no further submission.
    pub max_commit_events: usize,
    /// How long accepted device message ids are kept (at least as long as any source's
    /// duplicate window, or a restart forgets ids the source would still recognise).
    pub dedup_retain_ms: u64,
}

impl Default for IntakeConfig {
    fn default() -> IntakeConfig {
        IntakeConfig {
            max_bytes: 1 << 30,
            never_drop: vec![EventClass::Seal, EventClass::Gate, EventClass::Alarm],
            commit_delay_ms: 5,
            max_commit_events: 2000,
            dedup_retain_ms: 24 * 60 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    #[error("buffer full: {} events are never dropped, so this submission is refused; keep it at the device and retry later", class.as_str())]
    Full { class: EventClass },
    #[error("buffer storage failed, nothing of this submission was stored: {0}")]
    Storage(String),
    #[error("the intake is closed (the agent is stopping); nothing of this submission was stored")]
    Closed,
}

type Reply = oneshot::Sender<Result<Vec<Seq>, IntakeError>>;

struct Submission {
    events: Vec<PendingEvent>,
    reply: Reply,
}

/// The handle sources submit through. Cheap to clone; the writer stops once every clone is gone.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Submission>,
    durable: watch::Receiver<Seq>,
    /// For reading the stored device message ids; only the writer writes.
    buffer: Arc<dyn IntakeStore>,
}

/// The writer thread, to wait for after every [`Intake`] clone was dropped.
pub struct IntakeJoin {
    thread: std::thread::JoinHandle<()>,
}

impl IntakeJoin {
    /// Blocks until the writer has committed and answered everything submitted, then ended.
    /// Call it from a blocking context (e.g. `spawn_blocking`) inside an async runtime.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the intake writer panicked; submissions it had not answered were reported as closed");
        }
    }
}

impl Intake {
    /// Starts the writer over an opened buffer. `report` is what the buffer's open found: its
    /// damaged records are removed in one commit with the gap event (reason `corrupt`) that
    /// declares them, before anything else.
    pub fn start(
        buffer: Arc<dyn IntakeStore>,
        site: SiteId,
        cfg: IntakeConfig,
        metrics: Arc<Metrics>,
        report: OpenReport,
    ) -> Result<(Intake, IntakeJoin), IntakeError> {
        if cfg.max_bytes < MIN_MAX_BYTES {
            tracing::warn!(
                max_bytes = cfg.max_bytes,
                min = MIN_MAX_BYTES,
                "buffer max_bytes is below the useful minimum; expect constant eviction and refusals"
            );
        }
        if !report.corrupt.is_empty() {
            let seq = buffer.next_seq();
            let removed = buffer
                .commit(Remove::Seqs(&report.corrupt), &mut |removed| Append {
                    // What this commit removes is what its gap declares.
                    records: (!removed.seqs.is_empty())
                        .then(|| {
                            let gap = GapBody::from_sorted(
                                removed.seqs.iter().copied(),
                                DropReason::Corrupt,
                            );
                            gap_record(&site, seq, gap)
                        })
                        .into_iter()
                        .collect(),
                    ids: Vec::new(),
                })
                .map_err(|e| IntakeError::Storage(e.to_string()))?;
            if !removed.seqs.is_empty() {
                metrics.dropped(DropKind::Corrupt, removed.seqs.len() as u64);
                metrics.durable.fetch_add(1, Relaxed);
                metrics.commits.fetch_add(1, Relaxed);
                tracing::warn!(%seq, count = removed.seqs.len(), "damaged records removed and declared to the hub as a gap");
            }
        }
        let (durable_tx, durable_rx) = watch::channel(buffer.next_seq());
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            buffer: buffer.clone(),
            site,
            never_drop: cfg.never_drop.clone(),
            cfg,
            metrics,
            durable: durable_tx,
            rx,
            live_cap: None,
            disk_at_cap: 0,
            droppables_exhausted: false,
            last_prune: None,
        };
        writer.update_gauges();
        let thread = std::thread::Builder::new()
            .name("qyt-intake".into())
            .spawn(move || writer.run())
            .map_err(|e| {
                IntakeError::Storage(format!("cannot start the intake writer thread: {e}"))
            })?;
        Ok((
            Intake {
                tx,
                durable: durable_rx,
                buffer,
            },
            IntakeJoin { thread },
        ))
    }

    /// Resolves once the events are durable (committed), with their seqs in order; all or
    /// nothing per call.
    pub async fn submit(&self, events: Vec<PendingEvent>) -> Result<Vec<Seq>, IntakeError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission { events, reply })
            .map_err(|_| IntakeError::Closed)?;
        answer.await.unwrap_or(Err(IntakeError::Closed))
    }

    /// The next seq to be assigned (last durable + 1), updated after each commit.
    pub fn durable_watch(&self) -> watch::Receiver<Seq> {
        self.durable.clone()
    }

    /// The device message keys of events made durable at or after `since_ms` (by their
    /// `received_at`), oldest first, of every source: for a source to preload its duplicate
    /// window when it starts. Keys older than `dedup_retain_ms` may already be forgotten.
    pub async fn recent_dedup_keys(&self, since_ms: i64) -> Result<Vec<DedupEntry>, IntakeError> {
        let buffer = self.buffer.clone();
        tokio::task::spawn_blocking(move || buffer.recent_ids(since_ms))
            .await
            .map_err(|e| {
                IntakeError::Storage(format!("reading the stored device message ids failed: {e}"))
            })?
            .map_err(|e| IntakeError::Storage(e.to_string()))
    }
}

fn gap_record(site: &SiteId, seq: Seq, gap: GapBody) -> StoredRecord {
    let now = Utc::now();
    let ev = Event {
        site: site.clone(),
        seq,
        observed_at: now,
        received_at: now,
        source: GAP_SOURCE.to_string(),
        body: Body::Gap(gap),
    };
    StoredRecord {
        seq,
        class: EventClass::Gap,
        received_ms: now.timestamp_millis(),
        payload: qyt_proto::encode(&ev),
    }
}

/// One submission inside a group: its events built (seq assigned when numbered) and encoded.
struct Job {
    events: Vec<Event>,
    records: Vec<StoredRecord>,
    /// The device message keys of its events, stored in the same commit.
    ids: Vec<DedupEntry>,
    /// The first never-drop class among its events, if any.
    never_drop: Option<EventClass>,
    refused: Option<EventClass>,
    reply: Reply,
}

impl Job {
    fn bytes(&self) -> u64 {
        self.records.iter().map(StoredRecord::encoded_len).sum()
    }

    /// Gives the events seqs from `next` on and encodes them; returns the seq after them.
    fn number(&mut self, mut next: Seq) -> Seq {
        self.records.clear();
        for ev in &mut self.events {
            ev.seq = next;
            self.records.push(StoredRecord {
                seq: next,
                class: ev.body.class(),
                received_ms: ev.received_at.timestamp_millis(),
                payload: qyt_proto::encode(&*ev),
            });
            next = next.next();
        }
        next
    }
}

/// How a group must fit when the files are at their bound.
#[derive(Debug, Clone, Copy)]
struct Squeeze {
    /// The live bytes the buffer may hold after the group's commit.
    cap: u64,
    /// Bytes of droppable events to evict in that commit, first (0: none needed, or none left).
    evict: u64,
}

struct Writer {
    buffer: Arc<dyn IntakeStore>,
    site: SiteId,
    never_drop: Vec<EventClass>,
    cfg: IntakeConfig,
    metrics: Arc<Metrics>,
    durable: watch::Sender<Seq>,
    rx: mpsc::Receiver<Submission>,
    /// Live bytes the files hold at the bound, learned when they first reach it.
    live_cap: Option<u64>,
    /// Disk bytes when the cap was last set: the files growing past both this and the bound
    /// means the cap is too high; staying put means the engine is reusing its freed space.
    disk_at_cap: u64,
    /// An eviction reached the end of the buffer: nothing droppable is held until a droppable
    /// event is appended again, so full-buffer commits skip the eviction scan.
    droppables_exhausted: bool,
    /// When old device message ids were last pruned; `None` before the first prune.
    last_prune: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        while let Some(group) = self.gather() {
            self.commit(group);
            self.prune_ids();
        }
        tracing::info!(next_seq = %self.buffer.next_seq(), "intake closed: everything submitted was answered");
    }

    /// Waits for a submission, then takes what is already queued; if nothing else was queued
    /// (an idle queue), waits up to `commit_delay_ms` for company. `None` once every `Intake`
    /// is gone and the queue is empty.
    fn gather(&self) -> Option<Vec<Submission>> {
        let first = self.rx.recv().ok()?;
        let deadline = Instant::now() + Duration::from_millis(self.cfg.commit_delay_ms);
        let mut n = first.events.len();
        let mut group = vec![first];
        while n < self.cfg.max_commit_events {
            let next = match self.rx.try_recv() {
                Ok(s) => Some(s),
                // A busy queue: what arrives during this commit forms the next group.
                Err(mpsc::TryRecvError::Empty) if group.len() > 1 => None,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        None
                    } else {
                        self.rx.recv_timeout(deadline - now).ok()
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => None,
            };
            let Some(s) = next else { break };
            n += s.events.len();
            group.push(s);
        }
        Some(group)
    }

    fn droppable(&self, class: EventClass) -> bool {
        class != EventClass::Gap && !self.never_drop.contains(&class)
    }

    fn job(&self, s: Submission) -> Job {
        let never_drop = s
            .events
            .iter()
            .map(|e| e.body.class())
            .find(|c| !self.droppable(*c));
        let mut ids = Vec::new();
        let events = s
            .events
            .into_iter()
            .map(|p| {
                if let Some(key) = p.dedup_key {
                    ids.push(DedupEntry {
                        accepted_ms: p.received_at.timestamp_millis(),
                        key,
                    });
                }
                Event {
                    site: self.site.clone(),
                    seq: Seq::ZERO,
                    observed_at: p.observed_at,
                    received_at: p.received_at,
                    source: p.source.to_string(),
                    body: p.body,
                }
            })
            .collect();
        Job {
            events,
            records: Vec::new(),
            ids,
            never_drop,
            refused: None,
            reply: s.reply,
        }
    }

    fn commit(&mut self, group: Vec<Submission>) {
        let mut jobs: Vec<Job> = group.into_iter().map(|s| self.job(s)).collect();
        let first = self.buffer.next_seq();
        let mut next = first;
        for job in &mut jobs {
            next = job.number(next);
        }
        let incoming: u64 = jobs.iter().map(Job::bytes).sum();
        let squeeze = match self.make_room(incoming) {
            Ok(squeeze) => squeeze,
            Err(e) => {
                tracing::error!(error = %e, "could not make room in the full buffer");
                for job in jobs {
                    let _ = job.reply.send(Err(IntakeError::Storage(e.to_string())));
                }
                return;
            }
        };
        let live_before = self.buffer.stats().live_bytes;
        let droppable = |c: EventClass| self.droppable(c);
        let remove = match squeeze {
            Some(sq) if sq.evict > 0 => Remove::Oldest {
                droppable: &droppable,
                bytes: sq.evict,
            },
            _ => Remove::Nothing,
        };
        let site = &self.site;
        // Runs inside the commit, once the eviction is known: decides which jobs fit, numbers
        // them contiguously and adds the gap that declares what the commit evicts.
        let mut build = |removed: &Removed| {
            let mut room = squeeze.map(|sq| {
                sq.cap
                    .saturating_sub(live_before.saturating_sub(removed.bytes))
            });
            let mut add = Append::default();
            let mut next = first;
            for job in jobs.iter_mut() {
                if let Some(room) = room.as_mut() {
                    let need = job.bytes();
                    if need > *room {
                        job.refused = job
                            .never_drop
                            .or_else(|| job.events.first().map(|e| e.body.class()));
                        continue;
                    }
                    *room -= need;
                }
                // Refusals leave holes in the tentative numbering: seqs must stay contiguous.
                if job.records.first().map(|r| r.seq) != Some(next) {
                    job.number(next);
                }
                next = Seq(next.0 + job.records.len() as u64);
                add.records.append(&mut job.records);
                add.ids.append(&mut job.ids);
            }
            if !removed.seqs.is_empty() {
                let gap =
                    GapBody::from_sorted(removed.seqs.iter().copied(), DropReason::BufferFull);
                add.records.push(gap_record(site, next, gap));
            }
            add
        };
        let result = self.buffer.commit(remove, &mut build);

        let removed = match result {
            Ok(removed) => removed,
            Err(e) => {
                let events: usize = jobs.iter().map(|j| j.events.len()).sum();
                tracing::error!(error = %e, events, "group commit failed; its submitters are told nothing was stored");
                for job in jobs {
                    let _ = job.reply.send(Err(IntakeError::Storage(e.to_string())));
                }
                return;
            }
        };
        // Counted and published before anyone is answered: a submitter that sees its events
        // accepted finds them in the metrics and the durable watch too.
        let accepted: Vec<&Job> = jobs.iter().filter(|j| j.refused.is_none()).collect();
        let mut stored: u64 = accepted.iter().map(|j| j.events.len() as u64).sum();
        let took_droppable = accepted
            .iter()
            .any(|j| j.events.iter().any(|e| self.droppable(e.body.class())));
        if !removed.seqs.is_empty() {
            stored += 1;
            self.metrics
                .dropped(DropKind::BufferFull, removed.seqs.len() as u64);
            tracing::warn!(
                count = removed.seqs.len(),
                "buffer full: evicted the oldest droppable events, declared as a gap in the same commit"
            );
        }
        if stored > 0 {
            self.metrics.durable.fetch_add(stored, Relaxed);
            self.metrics.commits.fetch_add(1, Relaxed);
            self.durable.send_replace(self.buffer.next_seq());
        }
        for job in jobs {
            if let Some(class) = job.refused {
                self.metrics
                    .dropped(DropKind::RefusedFull, job.events.len() as u64);
                let _ = job.reply.send(Err(IntakeError::Full { class }));
                continue;
            }
            let _ = job
                .reply
                .send(Ok(job.events.iter().map(|e| e.seq).collect()));
        }
        if let Some(sq) = squeeze {
            if removed.bytes < sq.evict {
                self.droppables_exhausted = true;
            }
            // Now that the eviction is committed, give the space it freed back to the file
            // system. The group is durable already: a failure here only means a bigger file.
            if !removed.seqs.is_empty() {
                if let Err(e) = self.compact() {
                    tracing::error!(error = %e, "compacting after an eviction failed");
                }
            }
            self.disk_at_cap = self.buffer.disk_bytes();
        }
        if took_droppable {
            self.droppables_exhausted = false;
        }
        if stored > 0 {
            self.update_gauges();
        }
    }

    /// Forgets device message ids past `dedup_retain_ms`, at most once per [`PRUNE_EVERY`].
    /// A failure is only logged: the ids stay a while longer, and the next prune retries.
    fn prune_ids(&mut self) {
        if self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.last_prune = Some(Instant::now());
        let retain = i64::try_from(self.cfg.dedup_retain_ms).unwrap_or(i64::MAX);
        let before = Utc::now().timestamp_millis().saturating_sub(retain);
        match self.buffer.prune_ids(before) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                n,
                retain_ms = self.cfg.dedup_retain_ms,
                "forgot device message ids past their retention"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not prune old device message ids; retrying in a minute")
            }
        }
    }

    /// The size the writer steers the files to: an eighth under the bound, so that the engines'
    /// own swings (sled ±6% measured, redb's compaction commits) stay within it.
    fn soft_bound(&self) -> u64 {
        self.cfg.max_bytes - self.cfg.max_bytes / 8
    }

    /// Whether `incoming` more encoded bytes fit now.
    fn fits(&self, incoming: u64) -> bool {
        let disk = self.buffer.disk_bytes();
        if disk + GROWTH_PER_BYTE * incoming <= self.soft_bound() {
            return true;
        }
        // At the bound, what fits under the cap goes into space freed inside the files, as long
        // as they are not growing. (An engine that overshot the bound on its own, as sled does
        // when evictions append tombstones to its log, cannot be brought back under it by
        // evicting more; the writer then holds it where it is.)
        match self.live_cap {
            Some(cap) => {
                self.buffer.stats().live_bytes + incoming <= cap
                    && (disk <= self.soft_bound() || disk <= self.disk_at_cap)
            }
            None => false,
        }
    }

    /// Holds the bound (see the module docs): compacts and learns or corrects the live cap.
    /// `None` when `incoming` bytes fit as they are; otherwise the cap the group must fit
    /// under and what to evict in its commit to get an eighth below it.
    fn make_room(&mut self, incoming: u64) -> Result<Option<Squeeze>, BufferError> {
        if self.fits(incoming) {
            return Ok(None);
        }
        // At the bound. Compacting may give back what acks and evictions freed inside the file;
        // this runs once per cap / 8 written at most, the hysteresis of the eviction below.
        self.compact()?;
        let disk = self.buffer.disk_bytes();
        if disk + GROWTH_PER_BYTE * incoming <= self.soft_bound() {
            if self.live_cap.take().is_some() {
                tracing::info!(
                    disk,
                    "buffer back under its bound on disk: live bytes no longer capped"
                );
            }
            return Ok(None);
        }
        let live = self.buffer.stats().live_bytes;
        let cap = match self.live_cap {
            // What the files hold at their size, scaled to the soft bound.
            None => {
                (u128::from(live) * u128::from(self.soft_bound()) / u128::from(disk.max(1))) as u64
            }
            // Under the cap, yet the files grew past the bound and past their size when the cap
            // was set: the cap is too high.
            Some(cap) if live + incoming <= cap => cap - cap / 8,
            Some(cap) => cap,
        };
        if self.live_cap != Some(cap) {
            tracing::info!(
                live_cap = cap,
                disk,
                max_bytes = self.cfg.max_bytes,
                "buffer at its bound on disk: live bytes capped"
            );
            self.live_cap = Some(cap);
        }
        let target = (cap - cap / 8).saturating_sub(incoming);
        let evict = if live > target && !self.droppables_exhausted {
            live - target
        } else {
            0
        };
        Ok(Some(Squeeze { cap, evict }))
    }

    fn compact(&mut self) -> Result<(), BufferError> {
        let before = self.buffer.disk_bytes();
        let started = Instant::now();
        if self.buffer.compact()? {
            let after = self.buffer.disk_bytes();
            tracing::info!(
                before,
                after,
                ms = started.elapsed().as_millis() as u64,
                "compacted the buffer"
            );
        }
        Ok(())
    }

    fn update_gauges(&self) {
        let s = self.buffer.stats();
        self.metrics.buffer_events.store(s.events, Relaxed);
        self.metrics.buffer_bytes.store(s.live_bytes, Relaxed);
        self.metrics
            .buffer_disk_bytes
            .store(self.buffer.disk_bytes(), Relaxed);
        self.metrics
            .oldest_unacked_ms
            .store(s.oldest_received_ms.unwrap_or(0), Relaxed);
    }
}

/// Figures from [`measure_ingest_rate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestRate {
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub commits: u64,
    pub disk_bytes: u64,
}

/// Benchmark of durable ingest through the intake, for comparing engines and settings:
/// `submitters` concurrent tasks each submit `per_submit` position events (about 250 bytes
/// encoded) at a time into a new buffer of `engine` in `dir`, until `total` are durable.
/// Run in release mode, e.g. the ignored test:
/// `cargo test --release -p qyt-agent --lib buffer::intake::tests::ingest_rate -- --ignored --nocapture`.
pub async fn measure_ingest_rate(
    engine: super::Engine,
    dir: &std::path::Path,
    cfg: IntakeConfig,
    total: u64,
    submitters: usize,
    per_submit: usize,
) -> Result<IngestRate, IntakeError> {
    use qyt_proto::{Fix, PositionReading};
    use std::sync::atomic::AtomicU64;

    let (buffer, report) =
        super::open(engine, dir).map_err(|e| IntakeError::Storage(e.to_string()))?;
    let metrics = Metrics::new();
    let site = SiteId::new("bench").map_err(|e| IntakeError::Storage(e.to_string()))?;
    let (intake, join) = Intake::start(buffer.clone(), site, cfg, metrics.clone(), report)?;
    let claimed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..submitters {
        let (intake, claimed) = (intake.clone(), claimed.clone());
        let source: Arc<str> = Arc::from(format!("gps-{t}"));
        tasks.spawn(async move {
            while claimed.fetch_add(per_submit as u64, Relaxed) < total {
                let now = Utc::now();
                let events = (0..per_submit)
                    .map(|i| PendingEvent {
                        observed_at: now,
                        received_at: now,
                        source: source.clone(),
                        dedup_key: None,
                        body: Body::Position(PositionReading {
                            device_id: format!("truck-{t:04}"),
                            lat: 31.2304 + i as f64 * 1e-5,
                            lon: 121.4737,
                            speed_kmh: Some(42.5),
                            course: Some(270.0),
                            fix: Fix::Fix3d,
                            altitude_m: Some(4.0),
                            satellites: Some(11),
                            hdop: Some(0.9),
                        }),
                    })
                    .collect();
                intake.submit(events).await?;
            }
            Ok::<(), IntakeError>(())
        });
    }
    drop(intake);
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| IntakeError::Storage(format!("a benchmark task failed: {e}")))??;
    }
    let seconds = started.elapsed().as_secs_f64();
    tokio::task::spawn_blocking(move || join.join())
        .await
        .map_err(|e| IntakeError::Storage(format!("joining the writer: {e}")))?;
    let events = metrics.durable.load(Relaxed);
    Ok(IngestRate {
        events,
        seconds,
        events_per_s: events as f64 / seconds,
        commits: metrics.commits.load(Relaxed),
        disk_bytes: buffer.disk_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::redb_store::RedbBuffer;
    use crate::buffer::{Buffer, BufferStats, Engine};
    use qyt_proto::{SealId, SealReading, SealState};
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::Mutex;
    use tempfile::TempDir;

    fn site() -> SiteId {
        SiteId::new("test-site").expect("valid site id")
    }

    fn event(body: Body) -> PendingEvent {
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("valid time");
        PendingEvent {
            observed_at: t,
            received_at: t,
            source: Arc::from("test"),
            body,
            dedup_key: None,
        }
    }

    fn seal(i: usize, pad: usize) -> PendingEvent {
        event(Body::Seal(SealReading {
            seal_id: SealId(format!("CN{i:08}")),
            state: SealState::Sealed,
            battery_pct: None,
            device_id: Some("r".repeat(pad)),
        }))
    }

    fn raw(i: usize, pad: usize) -> PendingEvent {
        event(Body::Raw {
            payload: serde_json::json!({ "i": i, "pad": "p".repeat(pad) }),
        })
    }

    fn all_events(b: &dyn Buffer) -> Vec<(StoredRecord, Event)> {
        b.read_from(Seq::ZERO, usize::MAX, usize::MAX)
            .expect("read back")
            .into_iter()
            .map(|r| {
                let e: Event = serde_json::from_slice(&r.payload).expect("payload is an Event");
                (r, e)
            })
            .collect()
    }

    fn start(
        b: Arc<dyn IntakeStore>,
        cfg: IntakeConfig,
        m: &Arc<Metrics>,
        report: OpenReport,
    ) -> (Intake, IntakeJoin) {
        Intake::start(b, site(), cfg, m.clone(), report).expect("intake starts")
    }

    /// A real buffer with hooks around its commits.
    struct Hooked {
        inner: Arc<dyn IntakeStore>,
        before: Box<dyn Fn() + Send + Sync>,
        after: Box<dyn Fn(&Removed) + Send + Sync>,
    }

    impl Hooked {
        /// The first commit waits until the test sends on the returned channel, so that the
        /// test knows what is queued behind it.
        fn gated(inner: Arc<dyn IntakeStore>) -> (Hooked, mpsc::Sender<()>) {
            let (open_gate, gate) = mpsc::channel::<()>();
            let gate = Mutex::new(Some(gate));
            let before = move || {
                let gate = gate.lock().expect("gate lock").take();
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
            };
            let hooked = Hooked {
                inner,
                before: Box::new(before),
                after: Box::new(|_| {}),
            };
            (hooked, open_gate)
        }

        /// Right after every commit that removed records, copies the buffer's files in `dir`:
        /// what kill -9 or a power cut at that moment would leave. The copies are returned in
        /// commit order.
        fn crash_images(
            inner: Arc<dyn IntakeStore>,
            dir: &Path,
        ) -> (Hooked, Arc<Mutex<Vec<TempDir>>>) {
            let images = Arc::new(Mutex::new(Vec::new()));
            let (dir, taken) = (dir.to_path_buf(), images.clone());
            let after = move |removed: &Removed| {
                if !removed.seqs.is_empty() {
                    taken.lock().expect("images lock").push(crash_image(&dir));
                }
            };
            let hooked = Hooked {
                inner,
                before: Box::new(|| {}),
                after: Box::new(after),
            };
            (hooked, images)
        }
    }

    impl Buffer for Hooked {
        fn next_seq(&self) -> Seq {
            self.inner.next_seq()
        }
        fn acked(&self) -> Seq {
            self.inner.acked()
        }
        fn read_from(
            &self,
            from: Seq,
            max_events: usize,
            max_bytes: usize,
        ) -> Result<Vec<StoredRecord>, BufferError> {
            self.inner.read_from(from, max_events, max_bytes)
        }
        fn ack_through(&self, through: Seq) -> Result<u64, BufferError> {
            self.inner.ack_through(through)
        }
        fn stats(&self) -> BufferStats {
            self.inner.stats()
        }
        fn disk_bytes(&self) -> u64 {
            self.inner.disk_bytes()
        }
        fn compact(&self) -> Result<bool, BufferError> {
            self.inner.compact()
        }
    }

    impl IntakeStore for Hooked {
        fn commit(
            &self,
            remove: Remove<'_>,
            append: &mut dyn FnMut(&Removed) -> Append,
        ) -> Result<Removed, BufferError> {
            (self.before)();
            let removed = self.inner.commit(remove, append)?;
            (self.after)(&removed);
            Ok(removed)
        }
        fn recent_ids(&self, since_ms: i64) -> Result<Vec<DedupEntry>, BufferError> {
            self.inner.recent_ids(since_ms)
        }
        fn prune_ids(&self, before_ms: i64) -> Result<u64, BufferError> {
            self.inner.prune_ids(before_ms)
        }
    }

    /// A copy of the files under `dir`, taken while the buffer is open: the state a crash now
    /// would leave (every commit is durable when it returns, nothing is written between).
    fn crash_image(dir: &Path) -> TempDir {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).expect("create image directory");
            for entry in std::fs::read_dir(from).expect("list buffer directory") {
                let entry = entry.expect("buffer directory entry");
                let target = to.join(entry.file_name());
                if entry.file_type().expect("file type").is_dir() {
                    copy(&entry.path(), &target);
                } else {
                    std::fs::copy(entry.path(), &target).expect("copy buffer file");
                }
            }
        }
        let image = tempfile::tempdir().expect("tempdir");
        copy(dir, image.path());
        image
    }

    /// What the hub needs from any state a crash can leave: every seq below `next_seq` is
    /// acked, held, or declared missing by a gap event that is held.
    fn assert_every_seq_accounted_for(b: &dyn Buffer, context: &str) {
        let mut accounted: BTreeSet<u64> = (1..=b.acked().0).collect();
        for (r, e) in all_events(b) {
            accounted.insert(r.seq.0);
            if let Body::Gap(g) = &e.body {
                for [from, to] in &g.ranges {
                    accounted.extend(from.0..=to.0);
                }
            }
        }
        let lost: Vec<u64> = (1..b.next_seq().0)
            .filter(|s| !accounted.contains(s))
            .collect();
        assert!(
            lost.is_empty(),
            "{context}: {} seqs neither held nor declared (the hub would wait for them forever), e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
    }

    #[tokio::test]
    async fn concurrent_submits_are_group_committed_with_unique_ascending_seqs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inner, report) = RedbBuffer::open(dir.path()).expect("open");
        let (buf, open_gate) = Hooked::gated(Arc::new(inner));
        let buf = Arc::new(buf);
        let m = Metrics::new();
        let cfg = IntakeConfig {
            commit_delay_ms: 0,
            ..IntakeConfig::default()
        };
        let (intake, join) = start(buf.clone(), cfg, &m, report);
        let mut durable = intake.durable_watch();

        let submits: Vec<_> = (0..50)
            .map(|i| intake.submit((0..4).map(|j| raw(i * 4 + j, 10)).collect()))
            .collect();
        let mut all = Box::pin(futures::future::join_all(submits));
        // One poll sends every submission; the first commit is held at the gate meanwhile.
        assert!(futures::poll!(&mut all).is_pending());
        open_gate.send(()).expect("writer waits at the gate");
        let results = all.await;

        let mut seen = Vec::new();
        for r in results {
            let seqs = r.expect("accepted");
            assert_eq!(seqs.len(), 4);
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0].next()),
                "a submission's seqs are contiguous: {seqs:?}"
            );
            seen.extend(seqs);
        }
        seen.sort();
        assert_eq!(
            seen,
            (1..=200).map(Seq).collect::<Vec<_>>(),
            "unique seqs 1..=200"
        );
        let commits = m.commits.load(Relaxed);
        assert!(commits <= 2, "50 submissions took {commits} commits");
        assert_eq!(m.durable.load(Relaxed), 200);
        assert_eq!(*durable.borrow_and_update(), Seq(201));

        for (r, e) in all_events(buf.as_ref()) {
            assert_eq!(
                (e.seq, &e.site, e.source.as_str()),
                (r.seq, &site(), "test")
            );
        }
        drop(intake);
        tokio::task::spawn_blocking(move || join.join())
            .await
            .expect("writer joined");
        assert!(
            durable.changed().await.is_err(),
            "the watch closes with the writer"
        );
    }

    async fn submit_and_stop(dir: &Path, n: usize, ack: bool) -> Vec<Seq> {
        let (buf, report) = crate::buffer::open(Engine::Redb, dir).expect("open");
        let m = Metrics::new();
        let (intake, join) = start(buf.clone(), IntakeConfig::default(), &m, report);
        let seqs = intake
            .submit((0..n).map(|i| seal(i, 5)).collect())
            .await
            .expect("accepted");
        drop(intake);
        tokio::task::spawn_blocking(move || join.join())
            .await
            .expect("writer joined");
        if let (true, Some(last)) = (ack, seqs.last()) {
            buf.ack_through(*last).expect("ack");
        }
        seqs
    }

    #[tokio::test]
    async fn seqs_stay_unique_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = submit_and_stop(dir.path(), 10, false).await;
        let b = submit_and_stop(dir.path(), 5, true).await;
        let c = submit_and_stop(dir.path(), 3, false).await;
        assert_eq!(a, (1..=10).map(Seq).collect::<Vec<_>>());
        assert_eq!(b, (11..=15).map(Seq).collect::<Vec<_>>());
        assert_eq!(
            c,
            vec![Seq(16), Seq(17), Seq(18)],
            "seqs continue after everything was acked"
        );
    }

    #[tokio::test]
    async fn redb_full_buffer_evicts_droppable_oldest_first_then_refuses_never_drop() {
        full_buffer(Engine::Redb, MIN_MAX_BYTES).await;
    }

    #[tokio::test]
    async fn sled_full_buffer_evicts_droppable_oldest_first_then_refuses_never_drop() {
        // sled appends every delete to its log and never returns space, so its files overshoot
        // the bound by a margin that depends on when its background threads reclaim segments
        // (measured 10% alone, 13% with other tests running). The limit here only catches
        // runaway growth; the point is eviction order, the gap and the refusals.
        full_buffer(Engine::Sled, MIN_MAX_BYTES + MIN_MAX_BYTES / 2).await;
    }

    /// Fills a buffer bounded at `MIN_MAX_BYTES`, checking after every commit that its files
    /// stay within `disk_limit`.
    async fn full_buffer(engine: Engine, disk_limit: u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (buf, report) = crate::buffer::open(engine, dir.path()).expect("open");
        let m = Metrics::new();
        let cfg = IntakeConfig {
            max_bytes: MIN_MAX_BYTES,
            ..IntakeConfig::default()
        };
        let (hooked, images) = Hooked::crash_images(buf.clone(), dir.path());
        let (intake, join) = start(Arc::new(hooked), cfg, &m, report);

        let mut seals = BTreeSet::new();
        let mut raws = BTreeSet::new();
        for i in 0..20 {
            seals.extend(
                intake
                    .submit((0..10).map(|j| seal(i * 10 + j, 900)).collect())
                    .await
                    .expect("room for seals"),
            );
        }
        // Droppable events until the bound forces evictions.
        let mut i = 0;
        while m.dropped_total(DropKind::BufferFull) == 0 {
            raws.extend(
                intake
                    .submit((0..50).map(|j| raw(i * 50 + j, 900)).collect())
                    .await
                    .expect("droppable accepted"),
            );
            assert!(
                buf.disk_bytes() <= disk_limit,
                "disk {} within {disk_limit}",
                buf.disk_bytes()
            );
            i += 1;
            assert!(i < 10_000, "the bound never forced an eviction");
        }
        let held = all_events(buf.as_ref());
        let held_seqs: BTreeSet<Seq> = held.iter().map(|(r, _)| r.seq).collect();
        let evicted: Vec<Seq> = raws.difference(&held_seqs).copied().collect();
        let gaps: Vec<GapBody> = held
            .iter()
            .filter_map(|(_, e)| match &e.body {
                Body::Gap(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(gaps.len(), 1, "one eviction, one gap");
        assert_eq!(
            gaps[0],
            GapBody::from_sorted(evicted.iter().copied(), DropReason::BufferFull)
        );
        assert_eq!(m.dropped_total(DropKind::BufferFull), evicted.len() as u64);
        let oldest_kept = raws.intersection(&held_seqs).next().copied();
        assert!(
            evicted.iter().all(|s| Some(*s) < oldest_kept),
            "oldest droppable first"
        );
        assert!(
            seals.is_subset(&held_seqs),
            "never-drop events are never evicted"
        );
        assert!(
            buf.disk_bytes() <= disk_limit,
            "disk {} within {disk_limit}",
            buf.disk_bytes()
        );

        // Never-drop events until the buffer refuses them.
        let mut i = 0;
        let refused = loop {
            match intake
                .submit((0..50).map(|j| seal(10_000 + i * 50 + j, 900)).collect())
                .await
            {
                Ok(s) => seals.extend(s),
                Err(e) => break e,
            }
            assert!(
                buf.disk_bytes() <= disk_limit,
                "disk {} within {disk_limit}",
                buf.disk_bytes()
            );
            i += 1;
            assert!(i < 10_000, "the buffer never refused");
        };
        assert!(
            matches!(
                refused,
                IntakeError::Full {
                    class: EventClass::Seal
                }
            ),
            "{refused}"
        );
        assert_eq!(m.dropped_total(DropKind::RefusedFull), 50);
        // Nothing droppable is left to make room with: droppable events are refused too.
        let r = intake.submit((0..50).map(|j| raw(j, 900)).collect()).await;
        assert!(
            matches!(
                r,
                Err(IntakeError::Full {
                    class: EventClass::Raw
                })
            ),
            "{r:?}"
        );
        let held: BTreeSet<Seq> = all_events(buf.as_ref())
            .iter()
            .map(|(r, _)| r.seq)
            .collect();
        assert!(seals.is_subset(&held), "every accepted seal is still held");
        assert!(
            held.iter().all(|s| !raws.contains(s)),
            "every droppable event was evicted first"
        );
        assert!(
            buf.disk_bytes() <= disk_limit,
            "disk {} within {disk_limit}",
            buf.disk_bytes()
        );
        drop(intake);
        tokio::task::spawn_blocking(move || join.join())
            .await
            .expect("writer joined");

        // A crash right after any eviction leaves its gap on disk too.
        let images = std::mem::take(&mut *images.lock().expect("images lock"));
        assert!(!images.is_empty(), "the buffer was never evicted from");
        for (i, image) in images.iter().enumerate() {
            let (b, report) = crate::buffer::open(engine, image.path()).expect("open crash image");
            assert!(report.corrupt.is_empty(), "image {i}: {report:?}");
            assert_every_seq_accounted_for(b.as_ref(), &format!("crash after eviction {i}"));
        }
    }

    #[tokio::test]
    async fn corruption_found_at_start_becomes_a_gap_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        submit_and_stop(dir.path(), 5, false).await;
        {
            let (b, _) = RedbBuffer::open(dir.path()).expect("open");
            assert!(b.damage(Seq(3), b"not a record").expect("damage"));
        }
        {
            // Opened, then a crash before the intake's first commit: nothing was removed, so
            // the next open finds the damage again and it still gets declared.
            let (b, report) = crate::buffer::open(Engine::Redb, dir.path()).expect("reopen");
            assert_eq!(report.corrupt, vec![Seq(3)]);
            assert_eq!(b.stats().events, 5, "the damaged record is still held");
        }
        let (buf, report) = crate::buffer::open(Engine::Redb, dir.path()).expect("reopen");
        assert_eq!(report.corrupt, vec![Seq(3)]);
        let m = Metrics::new();
        let (intake, join) = start(buf.clone(), IntakeConfig::default(), &m, report);
        assert_eq!(*intake.durable_watch().borrow(), Seq(7));
        let held = all_events(buf.as_ref());
        let seqs: Vec<Seq> = held.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [1, 2, 4, 5, 6].map(Seq));
        let (r, e) = &held[4];
        assert_eq!(r.class, EventClass::Gap);
        assert_eq!(
            e.body,
            Body::Gap(GapBody::from_sorted([Seq(3)], DropReason::Corrupt))
        );
        assert_eq!(m.dropped_total(DropKind::Corrupt), 1);
        assert_eq!(
            intake.submit(vec![seal(9, 1)]).await.expect("accepted"),
            vec![Seq(7)]
        );
        drop(intake);
        tokio::task::spawn_blocking(move || join.join())
            .await
            .expect("writer joined");
        drop(buf);
        let (buf, report) = crate::buffer::open(Engine::Redb, dir.path()).expect("reopen");
        assert!(report.corrupt.is_empty(), "declared once: {report:?}");
        assert_every_seq_accounted_for(buf.as_ref(), "after the declaration");
    }

    fn keyed(i: usize, received_at: DateTime<Utc>, key: Option<&str>) -> PendingEvent {
        PendingEvent {
            received_at,
            dedup_key: key.map(String::from),
            ..raw(i, 5)
        }
    }

    async fn stop(intake: Intake, join: IntakeJoin) {
        drop(intake);
        tokio::task::spawn_blocking(move || join.join())
            .await
            .expect("writer joined");
    }

    #[tokio::test]
    async fn redb_dedup_keys_are_committed_with_their_events_and_survive_a_crash() {
        dedup_keys_survive_a_crash(Engine::Redb).await;
    }

    #[tokio::test]
    async fn sled_dedup_keys_are_committed_with_their_events_and_survive_a_crash() {
        dedup_keys_survive_a_crash(Engine::Sled).await;
    }

    async fn dedup_keys_survive_a_crash(engine: Engine) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (buf, report) = crate::buffer::open(engine, dir.path()).expect("open");
        let m = Metrics::new();
        let (intake, join) = start(buf, IntakeConfig::default(), &m, report);
        let now = Utc::now();
        let ms = now.timestamp_millis();
        let seqs = intake
            .submit(vec![
                keyed(1, now, Some("gw\0locks/+\0lock1-1635")),
                keyed(2, now, None),
                keyed(3, now, Some("gw\0locks/+\0lock1-1636")),
            ])
            .await
            .expect("accepted");

        // Killed right after the commit, before the source could PUBACK.
        let image = crash_image(dir.path());
        let (after, report) = crate::buffer::open(engine, image.path()).expect("open crash image");
        assert!(report.corrupt.is_empty());
        let held: Vec<Seq> = all_events(after.as_ref())
            .iter()
            .map(|(r, _)| r.seq)
            .collect();
        assert_eq!(held, seqs);
        let m2 = Metrics::new();
        let (restarted, join2) = start(after.clone(), IntakeConfig::default(), &m2, report);
        let want = vec![
            DedupEntry {
                accepted_ms: ms,
                key: "gw\0locks/+\0lock1-1635".into(),
            },
            DedupEntry {
                accepted_ms: ms,
                key: "gw\0locks/+\0lock1-1636".into(),
            },
        ];
        let window_start = ms - 60_000;
        assert_eq!(
            restarted
                .recent_dedup_keys(window_start)
                .await
                .expect("keys"),
            want
        );
        // The hub acking the events does not forget their keys: a redelivery may come later.
        assert_eq!(after.ack_through(seqs[2]).expect("ack"), 3);
        assert_eq!(
            restarted
                .recent_dedup_keys(window_start)
                .await
                .expect("keys"),
            want
        );
        assert_eq!(
            restarted.recent_dedup_keys(ms + 1).await.expect("keys"),
            vec![],
            "nothing was accepted after them"
        );
        stop(restarted, join2).await;
        stop(intake, join).await;
    }

    #[tokio::test]
    async fn dedup_keys_are_forgotten_by_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (buf, report) = crate::buffer::open(Engine::Redb, dir.path()).expect("open");
        let m = Metrics::new();
        let cfg = IntakeConfig {
            dedup_retain_ms: 60_000,
            ..IntakeConfig::default()
        };
        let (intake, join) = start(buf.clone(), cfg, &m, report);
        let now = Utc::now();
        let old = now - chrono::Duration::minutes(2);
        intake
            .submit(vec![keyed(1, old, Some("old")), keyed(2, now, Some("new"))])
            .await
            .expect("accepted");
        // The writer prunes after its first commit; joining it waits for that.
        stop(intake, join).await;
        assert_eq!(
            buf.recent_ids(i64::MIN).expect("ids"),
            vec![DedupEntry {
                accepted_ms: now.timestamp_millis(),
                key: "new".into(),
            }]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: run in release mode with --ignored --nocapture"]
    async fn ingest_rate() {
        for engine in [Engine::Redb, Engine::Sled] {
            for (submitters, per_submit) in [(64, 1), (16, 50), (4, 500)] {
                let dir = tempfile::tempdir().expect("tempdir");
                let r = measure_ingest_rate(
                    engine,
                    dir.path(),
                    IntakeConfig::default(),
                    200_000,
                    submitters,
                    per_submit,
                )
                .await
                .expect("benchmark runs");
                eprintln!(
                    "{engine:?}: {submitters} submitters x {per_submit} events: {:.0} events/s durable ({} events, {} commits, {:.2} s, {} bytes on disk)",
                    r.events_per_s, r.events, r.commits, r.seconds, r.disk_bytes
                );
            }
        }
    }
}
