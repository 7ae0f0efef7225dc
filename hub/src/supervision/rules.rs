//! The alarm rules: what triggers each, its thresholds (`[supervision]` in hub.toml) and its
//! severity.
//!
//! Two kinds of rule. *Act* rules (seal opened, seal mismatch, weight discrepancy, wrong site)
//! record something that happened; they raise their alarm whenever the evidence is applied, even
//! if it arrives hours late. *Condition* rules (route deviation, long stop, low battery, GPS lost,
//! overdue, site offline, backlog too old) describe a state that may pass; they raise only on
//! current information — a fresh reading, or a timer while the sites concerned are caught up — so
//! that data uploaded late after an outage does not raise alarms for conditions that were already
//! over (those episodes go to the transit's timeline instead).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An alarm rule. The doc comment of each variant is its documented trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Act. A seal of the transit is read `opened` or `tampered`, or the transit's e-lock reports
    /// lock opened, rope cut, cover opened, tamper or illegal door opening, between sealing at
    /// the origin and arrival at the destination.
    SealOpened,
    /// Act. At the destination (after arrival, before release): a seal of the transit read not
    /// intact, a seal id read that is not the transit's, or the e-lock reporting an opening.
    SealMismatch,
    /// Act. The stable weight at the destination differs from the one at the origin by more
    /// than `weight_tolerance_pct` percent.
    WeightDiscrepancy,
    /// Condition. Positions outside the declared corridor (farther than half its width from its
    /// centre line) for `deviation_after_s`; the vehicle counts as back only once it is
    /// `deviation_hysteresis_m` inside the edge, so a vehicle driving along the edge does not flap.
    RouteDeviation,
    /// Condition. Slower than `stop_speed_kmh` and within `stop_radius_m` of where it stopped,
    /// for `long_stop_after_s`, outside the origin's and destination's areas and the transit's
    /// allowed stops.
    LongStop,
    /// Condition (timer). The transit's time limit (deadline, or departure plus its maximum
    /// duration) passed without arrival, while the destination site is caught up.
    Overdue,
    /// Condition (timer). Departed and not arrived, and no position with a real fix (not
    /// `estimated`) for `gps_lost_after_s`, while the site relaying its positions is caught up.
    GpsLost,
    /// Condition. The e-lock or a seal of the transit reports a battery below
    /// `low_battery_pct`, or the e-lock's low-battery alarm.
    LowBattery,
    /// Act. The transit's plate enters, after departure, through the gate of a site that is not
    /// its destination.
    WrongSite,
    /// Condition (timer). A site's agent offline (last will, or never heard from since the hub
    /// started) for `site_offline_after_s`.
    SiteOffline,
    /// Condition (timer). A site's agent reports its oldest unacknowledged event older than
    /// `backlog_max_age_s`.
    BacklogTooOld,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::SealOpened,
        Rule::SealMismatch,
        Rule::WeightDiscrepancy,
        Rule::RouteDeviation,
        Rule::LongStop,
        Rule::Overdue,
        Rule::GpsLost,
        Rule::LowBattery,
        Rule::WrongSite,
        Rule::SiteOffline,
        Rule::BacklogTooOld,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SealOpened => "seal_opened",
            Rule::SealMismatch => "seal_mismatch",
            Rule::WeightDiscrepancy => "weight_discrepancy",
            Rule::RouteDeviation => "route_deviation",
            Rule::LongStop => "long_stop",
            Rule::Overdue => "overdue",
            Rule::GpsLost => "gps_lost",
            Rule::LowBattery => "low_battery",
            Rule::WrongSite => "wrong_site",
            Rule::SiteOffline => "site_offline",
            Rule::BacklogTooOld => "backlog_too_old",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The severity a rule has unless `[supervision.severity]` says otherwise.
    pub fn default_severity(self) -> Severity {
        match self {
            Rule::SealOpened | Rule::SealMismatch | Rule::WrongSite => Severity::Critical,
            Rule::WeightDiscrepancy | Rule::RouteDeviation | Rule::Overdue | Rule::GpsLost => {
                Severity::Major
            }
            Rule::LongStop | Rule::SiteOffline | Rule::BacklogTooOld => Severity::Minor,
            Rule::LowBattery => Severity::Info,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Info,
            Severity::Minor,
            Severity::Major,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// `[supervision]`: thresholds of the rules and the timers' cadence. Durations in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// How often the timer rules are evaluated (and the hub's clock read for them).
    pub tick_s: u64,
    /// A reading observed longer ago than this when the hub applies it is late: it can no longer
    /// raise a condition alarm. Also how old a site's unacked backlog may be and still count as
    /// caught up.
    pub late_after_s: u64,
    pub deviation_after_s: u64,
    pub deviation_hysteresis_m: f64,
    pub long_stop_after_s: u64,
    pub stop_speed_kmh: f64,
    pub stop_radius_m: f64,
    pub gps_lost_after_s: u64,
    pub low_battery_pct: f64,
    pub site_offline_after_s: u64,
    pub backlog_max_age_s: u64,
    pub weight_tolerance_pct: f64,
    /// How far apart in time a weighing or a seal reading and the plate's gate passage at the
    /// same site may be and still belong to the same truck.
    pub match_window_s: u64,
    /// Severity per rule, e.g. `long_stop = "major"`; rules left out keep their default.
    pub severity: BTreeMap<Rule, Severity>,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            tick_s: 5,
            late_after_s: 120,
            deviation_after_s: 300,
            deviation_hysteresis_m: 50.0,
            long_stop_after_s: 1800,
            stop_speed_kmh: 3.0,
            stop_radius_m: 100.0,
            gps_lost_after_s: 600,
            low_battery_pct: 20.0,
            site_offline_after_s: 300,
            backlog_max_age_s: 900,
            weight_tolerance_pct: 2.0,
            match_window_s: 600,
            severity: BTreeMap::new(),
        }
    }
}

impl SupervisionConfig {
    pub fn severity(&self, rule: Rule) -> Severity {
        self.severity
            .get(&rule)
            .copied()
            .unwrap_or(rule.default_severity())
    }

    /// Every value that cannot work, as (key, message).
    pub fn check(&self) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        let seconds = [
            ("tick_s", self.tick_s, 1, 3600),
            ("late_after_s", self.late_after_s, 1, 86_400),
            ("deviation_after_s", self.deviation_after_s, 0, 86_400),
            ("long_stop_after_s", self.long_stop_after_s, 1, 7 * 86_400),
            ("gps_lost_after_s", self.gps_lost_after_s, 1, 7 * 86_400),
            (
                "site_offline_after_s",
                self.site_offline_after_s,
                1,
                7 * 86_400,
            ),
            ("backlog_max_age_s", self.backlog_max_age_s, 1, 30 * 86_400),
            ("match_window_s", self.match_window_s, 1, 86_400),
        ];
        for (key, value, min, max) in seconds {
            if !(min..=max).contains(&value) {
                bad.push((
                    format!("supervision.{key}"),
                    format!("is {value}: use {min} to {max} seconds"),
                ));
            }
        }
        let reals = [
            (
                "deviation_hysteresis_m",
                self.deviation_hysteresis_m,
                0.0,
                10_000.0,
            ),
            ("stop_speed_kmh", self.stop_speed_kmh, 0.0, 50.0),
            ("stop_radius_m", self.stop_radius_m, 1.0, 10_000.0),
            ("low_battery_pct", self.low_battery_pct, 0.0, 100.0),
            (
                "weight_tolerance_pct",
                self.weight_tolerance_pct,
                0.0,
                100.0,
            ),
        ];
        for (key, value, min, max) in reals {
            if !(min..=max).contains(&value) {
                bad.push((
                    format!("supervision.{key}"),
                    format!("is {value}: use {min} to {max}"),
                ));
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_round_trip_and_severities_default() {
        for rule in Rule::ALL {
            assert_eq!(Rule::parse(rule.as_str()), Some(rule));
            let json = serde_json::to_value(rule).unwrap();
            assert_eq!(json, rule.as_str());
        }
        let mut c = SupervisionConfig::default();
        assert_eq!(c.severity(Rule::SealOpened), Severity::Critical);
        c.severity.insert(Rule::SealOpened, Severity::Minor);
        assert_eq!(c.severity(Rule::SealOpened), Severity::Minor);
        assert!(c.check().is_empty());
        c.tick_s = 0;
        c.weight_tolerance_pct = -1.0;
        let keys: Vec<_> = c.check().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["supervision.tick_s", "supervision.weight_tolerance_pct"]
        );
    }
}
