//! A transit: its declaration, where it is in its life, what it has been seen doing, and the
//! timeline that is the evidence of it all.

use crate::access::{is_token, EnterpriseId};
use crate::supervision::geo::{Area, Corridor, Point};
use chrono::{DateTime, Duration, Utc};
use qyt_proto::{SealId, SealState, SiteId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A transit's id, chosen by the declaration system; it appears in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransitId(String);

impl TransitId {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: impl Into<String>) -> Result<TransitId, String> {
        let s = s.into();
        if is_token(&s, Self::MAX_LEN) {
            Ok(TransitId(s))
        } else {
            Err(format!(
                "transit id {s:?} is invalid: use 1 to {} characters of A-Z, a-z, 0-9, '-', '_' or '.'",
                Self::MAX_LEN
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TransitId {
    type Error = String;
    fn try_from(s: String) -> Result<TransitId, String> {
        TransitId::new(s)
    }
}

impl From<TransitId> for String {
    fn from(t: TransitId) -> String {
        t.0
    }
}

impl std::fmt::Display for TransitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the declaration system says about a transit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub id: TransitId,
    pub enterprise: EnterpriseId,
    /// Licence plate as the gate cameras read it.
    pub plate: String,
    /// The e-lock / vehicle terminal whose positions and alarms belong to this transit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elock_id: Option<String>,
    pub seal_ids: Vec<SealId>,
    pub origin: SiteId,
    pub destination: SiteId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corridor: Option<Corridor>,
    /// Time limit: arrive by this time...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// ...and/or within this many seconds of departure. At least one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u64>,
    /// Places the vehicle may stop for long (rest areas), besides the origin and destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_stops: Vec<Area>,
}

impl Declaration {
    /// Every problem of a declaration taken on its own (the engine checks it against the rest).
    pub fn check(&self) -> Vec<String> {
        let mut bad = Vec::new();
        if normalize_plate(&self.plate).is_empty() {
            bad.push("plate is empty: give the licence plate the gate cameras read".into());
        }
        if self.seal_ids.is_empty() {
            bad.push("seal_ids is empty: list the seals bound to this transit".into());
        }
        if let Some(s) = self.seal_ids.iter().find(|s| s.0.trim().is_empty()) {
            bad.push(format!("seal id {:?} is empty", s.0));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.seal_ids.iter().find(|s| !seen.insert(*s)) {
            bad.push(format!("seal id {dup} is listed twice"));
        }
        if self
            .elock_id
            .as_deref()
            .is_some_and(|e| e.trim().is_empty())
        {
            bad.push("elock_id is empty: leave it out or give the device id".into());
        }
        if self.origin == self.destination {
            bad.push(format!(
                "origin and destination are both {}: a transit moves between two sites",
                self.origin
            ));
        }
        if self.deadline.is_none() && self.max_duration_s.is_none() {
            bad.push("no time limit: give deadline (RFC 3339) or max_duration_s".into());
        }
        if self.max_duration_s == Some(0) {
            bad.push("max_duration_s is 0: give the allowed duration in seconds".into());
        }
        if let Some(c) = &self.corridor {
            if let Err(e) = c.check() {
                bad.push(e);
            }
        }
        for (i, a) in self.allowed_stops.iter().enumerate() {
            if let Err(e) = a.check() {
                bad.push(format!("allowed_stops[{i}]: {e}"));
            }
        }
        bad
    }
}

/// Plates are compared without case, spaces, dots or dashes: cameras differ in how they print
/// them, not in what they read.
pub fn normalize_plate(plate: &str) -> String {
    plate
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '·' | '.'))
        .flat_map(char::to_uppercase)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Declared,
    Sealed,
    Departed,
    InTransit,
    Arrived,
    Verified,
    Released,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Declared,
        Status::Sealed,
        Status::Departed,
        Status::InTransit,
        Status::Arrived,
        Status::Verified,
        Status::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Declared => "declared",
            Status::Sealed => "sealed",
            Status::Departed => "departed",
            Status::InTransit => "in_transit",
            Status::Arrived => "arrived",
            Status::Verified => "verified",
            Status::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// On the road: left the origin, not yet at the destination.
    pub fn moving(self) -> bool {
        matches!(self, Status::Departed | Status::InTransit)
    }
}

/// The stored event that caused something: the evidence a timeline points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub site: SiteId,
    pub seq: u64,
}

/// An event's effect, with when the device observed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub at: DateTime<Utc>,
    pub cause: EventRef,
}

/// One seal reading kept for reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealSeen {
    pub state: SealState,
    pub at: DateTime<Utc>,
    pub cause: EventRef,
}

/// What was seen of the truck at one end: its plate at the gate, its seals, its weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Seen>,
    /// Latest reading of every seal read at this end, by seal id (foreign ids included).
    #[serde(default)]
    pub seals: BTreeMap<String, SealSeen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_kg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Seen>,
}

/// The last position applied, for the condition rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPosition {
    pub point: Point,
    pub speed_kmh: Option<f64>,
    pub at: DateTime<Utc>,
    pub cause: EventRef,
}

/// An episode of a condition (outside the corridor, stopped), tracked in observed time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub since: DateTime<Utc>,
    pub cause: EventRef,
    /// Where it started (stops measure movement from here).
    pub at: Point,
    /// The threshold was crossed during this episode.
    pub crossed: bool,
    /// An alarm was raised (or, already open, re-triggered) for this episode.
    pub alarmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The transit moved to another status.
    Status,
    /// Something the evidence shows, without a status change.
    Note,
    /// An alarm was raised about the transit.
    Alarm,
    /// An operator acted on the transit.
    Action,
}

/// What caused a timeline entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cause {
    /// A stored event.
    Event { site: SiteId, seq: u64 },
    /// A person, through the API.
    Operator { name: String },
    /// One of the hub's timers.
    Timer,
}

impl From<&EventRef> for Cause {
    fn from(e: &EventRef) -> Cause {
        Cause::Event {
            site: e.site.clone(),
            seq: e.seq,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Position in the transit's timeline, from 1.
    pub n: u64,
    /// When it happened: the device's observed time for events, the hub's time otherwise.
    pub at: DateTime<Utc>,
    /// When the hub recorded it.
    pub recorded_at: DateTime<Utc>,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Status>,
    pub cause: Cause,
    pub text: String,
    /// An operator's comment; not shown to enterprises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The engine's whole knowledge of one transit; persisted as JSON after every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transit {
    pub declaration: Declaration,
    pub status: Status,
    pub declared_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The seals now on the truck: the declared ones, or those of the last reseal.
    pub seals: Vec<SealId>,
    pub sealed: Option<Seen>,
    pub departed: Option<Seen>,
    pub in_transit: Option<Seen>,
    pub arrived: Option<Seen>,
    pub verified: Option<Seen>,
    pub released_at: Option<DateTime<Utc>>,
    pub origin_check: EndCheck,
    pub destination_check: EndCheck,
    pub last_position: Option<LastPosition>,
    /// The last time the e-lock had a real fix (positions with `estimated` fix do not count).
    pub last_fix_at: Option<DateTime<Utc>>,
    /// The site whose agent relayed the last position: GPS-lost waits while it is behind.
    pub relay_site: Option<SiteId>,
    pub outside: Option<Episode>,
    pub stopped: Option<Episode>,
    pub battery_pct: Option<f64>,
    pub battery_at: Option<DateTime<Utc>>,
    /// Acts already alarmed (e.g. `opened:<seal>`, `foreign:<seal>`, `weight`), so that the
    /// same evidence read again is not another occurrence.
    #[serde(default)]
    pub reported: BTreeSet<String>,
    /// Timeline entries so far (the next one is `timeline_len + 1`).
    pub timeline_len: u64,
}

impl Transit {
    pub fn new(declaration: Declaration, now: DateTime<Utc>) -> Transit {
        Transit {
            seals: declaration.seal_ids.clone(),
            declaration,
            status: Status::Declared,
            declared_at: now,
            updated_at: now,
            sealed: None,
            departed: None,
            in_transit: None,
            arrived: None,
            verified: None,
            released_at: None,
            origin_check: EndCheck::default(),
            destination_check: EndCheck::default(),
            last_position: None,
            last_fix_at: None,
            relay_site: None,
            outside: None,
            stopped: None,
            battery_pct: None,
            battery_at: None,
            reported: BTreeSet::new(),
            timeline_len: 0,
        }
    }

    pub fn id(&self) -> &TransitId {
        &self.declaration.id
    }

    /// The effective time limit: the deadline, or departure plus the maximum duration, whichever
    /// comes first (before departure only a deadline applies).
    pub fn limit(&self) -> Option<DateTime<Utc>> {
        let by_duration = match (&self.departed, self.declaration.max_duration_s) {
            (Some(d), Some(s)) => Some(d.at + Duration::seconds(s as i64)),
            _ => None,
        };
        match (self.declaration.deadline, by_duration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The side-by-side comparison of origin and destination, once the truck has arrived.
    pub fn reconciliation(&self, tolerance_pct: f64) -> Option<Reconciliation> {
        self.arrived.as_ref()?;
        let (o, d) = (&self.origin_check, &self.destination_check);
        let mut ids: Vec<&String> = o.seals.keys().chain(d.seals.keys()).collect();
        ids.extend(self.seals.iter().map(|s| &s.0));
        ids.sort();
        ids.dedup();
        let seals = ids
            .into_iter()
            .map(|id| SealLine {
                seal_id: id.clone(),
                on_transit: self.seals.iter().any(|s| &s.0 == id),
                origin: o.seals.get(id).map(|s| s.state),
                destination: d.seals.get(id).map(|s| s.state),
                matches: self.seals.iter().any(|s| &s.0 == id)
                    && d.seals.get(id).map(|s| s.state) == Some(SealState::Sealed),
            })
            .collect();
        let weight = match (o.weight_kg, d.weight_kg) {
            (Some(a), Some(b)) => {
                let diff = b - a;
                let pct = if a > 0.0 { diff / a * 100.0 } else { 0.0 };
                Some(WeightLine {
                    origin_kg: a,
                    destination_kg: b,
                    difference_kg: diff,
                    difference_pct: pct,
                    within_tolerance: pct.abs() <= tolerance_pct,
                })
            }
            _ => None,
        };
        Some(Reconciliation {
            plate: PlateLine {
                declared: self.declaration.plate.clone(),
                origin: o.plate.clone(),
                destination: d.plate.clone(),
                matches: o.plate.as_deref().map(normalize_plate)
                    == d.plate.as_deref().map(normalize_plate),
            },
            seals,
            weight,
            elapsed: ElapsedLine {
                departed_at: self.departed.as_ref().map(|s| s.at),
                arrived_at: self.arrived.as_ref().map(|s| s.at),
                elapsed_s: match (&self.departed, &self.arrived) {
                    (Some(a), Some(b)) => Some((b.at - a.at).num_seconds()),
                    _ => None,
                },
                limit: self.limit(),
                within_limit: match (self.limit(), &self.arrived) {
                    (Some(l), Some(a)) => a.at <= l,
                    _ => true,
                },
            },
        })
    }
}

/// Arrival reconciliation: origin against destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciliation {
    pub plate: PlateLine,
    pub seals: Vec<SealLine>,
    /// Absent until both ends have a stable weighing.
    pub weight: Option<WeightLine>,
    pub elapsed: ElapsedLine,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlateLine {
    pub declared: String,
    pub origin: Option<String>,
    pub destination: Option<String>,
    pub matches: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SealLine {
    pub seal_id: String,
    /// One of the seals the transit should carry now.
    pub on_transit: bool,
    pub origin: Option<SealState>,
    pub destination: Option<SealState>,
    /// On the transit and read intact at the destination.
    pub matches: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightLine {
    pub origin_kg: f64,
    pub destination_kg: f64,
    pub difference_kg: f64,
    pub difference_pct: f64,
    pub within_tolerance: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElapsedLine {
    pub departed_at: Option<DateTime<Utc>>,
    pub arrived_at: Option<DateTime<Utc>>,
    pub elapsed_s: Option<i64>,
    pub limit: Option<DateTime<Utc>>,
    pub within_limit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_compare_loosely() {
        assert_eq!(normalize_plate("沪A 12-345"), normalize_plate("沪a12345"));
        assert_ne!(normalize_plate("沪A12345"), normalize_plate("沪A12346"));
    }
}
