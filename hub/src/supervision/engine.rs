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

    fn keep_weighing(&mut self, w: Weighing) {
        let list = self.weighings.entry(w.cause.site.clone()).or_default();
        list.insert(w.cause.seq, w);
        while list.len() > WEIGHINGS_KEPT {
            list.pop_first();
        }
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

    // ----- operator actions -------------------------------------------------------------

    /// Declares a transit. `id_taken` says whether the id is already used by a released transit
    /// (which the engine no longer holds).
    pub fn declare(
        &mut self,
        d: Declaration,
        id_taken: bool,
        by: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Changes, EngineError> {
        let mut bad = d.check();
        for (what, site) in [("origin", &d.origin), ("destination", &d.destination)] {
            if !self.sites.contains(site) {
                bad.push(format!(
                    "{what} {site} is not a declared site: use one of {}",
                    self.sites
                        .iter()
                        .map(SiteId::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if !bad.is_empty() {
            return Err(EngineError::Invalid(bad));
        }
        if id_taken || self.transits.contains_key(&d.id) {
            return Err(EngineError::Conflict(format!(
                "transit {} is already declared: transit ids are never reused",
                d.id
            )));
        }
        self.check_free(&d.id, Some(&d.plate), d.elock_id.as_deref(), &d.seal_ids)?;
        let id = d.id.clone();
        let mut t = Transit::new(d, now);
        let text = format!(
            "declared by {}: {} from {} to {}, seals {}",
            by.name,
            t.declaration.plate,
            t.declaration.origin,
            t.declaration.destination,
            seal_list(&t.seals)
        );
        self.entry(
            &mut t,
            now,
            now,
            EntryKind::Status,
            (None, Some(Status::Declared)),
            Cause::Operator {
                name: by.name.clone(),
            },
            text,
            None,
        );
        self.audit(
            by,
            now,
            "transit.declare",
            format!("transit:{id}"),
            None,
            Some("declared"),
            serde_json::json!({}),
        );
        self.index(&t);
        self.touched.insert(id.clone());
        self.transits.insert(id, t);
        Ok(self.finish())
    }

    /// Refuses a plate, e-lock or seal already bound to another open transit: events could not
    /// tell the two apart.
    fn check_free(
        &self,
        id: &TransitId,
        plate: Option<&str>,
        elock: Option<&str>,
        seals: &[SealId],
    ) -> Result<(), EngineError> {
        let other = |found: Option<&TransitId>| found.filter(|t| *t != id).cloned();
        if let Some(o) = plate.and_then(|p| other(self.by_plate.get(&normalize_plate(p)))) {
            return Err(EngineError::Conflict(format!(
                "plate {} is on open transit {o}: release that one first",
                plate.unwrap_or_default()
            )));
        }
        if let Some(o) = elock.and_then(|e| other(self.by_elock.get(e))) {
            return Err(EngineError::Conflict(format!(
                "e-lock {} is on open transit {o}: release that one first",
                elock.unwrap_or_default()
            )));
        }
        for s in seals {
            if let Some(o) = other(self.by_seal.get(&s.0)) {
                return Err(EngineError::Conflict(format!(
                    "seal {s} is on open transit {o}: seal ids must be unique among open transits"
                )));
            }
        }
        Ok(())
    }

    /// Records new seals after an incident (the truck was opened and resealed).
    pub fn reseal(
        &mut self,
        id: &TransitId,
        seals: Vec<SealId>,
        comment: Option<String>,
        by: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Changes, EngineError> {
        let t = self
            .transits
            .get(id)
            .ok_or_else(|| EngineError::UnknownTransit(id.clone()))?;
        if !matches!(
            t.status,
            Status::Sealed | Status::Departed | Status::InTransit | Status::Arrived
        ) {
            return Err(EngineError::Conflict(format!(
                "transit {id} is {}: a reseal is recorded between sealing and verification",
                t.status.as_str()
            )));
        }
        let mut declaration = t.declaration.clone();
        declaration.seal_ids = seals.clone();
        let bad: Vec<String> = declaration
            .check()
            .into_iter()
            .filter(|e| e.contains("seal"))
            .collect();
        if !bad.is_empty() {
            return Err(EngineError::Invalid(bad));
        }
        self.check_free(id, None, None, &seals)?;
        let old = t.seals.clone();
        for s in &old {
            self.by_seal.remove(&s.0);
        }
        for s in &seals {
            self.by_seal.insert(s.0.clone(), id.clone());
        }
        self.with_transit(id, |e, t| {
            t.seals = seals.clone();
            // The new seals have not been seen opened; openings of the old ones are history.
            t.reported.retain(|k| !k.starts_with("opened:"));
            t.updated_at = now;
            e.entry(
                t,
                now,
                now,
                EntryKind::Action,
                (None, None),
                Cause::Operator {
                    name: by.name.clone(),
                },
                format!(
                    "resealed by {}: {} replaced by {}",
                    by.name,
                    seal_list(&old),
                    seal_list(&seals)
                ),
                comment.clone(),
            );
        });
        self.audit(
            by,
            now,
            "transit.reseal",
            format!("transit:{id}"),
            None,
            None,
            serde_json::json!({ "old": old, "new": seals, "comment": comment }),
        );
        Ok(self.finish())
    }

    /// Closes a transit: from verified, or from arrived with a comment (the discrepancy was
    /// examined). Refused while any alarm about it is not closed.
    pub fn release(
        &mut self,
        id: &TransitId,
        comment: Option<String>,
        by: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Changes, EngineError> {
        let t = self
            .transits
            .get(id)
            .ok_or_else(|| EngineError::UnknownTransit(id.clone()))?;
        let commented = comment.as_deref().is_some_and(|c| !c.trim().is_empty());
        match t.status {
            Status::Verified => {}
            Status::Arrived if commented => {}
            Status::Arrived => {
                return Err(EngineError::Conflict(format!(
                    "transit {id} is arrived but not verified: give a comment saying why it may be released anyway"
                )))
            }
            s => {
                return Err(EngineError::Conflict(format!(
                    "transit {id} is {}: only a verified (or arrived) transit can be released",
                    s.as_str()
                )))
            }
        }
        let open: Vec<String> = self
            .alarms
            .values()
            .filter(|a| a.transit.as_ref() == Some(id))
            .map(|a| format!("{} ({})", a.id, a.rule.as_str()))
            .collect();
        if !open.is_empty() {
            return Err(EngineError::Conflict(format!(
                "transit {id} has alarms not closed: {}; close them first",
                open.join(", ")
            )));
        }
        let mut t = self.transits.remove(id).expect("checked above");
        let from = t.status;
        t.status = Status::Released;
        t.released_at = Some(now);
        t.updated_at = now;
        self.entry(
            &mut t,
            now,
            now,
            EntryKind::Status,
            (Some(from), Some(Status::Released)),
            Cause::Operator {
                name: by.name.clone(),
            },
            format!("released by {}", by.name),
            comment.clone(),
        );
        self.unindex(&t);
        self.audit(
            by,
            now,
            "transit.release",
            format!("transit:{id}"),
            Some(from.as_str()),
            Some("released"),
            serde_json::json!({ "comment": comment }),
        );
        self.out.transits.insert(id.clone(), t);
        Ok(self.finish())
    }

    pub fn acknowledge(
        &mut self,
        id: AlarmId,
        comment: Option<String>,
        by: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Changes, EngineError> {
        self.alarm_step(
            id,
            by,
            now,
            "alarm.acknowledge",
            comment.clone(),
            |a, step| a.acknowledge(step),
        )
    }

    pub fn dispatch(
        &mut self,
        id: AlarmId,
        unit: &str,
        comment: Option<String>,
        by: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Changes, EngineError> {
        self.alarm_step(id, by, now, "alarm.dispatch", comment, |a, step| {
            a.dispatch(unit, step)
        })
    }

    pub fn close(
        &mut self,
        id: AlarmId,
        reason: CloseReason,
        comment: Option<String>,
        by: &Caller,
        now: DateTime<Utc>,
    ) -> Result<Changes, EngineError> {
        self.alarm_step(id, by, now, "alarm.close", comment, |a, step| {
            a.close(reason, step, false)
        })
    }

    fn alarm_step(
        &mut self,
        id: AlarmId,
        by: &Caller,
        now: DateTime<Utc>,
        action: &str,
        comment: Option<String>,
        f: impl FnOnce(&mut Alarm, Step) -> Result<(), LifecycleError>,
    ) -> Result<Changes, EngineError> {
        let alarm = self
            .alarms
            .get_mut(&id)
            .ok_or(EngineError::UnknownAlarm(id))?;
        let from = alarm.state;
        f(
            alarm,
            Step {
                at: now,
                by: by.name.clone(),
                comment: comment.clone(),
            },
        )?;
        let alarm = alarm.clone();
        let mut detail = serde_json::json!({ "comment": comment });
        if let Some(unit) = alarm.unit.as_ref().filter(|_| action == "alarm.dispatch") {
            detail["unit"] = unit.clone().into();
        }
        if let Some(reason) = alarm.close_reason {
            detail["reason"] = reason.as_str().into();
        }
        self.audit(
            by,
            now,
            action,
            format!("alarm:{id}"),
            Some(from.as_str()),
            Some(alarm.state.as_str()),
            detail,
        );
        if let Some(tid) = alarm.transit.clone() {
            let text = format!(
                "alarm {id} ({}) {} by {}{}",
                alarm.rule.as_str(),
                alarm.state.as_str(),
                by.name,
                alarm
                    .unit
                    .as_ref()
                    .filter(|_| alarm.state == AlarmState::Dispatched)
                    .map(|u| format!(" to {u}"))
                    .unwrap_or_default()
            );
            self.with_transit(&tid, |e, t| {
                e.entry(
                    t,
                    now,
                    now,
                    EntryKind::Action,
                    (None, None),
                    Cause::Operator {
                        name: by.name.clone(),
                    },
                    text,
                    comment,
                )
            });
        }
        if alarm.state == AlarmState::Closed {
            self.alarms.remove(&id);
            self.open_by_key.remove(&(alarm.rule, alarm.subject()));
        }
        self.out.alarms.insert(id, alarm);
        Ok(self.finish())
    }

    // ----- events -----------------------------------------------------------------------

    /// Applies one stored event at hub time `now`.
    pub fn apply(&mut self, ev: &Event, now: DateTime<Utc>) -> Changes {
        let fresh = now - ev.observed_at <= secs(self.cfg.late_after_s);
        let cause = EventRef {
            site: ev.site.clone(),
            seq: ev.seq.0,
        };
        let at = ev.observed_at;
        let ctx = Ctx {
            at,
            now,
            fresh,
            cause,
        };
        match &ev.body {
            Body::Seal(r) => self.on_seal(&ctx, r),
            Body::Position(p) => self.on_position(&ctx, p),
            Body::Gate(g) => self.on_gate(&ctx, g),
            Body::Weight(w) => self.on_weight(&ctx, w),
            Body::DeviceStatus(s) => self.on_device_status(&ctx, s),
            Body::Alarm(a) => self.on_device_alarm(&ctx, a),
            Body::Raw { .. } | Body::Gap(_) => {}
        }
        self.finish()
    }

    fn on_seal(&mut self, c: &Ctx, r: &SealReading) {
        let id = self
            .by_seal
            .get(&r.seal_id.0)
            .or_else(|| r.device_id.as_ref().and_then(|d| self.by_elock.get(d)))
            .cloned()
            .or_else(|| self.arrived_at(&c.cause.site, c.at));
        let Some(id) = id else { return };
        self.with_transit(&id, |e, t| {
            if let Some(pct) = r.battery_pct {
                e.battery(t, c, pct);
            }
            let seen = SealSeen {
                state: r.state,
                at: c.at,
                cause: c.cause.clone(),
            };
            let key = r.seal_id.0.clone();
            let site = &c.cause.site;
            let before_departure = t.departed.as_ref().is_none_or(|d| c.at <= d.at);
            if *site == t.declaration.origin && before_departure {
                t.origin_check.seals.insert(key.clone(), seen);
                let all = all_sealed(&t.seals, &t.origin_check);
                if r.state == SealState::Sealed && all && t.status == Status::Declared {
                    e.advance(
                        t,
                        c,
                        Status::Sealed,
                        format!("seals {} read intact at {site}", seal_list(&t.seals)),
                    );
                    t.sealed = Some(c.seen());
                } else if r.state == SealState::Sealed && all && t.sealed.is_none() {
                    // The readings reached the hub after the departure they preceded.
                    e.note(
                        t,
                        c,
                        format!(
                            "seals {} read intact at {site} before departure (reported late)",
                            seal_list(&t.seals)
                        ),
                    );
                    t.sealed = Some(c.seen());
                } else if is_open(r.state) && t.status >= Status::Sealed {
                    e.seal_opened(
                        t,
                        c,
                        format!(
                            "seal {key} read {} at {site} after sealing",
                            state_name(r.state)
                        ),
                        &key,
                    );
                } else if is_open(r.state) {
                    e.note(
                        t,
                        c,
                        format!(
                            "seal {key} read {} at {site} before sealing",
                            state_name(r.state)
                        ),
                    );
                }
            } else if *site == t.declaration.destination && t.status >= Status::Departed {
                t.destination_check.seals.insert(key.clone(), seen);
                if t.status == Status::Arrived {
                    e.verify(t, c);
                }
            } else if is_open(r.state) && t.status >= Status::Sealed && t.status < Status::Arrived {
                e.seal_opened(
                    t,
                    c,
                    format!("seal {key} read {} at {site}", state_name(r.state)),
                    &key,
                );
            } else if r.state == SealState::Sealed {
                t.reported.remove(&format!("opened:{key}"));
            }
        });
    }

    /// The transit that arrived at `site` within the match window of `at` and is waiting for
    /// verification, if exactly one: a seal id nobody declared, read there, is its problem.
    fn arrived_at(&self, site: &SiteId, at: DateTime<Utc>) -> Option<TransitId> {
        let window = secs(self.cfg.match_window_s);
        let mut found = self.transits.values().filter(|t| {
            t.status == Status::Arrived
                && t.declaration.destination == *site
                && t.arrived
                    .as_ref()
                    .is_some_and(|a| (a.at - at).abs() <= window)
        });
        let first = found.next()?;
        found.next().is_none().then(|| first.id().clone())
    }

    fn on_gate(&mut self, c: &Ctx, g: &GatePassage) {
        let Some(plate) = g.plate.as_deref() else {
            return;
        };
        let Some(id) = self.by_plate.get(&normalize_plate(plate)).cloned() else {
            return;
        };
        let site = c.cause.site.clone();
        self.with_transit(&id, |e, t| {
            let origin = t.declaration.origin.clone();
            let destination = t.declaration.destination.clone();
            match g.direction {
                Direction::Out if site == origin && t.status <= Status::Sealed => {
                    let text = if t.status == Status::Declared {
                        format!(
                            "left {site} through lane {} before its seals were read intact there",
                            g.lane
                        )
                    } else {
                        format!("left {site} through lane {}", g.lane)
                    };
                    t.origin_check.plate = Some(plate.to_string());
                    t.origin_check.gate = Some(c.seen());
                    e.advance(t, c, Status::Departed, text);
                    t.departed = Some(c.seen());
                    e.weigh_end(t, &site, true, c.now);
                    // A position already applied that was observed after departure.
                    if let Some(p) = t.last_position.clone().filter(|p| p.at > c.at) {
                        let pc = Ctx {
                            at: p.at,
                            now: c.now,
                            fresh: c.fresh,
                            cause: p.cause.clone(),
                        };
                        e.advance(
                            t,
                            &pc,
                            Status::InTransit,
                            "moving: first position after departure".into(),
                        );
                        t.in_transit = Some(pc.seen());
                    }
                }
                Direction::Out if site == origin && t.departed.is_none() => {
                    // The destination's data came first: the departure is history, recorded
                    // in its place in the timeline without moving the status back.
                    t.origin_check.plate = Some(plate.to_string());
                    t.origin_check.gate = Some(c.seen());
                    t.departed = Some(c.seen());
                    e.note(
                        t,
                        c,
                        format!("left {site} through lane {} (reported late)", g.lane),
                    );
                    e.weigh_end(t, &site, true, c.now);
                }
                Direction::In if site == destination && t.status < Status::Arrived => {
                    let skipped = if t.status < Status::Departed {
                        " (no departure was recorded)"
                    } else {
                        ""
                    };
                    t.destination_check.plate = Some(plate.to_string());
                    t.destination_check.gate = Some(c.seen());
                    e.advance(
                        t,
                        c,
                        Status::Arrived,
                        format!("entered {site} through lane {}{skipped}", g.lane),
                    );
                    t.arrived = Some(c.seen());
                    e.on_arrival(t, c);
                    e.weigh_end(t, &site, false, c.now);
                    e.verify(t, c);
                }
                Direction::In if site != destination && t.status.moving() => {
                    let text = format!(
                        "plate {plate} entered {site} (lane {}), not its destination {destination}",
                        g.lane
                    );
                    e.note(t, c, text.clone());
                    e.raise_act(t, Rule::WrongSite, c, format!("wrong_site:{site}"), text);
                }
                _ => {}
            }
        });
    }

    /// Conditions of the road end at the destination's gate.
    fn on_arrival(&mut self, t: &mut Transit, c: &Ctx) {
        t.outside = None;
        t.stopped = None;
        for rule in [Rule::RouteDeviation, Rule::LongStop, Rule::GpsLost] {
            self.deactivate(rule, Some(t), None, c.now);
        }
        let Some(limit) = t.limit() else { return };
        let key = (Rule::Overdue, subject(Some(t.id()), None));
        let Some(&aid) = self.open_by_key.get(&key) else {
            return;
        };
        if c.at <= limit {
            // Raised while the destination's data was not yet in: the arrival was in time.
            let mut a = self.alarms.remove(&aid).expect("indexed alarms exist");
            self.open_by_key.remove(&key);
            let comment = format!(
                "arrival observed at {} (before the limit {}) reached the hub late",
                c.at, limit
            );
            let _ = a.close(
                CloseReason::Disproved,
                Step {
                    at: c.now,
                    by: "hub".into(),
                    comment: Some(comment.clone()),
                },
                true,
            );
            a.active = false;
            self.note(t, c, format!("alarm {aid} (overdue) withdrawn: {comment}"));
            self.out.alarms.insert(aid, a);
        } else {
            self.deactivate(Rule::Overdue, Some(t), None, c.now);
        }
    }

    fn on_position(&mut self, c: &Ctx, p: &PositionReading) {
        let Some(id) = self.by_elock.get(&p.device_id).cloned() else {
            return;
        };
        let point = Point {
            lat: p.lat,
            lon: p.lon,
        };
        if !point.valid() {
            return;
        }
        self.with_transit(&id, |e, t| {
            if t.last_position.as_ref().is_some_and(|l| l.at >= c.at) {
                // Older than what is applied: uploaded late after a coverage gap. It is stored
                // as an event; the conditions follow the newest position only.
                return;
            }
            t.last_position = Some(LastPosition {
                point,
                speed_kmh: p.speed_kmh,
                at: c.at,
                cause: c.cause.clone(),
            });
            t.relay_site = Some(c.cause.site.clone());
            if p.fix != Fix::Estimated {
                t.last_fix_at = Some(c.at);
                if e.deactivate(Rule::GpsLost, Some(t), None, c.now) {
                    e.note(t, c, "positions with a fix again".into());
                }
            }
            if t.status == Status::Departed && t.departed.as_ref().is_some_and(|d| c.at > d.at) {
                e.advance(
                    t,
                    c,
                    Status::InTransit,
                    "moving: first position after departure".into(),
                );
                t.in_transit = Some(c.seen());
            }
            if t.status.moving() {
                e.deviation(t, c, &point);
                e.long_stop(t, c, &point, p.speed_kmh);
            }
        });
    }

    fn deviation(&mut self, t: &mut Transit, c: &Ctx, p: &Point) {
        let Some(corridor) = &t.declaration.corridor else {
            return;
        };
        let distance = corridor.distance_m(p);
        let half = corridor.width_m / 2.0;
        match &t.outside {
            None if distance > half => {
                t.outside = Some(Episode {
                    since: c.at,
                    cause: c.cause.clone(),
                    at: *p,
                    crossed: false,
                    alarmed: false,
                });
            }
            Some(ep) if distance <= half - self.cfg.deviation_hysteresis_m => {
                let ep = ep.clone();
                t.outside = None;
                self.episode_over(t, c, Rule::RouteDeviation, &ep, "outside the corridor");
                return;
            }
            _ => {}
        }
        let threshold = secs(self.cfg.deviation_after_s);
        let Some(ep) = t.outside.as_mut() else { return };
        if c.at - ep.since < threshold {
            return;
        }
        ep.crossed = true;
        if ep.alarmed || !c.fresh {
            return;
        }
        ep.alarmed = true;
        let since = ep.since;
        let text = format!(
            "outside the corridor since {since} ({:.0} m from its centre line, width {:.0} m)",
            distance, corridor.width_m
        );
        self.raise_condition(t, Rule::RouteDeviation, since, Some(c), c.now, text);
    }

    fn long_stop(&mut self, t: &mut Transit, c: &Ctx, p: &Point, speed: Option<f64>) {
        let slow = speed.is_none_or(|s| s < self.cfg.stop_speed_kmh);
        if let Some(ep) = &t.stopped {
            if !slow || ep.at.distance_m(p) > self.cfg.stop_radius_m {
                let ep = ep.clone();
                t.stopped = None;
                self.episode_over(t, c, Rule::LongStop, &ep, "stopped");
            }
        }
        if t.stopped.is_none() && slow {
            t.stopped = Some(Episode {
                since: c.at,
                cause: c.cause.clone(),
                at: *p,
                crossed: false,
                alarmed: false,
            });
        }
        let threshold = secs(self.cfg.long_stop_after_s);
        let allowed = self.allowed_stop(t, p);
        let Some(ep) = t.stopped.as_mut() else { return };
        if c.at - ep.since < threshold || allowed {
            return;
        }
        ep.crossed = true;
        if ep.alarmed || !c.fresh {
            return;
        }
        ep.alarmed = true;
        let since = ep.since;
        let text = format!(
            "stopped since {since} at {:.5}, {:.5}, outside any allowed place",
            ep.at.lat, ep.at.lon
        );
        self.raise_condition(t, Rule::LongStop, since, Some(c), c.now, text);
    }

    fn allowed_stop(&self, t: &Transit, p: &Point) -> bool {
        t.declaration.allowed_stops.iter().any(|a| a.contains(p))
            || [&t.declaration.origin, &t.declaration.destination]
                .into_iter()
                .filter_map(|s| self.site_areas.get(s))
                .any(|a| a.contains(p))
    }

    /// A condition episode ended: the alarm (if any) stops being active; an episode that
    /// crossed its threshold only in late data is recorded, without an alarm.
    fn episode_over(&mut self, t: &mut Transit, c: &Ctx, rule: Rule, ep: &Episode, what: &str) {
        if ep.alarmed {
            self.deactivate(rule, Some(t), None, c.now);
            self.note(
                t,
                c,
                format!("no longer {what} ({} since {})", rule.as_str(), ep.since),
            );
        } else if ep.crossed {
            self.note(
                t,
                c,
                format!(
                    "{what} from {} to {} ({}); reported late and already over, so no alarm",
                    ep.since,
                    c.at,
                    rule.as_str()
                ),
            );
        }
    }

    fn on_weight(&mut self, c: &Ctx, w: &WeightReading) {
        if !(w.stable && w.kg.is_finite() && w.kg > 0.0) {
            return;
        }
        let site = c.cause.site.clone();
        let weighing = Weighing {
            at: c.at,
            kg: w.kg,
            cause: c.cause.clone(),
        };
        self.keep_weighing(weighing.clone());
        self.out.weighings.push(weighing);
        // A weighing may come after the gate passage it belongs to.
        let window = secs(self.cfg.match_window_s);
        let ids: Vec<TransitId> = self
            .transits
            .values()
            .filter(|t| {
                let near =
                    |g: &Option<Seen>| g.as_ref().is_some_and(|g| (g.at - c.at).abs() <= window);
                (t.declaration.origin == site
                    && t.origin_check.weight.is_none()
                    && near(&t.origin_check.gate))
                    || (t.declaration.destination == site
                        && t.destination_check.weight.is_none()
                        && near(&t.destination_check.gate))
            })
            .map(|t| t.id().clone())
            .collect();
        for id in ids {
            self.with_transit(&id, |e, t| {
                let origin = t.declaration.origin == site;
                e.weigh_end(t, &site, origin, c.now);
            });
        }
    }

    /// Takes the stable weighing at `site` nearest in time to the gate passage of that end.
    fn weigh_end(&mut self, t: &mut Transit, site: &SiteId, origin: bool, now: DateTime<Utc>) {
        let end = if origin {
            &mut t.origin_check
        } else {
            &mut t.destination_check
        };
        let Some(gate) = end.gate.clone() else { return };
        let window = secs(self.cfg.match_window_s);
        let best = self
            .weighings
            .get(site)
            .into_iter()
            .flat_map(|list| list.values())
            .filter(|w| (w.at - gate.at).abs() <= window)
            .min_by_key(|w| (w.at - gate.at).abs());
        let Some(Weighing { at, kg, cause }) = best.cloned() else {
            return;
        };
        end.weight_kg = Some(kg);
        end.weight = Some(Seen {
            at,
            cause: cause.clone(),
        });
        let c = Ctx {
            at,
            now,
            fresh: true,
            cause,
        };
        self.note(t, &c, format!("weighed {kg:.0} kg at {site}"));
        if !origin || t.destination_check.weight_kg.is_some() {
            self.check_weight(t, &c);
        }
    }

    fn check_weight(&mut self, t: &mut Transit, c: &Ctx) {
        let (Some(a), Some(b)) = (t.origin_check.weight_kg, t.destination_check.weight_kg) else {
            return;
        };
        let pct = (b - a) / a * 100.0;
        if pct.abs() > self.cfg.weight_tolerance_pct {
            let text = format!(
                "weighed {b:.0} kg at the destination against {a:.0} kg at the origin ({pct:+.1} %, tolerance {} %)",
                self.cfg.weight_tolerance_pct
            );
            self.raise_act(t, Rule::WeightDiscrepancy, c, "weight".into(), text);
        }
    }

    fn on_device_status(&mut self, c: &Ctx, s: &StatusReport) {
        let Some(id) = self.by_elock.get(&s.device_id).cloned() else {
            return;
        };
        if let Some(pct) = s.battery_pct {
            self.with_transit(&id, |e, t| e.battery(t, c, pct));
        }
    }

    fn on_device_alarm(&mut self, c: &Ctx, a: &AlarmReport) {
        let Some(id) = self.by_elock.get(&a.device_id).cloned() else {
            return;
        };
        self.with_transit(&id, |e, t| {
            if a.alarms.contains(&AlarmKind::LowBattery) {
                e.battery_low(t, c, "the e-lock reports a low battery".into());
            }
            const OPENINGS: [AlarmKind; 5] = [
                AlarmKind::LockOpened,
                AlarmKind::RopeCut,
                AlarmKind::CoverOpened,
                AlarmKind::Tamper,
                AlarmKind::IllegalDoorOpening,
            ];
            for kind in OPENINGS {
                let key = format!("elock:{kind:?}");
                if !a.alarms.contains(&kind) {
                    // All clear for this condition: a later report is a new occurrence.
                    t.reported.remove(&key);
                    continue;
                }
                let what = format!("the e-lock {} reports {}", a.device_id, kind_name(kind));
                match t.status {
                    Status::Sealed | Status::Departed | Status::InTransit => {
                        e.note(t, c, what.clone());
                        e.raise_act(t, Rule::SealOpened, c, key, what);
                    }
                    Status::Arrived => {
                        e.note(t, c, what.clone());
                        e.raise_act(
                            t,
                            Rule::SealMismatch,
                            c,
                            key,
                            format!("{what} before verification"),
                        );
                    }
                    _ => e.note(t, c, what),
                }
            }
        });
    }

    fn battery(&mut self, t: &mut Transit, c: &Ctx, pct: f64) {
        if t.battery_at.is_some_and(|b| b > c.at) {
            // Older than the reading already applied.
            return;
        }
        t.battery_pct = Some(pct);
        t.battery_at = Some(c.at);
        if pct < self.cfg.low_battery_pct {
            self.battery_low(
                t,
                c,
                format!(
                    "battery at {pct:.0} % (threshold {} %)",
                    self.cfg.low_battery_pct
                ),
            );
        } else {
            self.deactivate(Rule::LowBattery, Some(t), None, c.now);
        }
    }

    fn battery_low(&mut self, t: &mut Transit, c: &Ctx, text: String) {
        if c.fresh && t.status >= Status::Sealed && t.status <= Status::Arrived {
            self.raise_condition(t, Rule::LowBattery, c.at, Some(c), c.now, text);
        }
    }

    fn seal_opened(&mut self, t: &mut Transit, c: &Ctx, text: String, seal: &str) {
        self.note(t, c, text.clone());
        self.raise_act(t, Rule::SealOpened, c, format!("opened:{seal}"), text);
    }

    /// At the destination, before release: all seals on the transit read intact, and nothing
    /// else read, makes it verified; anything else is a mismatch.
    fn verify(&mut self, t: &mut Transit, c: &Ctx) {
        if t.status != Status::Arrived {
            return;
        }
        let d = &t.destination_check;
        let mut problems = Vec::new();
        for (id, seen) in &d.seals {
            if !t.seals.iter().any(|s| &s.0 == id) {
                problems.push((
                    format!("foreign:{id}"),
                    format!(
                        "seal {id} read at the destination is not on the transit (expected {})",
                        seal_list(&t.seals)
                    ),
                    seen.cause.clone(),
                ));
            } else if seen.state != SealState::Sealed {
                problems.push((
                    format!("broken:{id}"),
                    format!(
                        "seal {id} read {} at the destination",
                        state_name(seen.state)
                    ),
                    seen.cause.clone(),
                ));
            }
        }
        for (key, text, cause) in problems {
            let pc = Ctx {
                at: c.at,
                now: c.now,
                fresh: c.fresh,
                cause,
            };
            if !t.reported.contains(&key) {
                self.note(t, &pc, text.clone());
            }
            self.raise_act(t, Rule::SealMismatch, &pc, key, text);
        }
        let all = t.seals.iter().all(|s| {
            t.destination_check
                .seals
                .get(&s.0)
                .is_some_and(|r| r.state == SealState::Sealed)
        });
        let clean = t
            .destination_check
            .seals
            .keys()
            .all(|id| t.seals.iter().any(|s| &s.0 == id));
        if all && clean {
            let last = t
                .seals
                .iter()
                .filter_map(|s| t.destination_check.seals.get(&s.0))
                .max_by_key(|r| r.at)
                .cloned()
                .expect("a transit has seals");
            let vc = Ctx {
                at: last.at.max(t.arrived.as_ref().map_or(last.at, |a| a.at)),
                now: c.now,
                fresh: c.fresh,
                cause: last.cause,
            };
            self.advance(
                t,
                &vc,
                Status::Verified,
                format!(
                    "seals {} read intact at the destination",
                    seal_list(&t.seals)
                ),
            );
            t.verified = Some(vc.seen());
        }
    }

    // ----- timers -----------------------------------------------------------------------

    /// Evaluates the timer rules at `now`, with the sites' presence as ingest knows it.
    pub fn tick(
        &mut self,
        now: DateTime<Utc>,
        presence: &BTreeMap<SiteId, SitePresence>,
    ) -> Changes {
        let started = *self.started_at.get_or_insert(now);
        let absent = SitePresence::default();
        let mut behind = BTreeSet::new();
        for site in self.sites.clone() {
            let p = presence.get(&site).unwrap_or(&absent);
            let backlog_age = match (p.online, p.oldest_unacked_age_s, p.status_at) {
                (true, Some(age), Some(at)) => {
                    Some(age + (now - at).num_milliseconds().max(0) as f64 / 1000.0)
                }
                _ => None,
            };
            if !p.online || backlog_age.is_some_and(|a| a > self.cfg.late_after_s as f64) {
                behind.insert(site.clone());
            }
            if p.online {
                self.deactivate(Rule::SiteOffline, None, Some(&site), now);
            } else {
                // Not before the hub started: it cannot say what happened while it was down.
                let since = p.last_seen.map_or(started, |l| l.max(started));
                if now - since >= secs(self.cfg.site_offline_after_s) {
                    let text = match p.last_seen {
                        Some(t) => format!("site {site} offline; last heard from at {t}"),
                        None => {
                            format!("site {site} not heard from since the hub started at {started}")
                        }
                    };
                    self.raise_site(&site, Rule::SiteOffline, since, now, text);
                }
            }
            match backlog_age {
                Some(age) if age >= self.cfg.backlog_max_age_s as f64 => {
                    let text = format!(
                        "site {site} holds events not yet acknowledged for {age:.0} s (threshold {} s)",
                        self.cfg.backlog_max_age_s
                    );
                    let since = now - Duration::milliseconds((age * 1000.0) as i64);
                    self.raise_site(&site, Rule::BacklogTooOld, since, now, text);
                }
                _ => {
                    self.deactivate(Rule::BacklogTooOld, None, Some(&site), now);
                }
            }
        }
        let ids: Vec<TransitId> = self.transits.keys().cloned().collect();
        for id in ids {
            self.with_transit(&id, |e, t| e.timers(t, now, &behind));
        }
        // `with_transit` marks every transit it looked at; a tick changes a transit's state only
        // through timeline entries and alarms, so only those are reported.
        let before: BTreeSet<TransitId> = self
            .out
            .timeline
            .iter()
            .map(|(id, _)| id.clone())
            .chain(self.out.alarms.values().filter_map(|a| a.transit.clone()))
            .collect();
        self.touched.retain(|id| before.contains(id));
        self.finish()
    }

    fn timers(&mut self, t: &mut Transit, now: DateTime<Utc>, behind: &BTreeSet<SiteId>) {
        if let Some(limit) = t.limit() {
            if t.status < Status::Arrived
                && now > limit
                && !behind.contains(&t.declaration.destination)
            {
                let text = format!(
                    "not arrived at {} by its limit {limit}",
                    t.declaration.destination
                );
                self.raise_condition(t, Rule::Overdue, limit, None, now, text);
            }
        }
        if t.status.moving() && t.declaration.elock_id.is_some() {
            let departed = t.departed.as_ref().map(|d| d.at);
            let reference = match (t.last_fix_at, departed) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let relay = t
                .relay_site
                .clone()
                .unwrap_or_else(|| t.declaration.origin.clone());
            if let Some(reference) = reference {
                if now - reference >= secs(self.cfg.gps_lost_after_s) && !behind.contains(&relay) {
                    let text = format!("no position with a fix since {reference}");
                    self.raise_condition(t, Rule::GpsLost, reference, None, now, text);
                }
            }
        }
    }

    // ----- alarms -----------------------------------------------------------------------

    /// An act: raised once per `key` per transit; while the alarm is open a new act counts as
    /// another occurrence.
    fn raise_act(&mut self, t: &mut Transit, rule: Rule, c: &Ctx, key: String, text: String) {
        if !t.reported.insert(key) {
            return;
        }
        let sub = subject(Some(t.id()), None);
        if let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        {
            a.occurrences += 1;
            a.last_occurrence_at = c.now;
            a.active = true;
            self.out.alarms.insert(a.id, a.clone());
            return;
        }
        let enterprise = Some(t.declaration.enterprise.clone());
        let id = self.new_alarm(
            rule,
            Some(t.id().clone()),
            enterprise,
            None,
            c.at,
            Some(c.cause.clone()),
            c.now,
            text.clone(),
        );
        self.entry(
            t,
            c.at,
            c.now,
            EntryKind::Alarm,
            (None, None),
            Cause::from(&c.cause),
            format!("alarm {id} ({}): {text}", rule.as_str()),
            None,
        );
    }

    /// A condition holds: raise it, or, if its alarm is open, mark it active again (a new
    /// occurrence only if it had cleared).
    fn raise_condition(
        &mut self,
        t: &mut Transit,
        rule: Rule,
        observed: DateTime<Utc>,
        c: Option<&Ctx>,
        now: DateTime<Utc>,
        text: String,
    ) {
        let sub = subject(Some(t.id()), None);
        if let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        {
            if !a.active {
                a.active = true;
                a.occurrences += 1;
                a.last_occurrence_at = now;
                self.out.alarms.insert(a.id, a.clone());
            }
            return;
        }
        let cause = c.map(|c| c.cause.clone());
        let enterprise = Some(t.declaration.enterprise.clone());
        let id = self.new_alarm(
            rule,
            Some(t.id().clone()),
            enterprise,
            None,
            observed,
            cause.clone(),
            now,
            text.clone(),
        );
        let why = cause.as_ref().map_or(Cause::Timer, Cause::from);
        self.entry(
            t,
            observed,
            now,
            EntryKind::Alarm,
            (None, None),
            why,
            format!("alarm {id} ({}): {text}", rule.as_str()),
            None,
        );
    }

    fn raise_site(
        &mut self,
        site: &SiteId,
        rule: Rule,
        observed: DateTime<Utc>,
        now: DateTime<Utc>,
        text: String,
    ) {
        let sub = subject(None, Some(site));
        if let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        {
            if !a.active {
                a.active = true;
                a.occurrences += 1;
                a.last_occurrence_at = now;
                self.out.alarms.insert(a.id, a.clone());
            }
            return;
        }
        self.new_alarm(
            rule,
            None,
            None,
            Some(site.clone()),
            observed,
            None,
            now,
            text,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn new_alarm(
        &mut self,
        rule: Rule,
        transit: Option<TransitId>,
        enterprise: Option<crate::access::EnterpriseId>,
        site: Option<SiteId>,
        observed: DateTime<Utc>,
        cause: Option<EventRef>,
        now: DateTime<Utc>,
        message: String,
    ) -> AlarmId {
        let id = self.next_alarm_id;
        self.next_alarm_id += 1;
        let a = Alarm {
            id,
            rule,
            severity: self.cfg.severity(rule),
            state: AlarmState::Open,
            transit,
            enterprise,
            site,
            message,
            raised_at: now,
            observed_at: observed,
            cause,
            active: true,
            occurrences: 1,
            last_occurrence_at: now,
            acknowledged: None,
            dispatched: None,
            unit: None,
            closed: None,
            close_reason: None,
        };
        self.open_by_key.insert((rule, a.subject()), id);
        self.out.raised.push(id);
        self.out.alarms.insert(id, a.clone());
        self.alarms.insert(id, a);
        id
    }

    /// The condition of an open alarm no longer holds. Returns whether it was active.
    fn deactivate(
        &mut self,
        rule: Rule,
        t: Option<&Transit>,
        site: Option<&SiteId>,
        now: DateTime<Utc>,
    ) -> bool {
        let sub = subject(t.map(Transit::id), site);
        let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        else {
            return false;
        };
        if !a.active {
            return false;
        }
        a.active = false;
        a.last_occurrence_at = a.last_occurrence_at.max(now);
        self.out.alarms.insert(a.id, a.clone());
        true
    }

    // ----- timeline and audit -----------------------------------------------------------

    fn advance(&mut self, t: &mut Transit, c: &Ctx, to: Status, text: String) {
        let from = t.status;
        t.status = to;
        t.updated_at = c.now;
        self.entry(
            t,
            c.at,
            c.now,
            EntryKind::Status,
            (Some(from), Some(to)),
            Cause::from(&c.cause),
            text,
            None,
        );
    }

    fn note(&mut self, t: &mut Transit, c: &Ctx, text: String) {
        t.updated_at = c.now.max(t.updated_at);
        self.entry(
            t,
            c.at,
            c.now,
            EntryKind::Note,
            (None, None),
            Cause::from(&c.cause),
            text,
            None,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        t: &mut Transit,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        kind: EntryKind,
        (from, to): (Option<Status>, Option<Status>),
        cause: Cause,
        text: String,
        comment: Option<String>,
    ) {
        t.timeline_len += 1;
        self.touched.insert(t.id().clone());
        self.out.timeline.push((
            t.id().clone(),
            TimelineEntry {
                n: t.timeline_len,
                at,
                recorded_at: now,
                kind,
                from,
                to,
                cause,
                text,
                comment,
            },
        ));
    }

    #[allow(clippy::too_many_arguments)]
    fn audit(
        &mut self,
        by: &Caller,
        now: DateTime<Utc>,
        action: &str,
        target: String,
        from: Option<&str>,
        to: Option<&str>,
        detail: serde_json::Value,
    ) {
        self.out.audit.push(AuditEntry {
            at: now,
            actor: by.name.clone(),
            role: by.role.to_string(),
            action: action.into(),
            target,
            from_state: from.map(String::from),
            to_state: to.map(String::from),
            detail,
        });
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
#[path = "engine_tests.rs"]
mod tests;
