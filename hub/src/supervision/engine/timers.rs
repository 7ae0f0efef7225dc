//! The clock's rules: overdue, GPS lost, site offline and backlog too old, evaluated on ticks.

use super::*;

impl Engine {
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

    pub(super) fn timers(
        &mut self,
        t: &mut Transit,
        now: DateTime<Utc>,
        behind: &BTreeSet<SiteId>,
    ) {
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
}
