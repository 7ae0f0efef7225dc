//! The engine at work in the hub: fed from the store after ingest commits, ticked by a timer,
//! driven by operators through the API; every step persisted in one transaction and published
//! to the live stream.
//!
//! Ingest never waits for supervision: the writer only marks the sites it committed for and
//! wakes this task ([`Feed`]). The task reads what it has not applied yet from the store, per
//! site in seq order, so the same path serves normal flow, start-up after a crash and recovery
//! after its own failures. If persisting a step fails, nothing of it is kept: the engine is
//! rebuilt from the database and the events are read again on the next wake-up or tick; acks
//! were sent long before and are unaffected.

use crate::access::EnterpriseId;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::progress::{Progress, MAX_MISSING_RANGES};
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use crate::supervision::alarm::Alarm;
use crate::supervision::engine::{Changes, Engine, EngineError, SitePresence};
use crate::supervision::geo::Area;
use crate::supervision::persist;
use crate::supervision::rules::SupervisionConfig;
use crate::supervision::transit::{EntryKind, Status, Transit, TransitId};
use crate::validate::MAX_SEQ;
use chrono::{DateTime, Utc};
use qyt_proto::{Body, SiteId};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tracing::{debug, error, info_span, warn};

/// Events applied per transaction while catching up, so one long backlog does not hold the
/// database (or an operator's action) for long.
const CHUNK: usize = 1000;

/// How many live updates a slow stream client may fall behind before it is told to reload.
const UPDATES_BUFFER: usize = 1024;

/// A change for the live stream.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    Transit { transit: TransitSummary },
    Alarm { alarm: Box<Alarm> },
}

/// What a list or a stream shows of a transit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitSummary {
    pub id: TransitId,
    pub enterprise: EnterpriseId,
    pub status: Status,
    pub plate: String,
    pub origin: SiteId,
    pub destination: SiteId,
    pub updated_at: DateTime<Utc>,
}

impl From<&Transit> for TransitSummary {
    fn from(t: &Transit) -> TransitSummary {
        TransitSummary {
            id: t.id().clone(),
            enterprise: t.declaration.enterprise.clone(),
            status: t.status,
            plate: t.declaration.plate.clone(),
            origin: t.declaration.origin.clone(),
            destination: t.declaration.destination.clone(),
            updated_at: t.updated_at,
        }
    }
}

/// Sites with newly committed events, and the wake-up for the supervision task.
#[derive(Default)]
pub struct Feed {
    dirty: Mutex<BTreeSet<SiteId>>,
    wake: Notify,
}

impl Feed {
    /// Called by the ingest writer after a commit; never blocks.
    pub fn committed(&self, sites: impl IntoIterator<Item = SiteId>) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(sites);
        self.wake.notify_one();
    }

    fn take(&self) -> BTreeSet<SiteId> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot record the change, nothing was changed: {0}")]
    Store(#[from] StoreError),
}

/// The supervision of one hub; cheap to clone.
#[derive(Clone)]
pub struct Supervision {
    inner: Arc<Mutex<Inner>>,
    feed: Arc<Feed>,
    updates: broadcast::Sender<Update>,
    clock: Arc<dyn Clock>,
    tick_every: Duration,
    /// Immutable copies, so async callers never wait for the engine's lock to read them.
    sites: Arc<Vec<SiteId>>,
    cfg: Arc<SupervisionConfig>,
}

/// Called after a step that changed a transit's status is recorded (wakes the webhook sender).
pub type OnStatus = Arc<dyn Fn() + Send + Sync>;

struct Inner {
    engine: Engine,
    conn: Connection,
    progress: BTreeMap<SiteId, Progress>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    cfg: SupervisionConfig,
    sites: BTreeMap<SiteId, Option<Area>>,
    on_status: OnStatus,
}

impl Supervision {
    /// Loads the engine's state from the database that `Store::open` created.
    pub fn open(
        path: &Path,
        cfg: SupervisionConfig,
        sites: BTreeMap<SiteId, Option<Area>>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        on_status: OnStatus,
    ) -> Result<Supervision, StoreError> {
        let conn = Store::writer(path)?;
        let tick_every = Duration::from_secs(cfg.tick_s);
        let shared_cfg = Arc::new(cfg.clone());
        let site_list = Arc::new(sites.keys().cloned().collect());
        let mut inner = Inner {
            engine: Engine::new(cfg.clone(), sites.clone(), vec![], vec![], 1, vec![]),
            conn,
            progress: BTreeMap::new(),
            registry,
            metrics,
            cfg,
            sites,
            on_status,
        };
        inner.reload()?;
        let feed = Arc::new(Feed::default());
        // Whatever was stored but not applied before the last stop.
        feed.committed(inner.sites.keys().cloned());
        Ok(Supervision {
            inner: Arc::new(Mutex::new(inner)),
            feed,
            updates: broadcast::channel(UPDATES_BUFFER).0,
            clock,
            tick_every,
            sites: site_list,
            cfg: shared_cfg,
        })
    }

    pub fn feed(&self) -> Arc<Feed> {
        self.feed.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs until `stop`: applies committed events when woken, evaluates the timers every
    /// `supervision.tick_s`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.tick_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let tick = tokio::select! {
                _ = self.feed.wake.notified() => false,
                _ = ticks.tick() => true,
                _ = stop.wait_for(|s| *s) => break,
            };
            let mut dirty = self.feed.take();
            if tick {
                // Also a safety net: events whose wake-up was missed wait one tick at most.
                dirty.extend(self.all_sites());
            }
            self.step(dirty, tick).await;
        }
    }

    /// Applies every event committed before the call and not applied yet. Tests call it to
    /// wait for supervision after an ack, instead of polling.
    ///
    /// It walks every site itself rather than going through the [`Feed`]: the background task
    /// may take the dirty set first, and returning while that task is still applying it
    /// would let the caller read a transit that does not show its events yet.
    pub async fn settle(&self) {
        self.step(self.all_sites(), false).await;
    }

    /// Applies what is pending, then evaluates the timers at the clock's present time.
    pub async fn tick(&self) {
        self.step(self.all_sites(), true).await;
    }

    fn all_sites(&self) -> BTreeSet<SiteId> {
        self.sites.iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Catches `dirty` up with the store (a chunk per lock, so it interleaves safely with the
    /// background task and operators' actions), then evaluates the timers if `tick`.
    async fn step(&self, dirty: BTreeSet<SiteId>, tick: bool) {
        let this = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            for site in &dirty {
                let span = info_span!("supervise", site = %site);
                let _enter = span.enter();
                // A chunk per lock: operators' actions get their turn during a long catch-up.
                loop {
                    let applied = this.lock().catch_up_chunk(site, &*this.clock, &this.updates);
                    match applied {
                        Ok(true) => continue,
                        Ok(false) => break,
                        Err(e) => {
                            error!(error = %e, "supervision could not record its changes; rebuilt from the database, will retry");
                            this.feed.committed(dirty.iter().cloned());
                            return;
                        }
                    }
                }
            }
            if tick {
                let mut inner = this.lock();
                if let Err(e) = inner.tick(this.clock.now(), &this.updates) {
                    error!(error = %e, "supervision could not record its timers; rebuilt from the database, will retry");
                }
            }
        })
        .await;
        if let Err(e) = done {
            error!(error = %e, "the supervision step panicked");
        }
    }

    /// Runs an operator action on the engine and records it.
    pub async fn act(
        &self,
        f: impl FnOnce(&mut Engine, &Connection, DateTime<Utc>) -> Result<Changes, ActionError>
            + Send
            + 'static,
    ) -> Result<Changes, ActionError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut inner = this.lock();
            let now = this.clock.now();
            let inner = &mut *inner;
            let changes = f(&mut inner.engine, &inner.conn, now)?;
            inner.commit(&changes, &BTreeMap::new(), &this.updates)?;
            Ok(changes)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ActionError::Store(StoreError::Corrupt {
                what: "supervision task",
                detail: format!("panicked: {e}"),
            }))
        })
    }

    pub fn config(&self) -> &SupervisionConfig {
        &self.cfg
    }
}

impl Inner {
    /// Rebuilds the engine and progress from the database, discarding anything not committed.
    fn reload(&mut self) -> Result<(), StoreError> {
        let sites: Vec<SiteId> = self.sites.keys().cloned().collect();
        let loaded = persist::load(&self.conn, &sites)?;
        self.engine = Engine::new(
            self.cfg.clone(),
            self.sites.clone(),
            loaded.transits,
            loaded.alarms,
            loaded.next_alarm_id,
            loaded.weighings,
        );
        self.progress = loaded.progress;
        Ok(())
    }

    /// Persists a step; on failure rebuilds from the database so memory never holds more than
    /// it does.
    fn commit(
        &mut self,
        changes: &Changes,
        progress: &BTreeMap<&SiteId, &Progress>,
        updates: &broadcast::Sender<Update>,
    ) -> Result<(), StoreError> {
        if let Err(e) = persist::save(&mut self.conn, changes, progress) {
            self.metrics.supervision_failed();
            if let Err(again) = self.reload() {
                error!(error = %again, "cannot reload supervision state either");
            }
            return Err(e);
        }
        self.metrics.alarms_raised(changes.raised.len() as u64);
        if changes
            .timeline
            .iter()
            .any(|(_, e)| e.kind == EntryKind::Status)
        {
            (self.on_status)();
        }
        for t in changes.transits.values() {
            let _ = updates.send(Update::Transit {
                transit: TransitSummary::from(t),
            });
        }
        for a in changes.alarms.values() {
            let _ = updates.send(Update::Alarm {
                alarm: Box::new(a.clone()),
            });
        }
        Ok(())
    }

    /// Applies the next chunk of `site`'s stored events not applied yet, in seq order, in one
    /// transaction. Whether it applied any (call again until it does not).
    fn catch_up_chunk(
        &mut self,
        site: &SiteId,
        clock: &dyn Clock,
        updates: &broadcast::Sender<Update>,
    ) -> Result<bool, StoreError> {
        let Some(p) = self.progress.get(site) else {
            return Ok(false);
        };
        // Unapplied events can only be in the holes of what was applied, or above it.
        let mut ranges: Vec<(u64, u64)> = p
            .missing(MAX_MISSING_RANGES)
            .into_iter()
            .map(|[a, b]| (a, b))
            .collect();
        ranges.push((p.highest() + 1, MAX_SEQ));
        for (from, to) in ranges {
            let events = persist::events(&self.conn, site, from, to, CHUNK)?;
            if events.is_empty() {
                continue;
            }
            let applied = events.len() as u64;
            let mut changes = Changes::default();
            let mut progress = self.progress.get(site).cloned().unwrap_or_default();
            let now = clock.now();
            for e in events {
                match e {
                    Ok(e) => {
                        if let Body::Gap(gap) = &e.body {
                            for [a, b] in &gap.ranges {
                                progress.record_dropped(a.0, b.0);
                            }
                        }
                        changes.merge(self.engine.apply(&e, now));
                        progress.record_stored(&[e.seq.0]);
                    }
                    Err((seq, why)) => {
                        warn!(seq, error = %why, "stored event cannot be decoded; skipped by supervision");
                        progress.record_stored(&[seq]);
                    }
                }
            }
            self.commit(&changes, &BTreeMap::from([(site, &progress)]), updates)?;
            debug!(applied, "applied a chunk");
            self.metrics.supervised(applied);
            self.progress.insert(site.clone(), progress);
            return Ok(true);
        }
        Ok(false)
    }

    fn tick(
        &mut self,
        now: DateTime<Utc>,
        updates: &broadcast::Sender<Update>,
    ) -> Result<(), StoreError> {
        let presence: BTreeMap<SiteId, SitePresence> = self.registry.read(|all| {
            all.iter()
                .map(|(site, s)| {
                    (
                        site.clone(),
                        SitePresence {
                            online: s.online,
                            last_seen: s.last_seen,
                            status_at: s.status_at,
                            oldest_unacked_age_s: s.oldest_unacked_age_s,
                        },
                    )
                })
                .collect()
        });
        let changes = self.engine.tick(now, &presence);
        if changes.is_empty() {
            return Ok(());
        }
        self.commit(&changes, &BTreeMap::new(), updates)
    }
}
