//! Operator actions on the engine: declaring, resealing and releasing transits, and moving
//! alarms through their lifecycle.

use super::*;

impl Engine {
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
    pub(super) fn check_free(
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

    pub(super) fn alarm_step(
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
}
