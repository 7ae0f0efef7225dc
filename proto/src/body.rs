//! Typed event bodies. Serialized with an internal `kind` tag, so every body is a flat JSON object
//! such as `{"kind":"seal","seal_id":"CN123","state":"opened","battery_pct":80.0}`.
//!
//! Units are fixed here so that no consumer has to guess: degrees WGS84 (signed, north/east
//! positive), km/h, degrees clockwise from true north, kilograms, percent.

use crate::ids::{SealId, Seq};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Seal(SealReading),
    Position(PositionReading),
    Gate(GatePassage),
    Weight(WeightReading),
    DeviceStatus(StatusReport),
    /// A device message not (yet) mapped to a typed body, kept whole so nothing is lost.
    Raw {
        payload: serde_json::Value,
    },
    /// The agent had to drop events (its buffer was full); forwarded like any event so the hub
    /// knows exactly which sequence numbers will never arrive, and why.
    Gap(GapBody),
    /// Alarm conditions a device reports (e-lock, vehicle terminal), decoded to named flags.
    Alarm(AlarmReport),
}

/// The classes config can refer to, e.g. to mark some as never-drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    Seal,
    Position,
    Gate,
    Weight,
    DeviceStatus,
    Raw,
    Gap,
    // New classes go last: the code (declaration order) is stored on disk by the agent.
    Alarm,
}

impl EventClass {
    pub const ALL: [EventClass; 8] = [
        EventClass::Seal,
        EventClass::Position,
        EventClass::Gate,
        EventClass::Weight,
        EventClass::DeviceStatus,
        EventClass::Raw,
        EventClass::Gap,
        EventClass::Alarm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Seal => "seal",
            EventClass::Position => "position",
            EventClass::Gate => "gate",
            EventClass::Weight => "weight",
            EventClass::DeviceStatus => "device_status",
            EventClass::Raw => "raw",
            EventClass::Gap => "gap",
            EventClass::Alarm => "alarm",
        }
    }

    /// Stable one-byte code, for storage formats that keep the class beside the payload.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<EventClass> {
        EventClass::ALL.get(code as usize).copied()
    }
}

impl Body {
    pub fn class(&self) -> EventClass {
        match self {
            Body::Seal(_) => EventClass::Seal,
            Body::Position(_) => EventClass::Position,
            Body::Gate(_) => EventClass::Gate,
            Body::Weight(_) => EventClass::Weight,
            Body::DeviceStatus(_) => EventClass::DeviceStatus,
            Body::Raw { .. } => EventClass::Raw,
            Body::Gap(_) => EventClass::Gap,
            Body::Alarm(_) => EventClass::Alarm,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealState {
    Sealed,
    Opened,
    Tampered,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealReading {
    pub seal_id: SealId,
    pub state: SealState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<f64>,
    /// The reader or e-lock that reported the seal, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// Quality of a position fix, from worst to best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fix {
    /// Dead reckoning or otherwise estimated.
    Estimated,
    Fix2d,
    Fix3d,
    Dgps,
    Rtk,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionReading {
    pub device_id: String,
    /// Degrees WGS84, north positive.
    pub lat: f64,
    /// Degrees WGS84, east positive.
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    /// Degrees clockwise from true north.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course: Option<f64>,
    pub fix: Fix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude_m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satellites: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hdop: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatePassage {
    pub lane: String,
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    /// Recognition confidence, 0.0 to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Where the camera stored the image of this passage (URL or path on the camera's server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightReading {
    pub kg: f64,
    pub stable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tare_kg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<f64>,
    /// Whether the device's GNSS receiver has a valid fix: a receiver without one reports this
    /// status instead of a position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gnss_fix: Option<bool>,
    /// Anything else the device said about itself, as it said it.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// Alarm conditions with a meaning of their own. Named after JT/T 808's alarm bits and the
/// e-lock vocabularies customs programmes use; a device's other bits stay in `AlarmReport.raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    Sos,
    Overspeed,
    GnssFault,
    AntennaCut,
    AntennaShort,
    MainPowerLow,
    MainPowerOff,
    LowBattery,
    Vibration,
    /// Tampering with the device or seal: shell removed, forced opening attempt.
    Tamper,
    OvertimeParking,
    AreaInOut,
    RouteInOut,
    RouteTime,
    RouteDeviation,
    Stolen,
    IllegalIgnition,
    IllegalDisplacement,
    Collision,
    Rollover,
    IllegalDoorOpening,
    /// The e-lock's shackle or lock opened.
    LockOpened,
    /// The e-lock's steel rope / cable cut.
    RopeCut,
    /// The e-lock's back cover opened.
    CoverOpened,
    /// Unlock refused: unauthorised card, wrong password, outside the permitted area.
    UnlockRefused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmReport {
    pub device_id: String,
    /// The named conditions active in this report (empty when a device reports "all clear").
    pub alarms: Vec<AlarmKind>,
    /// The device's alarm word as sent, when it has one, so bits without a name are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<u64>,
    /// Where the device was when it raised the alarm, if it said (degrees WGS84).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The agent's buffer reached its configured size on disk.
    BufferFull,
    /// Records found damaged on disk at start-up.
    Corrupt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapBody {
    /// The exact sequence numbers that will never arrive, as inclusive `[from, to]` ranges.
    /// Exact, not a span, because never-drop events between them were kept and must still arrive.
    pub ranges: Vec<[Seq; 2]>,
    /// Number of events in `ranges`.
    pub count: u64,
    pub reason: DropReason,
}

impl GapBody {
    /// Builds a gap from sequence numbers in ascending order, merging runs into ranges.
    pub fn from_sorted(seqs: impl IntoIterator<Item = Seq>, reason: DropReason) -> GapBody {
        let mut ranges: Vec<[Seq; 2]> = Vec::new();
        let mut count = 0;
        for s in seqs {
            count += 1;
            match ranges.last_mut() {
                Some(r) if r[1].0 + 1 == s.0 => r[1] = s,
                _ => ranges.push([s, s]),
            }
        }
        GapBody {
            ranges,
            count,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_flat_objects_tagged_by_kind() {
        let b = Body::Seal(SealReading {
            seal_id: SealId("CN-1".into()),
            state: SealState::Opened,
            battery_pct: Some(80.0),
            device_id: None,
        });
        let j = serde_json::to_value(&b).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"kind":"seal","seal_id":"CN-1","state":"opened","battery_pct":80.0})
        );
        assert_eq!(serde_json::from_value::<Body>(j).unwrap(), b);
    }

    #[test]
    fn class_codes_round_trip() {
        for c in EventClass::ALL {
            assert_eq!(EventClass::from_code(c.code()), Some(c));
        }
        assert_eq!(EventClass::from_code(200), None);
    }

    #[test]
    fn gap_ranges_merge_runs() {
        let g = GapBody::from_sorted([1, 2, 3, 5, 7, 8].map(Seq), DropReason::BufferFull);
        assert_eq!(g.count, 6);
        assert_eq!(
            g.ranges,
            vec![[Seq(1), Seq(3)], [Seq(5), Seq(5)], [Seq(7), Seq(8)]]
        );
    }
}
