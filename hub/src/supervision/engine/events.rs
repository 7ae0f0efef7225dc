//! Events from the checkpoints and e-locks: seals, gate passages, arrival and verification,
//! device status and device alarms.

use super::*;

impl Engine {
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

    pub(super) fn on_seal(&mut self, c: &Ctx, r: &SealReading) {
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
    pub(super) fn arrived_at(&self, site: &SiteId, at: DateTime<Utc>) -> Option<TransitId> {
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

    pub(super) fn on_gate(&mut self, c: &Ctx, g: &GatePassage) {
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
    pub(super) fn on_arrival(&mut self, t: &mut Transit, c: &Ctx) {
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

    pub(super) fn on_device_status(&mut self, c: &Ctx, s: &StatusReport) {
        let Some(id) = self.by_elock.get(&s.device_id).cloned() else {
            return;
        };
        if let Some(pct) = s.battery_pct {
            self.with_transit(&id, |e, t| e.battery(t, c, pct));
        }
    }

    pub(super) fn on_device_alarm(&mut self, c: &Ctx, a: &AlarmReport) {
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

    pub(super) fn battery(&mut self, t: &mut Transit, c: &Ctx, pct: f64) {
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

    pub(super) fn battery_low(&mut self, t: &mut Transit, c: &Ctx, text: String) {
        if c.fresh && t.status >= Status::Sealed && t.status <= Status::Arrived {
            self.raise_condition(t, Rule::LowBattery, c.at, Some(c), c.now, text);
        }
    }

    pub(super) fn seal_opened(&mut self, t: &mut Transit, c: &Ctx, text: String, seal: &str) {
        self.note(t, c, text.clone());
        self.raise_act(t, Rule::SealOpened, c, format!("opened:{seal}"), text);
    }

    /// At the destination, before release: all seals on the transit read intact, and nothing
    /// else read, makes it verified; anything else is a mismatch.
    pub(super) fn verify(&mut self, t: &mut Transit, c: &Ctx) {
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
}
