//! The decoder against real devices' frames (shared/testdata/jt808/frames.tsv, from Traccar's
//! test suite) and the session's flows: authentication, change tracking, long messages, garbage.

use super::frame::{write_frame, Package, DEFAULT_MAX_FRAME_BYTES};
use super::message::{
    alarm_kinds, hex, Authentication, Batch, Location, Registration, MSG_BATCH, MSG_LOCATION,
};
use super::*;
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use qyt_proto::{AlarmKind, Body, SealState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const FRAMES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/testdata/jt808/frames.tsv"
);

const SECRET: &[u8] = b"test-secret-0123456789";

struct Row {
    bytes: Vec<u8>,
    fields: BTreeMap<String, String>,
    note: String,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(FRAMES).unwrap_or_else(|e| panic!("{FRAMES}: {e}"));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let fields = cols[1]
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Row {
                bytes: unhex(cols[0]),
                fields,
                note: cols.get(2).copied().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

fn field<'a>(row: &'a Row, k: &str) -> &'a str {
    row.fields
        .get(k)
        .unwrap_or_else(|| panic!("row {:?} has no {k}", row.note))
}

fn num(row: &Row, k: &str) -> u32 {
    let v = field(row, k);
    u32::from_str_radix(v.trim_start_matches("0x"), 16).expect("hex number")
}

fn config(seal_from_door_bit: bool, terminals: &[&str]) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        auth_secret: SECRET.to_vec(),
        terminals: terminals.iter().map(|t| t.to_string()).collect(),
        seal_from_door_bit,
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        reassembly: ReassemblyLimits {
            max_messages: 4,
            max_bytes: 16 * 1024,
            max_age: TimeDelta::seconds(60),
        },
    })
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000, 0).expect("valid")
}

/// Feeds whole frames; one exchange each.
fn feed(s: &mut Session, wire: &[u8]) -> Exchange {
    let fed = s.feed(wire, now());
    assert_eq!(fed.exchanges.len(), 1, "{fed:?}");
    fed.exchanges.into_iter().next().expect("one")
}

fn general_result(e: &Exchange) -> Option<GeneralResult> {
    match e.reply.as_ref().map(|r| &r.body) {
        Some(ReplyBody::General { result, .. }) => Some(*result),
        _ => None,
    }
}

/// Registers and authenticates `phone` on a new session; returns both.
fn login(cfg: &Arc<SessionConfig>, phone: &str, version: Version) -> (Session, SimTerminal) {
    let mut s = Session::new(cfg.clone());
    let mut t = SimTerminal::new(phone, version, 31.0, 121.0, 7).expect("phone");
    let reg = feed(&mut s, &t.registration("沪A12345"));
    let Some(ReplyBody::Registration {
        result: RegistrationResult::Ok,
        auth_code: Some(code),
        ..
    }) = reg.reply.map(|r| r.body)
    else {
        panic!("registration refused");
    };
    let auth = feed(&mut s, &t.authentication(code.as_str()));
    assert_eq!(general_result(&auth), Some(GeneralResult::Ok));
    assert_eq!(s.terminal(), Some(t.phone()));
    (s, t)
}

fn bodies(e: &Exchange) -> Vec<&Body> {
    e.events.iter().map(|k| &k.decoded.body).collect()
}

/// Checks a decoded location against the row's fields (the first item, for a batch).
fn check_location(row: &Row, loc: &Location) {
    assert_eq!(loc.alarm, num(row, "alarm"), "{}", row.note);
    assert_eq!(loc.status, num(row, "status"), "{}", row.note);
    let lat: f64 = field(row, "lat").parse().expect("lat");
    let lon: f64 = field(row, "lon").parse().expect("lon");
    assert!((loc.lat - lat).abs() < 1e-9, "{} vs {lat}", loc.lat);
    assert!((loc.lon - lon).abs() < 1e-9, "{} vs {lon}", loc.lon);
    let speed: f64 = field(row, "speed_kmh").parse().expect("speed");
    assert!((loc.speed_kmh - speed).abs() < 1e-9);
    assert_eq!(hex(&loc.time_bcd), field(row, "time"));
    // Beijing time to UTC: the row's time minus 8 hours.
    let t = field(row, "time");
    let local =
        chrono::NaiveDateTime::parse_from_str(&format!("20{t}"), "%Y%m%d%H%M%S").expect("row time");
    assert_eq!(loc.time, Some((local - TimeDelta::hours(8)).and_utc()));
}

#[test]
fn every_testdata_frame_decodes_to_the_values_in_its_row() {
    let rows = rows();
    assert_eq!(rows.len(), 9);
    let mut checked = BTreeSet::new();
    for row in &rows {
        let mut framer = Framer::new(DEFAULT_MAX_FRAME_BYTES);
        let cuts = framer.push(&row.bytes);
        assert_eq!(cuts.len(), 1, "{}", row.note);
        let escaped = cuts[0].as_ref().expect("delimited");
        let decoded = Frame::decode(escaped);
        if field(row, "cs_ok") == "False" {
            // The frame a device sent with a checksum and a length that both disagree with its
            // content: refused on the checksum, which is checked first.
            assert!(
                matches!(
                    decoded,
                    Err(FrameError::Checksum {
                        sent: 0xD0,
                        computed: 0xF0
                    })
                ),
                "{decoded:?}"
            );
            assert_eq!(field(row, "len_ok"), "False");
            checked.insert("bad");
            continue;
        }
        let f = decoded.unwrap_or_else(|e| panic!("{}: {e}", row.note));
        assert_eq!(f.header.msg_id, num(row, "id") as u16, "{}", row.note);
        assert_eq!(f.header.phone.to_string(), field(row, "phone"));
        assert_eq!(f.header.version, Version::V2013);
        match f.header.msg_id {
            MSG_LOCATION => {
                let loc = Location::parse(&f.body).expect("location");
                check_location(row, &loc);
                checked.insert("location");
            }
            MSG_BATCH => {
                let b = Batch::parse(&f.body).expect("batch");
                assert_eq!(b.locations.len(), num(row, "count") as usize);
                assert!(b.is_history(), "type 1: blind-area re-upload");
                check_location(row, &b.locations[0]);
                checked.insert("batch");
            }
            0x0100 => {
                let r = Registration::parse(&f.body, f.header.version).expect("registration");
                assert_eq!(r.manufacturer, "70107");
                assert_eq!(r.model, "HB-R03GBD");
                assert_eq!(r.terminal_id, "2366104");
                assert_eq!(r.plate_color, 2);
                assert_eq!(r.plate, "苏BA6860", "GBK plate");
                checked.insert("registration");
            }
            0x0102 => {
                let a = Authentication::parse(&f.body, f.header.version).expect("auth");
                assert_eq!(a.code, "authentication");
                checked.insert("authentication");
            }
            0x0002 => {
                assert!(f.body.is_empty());
                checked.insert("heartbeat");
            }
            id => panic!("unexpected id {id:#06x}"),
        }
    }
    assert_eq!(checked.len(), 6, "{checked:?}");
}

#[test]
fn testdata_items_decode_as_traccar_expects() {
    let rows = rows();
    let loc = |i: usize| {
        let b = &rows[i].bytes;
        let f = Frame::decode(&b[1..b.len() - 1]).expect("valid");
        Location::parse(&f.body).expect("location")
    };
    // Row 1, an e-lock: Traccar expects lock1Locked=false.
    let l = loc(0);
    assert_eq!(l.items.locks.len(), 1);
    assert_eq!(l.items.locks[0].id, "0002604323");
    assert_eq!(l.items.locks[0].card, "2795980277");
    assert_eq!(l.items.locks[0].battery, 83);
    assert!(l.items.locks[0].unlocked);
    assert_eq!(l.items.odometer_km, Some(388.0));
    assert_eq!(l.items.signal_strength, Some(20));
    assert_eq!(l.items.satellites, Some(0));
    let unknown: Vec<u8> = l.items.other.iter().map(|(id, _)| *id).collect();
    assert_eq!(unknown, [0xE3, 0xE5, 0xE7, 0xE8], "vendor items kept");
    assert!(!l.fixed());
    // Row 2: alarm bit 7, main power low (Traccar calls it lowBattery); the 0xEB vendor item kept.
    let l = loc(1);
    assert_eq!(alarm_kinds(l.alarm), [AlarmKind::MainPowerLow]);
    assert_eq!(l.items.other[0].0, 0xEB);
    assert_eq!(l.items.other[0].1.len(), 36);
    // Row 3: bit 17, tampering.
    let l = loc(2);
    assert_eq!(alarm_kinds(l.alarm), [AlarmKind::Tamper]);
    assert_eq!(l.items.battery_pct, Some(64));
    // Row 4: Traccar expects batteryLevel=69 (item 0xFE).
    assert_eq!(loc(3).items.battery_pct, Some(69));
    assert!(loc(3).items.trailing.is_empty());
}

#[test]
fn testdata_locations_become_events() {
    let cfg = config(false, &[]);
    let rows = rows();
    let run = |i: usize| {
        let row = &rows[i];
        let (mut s, _) = login(&cfg, field(row, "phone"), Version::V2013);
        let e = feed(&mut s, &row.bytes);
        assert_eq!(e.rejected, None, "{}", row.note);
        assert_eq!(general_result(&e), Some(GeneralResult::Ok));
        e
    };

    // Row 1: no fix, so no position; the e-lock's lock is open.
    let e = run(0);
    let b = bodies(&e);
    assert_eq!(b.len(), 3, "{b:?}");
    let Body::DeviceStatus(st) = b[0] else {
        panic!("{b:?}")
    };
    assert_eq!(st.gnss_fix, Some(false));
    assert_eq!(st.detail["reported_lat"], 22.591764);
    assert_eq!(
        st.detail["items"][0],
        serde_json::json!({"id": "e3", "value": "00"})
    );
    let Body::Alarm(a) = b[1] else {
        panic!("{b:?}")
    };
    assert_eq!((a.alarms.len(), a.raw, a.lat), (0, Some(0), None));
    let Body::Seal(seal) = b[2] else {
        panic!("{b:?}")
    };
    assert_eq!(seal.seal_id.0, "0002604323");
    assert_eq!(seal.state, SealState::Opened);
    assert_eq!(seal.battery_pct, Some(83.0));
    assert_eq!(seal.device_id.as_deref(), Some("200002604323"));
    let observed = e.events[0].decoded.observed_at.expect("time");
    assert_eq!(observed.to_rfc3339(), "2022-05-12T02:11:38+00:00");
    assert_eq!(
        e.events[0].dedup_key.as_deref(),
        Some("jt808:200002604323:220512101138:status")
    );

    // Row 2: fixed; main power low.
    let e = run(1);
    let b = bodies(&e);
    let Body::Position(p) = b[0] else {
        panic!("{b:?}")
    };
    assert_eq!(
        (p.lat, p.lon, p.speed_kmh),
        (22.641605, 114.032486, Some(0.0))
    );
    assert_eq!(p.device_id, "012345678901");
    assert_eq!(p.course, Some(341.0));
    assert_eq!(p.altitude_m, Some(235.0));
    let Body::Alarm(a) = b[2] else {
        panic!("{b:?}")
    };
    assert_eq!(a.alarms, [AlarmKind::MainPowerLow]);
    assert_eq!(
        (a.raw, a.lat, a.lon),
        (Some(0x80), Some(22.641605), Some(114.032486))
    );

    // Row 3: tampering, moving at 24.1 km/h.
    let e = run(2);
    let b = bodies(&e);
    let Body::Position(p) = b[0] else {
        panic!("{b:?}")
    };
    assert_eq!(p.speed_kmh, Some(24.1));
    assert_eq!(p.course, Some(252.0));
    let Body::Alarm(a) = b[2] else {
        panic!("{b:?}")
    };
    assert_eq!(a.alarms, [AlarmKind::Tamper]);

    // Row 4: battery level on the status.
    let e = run(3);
    let Body::DeviceStatus(st) = bodies(&e)[1] else {
        panic!()
    };
    assert_eq!(st.battery_pct, Some(69.0));

    // Row 9: 8 blind-area positions, each with its status; one alarm (all clear) for the lot.
    let e = run(8);
    let b = bodies(&e);
    let positions = b.iter().filter(|b| matches!(b, Body::Position(_))).count();
    let statuses: Vec<_> = b
        .iter()
        .filter_map(|b| match b {
            Body::DeviceStatus(s) => Some(s),
            _ => None,
        })
        .collect();
    let alarms = b.iter().filter(|b| matches!(b, Body::Alarm(_))).count();
    assert_eq!((positions, statuses.len(), alarms), (8, 8, 1));
    assert!(statuses.iter().all(|s| s.detail["blind_area"] == true));
    assert_eq!(
        e.events[0].decoded.observed_at.map(|t| t.to_rfc3339()),
        Some("2016-05-27T01:06:24+00:00".into())
    );
}

#[test]
fn testdata_registration_authentication_and_heartbeat_are_answered() {
    let rows = rows();
    let mut s = Session::new(config(false, &[]));
    let reg = feed(&mut s, &rows[4].bytes);
    let Body::DeviceStatus(st) = bodies(&reg)[0] else {
        panic!()
    };
    assert_eq!(st.online, Some(true));
    assert_eq!(st.detail["plate"], "苏BA6860");
    let reply = reg.reply.expect("0x8100");
    let ReplyBody::Registration {
        reply_serial,
        result,
        auth_code: Some(code),
    } = &reply.body
    else {
        panic!("{reply:?}")
    };
    assert_eq!((*reply_serial, *result), (5, RegistrationResult::Ok));
    let phone = reply.phone;
    assert_eq!(code, &AuthCode::derive(SECRET, &phone));

    // The recorded authentication offers a code another platform issued: not believed.
    let auth = feed(&mut s, &rows[5].bytes);
    assert_eq!(
        auth.rejected.as_ref().map(|r| r.reason),
        Some("auth_failed")
    );
    assert_eq!(general_result(&auth), Some(GeneralResult::Failure));
    assert_eq!(s.terminal(), None);

    // The heartbeat of another, unauthenticated terminal: answered "failure".
    let hb = feed(&mut s, &rows[7].bytes);
    assert_eq!(
        hb.rejected.as_ref().map(|r| r.reason),
        Some("unauthenticated")
    );
    let wire = s.encode(hb.reply.as_ref().expect("reply"));
    // 8001, 5 bytes, the terminal's phone, platform serial 0 | reply serial 00B7, reply id
    // 0002, result 1 | checksum.
    assert_eq!(hex(&wire), "7e80010005043048325465000000b70002014f7e");

    // An authenticated heartbeat gets result 0.
    let (mut s, mut t) = login(&config(false, &[]), "043048325465", Version::V2013);
    let hb = feed(&mut s, &t.heartbeat());
    assert_eq!(
        (&hb.rejected, general_result(&hb)),
        (&None, Some(GeneralResult::Ok))
    );
}

#[test]
fn a_stream_of_every_testdata_frame_keeps_going_past_the_bad_one() {
    let mut stream = Vec::new();
    for row in rows() {
        stream.extend_from_slice(&row.bytes);
    }
    for chunk in [1, 7, 64, 4096] {
        let mut s = Session::new(config(false, &[]));
        let exchanges: Vec<Exchange> = stream
            .chunks(chunk)
            .flat_map(|c| s.feed(c, now()).exchanges)
            .collect();
        assert_eq!(exchanges.len(), 9, "one exchange per frame, chunk {chunk}");
        let reasons: Vec<Option<&str>> = exchanges
            .iter()
            .map(|e| e.rejected.as_ref().map(|r| r.reason))
            .collect();
        assert_eq!(reasons[6], Some("bad_checksum"));
        assert_eq!(exchanges[6].header, None);
        assert_eq!(
            exchanges[6].reply, None,
            "a frame that fails its checksum is not answered"
        );
        // Registration works; the rest are from terminals not authenticated here.
        assert_eq!(reasons[4], None);
        assert_eq!(reasons[7], Some("unauthenticated"));
        assert_eq!(
            reasons[8],
            Some("unauthenticated"),
            "the frame after the bad one is read"
        );
    }
}

#[test]
fn the_auth_flow_and_the_bad_frame_on_one_connection() {
    let rows = rows();
    let cfg = config(false, &[]);
    let mut s = Session::new(cfg);
    let mut t = SimTerminal::new("13511221122", Version::V2013, 22.5, 113.9, 1).expect("phone");
    // A location before authentication is not believed.
    let early = feed(&mut s, &t.location(now()));
    assert_eq!(
        early.rejected.as_ref().map(|r| r.reason),
        Some("unauthenticated")
    );
    assert!(early.events.is_empty());
    assert_eq!(general_result(&early), Some(GeneralResult::Failure));
    // The recorded registration of this terminal, then authentication with the issued code.
    let reg = feed(&mut s, &rows[4].bytes);
    let Some(ReplyBody::Registration {
        auth_code: Some(code),
        ..
    }) = reg.reply.map(|r| r.body)
    else {
        panic!()
    };
    let wrong = feed(&mut s, &t.authentication("authentication"));
    assert_eq!(wrong.rejected.map(|r| r.reason), Some("auth_failed"));
    assert_eq!(
        feed(&mut s, &t.authentication(code.as_str())).rejected,
        None
    );
    // The recorded location with the bad checksum is refused; the connection goes on.
    let bad = feed(&mut s, &rows[6].bytes);
    assert_eq!(bad.rejected.map(|r| r.reason), Some("bad_checksum"));
    let good = feed(&mut s, &t.location(now()));
    assert_eq!(good.rejected, None);
    assert!(matches!(bodies(&good)[0], Body::Position(_)));
    // A restarted agent (a new session, same secret) accepts the same code without a
    // new registration.
    let mut restarted = Session::new(config(false, &[]));
    assert_eq!(
        feed(&mut restarted, &t.authentication(code.as_str())).rejected,
        None
    );
    // Another phone on an authenticated connection is not believed.
    let mut other = SimTerminal::new("13900000000", Version::V2013, 0.0, 0.0, 2).expect("phone");
    let e = feed(&mut restarted, &other.location(now()));
    assert_eq!(e.rejected.map(|r| r.reason), Some("unauthenticated"));
}

#[test]
fn only_configured_terminals_may_register_and_authenticate() {
    let cfg = config(false, &["13511221122"]);
    let mut s = Session::new(cfg);
    let mut stranger = SimTerminal::new("13900000000", Version::V2013, 0.0, 0.0, 2).expect("phone");
    let reg = feed(&mut s, &stranger.registration("沪A00000"));
    assert_eq!(reg.rejected.map(|r| r.reason), Some("unknown_terminal"));
    assert!(reg.events.is_empty());
    assert!(matches!(
        reg.reply.map(|r| r.body),
        Some(ReplyBody::Registration {
            result: RegistrationResult::NoSuchTerminal,
            auth_code: None,
            ..
        })
    ));
    let code = AuthCode::derive(SECRET, &stranger.phone());
    let auth = feed(&mut s, &stranger.authentication(code.as_str()));
    assert_eq!(auth.rejected.map(|r| r.reason), Some("auth_failed"));
    // The configured one, in a 2019 header (20-digit phone), is allowed.
    login(
        &config(false, &["13511221122"]),
        "13511221122",
        Version::V2019(1),
    );
}

#[test]
fn a_2019_terminal_goes_through_the_whole_flow() {
    let (mut s, mut t) = login(&config(false, &[]), "13511221122", Version::V2019(1));
    let e = feed(&mut s, &t.location(now()));
    let reply = e.reply.clone().expect("reply");
    assert_eq!(reply.version, Version::V2019(1));
    let wire = s.encode(&reply);
    let f = Frame::decode(&wire[1..wire.len() - 1]).expect("valid");
    assert_eq!(f.header.version, Version::V2019(1));
    assert_eq!(f.header.phone.to_string(), "00000000013511221122");
    let Body::Position(p) = bodies(&e)[0] else {
        panic!()
    };
    assert_eq!(p.device_id, "00000000013511221122");
}

#[test]
fn alarms_and_seals_are_emitted_on_change_and_again_after_a_refusal() {
    let (mut s, mut t) = login(&config(true, &[]), "13511221122", Version::V2013);
    let kinds = |e: &Exchange| -> Vec<&'static str> {
        bodies(e).iter().map(|b| b.class().as_str()).collect()
    };
    let first = feed(&mut s, &t.location(now()));
    assert_eq!(
        kinds(&first),
        ["position", "device_status", "alarm", "seal"]
    );
    let Body::Seal(seal) = bodies(&first)[3] else {
        panic!()
    };
    assert_eq!(
        (seal.seal_id.0.as_str(), seal.state),
        ("013511221122", SealState::Sealed)
    );
    assert_eq!(
        kinds(&feed(&mut s, &t.location(now()))),
        ["position", "device_status"]
    );
    t.set_alarm(1 | (1 << 9));
    let sos = feed(&mut s, &t.location(now()));
    assert_eq!(kinds(&sos), ["position", "device_status", "alarm"]);
    let Body::Alarm(a) = bodies(&sos)[2] else {
        panic!()
    };
    assert_eq!(
        (a.alarms.as_slice(), a.raw),
        ([AlarmKind::Sos].as_slice(), Some(0x201))
    );
    assert_eq!(
        kinds(&feed(&mut s, &t.location(now()))),
        ["position", "device_status"]
    );

    // The buffer refuses the next batch: going back to the checkpoint makes the resend emit
    // the change again.
    let checkpoint = s.checkpoint();
    t.set_alarm(0);
    t.set_sealed(false);
    let wire = t.location(now());
    let change = feed(&mut s, &wire);
    assert_eq!(
        kinds(&change),
        ["position", "device_status", "alarm", "seal"]
    );
    s.restore(checkpoint);
    let resent = feed(&mut s, &wire);
    assert_eq!(
        resent.events, change.events,
        "the same events, with the same keys"
    );
    let Body::Seal(seal) = bodies(&resent)[3] else {
        panic!()
    };
    assert_eq!(seal.state, SealState::Opened);
    let Body::Alarm(a) = bodies(&resent)[2] else {
        panic!()
    };
    assert!(a.alarms.is_empty(), "all clear");
}

#[test]
fn e_lock_items_make_seals_and_a_cut_rope_tampers_them() {
    let (mut s, mut t) = login(&config(false, &[]), "13511221122", Version::V2013);
    // One lock (id 0002604323, battery 90, status word: bit 5 clear = locked), then the
    // device item (rope cuts, status byte).
    let report = |t: &mut SimTerminal, lock_status: u16, device_status: u8, with_lock: bool| {
        let mut lock = vec![1, 0x00, 0x02, 0x60, 0x43, 0x23, 0, 0, 0, 0, 1, 90];
        lock.extend_from_slice(&lock_status.to_be_bytes());
        let mut items = vec![(0xDA, vec![0, 1, device_status])];
        if with_lock {
            items.insert(0, (0xD5, lock));
        }
        let body = message::LocationFields {
            alarm: 0,
            status: message::status::FIXED,
            lat: 31.0,
            lon: 121.0,
            altitude_m: 0,
            speed_kmh: 0.0,
            course: 0,
            time: now(),
            items,
        }
        .encode();
        t.frame(MSG_LOCATION, &body)
    };
    let seals = |e: &Exchange| -> Vec<(String, SealState)> {
        bodies(e)
            .into_iter()
            .filter_map(|b| match b {
                Body::Seal(r) => Some((r.seal_id.0.clone(), r.state)),
                _ => None,
            })
            .collect()
    };
    let alarms = |e: &Exchange| -> Option<Vec<AlarmKind>> {
        bodies(e).into_iter().find_map(|b| match b {
            Body::Alarm(a) => Some(a.alarms.clone()),
            _ => None,
        })
    };
    let lock = "0002604323".to_string();
    let e = feed(&mut s, &report(&mut t, 0, 0, true));
    assert_eq!(seals(&e), [(lock.clone(), SealState::Sealed)]);
    let Body::Seal(r) = bodies(&e)[3] else {
        panic!()
    };
    assert_eq!(r.battery_pct, Some(90.0));
    // Rope cut (bit 0): the lock is tampered, and the alarm says why.
    let e = feed(&mut s, &report(&mut t, 0, 0x01, true));
    assert_eq!(seals(&e), [(lock.clone(), SealState::Tampered)]);
    assert_eq!(alarms(&e), Some(vec![AlarmKind::RopeCut]));
    // Cover open instead (bit 3): same seal state, another alarm.
    let e = feed(&mut s, &report(&mut t, 0, 0x08, true));
    assert_eq!(seals(&e), []);
    assert_eq!(alarms(&e), Some(vec![AlarmKind::CoverOpened]));
    // Unlocked, nothing cut: opened, all clear.
    let e = feed(&mut s, &report(&mut t, 1 << 5, 0, true));
    assert_eq!(seals(&e), [(lock, SealState::Opened)]);
    assert_eq!(alarms(&e), Some(vec![]));
    // A device item without locks: the terminal is the seal, status bit 12 its state.
    let e = feed(&mut s, &report(&mut t, 0, 0, false));
    assert_eq!(seals(&e), [("013511221122".to_string(), SealState::Opened)]);
}

#[test]
fn a_regular_batch_updates_the_live_state_and_a_blind_area_one_does_not() {
    let (mut s, mut t) = login(&config(false, &[]), "13511221122", Version::V2013);
    feed(&mut s, &t.location(now()));
    let item = |alarm: u32| {
        message::LocationFields {
            alarm,
            status: message::status::FIXED,
            lat: 31.0,
            lon: 121.0,
            altitude_m: 0,
            speed_kmh: 10.0,
            course: 90,
            time: now(),
            items: vec![],
        }
        .encode()
    };
    let batch = |kind: u8, alarms: &[u32]| {
        let mut b = (alarms.len() as u16).to_be_bytes().to_vec();
        b.push(kind);
        for &a in alarms {
            let i = item(a);
            b.extend_from_slice(&(i.len() as u16).to_be_bytes());
            b.extend_from_slice(&i);
        }
        b
    };
    let count_alarms = |e: &Exchange| {
        bodies(e)
            .iter()
            .filter(|b| matches!(b, Body::Alarm(_)))
            .count()
    };
    // History with an SOS in the middle: emitted against the batch's own state (3 changes),
    // and the live state (all clear) is untouched.
    let hist = feed(&mut s, &t.frame(MSG_BATCH, &batch(1, &[0, 1, 0])));
    assert_eq!(count_alarms(&hist), 3);
    assert_eq!(count_alarms(&feed(&mut s, &t.location(now()))), 0);
    // A regular batch moves the live state.
    let live = feed(&mut s, &t.frame(MSG_BATCH, &batch(0, &[0, 1, 1])));
    assert_eq!(count_alarms(&live), 1);
    assert_eq!(
        count_alarms(&feed(&mut s, &t.location(now()))),
        1,
        "back to clear"
    );
    // A malformed batch is answered "bad message".
    let bad = feed(&mut s, &t.frame(MSG_BATCH, &[0, 5, 0]));
    assert_eq!(bad.rejected.as_ref().map(|r| r.reason), Some("bad_body"));
    assert_eq!(general_result(&bad), Some(GeneralResult::BadMessage));
}

#[test]
fn a_sub_packaged_pass_through_is_reassembled() {
    let (mut s, t) = login(&config(false, &[]), "13511221122", Version::V2013);
    let data: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
    let mut body = vec![0xF1];
    body.extend_from_slice(&data);
    let parts: Vec<&[u8]> = body.chunks(1000).collect();
    let header = |index: u16| Header {
        msg_id: 0x0900,
        version: Version::V2013,
        phone: t.phone(),
        serial: 40 + index,
        package: Some(Package { total: 2, index }),
    };
    let second = feed(&mut s, &write_frame(&header(2), parts[1]));
    assert!(second.events.is_empty());
    assert_eq!(general_result(&second), Some(GeneralResult::Ok));
    let first = feed(&mut s, &write_frame(&header(1), parts[0]));
    let Body::Raw { payload } = bodies(&first)[0] else {
        panic!()
    };
    assert_eq!(payload["msg_id"], "0x0900");
    assert_eq!(payload["type"], 0xF1);
    assert_eq!(payload["data"], hex(&data));
    // Parts of a message never completed are dropped after the age limit, and counted.
    feed(&mut s, &write_frame(&header(1), parts[0]));
    assert!(s.buffered_bytes() > 1000);
    let later = s.feed(&[], now() + TimeDelta::seconds(61));
    assert_eq!(later.dropped.len(), 1);
    assert_eq!(later.dropped[0].reason, "subpackage_expired");
    assert_eq!(s.buffered_bytes(), 0);
}

#[test]
fn unknown_messages_are_kept_raw_and_terminal_replies_are_not_answered() {
    let (mut s, mut t) = login(&config(false, &[]), "13511221122", Version::V2013);
    let e = feed(&mut s, &t.frame(0x0F01, &[1, 2, 3]));
    let Body::Raw { payload } = bodies(&e)[0] else {
        panic!()
    };
    assert_eq!(
        (payload["msg_id"].as_str(), payload["body"].as_str()),
        (Some("0x0f01"), Some("010203"))
    );
    assert_eq!(general_result(&e), Some(GeneralResult::Ok));
    let r = feed(&mut s, &t.frame(0x0001, &[0, 1, 0x81, 0x03, 0]));
    assert_eq!(bodies(&r).len(), 1);
    assert_eq!(r.reply, None);
    let out = feed(&mut s, &t.frame(0x0003, &[]));
    assert!(matches!(bodies(&out)[0], Body::DeviceStatus(st) if st.online == Some(false)));
    assert_eq!(s.terminal(), None, "logged out");
}

#[test]
fn the_simulated_terminal_drives_and_decodes() {
    let code = AuthCode::derive(
        SECRET,
        &Phone::from_digits("13800000001", Version::V2013).expect("phone"),
    );
    let frames =
        simulate_terminal_frames("13800000001", code.as_str(), now(), 20, 30, 9).expect("frames");
    assert_eq!(frames.len(), 22);
    let mut s = Session::new(config(false, &[]));
    let mut positions = Vec::new();
    for f in &frames {
        let e = feed(&mut s, f);
        assert_eq!(e.rejected, None);
        for b in bodies(&e) {
            if let Body::Position(p) = b {
                positions.push((p.lat, p.lon));
            }
        }
    }
    assert_eq!(positions.len(), 20);
    assert!(
        positions.windows(2).any(|w| w[0] != w[1]),
        "the truck moves"
    );
    assert!(positions
        .iter()
        .all(|(lat, lon)| (lat - 31.35).abs() < 0.2 && (lon - 121.59).abs() < 0.2));
    assert_eq!(
        simulate_terminal_frames("x", "", now(), 1, 1, 0),
        None,
        "phone digits only"
    );
}

/// The most a session may hold, whatever it is fed.
fn bound(cfg: &SessionConfig) -> usize {
    cfg.max_frame_bytes + cfg.reassembly.max_bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_memory_stays_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..8192),
        chunk in 1usize..700,
    ) {
        let cfg = config(true, &[]);
        let (mut s, _) = login(&cfg, "13511221122", Version::V2013);
        for c in bytes.chunks(chunk) {
            let fed = s.feed(c, now());
            prop_assert!(fed.exchanges.len() <= c.len());
            prop_assert!(s.buffered_bytes() <= bound(&cfg));
        }
    }

    /// Well-formed frames with arbitrary bodies reach every body parser.
    #[test]
    fn arbitrary_bodies_in_valid_frames_never_panic(
        frames in proptest::collection::vec(
            (
                prop_oneof![
                    Just(0x0100u16), Just(0x0102), Just(0x0002), Just(0x0003), Just(0x0200),
                    Just(0x0704), Just(0x0900), Just(0x0001), any::<u16>()
                ],
                proptest::collection::vec(any::<u8>(), 0..400),
                proptest::option::of((1u16..5, 1u16..5)),
            ),
            1..40,
        ),
        v2019 in any::<bool>(),
    ) {
        let version = if v2019 { Version::V2019(1) } else { Version::V2013 };
        let cfg = config(true, &[]);
        let (mut s, t) = login(&cfg, "13511221122", version);
        for (i, (msg_id, body, package)) in frames.into_iter().enumerate() {
            let header = Header {
                msg_id,
                version,
                phone: t.phone(),
                serial: i as u16,
                package: package.map(|(total, index)| Package { total, index }),
            };
            let fed = s.feed(&write_frame(&header, &body), now());
            prop_assert_eq!(fed.exchanges.len(), 1);
            prop_assert!(s.buffered_bytes() <= bound(&cfg));
            if let Some(reply) = &fed.exchanges[0].reply {
                let wire = s.encode(reply);
                prop_assert!(Frame::decode(&wire[1..wire.len() - 1]).is_ok());
            }
        }
    }
}
