//! Weighbridge readings: kept per site, matched to the gate passage of a transit's end, and
//! compared between origin and destination.

use super::*;

impl Engine {
    pub(super) fn keep_weighing(&mut self, w: Weighing) {
        let list = self.weighings.entry(w.cause.site.clone()).or_default();
        list.insert(w.cause.seq, w);
        while list.len() > WEIGHINGS_KEPT {
            list.pop_first();
        }
    }

    pub(super) fn on_weight(&mut self, c: &Ctx, w: &WeightReading) {
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
    pub(super) fn weigh_end(
        &mut self,
        t: &mut Transit,
        site: &SiteId,
        origin: bool,
        now: DateTime<Utc>,
    ) {
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

    pub(super) fn check_weight(&mut self, t: &mut Transit, c: &Ctx) {
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
}
