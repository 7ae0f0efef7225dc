//! Positions on the road: the track, route deviation with hysteresis, and long stops.

use super::*;

impl Engine {
    pub(super) fn on_position(&mut self, c: &Ctx, p: &PositionReading) {
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

    pub(super) fn deviation(&mut self, t: &mut Transit, c: &Ctx, p: &Point) {
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

    pub(super) fn long_stop(&mut self, t: &mut Transit, c: &Ctx, p: &Point, speed: Option<f64>) {
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

    pub(super) fn allowed_stop(&self, t: &Transit, p: &Point) -> bool {
        t.declaration.allowed_stops.iter().any(|a| a.contains(p))
            || [&t.declaration.origin, &t.declaration.destination]
                .into_iter()
                .filter_map(|s| self.site_areas.get(s))
                .any(|a| a.contains(p))
    }

    /// A condition episode ended: the alarm (if any) stops being active; an episode that
    /// crossed its threshold only in late data is recorded, without an alarm.
    pub(super) fn episode_over(
        &mut self,
        t: &mut Transit,
        c: &Ctx,
        rule: Rule,
        ep: &Episode,
        what: &str,
    ) {
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
}
