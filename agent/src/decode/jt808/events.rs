//! From terminal messages to event bodies.
//!
//! A location report (0x0200, or an item of a 0x0704) becomes:
//! - a [`Body::Position`] when the terminal has a fix (status bit 1);
//! - a [`Body::DeviceStatus`] always: `gnss_fix`, the battery level, and in `detail` the status
//!   word, the additional items (decoded or, when unknown, as hex) and, without a fix, the
//!   coordinates as reported, so nothing the terminal said is dropped;
//! - a [`Body::Alarm`] when the alarm state differs from the last one emitted on this connection
//!   (including the change to "all clear", `alarms: []`);
//! - a [`Body::Seal`] per seal whose state differs from the last one emitted on this connection.
//!
//! Alarms and seals are tracked per connection, not per report, because terminals repeat their
//! alarm word on every report for as long as the condition lasts (often minutes): one event per
//! change is what the hub needs. The first report of a connection always emits the current
//! alarm state and every seal state, all clear included: after a reconnect (or an agent
//! restart) the hub may have missed a change, and one event per connection is cheap.
//!
//! Seals: each lock of an e-lock's 0xD5 item is a seal (its id is the lock id); the 0xDA item
//! (rope cut, back cover open) makes them tampered. Without a 0xD5 item, the terminal itself is
//! the seal (seal id = phone) when it sends a 0xDA item or when `seal_from_door_bit` is set: then
//! status bit 12 ("door locked") is the seal. Plain vehicle terminals leave that bit at 0, so
//! reading it as a seal by default would report every truck's seal open.

use super::frame::Phone;
use super::message::{alarm_kinds, hex, status, Location, Registration};
use crate::decode::Decoded;
use qyt_proto::{
    AlarmKind, AlarmReport, Body, Fix, PositionReading, SealId, SealReading, SealState,
    StatusReport,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// An event with the identity that recognises it when the terminal sends it again.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedEvent {
    pub decoded: Decoded,
    /// `jt808:<phone>:<device time>:<what>`: the same reading resent (an unanswered report, or
    /// a blind-area re-upload of a report that did arrive) gets the same key. `None` when the
    /// message has no device time to identify it by.
    pub dedup_key: Option<String>,
}

/// Seals remembered per connection; a terminal naming more is forgotten wholesale (its states
/// are then emitted again), which bounds memory whatever the terminal sends.
const MAX_TRACKED_SEALS: usize = 64;

/// What was last emitted on a connection, to emit alarms and seals only on change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracking {
    alarm: Option<(u32, Vec<AlarmKind>)>,
    seals: BTreeMap<String, SealState>,
}

impl Tracking {
    fn seal_changed(&mut self, id: &str, state: SealState) -> bool {
        if self.seals.get(id) == Some(&state) {
            return false;
        }
        if self.seals.len() >= MAX_TRACKED_SEALS && !self.seals.contains_key(id) {
            self.seals.clear();
        }
        self.seals.insert(id.to_string(), state);
        true
    }
}

fn key(phone: &Phone, loc: &Location, what: &str) -> Option<String> {
    loc.time
        .map(|_| format!("jt808:{phone}:{}:{what}", hex(&loc.time_bcd)))
}

fn event(loc: &Location, body: Body, dedup_key: Option<String>) -> KeyedEvent {
    KeyedEvent {
        decoded: Decoded {
            observed_at: loc.time,
            body,
        },
        dedup_key,
    }
}

/// The events of one location report. `history` marks the items of a blind-area re-upload.
pub(super) fn location_events(
    phone: &Phone,
    loc: &Location,
    tracking: &mut Tracking,
    seal_from_door_bit: bool,
    history: bool,
) -> Vec<KeyedEvent> {
    let device_id = phone.to_string();
    let fixed = loc.fixed();
    // The standard's range is 0-359; anything else is not a direction.
    let course = (loc.course < 360).then_some(loc.course as f64);
    let mut out = Vec::with_capacity(4);
    if fixed {
        out.push(event(
            loc,
            Body::Position(PositionReading {
                device_id: device_id.clone(),
                lat: loc.lat,
                lon: loc.lon,
                speed_kmh: Some(loc.speed_kmh),
                course,
                // The standard says only "positioned": claim no more than a 2D fix.
                fix: Fix::Fix2d,
                altitude_m: Some(loc.altitude_m as f64),
                satellites: loc.items.satellites,
                hdop: None,
            }),
            key(phone, loc, "position"),
        ));
    }
    out.push(event(
        loc,
        Body::DeviceStatus(StatusReport {
            device_id: device_id.clone(),
            online: None,
            battery_pct: loc.items.battery_pct.map(f64::from),
            gnss_fix: Some(fixed),
            detail: status_detail(loc, history),
        }),
        key(phone, loc, "status"),
    ));

    let device = loc.items.lock_device;
    let rope_cut = device.is_some_and(|d| d.rope_cut());
    let cover_open = device.is_some_and(|d| d.cover_open());
    let mut alarms = alarm_kinds(loc.alarm);
    if rope_cut {
        alarms.push(AlarmKind::RopeCut);
    }
    if cover_open {
        alarms.push(AlarmKind::CoverOpened);
    }
    let state = (loc.alarm, alarms.clone());
    if tracking.alarm.as_ref() != Some(&state) {
        let what = format!(
            "alarm:{:08x}:{}{}",
            loc.alarm, rope_cut as u8, cover_open as u8
        );
        tracking.alarm = Some(state);
        out.push(event(
            loc,
            Body::Alarm(AlarmReport {
                device_id: device_id.clone(),
                alarms,
                raw: Some(loc.alarm as u64),
                lat: fixed.then_some(loc.lat),
                lon: fixed.then_some(loc.lon),
            }),
            key(phone, loc, &what),
        ));
    }

    let tampered = rope_cut || cover_open;
    let mut seals: Vec<(String, SealState, Option<f64>)> = Vec::new();
    if !loc.items.locks.is_empty() {
        for lock in &loc.items.locks {
            let state = match (tampered, lock.unlocked) {
                (true, _) => SealState::Tampered,
                (false, true) => SealState::Opened,
                (false, false) => SealState::Sealed,
            };
            let battery = (lock.battery <= 100).then_some(f64::from(lock.battery));
            seals.push((lock.id.clone(), state, battery));
        }
    } else if device.is_some() || seal_from_door_bit {
        let state = match (tampered, loc.status & status::DOOR_LOCKED != 0) {
            (true, _) => SealState::Tampered,
            (false, true) => SealState::Sealed,
            (false, false) => SealState::Opened,
        };
        seals.push((
            device_id.clone(),
            state,
            loc.items.battery_pct.map(f64::from),
        ));
    }
    for (id, state, battery_pct) in seals {
        if tracking.seal_changed(&id, state) {
            let what = format!("seal:{id}:{}", seal_state_label(state));
            out.push(event(
                loc,
                Body::Seal(SealReading {
                    seal_id: SealId(id),
                    state,
                    battery_pct,
                    device_id: Some(device_id.clone()),
                }),
                key(phone, loc, &what),
            ));
        }
    }
    out
}

fn seal_state_label(s: SealState) -> &'static str {
    match s {
        SealState::Sealed => "sealed",
        SealState::Opened => "opened",
        SealState::Tampered => "tampered",
        SealState::Unknown => "unknown",
    }
}

fn status_detail(loc: &Location, history: bool) -> Value {
    let i = &loc.items;
    let mut d = Map::new();
    d.insert("jt808".into(), json!("location"));
    d.insert("status_word".into(), json!(loc.status));
    d.insert("alarm_word".into(), json!(loc.alarm));
    d.insert("acc_on".into(), json!(loc.status & status::ACC_ON != 0));
    d.insert(
        "door_locked".into(),
        json!(loc.status & status::DOOR_LOCKED != 0),
    );
    let flags = [
        ("oil_cut", loc.status & status::OIL_CUT != 0),
        ("circuit_cut", loc.status & status::CIRCUIT_CUT != 0),
        ("blind_area", history),
    ];
    for (k, set) in flags {
        if set {
            d.insert(k.into(), json!(true));
        }
    }
    if !loc.fixed() {
        // Without a fix there is no position event: keep what the terminal reported (often
        // its last known position) here, under names that say it is not a fix.
        d.insert("reported_lat".into(), json!(loc.lat));
        d.insert("reported_lon".into(), json!(loc.lon));
        d.insert("reported_speed_kmh".into(), json!(loc.speed_kmh));
        d.insert("reported_course".into(), json!(loc.course));
        d.insert("reported_altitude_m".into(), json!(loc.altitude_m));
    }
    let optional = [
        (
            "time_bcd",
            loc.time.is_none().then(|| json!(hex(&loc.time_bcd))),
        ),
        ("odometer_km", i.odometer_km.map(|v| json!(v))),
        ("fuel_l", i.fuel_l.map(|v| json!(v))),
        ("recorder_speed_kmh", i.recorder_speed_kmh.map(|v| json!(v))),
        ("alarm_event_id", i.alarm_event_id.map(|v| json!(v))),
        ("ext_signals", i.ext_signals.map(|v| json!(v))),
        ("io_status", i.io_status.map(|v| json!(v))),
        ("analog", i.analog.map(|v| json!(v))),
        ("signal_strength", i.signal_strength.map(|v| json!(v))),
        ("satellites", i.satellites.map(|v| json!(v))),
        (
            "lock_device",
            i.lock_device.map(|dev| {
                json!({
                    "rope_cuts": dev.rope_cuts,
                    "rope_cut": dev.rope_cut(),
                    "moving": dev.moving(),
                    "cover_open": dev.cover_open(),
                    "status": dev.status,
                })
            }),
        ),
        (
            "trailing",
            (!i.trailing.is_empty()).then(|| json!(hex(&i.trailing))),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            d.insert(k.into(), v);
        }
    }
    if !i.locks.is_empty() {
        let locks = i.locks.iter().map(
            |l| json!({"id": l.id, "card": l.card, "battery": l.battery, "unlocked": l.unlocked}),
        );
        d.insert("locks".into(), Value::Array(locks.collect()));
    }
    if !i.other.is_empty() {
        // Items without a decoder, as sent: id and value in hex.
        let items = i
            .other
            .iter()
            .map(|(id, v)| json!({"id": format!("{id:02x}"), "value": hex(v)}));
        d.insert("items".into(), Value::Array(items.collect()));
    }
    Value::Object(d)
}

/// A registration is a status: the terminal is online, and says what it is and which vehicle
/// (plate) it is fitted to.
pub(super) fn registration_event(phone: &Phone, r: &Registration) -> KeyedEvent {
    KeyedEvent {
        decoded: Decoded {
            observed_at: None,
            body: Body::DeviceStatus(StatusReport {
                device_id: phone.to_string(),
                online: Some(true),
                battery_pct: None,
                gnss_fix: None,
                detail: json!({
                    "jt808": "registration",
                    "province": r.province,
                    "city": r.city,
                    "manufacturer": r.manufacturer,
                    "model": r.model,
                    "terminal_id": r.terminal_id,
                    "plate_color": r.plate_color,
                    "plate": r.plate,
                }),
            }),
        },
        dedup_key: None,
    }
}

pub(super) fn logout_event(phone: &Phone) -> KeyedEvent {
    KeyedEvent {
        decoded: Decoded {
            observed_at: None,
            body: Body::DeviceStatus(StatusReport {
                device_id: phone.to_string(),
                online: Some(false),
                battery_pct: None,
                gnss_fix: None,
                detail: json!({"jt808": "logout"}),
            }),
        },
        dedup_key: None,
    }
}

/// A message kept whole: 0x0900 pass-through (e-lock payloads the decoder cannot read) and
/// every message id without a decoder.
pub(super) fn raw_event(phone: &Phone, msg_id: u16, serial: u16, body: &[u8]) -> KeyedEvent {
    let mut payload = json!({
        "protocol": "jt808",
        "msg_id": format!("0x{msg_id:04x}"),
        "phone": phone.to_string(),
        "serial": serial,
    });
    if let (super::message::MSG_TRANSPARENT, [kind, data @ ..]) = (msg_id, body) {
        payload["type"] = json!(kind);
        payload["data"] = json!(hex(data));
    } else {
        payload["body"] = json!(hex(body));
    }
    KeyedEvent {
        decoded: Decoded {
            observed_at: None,
            body: Body::Raw { payload },
        },
        dedup_key: None,
    }
}
