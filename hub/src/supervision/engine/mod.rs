//! The supervision engine: a pure state machine. Events, operator actions and clock ticks go
//! in, with the time they are applied at; transit changes, timeline entries, alarms and audit
//! entries come out as [`Changes`] for the caller to persist and publish. No I/O, no clock.
//!
//! Order and lateness: events are applied as the store delivers them (per site, in seq order),
//! but every rule reasons in the device's observed time. A position older than the last one
//! applied (uploaded late after a coverage gap) fills the track but does not drive the
//! conditions; status changes keep their observed times, so the timeline reads in the order
//! things happened. See [`crate::supervision::rules`] for which rules may fire on late data.

use crate::access::Caller;
use crate::audit::AuditEntry;
use crate::supervision::alarm::{
    subject, Alarm, AlarmId, AlarmState, CloseReason, LifecycleError, Step,
};
use crate::supervision::geo::{Area, Point};
use crate::supervision::rules::{Rule, SupervisionConfig};
use crate::supervision::transit::{
    normalize_plate, Cause, Declaration, EndCheck, EntryKind, Episode, EventRef, LastPosition,
    SealSeen, Seen, Status, TimelineEntry, Transit, TransitId,
};
use chrono::{DateTime, Duration, Utc};
use qyt_proto::{
    AlarmKind, AlarmReport, Body, Direction, Event, Fix, GatePassage, PositionReading, SealId,
    SealReading, SealState, SiteId, StatusReport, WeightReading,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod actions;
mod events;
mod raise;
mod road;
mod timeline;
mod timers;
mod weighing;

/// Stable weighings kept per site to match with gate passages (the latest by seq).
pub const WEIGHINGS_KEPT: usize = 64;

/// A stable weighing at a site, kept to be matched with the gate passage of a transit's end.
/// Persisted with the step that applied it: a truck weighed before a hub restart and let out
/// of the gate after it still gets its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighing {
    /// When the scale observed it.
    pub at: DateTime<Utc>,
    pub kg: f64,
    pub cause: EventRef,
}

/// A site's agent as the ingest registry knows it, for the timer rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SitePresence {
    pub online: bool,
    /// Last heard from (a batch or an online status).
    pub last_seen: Option<DateTime<Utc>>,
    /// When the last online status arrived, and the oldest unacked age it reported.
    pub status_at: Option<DateTime<Utc>>,
    pub oldest_unacked_age_s: Option<f64>,
}

/// What one step of the engine changed, for the caller to persist in one transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// The new state of every transit that changed (released ones included, for the last time).
    pub transits: BTreeMap<TransitId, Transit>,
    pub timeline: Vec<(TransitId, TimelineEntry)>,
    /// The new state of every alarm raised or changed.
    pub alarms: BTreeMap<AlarmId, Alarm>,
    pub audit: Vec<AuditEntry>,
    /// Alarms newly raised in this step (a subset of `alarms`).
    pub raised: Vec<AlarmId>,
    /// Stable weighings recorded in this step.
    pub weighings: Vec<Weighing>,
}

impl Changes {
    /// Adds a later step's changes: newer states replace older ones, entries append.
    pub fn merge(&mut self, later: Changes) {
        self.transits.extend(later.transits);
        self.timeline.extend(later.timeline);
        self.alarms.extend(later.alarms);
        self.audit.extend(later.audit);
        self.raised.extend(later.raised);
        self.weighings.extend(later.weighings);
    }

    pub fn is_empty(&self) -> bool {
        self.transits.is_empty()
            && self.timeline.is_empty()
            && self.alarms.is_empty()
            && self.audit.is_empty()
            && self.weighings.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("invalid declaration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Conflict(String),
    #[error("no open transit {0}")]
    UnknownTransit(TransitId),
    #[error("no open alarm {0}")]
    UnknownAlarm(AlarmId),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

pub struct Engine {
    cfg: SupervisionConfig,
    sites: BTreeSet<SiteId>,
    site_areas: BTreeMap<SiteId, Area>,
    transits: BTreeMap<TransitId, Transit>,
    by_plate: HashMap<String, TransitId>,
    by_elock: HashMap<String, TransitId>,
    by_seal: HashMap<String, TransitId>,
    alarms: BTreeMap<AlarmId, Alarm>,
    open_by_key: HashMap<(Rule, String), AlarmId>,
    next_alarm_id: AlarmId,
    /// Per site, by seq.
    weighings: HashMap<SiteId, BTreeMap<u64, Weighing>>,
    /// The first tick: sites never heard from count as offline since then.
    started_at: Option<DateTime<Utc>>,
    out: Changes,
    touched: BTreeSet<TransitId>,
}

impl Engine {
    /// An engine over the open transits, open alarms and kept weighings loaded from the store.
    pub fn new(
        cfg: SupervisionConfig,
        sites: BTreeMap<SiteId, Option<Area>>,
        transits: Vec<Transit>,
        alarms: Vec<Alarm>,
        next_alarm_id: AlarmId,
        weighings: Vec<Weighing>,
    ) -> Engine {
        let mut e = Engine {
            cfg,
            site_areas: sites
                .iter()
                .filter_map(|(s, a)| a.map(|a| (s.clone(), a)))
                .collect(),
            sites: sites.into_keys().collect(),
            transits: BTreeMap::new(),
            by_plate: HashMap::new(),
            by_elock: HashMap::new(),
            by_seal: HashMap::new(),
            alarms: BTreeMap::new(),
            open_by_key: HashMap::new(),
            next_alarm_id: next_alarm_id.max(1),
            weighings: HashMap::new(),
            started_at: None,
            out: Changes::default(),
            touched: BTreeSet::new(),
        };
        for t in transits {
            e.index(&t);
            e.transits.insert(t.id().clone(), t);
        }
        for a in alarms.into_iter().filter(|a| a.state != AlarmState::Closed) {
            e.next_alarm_id = e.next_alarm_id.max(a.id + 1);
            e.open_by_key.insert((a.rule, a.subject()), a.id);
            e.alarms.insert(a.id, a);
        }
        for w in weighings {
            e.keep_weighing(w);
        }
        e
    }

    fn index(&mut self, t: &Transit) {
        let id = t.id().clone();
        self.by_plate
            .insert(normalize_plate(&t.declaration.plate), id.clone());
        if let Some(e) = &t.declaration.elock_id {
            self.by_elock.insert(e.clone(), id.clone());
        }
        for s in &t.seals {
            self.by_seal.insert(s.0.clone(), id.clone());
        }
    }

    fn unindex(&mut self, t: &Transit) {
        self.by_plate.remove(&normalize_plate(&t.declaration.plate));
        if let Some(e) = &t.declaration.elock_id {
            self.by_elock.remove(e);
        }
        for s in &t.seals {
            self.by_seal.remove(&s.0);
        }
    }

    fn finish(&mut self) -> Changes {
        for id in std::mem::take(&mut self.touched) {
            if let Some(t) = self.transits.get(&id) {
                self.out.transits.insert(id, t.clone());
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Takes a transit out of the map to work on it beside the rest of the engine.
    fn with_transit<R>(
        &mut self,
        id: &TransitId,
        f: impl FnOnce(&mut Engine, &mut Transit) -> R,
    ) -> Option<R> {
        let mut t = self.transits.remove(id)?;
        let r = f(self, &mut t);
        self.touched.insert(id.clone());
        self.transits.insert(id.clone(), t);
        Some(r)
    }
}

/// The event being applied.
struct Ctx {
    /// Observed time.
    at: DateTime<Utc>,
    /// Hub time.
    now: DateTime<Utc>,
    /// Observed recently enough to raise condition alarms.
    fresh: bool,
    cause: EventRef,
}

impl Ctx {
    fn seen(&self) -> Seen {
        Seen {
            at: self.at,
            cause: self.cause.clone(),
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::seconds(s as i64)
}

fn is_open(s: SealState) -> bool {
    matches!(s, SealState::Opened | SealState::Tampered)
}

fn all_sealed(seals: &[SealId], end: &EndCheck) -> bool {
    seals.iter().all(|s| {
        end.seals
            .get(&s.0)
            .is_some_and(|r| r.state == SealState::Sealed)
    })
}

fn state_name(s: SealState) -> &'static str {
    match s {
        SealState::Sealed => "sealed",
        SealState::Opened => "opened",
        SealState::Tampered => "tampered",
        SealState::Unknown => "in an unknown state",
    }
}

fn kind_name(k: AlarmKind) -> &'static str {
    match k {
        AlarmKind::LockOpened => "its lock opened",
        AlarmKind::RopeCut => "its rope cut",
        AlarmKind::CoverOpened => "its cover opened",
        AlarmKind::Tamper => "tampering",
        AlarmKind::IllegalDoorOpening => "an illegal door opening",
        _ => "an alarm",
    }
}

fn seal_list(seals: &[SealId]) -> String {
    seals
        .iter()
        .map(|s| s.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
