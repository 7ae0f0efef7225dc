//! Supervision scenarios through the real ingest path: fake agents publish batches of the
//! events a checkpoint forwards (seal readings, gate passages, weighings, e-lock positions) to a
//! real hub over MQTT; the test drives the hub's clock and reads the outcome over the HTTP API.
//!
//! Sites: gate-a is the origin, gate-b the destination, gate-c relays the e-lock's positions
//! (and is the wrong site in one scenario).

use crate::harness::*;
use chrono::{DateTime, Duration, Utc};
use qyt_hub::clock::ManualClock;
use qyt_proto::{
    encode, Batch, Body, Direction, Event, Fix, GatePassage, PositionReading, Presence, SealId,
    SealReading, SealState, Seq, SiteId, WeightReading, PROTOCOL_VERSION,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn t0() -> DateTime<Utc> {
    "2026-03-02T08:00:00Z".parse().unwrap()
}

fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

pub fn seal(id: &str, state: SealState) -> Body {
    Body::Seal(SealReading {
        seal_id: SealId(id.into()),
        state,
        battery_pct: Some(90.0),
        device_id: None,
    })
}

pub fn gate(direction: Direction, plate: &str) -> Body {
    Body::Gate(GatePassage {
        lane: "2".into(),
        direction,
        plate: Some(plate.into()),
        confidence: Some(0.96),
        image_ref: Some("cam-2/0001.jpg".into()),
    })
}

pub fn weight(kg: f64) -> Body {
    Body::Weight(WeightReading {
        kg,
        stable: true,
        tare_kg: None,
        device_id: Some("bridge-1".into()),
    })
}

pub fn pos(lat: f64, lon: f64, speed: f64) -> Body {
    Body::Position(PositionReading {
        device_id: "lock-7".into(),
        lat,
        lon,
        speed_kmh: Some(speed),
        course: Some(90.0),
        fix: Fix::Fix3d,
        altitude_m: None,
        satellites: Some(10),
        hdop: Some(0.9),
    })
}

/// A declaration along 31°N from 121.0°E to 121.5°E, 1 km wide, 4 hours from departure.
pub fn declaration(id: &str) -> Value {
    json!({
        "id": id,
        "enterprise": "acme",
        "plate": "沪A12345",
        "elock_id": "lock-7",
        "seal_ids": ["CN-S1", "CN-S2"],
        "origin": "gate-a",
        "destination": "gate-b",
        "corridor": {
            "points": [{"lat": 31.0, "lon": 121.0}, {"lat": 31.0, "lon": 121.5}],
            "width_m": 1000.0
        },
        "max_duration_s": 14400
    })
}

pub struct Scenario {
    pub hub: TestHub,
    pub clock: Arc<ManualClock>,
    agents: BTreeMap<String, Agent>,
    seqs: BTreeMap<String, u64>,
    /// Every batch sent, for replaying.
    pub sent: Vec<(String, Vec<u8>)>,
}

impl Scenario {
    pub async fn start(dir: &std::path::Path) -> Scenario {
        Scenario::start_with(config(dir)).await
    }

    pub async fn start_with(config: qyt_hub::Config) -> Scenario {
        let clock = Arc::new(ManualClock::new(t0()));
        let hub = TestHub::start_with_clock(config, clock.clone()).await;
        let mut s = Scenario {
            hub,
            clock,
            agents: BTreeMap::new(),
            seqs: BTreeMap::new(),
            sent: vec![],
        };
        for site in SITES {
            s.connect(site).await;
        }
        s
    }

    pub async fn connect(&mut self, site: &str) {
        let agent = Agent::connect(self.hub.broker, site).await;
        agent.online(0).await;
        self.agents.insert(site.into(), agent);
    }

    pub async fn declare(&self, body: Value) -> Value {
        let (status, answer) = self
            .hub
            .call("POST", "/api/transits", TOKEN, Some(body))
            .await;
        assert_eq!(status, 201, "{answer}");
        answer
    }

    /// Sets the hub's clock to `t0 + s`.
    pub fn clock(&self, s: i64) {
        self.clock.set(at(s));
    }

    /// Builds a batch of `site`'s next events, observed at `t0 + offset`.
    pub fn batch(&mut self, site: &str, events: Vec<(i64, Body)>) -> Vec<u8> {
        let seq = self.seqs.entry(site.into()).or_default();
        let events = events
            .into_iter()
            .map(|(s, body)| {
                *seq += 1;
                Event {
                    site: SiteId::new(site).unwrap(),
                    seq: Seq(*seq),
                    observed_at: at(s),
                    received_at: at(s),
                    source: "checkpoint".into(),
                    body,
                }
            })
            .collect();
        encode(&Batch {
            v: PROTOCOL_VERSION,
            site: SiteId::new(site).unwrap(),
            events,
        })
    }

    /// Publishes a batch as `site`'s agent, waits for the ack, then for supervision to apply it.
    pub async fn publish(&mut self, site: &str, payload: Vec<u8>) {
        let last = self.seqs[site];
        self.sent.push((site.into(), payload.clone()));
        let agent = self.agents.get_mut(site).unwrap();
        agent.send(payload).await;
        agent.ack_where(|a| a.contiguous.0 >= last).await;
        self.hub.supervision.settle().await;
    }

    /// Sends events observed now: the clock is set to the last event's time first.
    pub async fn live(&mut self, site: &str, events: Vec<(i64, Body)>) {
        self.clock(events.last().unwrap().0);
        let b = self.batch(site, events);
        self.publish(site, b).await;
    }

    pub async fn status(&self, site: &str, state: Presence, oldest_unacked_age_s: Option<f64>) {
        let agent = &self.agents[site];
        agent.status(state, 0, oldest_unacked_age_s).await;
        let want = state == Presence::Online;
        eventually("the status to reach the registry", || async {
            self.hub.site(site).await["online"] == want
        })
        .await;
    }

    /// Moves the clock to `t0 + s` and runs the timers.
    pub async fn tick(&self, s: i64) {
        self.clock(s);
        self.hub.supervision.tick().await;
    }

    pub async fn transit(&self, id: &str, token: &str) -> Value {
        let (status, t) = self
            .hub
            .call("GET", &format!("/api/transits/{id}"), token, None)
            .await;
        assert_eq!(status, 200, "{t}");
        t
    }

    pub async fn alarms(&self, query: &str) -> Vec<Value> {
        let (status, list) = self
            .hub
            .call("GET", &format!("/api/alarms{query}"), TOKEN, None)
            .await;
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().clone()
    }

    /// The origin's part of a clean transit: seals read intact, weighed, out of the gate, then
    /// positions along the corridor relayed by gate-c.
    pub async fn depart(&mut self) {
        self.live(
            "gate-a",
            vec![
                (10, seal("CN-S1", SealState::Sealed)),
                (11, seal("CN-S2", SealState::Sealed)),
                (40, weight(20_000.0)),
                (60, gate(Direction::Out, "沪A 12345")),
            ],
        )
        .await;
        self.live("gate-c", vec![(120, pos(31.0, 121.01, 55.0))])
            .await;
    }

    /// The destination's part: in through the gate, weighed, seals read.
    pub fn arrival(start: i64, seals: &[(&str, SealState)]) -> Vec<(i64, Body)> {
        let mut events = vec![
            (start, gate(Direction::In, "沪A12345")),
            (start + 20, weight(20_050.0)),
        ];
        for (i, (id, state)) in seals.iter().enumerate() {
            events.push((start + 40 + i as i64, seal(id, *state)));
        }
        events
    }

    pub async fn stop(self) {
        self.hub.stop().await;
    }

    /// Stops the hub and starts it again on the same database and clock; the agents reconnect
    /// and go on with their seqs.
    pub async fn restart(self, dir: &std::path::Path) -> Scenario {
        let Scenario {
            hub,
            clock,
            agents,
            seqs,
            sent,
        } = self;
        // Gone before the hub, so their connections' end is not taken for a failure.
        for agent in agents.into_values() {
            agent.vanish();
        }
        hub.stop().await;
        let hub = TestHub::start_with_clock(config(dir), clock.clone()).await;
        let mut s = Scenario {
            hub,
            clock,
            agents: BTreeMap::new(),
            seqs,
            sent,
        };
        for site in SITES {
            s.connect(site).await;
        }
        s
    }
}

fn statuses(t: &Value) -> Vec<(String, String)> {
    t["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "status")
        .map(|e| {
            let cause = &e["cause"];
            let why = match cause["type"].as_str().unwrap() {
                "event" => format!("{}#{}", cause["site"].as_str().unwrap(), cause["seq"]),
                "operator" => cause["name"].as_str().unwrap().to_string(),
                other => other.to_string(),
            };
            (e["to"].as_str().unwrap().to_string(), why)
        })
        .collect()
}

fn rules(alarms: &[Value]) -> Vec<&str> {
    alarms.iter().map(|a| a["rule"].as_str().unwrap()).collect()
}

/// Subscribes to the live stream and returns once it is live (its `ready` event arrived).
async fn subscribe(hub: &TestHub, token: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(hub.http).await.unwrap();
    let request =
        format!("GET /api/stream HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    within("the stream to be ready", async {
        while !text.contains("event: ready") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(text.contains("text/event-stream"), "{text}");
    stream
}

async fn read_until(stream: &mut tokio::net::TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    within("live updates", async {
        while !done(&text) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    text
}

#[tokio::test]
async fn clean_transit_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    let mut operator_stream = subscribe(&s.hub, TOKEN).await;
    let mut acme_stream = subscribe(&s.hub, ACME_TOKEN).await;
    let mut globex_stream = subscribe(&s.hub, GLOBEX_TOKEN).await;

    let declared = s.declare(declaration("T-100")).await;
    assert_eq!(declared["status"], "declared");
    s.depart().await;
    for i in 1..10 {
        s.live(
            "gate-c",
            vec![(120 + i * 300, pos(31.0, 121.01 + 0.045 * i as f64, 60.0))],
        )
        .await;
    }
    let arrival = Scenario::arrival(
        3600,
        &[("CN-S1", SealState::Sealed), ("CN-S2", SealState::Sealed)],
    );
    s.live("gate-b", arrival).await;

    let t = s.transit("T-100", TOKEN).await;
    assert_eq!(t["status"], "verified", "{t}");
    assert_eq!(
        statuses(&t),
        [
            ("declared".to_string(), "tests".to_string()),
            ("sealed".into(), "gate-a#2".into()),
            ("departed".into(), "gate-a#4".into()),
            ("in_transit".into(), "gate-c#1".into()),
            ("arrived".into(), "gate-b#1".into()),
            ("verified".into(), "gate-b#4".into()),
        ]
    );
    let rec = &t["reconciliation"];
    assert_eq!(rec["plate"]["matches"], true);
    assert_eq!(rec["weight"]["difference_kg"], 50.0);
    assert_eq!(rec["weight"]["within_tolerance"], true);
    assert_eq!(rec["elapsed"]["elapsed_s"], 3540);
    assert!(
        rec["seals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["matches"] == true),
        "{rec}"
    );
    assert_eq!(t["alarms"], json!([]));

    // Lists and filters.
    let (_, list) = s
        .hub
        .call(
            "GET",
            "/api/transits?status=verified&site=gate-b",
            TOKEN,
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, none) = s
        .hub
        .call("GET", "/api/transits?status=declared", TOKEN, None)
        .await;
    assert_eq!(none, json!([]));
    let (status, bad) = s
        .hub
        .call("GET", "/api/transits?status=lost", TOKEN, None)
        .await;
    assert_eq!(status, 400, "{bad}");

    // The operator releases it; the enterprise follows it all.
    let (status, released) = s
        .hub
        .call(
            "POST",
            "/api/transits/T-100/release",
            TOKEN,
            Some(json!({"comment": "discharged"})),
        )
        .await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["status"], "released");
    let mine = s.transit("T-100", ACME_TOKEN).await;
    assert_eq!(mine["status"], "released");
    assert!(mine["reconciliation"].is_object());
    let release = mine["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(release["to"], "released");
    assert!(
        release.get("comment").is_none(),
        "no operator comments for enterprises: {release}"
    );
    let ours = s.transit("T-100", TOKEN).await;
    assert_eq!(
        ours["timeline"].as_array().unwrap().last().unwrap()["comment"],
        "discharged"
    );

    let (_, audit) = s
        .hub
        .call("GET", "/api/audit?target=transit:T-100", TOKEN, None)
        .await;
    let actions: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["transit.declare", "transit.release"]);

    // The live streams saw it move; the other enterprise saw nothing of it.
    let seen = read_until(&mut operator_stream, |t| {
        t.contains("\"status\":\"released\"")
    })
    .await;
    assert!(seen.contains("event: transit"), "{seen}");
    assert!(seen.contains("\"status\":\"verified\""), "{seen}");
    let seen = read_until(&mut acme_stream, |t| t.contains("\"status\":\"released\"")).await;
    assert!(seen.contains("T-100"));
    s.declare(json!({
        "id": "G-1", "enterprise": "globex", "plate": "京B1", "seal_ids": ["G1"],
        "origin": "gate-a", "destination": "gate-b", "max_duration_s": 600
    }))
    .await;
    let seen = read_until(&mut globex_stream, |t| t.contains("G-1")).await;
    assert!(!seen.contains("T-100"), "{seen}");
    s.stop().await;
}

#[tokio::test]
async fn seal_opened_in_transit_is_raised_worked_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-200")).await;
    s.depart().await;
    s.live(
        "gate-c",
        vec![
            (900, seal("CN-S2", SealState::Opened)),
            (905, seal("CN-S2", SealState::Opened)),
        ],
    )
    .await;

    let alarms = s.alarms("?transit=T-200").await;
    assert_eq!(rules(&alarms), ["seal_opened"]);
    let a = &alarms[0];
    assert_eq!(
        (
            a["state"].as_str(),
            a["severity"].as_str(),
            a["occurrences"].as_u64()
        ),
        (Some("open"), Some("critical"), Some(1))
    );
    assert_eq!(a["cause"], json!({"site": "gate-c", "seq": 2}));
    let id = a["id"].as_u64().unwrap();
    let t = s.transit("T-200", TOKEN).await;
    assert_eq!(
        t["status"], "in_transit",
        "an incident does not lose the transit"
    );

    // The enterprise sees the open alarm, without the operators' steps.
    let (_, theirs) = s.hub.call("GET", "/api/alarms", ACME_TOKEN, None).await;
    assert_eq!(rules(theirs.as_array().unwrap()), ["seal_opened"]);
    let (_, others) = s.hub.call("GET", "/api/alarms", GLOBEX_TOKEN, None).await;
    assert_eq!(others, json!([]));
    let (status, _) = s
        .hub
        .call("GET", &format!("/api/alarms/{id}"), GLOBEX_TOKEN, None)
        .await;
    assert_eq!(status, 404);

    // The command centre works it.
    let path = |action: &str| format!("/api/alarms/{id}/{action}");
    let (status, e) = s
        .hub
        .call(
            "POST",
            &path("dispatch"),
            TOKEN,
            Some(json!({"unit": "patrol 7"})),
        )
        .await;
    assert_eq!(status, 409, "acknowledge first: {e}");
    s.clock(1000);
    let (status, a) = s
        .hub
        .call(
            "POST",
            &path("acknowledge"),
            TOKEN,
            Some(json!({"comment": "calling the driver"})),
        )
        .await;
    assert_eq!(
        (status, a["state"].as_str()),
        (200, Some("acknowledged")),
        "{a}"
    );
    let (status, a) = s
        .hub
        .call(
            "POST",
            &path("dispatch"),
            TOKEN,
            Some(json!({"unit": "patrol 7", "comment": "nearest unit"})),
        )
        .await;
    assert_eq!((status, a["unit"].as_str()), (200, Some("patrol 7")), "{a}");
    let (_, theirs) = s
        .hub
        .call("GET", &format!("/api/alarms/{id}"), ACME_TOKEN, None)
        .await;
    assert_eq!(theirs["state"], "dispatched");
    assert!(
        !theirs.to_string().contains("calling the driver"),
        "{theirs}"
    );
    assert!(!theirs.to_string().contains("patrol"), "{theirs}");
    let (status, e) = s
        .hub
        .call(
            "POST",
            &path("close"),
            TOKEN,
            Some(json!({"reason": "false_alarm"})),
        )
        .await;
    assert_eq!(status, 400, "a comment is required: {e}");
    let (status, e) = s
        .hub
        .call(
            "POST",
            &path("close"),
            TOKEN,
            Some(json!({"reason": "disproved", "comment": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{e}");
    let (status, a) = s
        .hub
        .call(
            "POST",
            &path("close"),
            TOKEN,
            Some(json!({"reason": "confirmed_violation", "comment": "seal cut, goods intact"})),
        )
        .await;
    assert_eq!((status, a["state"].as_str()), (200, Some("closed")), "{a}");
    let (status, _) = s
        .hub
        .call("POST", &path("acknowledge"), TOKEN, Some(json!({})))
        .await;
    assert_eq!(status, 409);
    let (status, _) = s
        .hub
        .call(
            "POST",
            "/api/alarms/999/acknowledge",
            TOKEN,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);

    let (_, audit) = s
        .hub
        .call("GET", &format!("/api/audit?target=alarm:{id}"), TOKEN, None)
        .await;
    let steps: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["from_state"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("alarm.acknowledge", "open", "tests"),
            ("alarm.dispatch", "acknowledged", "tests"),
            ("alarm.close", "dispatched", "tests")
        ]
    );
    assert_eq!(audit[2]["detail"]["reason"], "confirmed_violation");
    // Closed: gone from the enterprise's view, found by the operators' filters.
    let (_, theirs) = s.hub.call("GET", "/api/alarms", ACME_TOKEN, None).await;
    assert_eq!(theirs, json!([]));
    assert_eq!(s.alarms("?state=closed&rule=seal_opened").await.len(), 1);
    assert!(s.alarms("?state=unclosed&transit=T-200").await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn seal_mismatch_at_arrival_stands_until_an_operator_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-300")).await;
    s.depart().await;
    let arrival = Scenario::arrival(
        3600,
        &[("CN-S1", SealState::Sealed), ("CN-X9", SealState::Sealed)],
    );
    s.live("gate-b", arrival).await;
    let t = s.transit("T-300", TOKEN).await;
    assert_eq!(t["status"], "arrived", "{t}");
    assert_eq!(rules(t["alarms"].as_array().unwrap()), ["seal_mismatch"]);
    let lines: Vec<_> = t["reconciliation"]["seals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["seal_id"].as_str().unwrap(),
                l["matches"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [("CN-S1", true), ("CN-S2", false), ("CN-X9", false)]);
    let (status, e) = s
        .hub
        .call(
            "POST",
            "/api/transits/T-300/release",
            TOKEN,
            Some(json!({"comment": "?"})),
        )
        .await;
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("seal_mismatch"),
        "{e}"
    );
    let id = t["alarms"][0]["id"].as_u64().unwrap();
    s.hub
        .call(
            "POST",
            &format!("/api/alarms/{id}/close"),
            TOKEN,
            Some(json!({"reason": "confirmed_violation", "comment": "examined"})),
        )
        .await;
    let (status, t) = s
        .hub
        .call(
            "POST",
            "/api/transits/T-300/release",
            TOKEN,
            Some(json!({"comment": "goods examined, duty assessed"})),
        )
        .await;
    assert_eq!(
        (status, t["status"].as_str()),
        (200, Some("released")),
        "{t}"
    );
    s.stop().await;
}

#[tokio::test]
async fn deviation_that_returns_to_the_corridor_is_one_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-400")).await;
    s.depart().await;
    // Out 1.1 km, then driving along the edge (inside, but within the hysteresis band), out
    // again, and finally back on the road.
    let lats = [
        31.01, 31.0043, 31.0046, 31.0043, 31.006, 31.0044, 31.0047, 31.0,
    ];
    for (i, lat) in lats.into_iter().enumerate() {
        s.live(
            "gate-c",
            vec![(
                600 + 120 * i as i64,
                pos(lat, 121.1 + 0.01 * i as f64, 50.0),
            )],
        )
        .await;
    }
    let alarms = s.alarms("?transit=T-400").await;
    assert_eq!(rules(&alarms), ["route_deviation"]);
    assert_eq!(alarms[0]["occurrences"], 1);
    assert_eq!(alarms[0]["active"], false, "back in the corridor");
    let t = s.transit("T-400", TOKEN).await;
    assert!(
        t["timeline"]
            .to_string()
            .contains("no longer outside the corridor"),
        "{t}"
    );
    s.stop().await;
}

#[tokio::test]
async fn overdue_is_raised_by_the_timer() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-500")).await;
    s.depart().await;
    let limit = 60 + 14_400;
    // Positions keep coming (no GPS-lost), the truck never arrives.
    for i in 1..=48 {
        s.live(
            "gate-c",
            vec![(120 + i * 300, pos(31.0, 121.02 + 0.009 * i as f64, 40.0))],
        )
        .await;
    }
    s.tick(limit - 10).await;
    assert!(s.alarms("?transit=T-500").await.is_empty());
    s.tick(limit + 5).await;
    let alarms = s.alarms("?transit=T-500").await;
    assert_eq!(rules(&alarms), ["overdue"]);
    assert_eq!(
        alarms[0]["observed_at"],
        at(limit).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    s.tick(limit + 60).await;
    assert_eq!(
        s.alarms("?transit=T-500").await.len(),
        1,
        "ticks do not repeat it"
    );
    s.stop().await;
}

#[tokio::test]
async fn arrival_at_the_wrong_site_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-600")).await;
    s.depart().await;
    s.live("gate-c", vec![(1800, gate(Direction::In, "沪A12345"))])
        .await;
    let alarms = s.alarms("?transit=T-600").await;
    assert_eq!(rules(&alarms), ["wrong_site"]);
    assert_eq!(alarms[0]["severity"], "critical");
    assert!(alarms[0]["message"].as_str().unwrap().contains("gate-c"));
    assert_eq!(s.transit("T-600", TOKEN).await["status"], "in_transit");
    s.stop().await;
}

#[tokio::test]
async fn site_offline_then_back_with_a_backlog_raises_no_stale_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-700")).await;
    s.depart().await;
    // gate-c (relaying the positions) and gate-b (the destination) lose their uplink.
    s.status("gate-c", Presence::Offline, None).await;
    s.status("gate-b", Presence::Offline, None).await;
    // Meanwhile, recorded by their agents: a 40-minute detour that ended, and the arrival.
    let detour: Vec<(i64, Body)> = (0..9)
        .map(|i| (600 + 300 * i, pos(31.02, 121.1 + 0.01 * i as f64, 40.0)))
        .chain([(3300, pos(31.0, 121.3, 60.0))])
        .collect();
    let backlog_c = s.batch("gate-c", detour);
    let arrival = Scenario::arrival(
        3600,
        &[("CN-S1", SealState::Sealed), ("CN-S2", SealState::Sealed)],
    );
    let backlog_b = s.batch("gate-b", arrival);
    // Hours pass at the hub: the sites are offline, the transit's limit passes.
    for minute in (5..=300).step_by(5) {
        s.tick(120 + minute * 60).await;
    }
    let offline = s.alarms("?rule=site_offline&state=open").await;
    let mut sites: Vec<_> = offline
        .iter()
        .map(|a| a["site"].as_str().unwrap())
        .collect();
    sites.sort();
    assert_eq!(sites, ["gate-b", "gate-c"]);
    assert!(
        s.alarms("?transit=T-700").await.is_empty(),
        "nothing is known of the transit: no overdue, no GPS lost"
    );

    // They come back and deliver the backlog.
    let now = 120 + 300 * 60;
    s.status("gate-c", Presence::Online, Some(5.0 * 3600.0))
        .await;
    s.status("gate-b", Presence::Online, Some(5.0 * 3600.0))
        .await;
    s.tick(now + 1).await;
    s.publish("gate-c", backlog_c).await;
    s.publish("gate-b", backlog_b).await;
    s.status("gate-c", Presence::Online, None).await;
    s.status("gate-b", Presence::Online, None).await;
    s.tick(now + 30).await;

    let t = s.transit("T-700", TOKEN).await;
    assert_eq!(t["status"], "verified", "{t}");
    let alarms = s.alarms("?transit=T-700").await;
    let raised: Vec<_> = alarms
        .iter()
        .map(|a| (a["rule"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    assert!(raised.is_empty(), "no stale alarms: {alarms:?}");
    assert!(
        t["timeline"]
            .to_string()
            .contains("reported late and already over, so no alarm"),
        "the detour is evidence in the timeline: {t}"
    );
    // The sites' own alarms stand for the operators, no longer active.
    for a in s.alarms("?rule=site_offline").await {
        assert_eq!(a["active"], false, "{a}");
    }
    s.stop().await;
}

#[tokio::test]
async fn replayed_events_double_nothing_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-800")).await;
    s.depart().await;
    s.live("gate-c", vec![(900, seal("CN-S2", SealState::Opened))])
        .await;
    s.live("gate-c", vec![(1800, gate(Direction::In, "沪A12345"))])
        .await;
    let arrival = Scenario::arrival(
        3600,
        &[("CN-S1", SealState::Sealed), ("CN-X1", SealState::Sealed)],
    );
    s.live("gate-b", arrival).await;
    let before_t = s.transit("T-800", TOKEN).await;
    let before_a = s.alarms("").await;
    assert_eq!(
        rules(&before_a),
        ["seal_mismatch", "wrong_site", "seal_opened"]
    );

    // The agents resend everything (as after a crash before the acks reached them).
    for (site, payload) in s.sent.clone() {
        s.publish(&site, payload).await;
    }
    assert_eq!(s.transit("T-800", TOKEN).await, before_t);
    assert_eq!(s.alarms("").await, before_a);

    // And once more after a hub restart, on the same database.
    let config = config(dir.path());
    let clock = s.clock.clone();
    let sent = s.sent.clone();
    s.hub.stop().await;
    let hub = TestHub::start_with_clock(config, clock).await;
    let mut agents = BTreeMap::new();
    for site in SITES {
        agents.insert(site, Agent::connect(hub.broker, site).await);
    }
    for (site, payload) in sent {
        let agent = agents.get_mut(site.as_str()).unwrap();
        agent.send(payload).await;
        agent.ack_where(|_| true).await;
    }
    hub.supervision.settle().await;
    let (_, after) = hub.call("GET", "/api/transits/T-800", TOKEN, None).await;
    assert_eq!(after, before_t);
    let (_, alarms) = hub.call("GET", "/api/alarms", TOKEN, None).await;
    assert_eq!(alarms.as_array().unwrap(), &before_a);
    assert_eq!(
        hub.metric("qyt_hub_alarms_raised_total").await,
        0,
        "nothing raised again"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_weighing_before_a_hub_restart_still_counts_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::start(dir.path()).await;
    s.declare(declaration("T-900")).await;
    // Sealed and weighed at the origin; the hub restarts before the truck leaves the gate.
    s.live(
        "gate-a",
        vec![
            (10, seal("CN-S1", SealState::Sealed)),
            (11, seal("CN-S2", SealState::Sealed)),
            (40, weight(20_000.0)),
        ],
    )
    .await;
    let mut s = s.restart(dir.path()).await;
    s.live("gate-a", vec![(60, gate(Direction::Out, "沪A 12345"))])
        .await;
    let t = s.transit("T-900", TOKEN).await;
    assert!(
        t["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["text"] == "weighed 20000 kg at gate-a"),
        "{t}"
    );
    s.live("gate-c", vec![(120, pos(31.0, 121.01, 55.0))]).await;
    // 10 % lighter at the destination: the origin's weighing from before the restart is the
    // one it is compared with.
    let mut arrival = Scenario::arrival(
        3600,
        &[("CN-S1", SealState::Sealed), ("CN-S2", SealState::Sealed)],
    );
    arrival[1] = (3620, weight(18_000.0));
    s.live("gate-b", arrival).await;
    let t = s.transit("T-900", TOKEN).await;
    let rec = &t["reconciliation"];
    assert_eq!(rec["weight"]["origin_kg"], 20_000.0, "{t}");
    assert_eq!(rec["weight"]["difference_kg"], -2_000.0, "{t}");
    assert_eq!(rules(&s.alarms("").await), ["weight_discrepancy"]);
    s.stop().await;
}
