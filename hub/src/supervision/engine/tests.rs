//! The engine driven through whole transits, with time injected: no clock, no sleeps.

use super::*;
use crate::access::Role;
use crate::supervision::alarm::CloseReason;
use crate::supervision::geo::Corridor;
use qyt_proto::{Seq, StatusReport};

fn t0() -> DateTime<Utc> {
    "2026-03-02T08:00:00Z".parse().unwrap()
}

fn site(s: &str) -> SiteId {
    SiteId::new(s).unwrap()
}

fn operator() -> Caller {
    Caller {
        name: "op-li".into(),
        role: Role::Operator,
    }
}

/// Along 31°N from 121.0°E to 121.5°E (~48 km), 1 km wide.
fn corridor() -> Corridor {
    Corridor {
        points: vec![
            Point {
                lat: 31.0,
                lon: 121.0,
            },
            Point {
                lat: 31.0,
                lon: 121.5,
            },
        ],
        width_m: 1000.0,
    }
}

fn declaration() -> Declaration {
    Declaration {
        id: TransitId::new("T-1").unwrap(),
        enterprise: crate::access::EnterpriseId::new("acme").unwrap(),
        plate: "沪A12345".into(),
        elock_id: Some("lock-1".into()),
        seal_ids: vec![SealId("S1".into()), SealId("S2".into())],
        origin: site("origin"),
        destination: site("dest"),
        corridor: Some(corridor()),
        deadline: None,
        max_duration_s: Some(4 * 3600),
        allowed_stops: vec![],
    }
}

struct Rig {
    e: Engine,
    seqs: BTreeMap<SiteId, u64>,
    now: DateTime<Utc>,
    all: Changes,
}

impl Rig {
    fn new() -> Rig {
        let sites = ["origin", "dest", "other", "relay"]
            .into_iter()
            .map(|s| (site(s), None))
            .collect();
        let mut r = Rig {
            e: Engine::new(
                SupervisionConfig::default(),
                sites,
                vec![],
                vec![],
                1,
                vec![],
            ),
            seqs: BTreeMap::new(),
            now: t0(),
            all: Changes::default(),
        };
        let c =
            r.e.declare(declaration(), false, &operator(), t0())
                .unwrap();
        r.all.merge(c);
        r
    }

    /// Sets the hub's clock to `t0 + s` seconds.
    fn clock(&mut self, s: i64) {
        self.now = t0() + Duration::seconds(s);
    }

    /// An event from `from`, observed at `t0 + s`, applied now.
    fn event(&mut self, from: &str, s: i64, body: Body) -> Changes {
        let seq = self.seqs.entry(site(from)).or_default();
        *seq += 1;
        let ev = Event {
            site: site(from),
            seq: Seq(*seq),
            observed_at: t0() + Duration::seconds(s),
            received_at: t0() + Duration::seconds(s),
            source: "test".into(),
            body,
        };
        let c = self.e.apply(&ev, self.now);
        self.all.merge(c.clone());
        c
    }

    /// Applies an event observed just now.
    fn live(&mut self, from: &str, s: i64, body: Body) -> Changes {
        self.clock(s);
        self.event(from, s, body)
    }

    fn tick(&mut self, s: i64, presence: &BTreeMap<SiteId, SitePresence>) -> Changes {
        self.clock(s);
        let c = self.e.tick(self.now, presence);
        self.all.merge(c.clone());
        c
    }

    fn transit(&self) -> &Transit {
        &self.e.transits[&TransitId::new("T-1").unwrap()]
    }

    fn alarms(&self, rule: Rule) -> Vec<&Alarm> {
        self.all
            .alarms
            .values()
            .filter(|a| a.rule == rule)
            .collect()
    }

    fn status_changes(&self) -> Vec<(Status, EventRefText)> {
        self.all
            .timeline
            .iter()
            .filter(|(_, e)| e.kind == EntryKind::Status)
            .map(|(_, e)| {
                (
                    e.to.unwrap(),
                    match &e.cause {
                        Cause::Event { site, seq } => format!("{site}#{seq}"),
                        Cause::Operator { name } => name.clone(),
                        Cause::Timer => "timer".into(),
                    },
                )
            })
            .collect()
    }
}

type EventRefText = String;

fn seal(id: &str, state: SealState) -> Body {
    Body::Seal(SealReading {
        seal_id: SealId(id.into()),
        state,
        battery_pct: None,
        device_id: None,
    })
}

fn gate(direction: Direction, plate: &str) -> Body {
    Body::Gate(GatePassage {
        lane: "2".into(),
        direction,
        plate: Some(plate.into()),
        confidence: Some(0.97),
        image_ref: None,
    })
}

fn pos(lat: f64, lon: f64, speed: f64) -> Body {
    Body::Position(PositionReading {
        device_id: "lock-1".into(),
        lat,
        lon,
        speed_kmh: Some(speed),
        course: None,
        fix: Fix::Fix3d,
        altitude_m: None,
        satellites: Some(9),
        hdop: None,
    })
}

fn weight(kg: f64) -> Body {
    Body::Weight(WeightReading {
        kg,
        stable: true,
        tare_kg: None,
        device_id: Some("bridge".into()),
    })
}

fn online() -> BTreeMap<SiteId, SitePresence> {
    ["origin", "dest", "other", "relay"]
        .into_iter()
        .map(|s| {
            (
                site(s),
                SitePresence {
                    online: true,
                    last_seen: Some(t0()),
                    status_at: Some(t0()),
                    oldest_unacked_age_s: None,
                },
            )
        })
        .collect()
}

/// Seals read intact at the origin, weighed, out of the gate, on the road.
fn depart(r: &mut Rig) {
    r.live("origin", 10, seal("S1", SealState::Sealed));
    r.live("origin", 11, seal("S2", SealState::Sealed));
    r.live("origin", 50, weight(20_000.0));
    r.live("origin", 60, gate(Direction::Out, "沪A 12345"));
    r.live("relay", 120, pos(31.0, 121.01, 60.0));
}

#[test]
fn clean_transit_goes_through_every_status_each_caused_by_its_event() {
    let mut r = Rig::new();
    depart(&mut r);
    for (i, s) in (300..=3000).step_by(300).enumerate() {
        r.live("relay", s, pos(31.0, 121.05 + 0.04 * i as f64, 60.0));
    }
    r.live("dest", 3600, gate(Direction::In, "沪A12345"));
    r.live("dest", 3620, weight(20_100.0));
    r.live("dest", 3650, seal("S1", SealState::Sealed));
    assert_eq!(r.transit().status, Status::Arrived);
    r.live("dest", 3651, seal("S2", SealState::Sealed));
    assert_eq!(r.transit().status, Status::Verified);
    assert_eq!(
        r.status_changes(),
        [
            (Status::Declared, "op-li".to_string()),
            (Status::Sealed, "origin#2".into()),
            (Status::Departed, "origin#4".into()),
            (Status::InTransit, "relay#1".into()),
            (Status::Arrived, "dest#1".into()),
            (Status::Verified, "dest#4".into()),
        ]
    );
    let rec = r.transit().reconciliation(2.0).unwrap();
    assert!(rec.plate.matches);
    assert!(rec.seals.iter().all(|s| s.matches), "{rec:?}");
    let w = rec.weight.unwrap();
    assert!(w.within_tolerance && (w.difference_kg - 100.0).abs() < 1e-9);
    assert_eq!(rec.elapsed.elapsed_s, Some(3540));
    assert!(rec.elapsed.within_limit);
    assert!(r.all.alarms.is_empty(), "{:?}", r.all.alarms);
    // No timer fires on a clean transit.
    assert!(r.tick(3700, &online()).alarms.is_empty());

    r.clock(4000);
    let c =
        r.e.release(&TransitId::new("T-1").unwrap(), None, &operator(), r.now)
            .unwrap();
    let released = &c.transits[&TransitId::new("T-1").unwrap()];
    assert_eq!(released.status, Status::Released);
    assert_eq!(c.audit[0].action, "transit.release");
    assert_eq!(c.audit[0].from_state.as_deref(), Some("verified"));
    // Released: no longer held, its plate free for the next declaration.
    assert!(!r.e.transits.contains_key(&TransitId::new("T-1").unwrap()));
    let mut next = declaration();
    next.id = TransitId::new("T-2").unwrap();
    assert!(r.e.declare(next, false, &operator(), r.now).is_ok());
    let again = r.e.declare(declaration(), true, &operator(), r.now);
    assert!(matches!(again, Err(EngineError::Conflict(_))), "{again:?}");
}

#[test]
fn seal_opened_in_transit_alarms_once_and_a_reseal_is_verified_at_arrival() {
    let mut r = Rig::new();
    depart(&mut r);
    r.live("relay", 900, seal("S2", SealState::Opened));
    // The reader keeps reporting it: the same act, not new occurrences.
    r.live("relay", 905, seal("S2", SealState::Opened));
    let alarms: Vec<Alarm> = r.alarms(Rule::SealOpened).into_iter().cloned().collect();
    assert_eq!(alarms.len(), 1);
    let a = alarms[0].clone();
    assert_eq!(
        (a.occurrences, a.state, a.severity),
        (
            1,
            AlarmState::Open,
            crate::supervision::rules::Severity::Critical
        )
    );
    assert_eq!(
        a.cause,
        Some(EventRef {
            site: site("relay"),
            seq: 2
        })
    );
    // The e-lock says so too: another occurrence of the same open alarm.
    r.live(
        "relay",
        906,
        Body::Alarm(AlarmReport {
            device_id: "lock-1".into(),
            alarms: vec![AlarmKind::LockOpened],
            raw: None,
            lat: None,
            lon: None,
        }),
    );
    let a = r.alarms(Rule::SealOpened)[0].clone();
    assert_eq!((a.id, a.occurrences), (alarms[0].id, 2));
    assert_eq!(
        r.transit().status,
        Status::InTransit,
        "an incident does not lose the transit"
    );

    // Customs reseals with a new seal.
    let id = TransitId::new("T-1").unwrap();
    r.clock(1000);
    let c =
        r.e.reseal(
            &id,
            vec![SealId("S1".into()), SealId("S9".into())],
            Some("inspected".into()),
            &operator(),
            r.now,
        )
        .unwrap();
    assert_eq!(c.audit[0].action, "transit.reseal");
    r.live("dest", 3600, gate(Direction::In, "沪A12345"));
    r.live("dest", 3610, seal("S1", SealState::Sealed));
    r.live("dest", 3611, seal("S9", SealState::Sealed));
    assert_eq!(r.transit().status, Status::Verified);
    assert!(r.alarms(Rule::SealMismatch).is_empty());
    // Release waits for the alarm to be closed.
    let refused = r.e.release(&id, None, &operator(), r.now);
    assert!(
        matches!(&refused, Err(EngineError::Conflict(m)) if m.contains("not closed")),
        "{refused:?}"
    );
    r.e.acknowledge(a.id, None, &operator(), r.now).unwrap();
    r.e.close(
        a.id,
        CloseReason::AuthorisedOpening,
        Some("inspection".into()),
        &operator(),
        r.now,
    )
    .unwrap();
    assert!(r.e.release(&id, None, &operator(), r.now).is_ok());
}

#[test]
fn seal_mismatch_at_arrival_keeps_the_transit_open_until_resolved() {
    let mut r = Rig::new();
    depart(&mut r);
    r.live("dest", 3600, gate(Direction::In, "沪A12345"));
    r.live("dest", 3610, seal("S1", SealState::Sealed));
    // A seal nobody declared, read at the destination's lane with this truck.
    r.live("dest", 3611, seal("X7", SealState::Sealed));
    r.live("dest", 3612, seal("S2", SealState::Tampered));
    assert_eq!(r.transit().status, Status::Arrived);
    let alarms = r.alarms(Rule::SealMismatch);
    assert_eq!(alarms.len(), 1, "one alarm per transit while open");
    assert_eq!(alarms[0].occurrences, 2);
    let rec = r.transit().reconciliation(2.0).unwrap();
    let lines: Vec<_> = rec
        .seals
        .iter()
        .map(|s| (s.seal_id.as_str(), s.on_transit, s.matches))
        .collect();
    assert_eq!(
        lines,
        [
            ("S1", true, true),
            ("S2", true, false),
            ("X7", false, false)
        ]
    );
    let id = TransitId::new("T-1").unwrap();
    let aid = alarms[0].id;
    assert!(r
        .e
        .release(&id, Some("examined".into()), &operator(), r.now)
        .is_err());
    r.e.close(
        aid,
        CloseReason::ConfirmedViolation,
        Some("goods examined".into()),
        &operator(),
        r.now,
    )
    .unwrap();
    assert!(
        r.e.release(&id, None, &operator(), r.now).is_err(),
        "arrived needs a comment"
    );
    let c =
        r.e.release(
            &id,
            Some("examined, duty assessed".into()),
            &operator(),
            r.now,
        )
        .unwrap();
    assert_eq!(c.transits[&id].status, Status::Released);
}

#[test]
fn deviation_with_hysteresis_is_one_alarm_not_many() {
    let mut r = Rig::new();
    depart(&mut r);
    // Out (1.1 km off the line), then along the edge: 470 m is inside the width but within the
    // hysteresis band, so it is not "back".
    let path = [
        (600, 31.01),
        (700, 31.0042),
        (800, 31.0047),
        (900, 31.0042),
        (1000, 31.0046),
    ];
    for (s, lat) in path {
        r.live("relay", s, pos(lat, 121.1, 50.0));
    }
    let alarms = r.alarms(Rule::RouteDeviation);
    assert_eq!(alarms.len(), 1, "{:?}", r.all.timeline);
    assert!(alarms[0].active);
    assert_eq!(alarms[0].observed_at, t0() + Duration::seconds(600));
    // Back well inside: the alarm stays open for the operator, no longer active.
    r.live("relay", 1100, pos(31.001, 121.12, 50.0));
    let a = r.alarms(Rule::RouteDeviation)[0].clone();
    assert!(!a.active);
    // Out again while it is open: the same alarm, a second occurrence.
    r.live("relay", 1200, pos(31.02, 121.13, 50.0));
    r.live("relay", 1600, pos(31.02, 121.14, 50.0));
    let all = r.alarms(Rule::RouteDeviation);
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].id, all[0].occurrences, all[0].active),
        (a.id, 2, true)
    );
}

#[test]
fn late_data_does_not_raise_alarms_for_conditions_already_over() {
    let mut r = Rig::new();
    depart(&mut r);
    // The relay was cut off; two hours later its backlog arrives: 40 minutes outside the
    // corridor, then back. Observed long ago, applied now.
    r.clock(3 * 3600);
    for s in (600..=3000).step_by(300) {
        r.event("relay", s, pos(31.02, 121.1, 40.0));
    }
    r.event("relay", 3300, pos(31.0, 121.2, 60.0));
    // Low battery reported late, and recovered since.
    r.event(
        "relay",
        3301,
        Body::DeviceStatus(StatusReport {
            device_id: "lock-1".into(),
            online: Some(true),
            battery_pct: Some(5.0),
            gnss_fix: Some(true),
            detail: serde_json::Value::Null,
        }),
    );
    assert!(r.all.alarms.is_empty(), "{:?}", r.all.alarms);
    let notes: Vec<_> = r
        .all
        .timeline
        .iter()
        .filter(|(_, e)| e.text.contains("reported late and already over"))
        .collect();
    assert_eq!(notes.len(), 1, "the episode is evidence in the timeline");
    // A seal opening is an act: late or not, it is raised.
    r.event("relay", 3400, seal("S1", SealState::Opened));
    assert_eq!(r.alarms(Rule::SealOpened).len(), 1);
    // A position older than the newest (a coverage-gap upload) changes nothing.
    let before = r.transit().last_position.clone();
    r.event("relay", 1000, pos(35.0, 125.0, 0.0));
    assert_eq!(r.transit().last_position, before);
}

#[test]
fn late_condition_that_still_holds_is_raised_on_fresh_data() {
    let mut r = Rig::new();
    depart(&mut r);
    r.clock(3 * 3600);
    for s in (600..=3000).step_by(300) {
        r.event("relay", s, pos(31.02, 121.1, 40.0));
    }
    assert!(r.alarms(Rule::RouteDeviation).is_empty());
    r.live("relay", 3 * 3600 + 10, pos(31.02, 121.1, 40.0));
    assert_eq!(r.alarms(Rule::RouteDeviation).len(), 1);
}

#[test]
fn overdue_waits_for_the_destination_and_is_withdrawn_by_a_late_arrival_in_time() {
    let mut r = Rig::new();
    depart(&mut r);
    let limit = 60 + 4 * 3600;
    let mut presence = online();
    presence.get_mut(&site("dest")).unwrap().online = false;
    assert!(r.tick(limit + 60, &presence).alarms.is_empty() || r.alarms(Rule::Overdue).is_empty());
    assert!(
        r.alarms(Rule::Overdue).is_empty(),
        "destination offline: it may have arrived"
    );
    let c = r.tick(limit + 120, &online());
    let overdue: Vec<_> = c
        .alarms
        .values()
        .filter(|a| a.rule == Rule::Overdue)
        .collect();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].observed_at, t0() + Duration::seconds(limit));
    // Ticking again raises nothing new.
    assert!(r.tick(limit + 180, &online()).alarms.is_empty());
    // The destination's backlog shows the arrival was in time: withdrawn by the hub.
    r.clock(limit + 240);
    r.event("dest", limit - 600, gate(Direction::In, "沪A12345"));
    let a = r.alarms(Rule::Overdue)[0].clone();
    assert_eq!(a.state, AlarmState::Closed);
    assert_eq!(a.close_reason, Some(CloseReason::Disproved));
    assert_eq!(a.closed.as_ref().unwrap().by, "hub");
}

#[test]
fn overdue_arrival_late_keeps_the_alarm_inactive_for_the_operator() {
    let mut r = Rig::new();
    depart(&mut r);
    let limit = 60 + 4 * 3600;
    r.tick(limit + 60, &online());
    r.live("dest", limit + 900, gate(Direction::In, "沪A12345"));
    let a = r.alarms(Rule::Overdue)[0].clone();
    assert_eq!((a.state, a.active), (AlarmState::Open, false));
    assert!(
        !r.transit()
            .reconciliation(2.0)
            .unwrap()
            .elapsed
            .within_limit
    );
}

#[test]
fn gps_lost_while_its_relay_is_caught_up_and_cleared_by_a_fix() {
    let mut r = Rig::new();
    depart(&mut r);
    let mut presence = online();
    presence
        .get_mut(&site("relay"))
        .unwrap()
        .oldest_unacked_age_s = Some(1800.0);
    r.tick(120 + 700, &presence);
    assert!(
        r.alarms(Rule::GpsLost).is_empty(),
        "the relay has a backlog: positions may be in it"
    );
    r.tick(120 + 720, &online());
    assert_eq!(r.alarms(Rule::GpsLost).len(), 1);
    r.live("relay", 900, pos(31.0, 121.2, 50.0));
    assert!(!r.alarms(Rule::GpsLost)[0].active);
}

#[test]
fn wrong_site_weight_discrepancy_and_low_battery() {
    let mut r = Rig::new();
    depart(&mut r);
    r.live("other", 1800, gate(Direction::In, "沪A12345"));
    let wrong = r.alarms(Rule::WrongSite);
    assert_eq!(wrong.len(), 1);
    assert!(wrong[0].message.contains("other"), "{}", wrong[0].message);
    assert_eq!(r.transit().status, Status::InTransit);
    r.live(
        "relay",
        1900,
        Body::DeviceStatus(StatusReport {
            device_id: "lock-1".into(),
            online: Some(true),
            battery_pct: Some(12.0),
            gnss_fix: Some(true),
            detail: serde_json::Value::Null,
        }),
    );
    assert_eq!(r.alarms(Rule::LowBattery).len(), 1);
    // The weighing comes after the gate passage it belongs to.
    r.live("dest", 3600, gate(Direction::In, "沪A12345"));
    r.live("dest", 3700, weight(18_000.0));
    let w = r.alarms(Rule::WeightDiscrepancy);
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("-10.0 %"), "{}", w[0].message);
}

#[test]
fn long_stop_outside_allowed_places() {
    let mut r = Rig::new();
    depart(&mut r);
    for s in (600..=2400).step_by(300) {
        r.live("relay", s, pos(31.0, 121.2, 0.0));
    }
    assert_eq!(r.alarms(Rule::LongStop).len(), 1);
    // The same stop inside an allowed area raises nothing.
    let mut r = Rig::new();
    let id = TransitId::new("T-1").unwrap();
    r.e.transits.get_mut(&id).unwrap().declaration.allowed_stops = vec![Area {
        lat: 31.0,
        lon: 121.2,
        radius_m: 200.0,
    }];
    depart(&mut r);
    for s in (600..=2400).step_by(300) {
        r.live("relay", s, pos(31.0, 121.2, 0.0));
    }
    assert!(r.alarms(Rule::LongStop).is_empty());
}

#[test]
fn sites_offline_and_backlogs_too_old_are_site_alarms_not_duplicated() {
    let mut r = Rig::new();
    let mut presence = online();
    presence.insert(
        site("other"),
        SitePresence {
            online: false,
            last_seen: Some(t0()),
            ..SitePresence::default()
        },
    );
    presence
        .get_mut(&site("relay"))
        .unwrap()
        .oldest_unacked_age_s = Some(600.0);
    r.tick(0, &presence);
    r.tick(200, &presence);
    assert!(r.alarms(Rule::SiteOffline).is_empty());
    r.tick(301, &presence);
    r.tick(400, &presence);
    let off = r.alarms(Rule::SiteOffline);
    assert_eq!(off.len(), 1);
    assert_eq!(off[0].site, Some(site("other")));
    assert_eq!(off[0].occurrences, 1);
    // 600 s reported at t0, 400 s later: 1000 s > 900 s.
    let old = r.alarms(Rule::BacklogTooOld);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].site, Some(site("relay")));
    // Back online: inactive; offline again while open: the same alarm.
    r.tick(500, &online());
    assert!(!r.alarms(Rule::SiteOffline)[0].active);
    presence.get_mut(&site("other")).unwrap().last_seen = Some(t0() + Duration::seconds(500));
    r.tick(900, &presence);
    let off = r.alarms(Rule::SiteOffline);
    assert_eq!((off.len(), off[0].occurrences, off[0].active), (1, 2, true));
}

#[test]
fn alarm_actions_are_audited_and_noted_on_the_transit() {
    let mut r = Rig::new();
    depart(&mut r);
    r.live("relay", 900, seal("S2", SealState::Opened));
    let id = r.alarms(Rule::SealOpened)[0].id;
    let op = operator();
    let c =
        r.e.acknowledge(id, Some("looking".into()), &op, r.now)
            .unwrap();
    assert_eq!(c.audit[0].from_state.as_deref(), Some("open"));
    assert_eq!(c.audit[0].to_state.as_deref(), Some("acknowledged"));
    let c = r.e.dispatch(id, "patrol 7", None, &op, r.now).unwrap();
    assert_eq!(c.audit[0].detail["unit"], "patrol 7");
    assert!(c.timeline[0].1.text.contains("patrol 7"));
    assert!(matches!(
        r.e.close(id, CloseReason::Disproved, Some("x".into()), &op, r.now),
        Err(EngineError::Lifecycle(LifecycleError::ReservedReason))
    ));
    let c =
        r.e.close(
            id,
            CloseReason::ConfirmedViolation,
            Some("seal cut".into()),
            &op,
            r.now,
        )
        .unwrap();
    assert_eq!(c.alarms[&id].state, AlarmState::Closed);
    assert!(matches!(
        r.e.acknowledge(id, None, &op, r.now),
        Err(EngineError::UnknownAlarm(_))
    ));
    // The same act after closing is a new alarm.
    r.live("relay", 1900, seal("S1", SealState::Opened));
    let all = r.alarms(Rule::SealOpened);
    assert_eq!(all.len(), 2);
}

#[test]
fn declarations_are_checked() {
    let mut r = Rig::new();
    let mut d = declaration();
    d.id = TransitId::new("T-9").unwrap();
    let err =
        r.e.declare(d.clone(), false, &operator(), t0())
            .unwrap_err();
    assert!(err.to_string().contains("plate"), "{err}");
    d.plate = "沪B99999".into();
    d.elock_id = Some("lock-9".into());
    d.seal_ids = vec![];
    d.destination = site("nowhere");
    d.max_duration_s = None;
    let EngineError::Invalid(problems) = r.e.declare(d, false, &operator(), t0()).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn a_departure_reported_after_the_arrival_takes_its_place_in_the_timeline() {
    let mut r = Rig::new();
    r.live("origin", 10, seal("S1", SealState::Sealed));
    r.live("origin", 11, seal("S2", SealState::Sealed));
    // The origin's gate camera data is delayed; the destination's arrives first.
    r.live("dest", 3600, gate(Direction::In, "沪A12345"));
    assert_eq!(r.transit().status, Status::Arrived);
    r.clock(3700);
    r.event("origin", 60, gate(Direction::Out, "沪A12345"));
    let t = r.transit();
    assert_eq!(t.status, Status::Arrived, "the status does not move back");
    assert_eq!(
        t.departed.as_ref().map(|d| d.at),
        Some(t0() + Duration::seconds(60))
    );
    let rec = t.reconciliation(2.0).unwrap();
    assert_eq!(rec.elapsed.elapsed_s, Some(3540));
    assert!(rec.plate.matches);
}
