//! The spine at its limits, with real processes: a full buffer, malformed device payloads and
//! malformed batches.

mod common;

use common::broker::GatewayBroker;
use common::device::Device;
use common::process::wait_until;
use common::{assert_exactly_once, mqtt_source, probe_ids, setup, Agent, Hub, SITE, SITE_PASSWORD};
use rumqttc::{Client, MqttOptions, QoS};
use std::time::Duration;

#[test]
fn full_buffer_refuses_never_drop_drops_others_oldest_first_and_reports_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBroker::start(&dir.path().join("gateway"));
    let mut hub = Hub::start(&dir.path().join("hub"), None);
    // The hub is down for the whole filling phase: nothing can be acked, the buffer must fill.
    hub.proc.kill9();

    // The smallest buffer the agent accepts, filled by a fast simulated checkpoint whose
    // positions and weighings may be dropped; seals and gates (default never_drop) may not.
    let sources = format!(
        "{}\n[[source]]\ntype = \"simulate\"\nname = \"sim\"\nrate_per_s = 0\nmax_events = 150000\nseed = 3\n",
        mqtt_source(gw.addr())
    );
    let buffer = "max_bytes = 16777216\n";
    let agent = Agent::start(
        &dir.path().join("agent"),
        hub.broker,
        false,
        buffer,
        &sources,
    );
    wait_until(180, "the buffer to fill and drop droppable events", || {
        (agent.metric("qyt_agent_events_dropped_total{reason=\"buffer_full\"") > 0.0).then_some(())
    });

    // Device seal readings now: never-drop, so the agent must refuse them at intake and leave
    // them unacked on the gateway broker (which acknowledged them to the device).
    let mut dev = Device::connect(gw.addr(), "lock1");
    dev.publish_range(0, 200);
    dev.wait_all_acked(60);
    wait_until(120, "never-drop events to be refused at intake", || {
        (agent.metric("qyt_agent_events_dropped_total{reason=\"refused_full\"") > 0.0).then_some(())
    });
    let disk = agent.metric("qyt_agent_buffer_disk_bytes");
    assert!(
        disk <= 16_777_216.0 * 1.05,
        "buffer grew to {disk} bytes on disk"
    );

    // The hub returns: the backlog drains, the device's held messages get in, and the hub
    // learns exactly which seqs were dropped.
    hub.restart();
    let expected: Vec<String> = (0..200).map(|i| dev.id(i)).collect();
    wait_until(300, "the held device messages to reach the hub", || {
        let have = hub
            .events_kind_seal_ids()
            .into_iter()
            .filter(|id| id.starts_with("lock1-"))
            .count();
        (have >= expected.len()).then_some(())
    });
    let events = hub.events();
    let gaps: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "gap").collect();
    assert!(!gaps.is_empty(), "no gap event reached the hub");
    let mut dropped = std::collections::BTreeSet::new();
    for g in &gaps {
        assert_eq!(g["reason"], "buffer_full", "{g}");
        for r in g["ranges"].as_array().unwrap() {
            let (from, to) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
            dropped.extend(from..=to);
        }
    }
    // An event the agent evicted may already have been sent and stored before the hub's ack
    // came back (the hub counts it once, as stored); but never-drop classes are never dropped.
    for e in &events {
        let seq = e["seq"].as_u64().unwrap();
        if dropped.contains(&seq) {
            let kind = e["kind"].as_str().unwrap();
            assert!(
                !matches!(kind, "seal" | "gate" | "alarm" | "gap"),
                "never-drop {kind} event seq {seq} was declared dropped"
            );
        }
    }
    // Dropped oldest first: the first dropped seq is older than every droppable event kept.
    let oldest_kept_droppable = events
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("position" | "weight")))
        .map(|e| e["seq"].as_u64().unwrap())
        .filter(|seq| !dropped.contains(seq))
        .min()
        .unwrap();
    let first_dropped = dropped.iter().next().copied().unwrap();
    assert!(
        first_dropped < oldest_kept_droppable,
        "eviction did not start with the oldest droppable events: seq {first_dropped} dropped first, \
         seq {oldest_kept_droppable} kept; gaps {gaps:?}; events below: {:?}",
        events
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() <= first_dropped.max(oldest_kept_droppable))
            .map(|e| (e["seq"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_string()))
            .collect::<Vec<_>>()
    );
    // The gaps close the hole: the hub's contiguous position reaches past every dropped seq.
    wait_until(
        120,
        "the hub's contiguous seq to pass the dropped ranges",
        || {
            let site = hub.site();
            (site["contiguous_seq"].as_u64().unwrap() > *dropped.iter().last().unwrap()
                && site["missing"] == serde_json::json!([]))
            .then_some(())
        },
    );
    let seal_ids: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "seal" && e["seal_id"].as_str().unwrap().starts_with("lock1-"))
        .map(|e| e["seal_id"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::BTreeSet<&String> = seal_ids.iter().collect();
    assert_eq!(
        unique.len(),
        seal_ids.len(),
        "a held device message was stored twice"
    );
}

#[test]
fn malformed_device_payloads_are_counted_and_good_traffic_flows() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, hub, agent) = setup(dir.path());
    let mut dev = Device::connect(gw.addr(), "lock1");
    let mut expected = probe_ids(&hub);
    let bad: [&[u8]; 4] = [
        b"{not json",
        br#"{"id":"x1","state":"sealed"}"#,
        br#"{"id":"x2","seal":"S","state":"exploded"}"#,
        br#"{"seal":"S","state":"sealed"}"#,
    ];
    for round in 0..50u64 {
        dev.publish_range(round * 10, round * 10 + 10);
        expected.extend((round * 10..round * 10 + 10).map(|i| dev.id(i)));
        dev.publish_raw(bad[(round % 4) as usize]);
    }
    dev.wait_all_acked(60);
    wait_until(120, "the good messages to arrive", || {
        (hub.events_kind_seal_ids().len() >= expected.len()).then_some(())
    });
    wait_until(30, "the decode errors to be counted", || {
        (agent.metric("qyt_agent_decode_errors_total") >= 50.0).then_some(())
    });
    let ids: Vec<String> = hub.events_kind_seal_ids();
    assert_eq!(
        ids, expected,
        "good messages missing, doubled or out of order"
    );
    assert_exactly_once(&hub, &expected);
}

#[test]
fn malformed_batches_are_rejected_and_counted_while_the_agent_flows() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, hub, _agent) = setup(dir.path());

    // A rogue client with the site's own credentials publishes garbage on the site's topic.
    let mut opts = MqttOptions::new("rogue", hub.broker.ip().to_string(), hub.broker.port());
    opts.set_credentials(SITE, SITE_PASSWORD)
        .set_keep_alive(Duration::from_secs(30));
    let (rogue, mut conn) = Client::new(opts, 100);
    let pump = std::thread::spawn(move || {
        for n in conn.iter() {
            match n {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    let topic = format!("qyt/v1/site/{SITE}/events");
    let bad: [&[u8]; 4] = [
        b"garbage",
        br#"{"v":99,"site":"demo-gate-01","events":[]}"#,
        br#"{"v":1,"site":"other-site","events":[]}"#,
        br#"{"v":1,"site":"demo-gate-01","events":[{"seq":0}]}"#,
    ];
    let mut dev = Device::connect(gw.addr(), "lock1");
    let mut expected = Vec::new();
    for (round, payload) in bad.iter().enumerate() {
        rogue
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_vec())
            .unwrap();
        let r = round as u64;
        dev.publish_range(r * 100, r * 100 + 100);
        expected.extend((r * 100..r * 100 + 100).map(|i| dev.id(i)));
    }
    wait_until(60, "the hub to reject the four malformed batches", || {
        (hub.metric("qyt_hub_batches_rejected_total") >= 4.0).then_some(())
    });
    dev.wait_all_acked(60);
    wait_until(120, "the good traffic to arrive", || {
        (hub.events_kind_seal_ids()
            .iter()
            .filter(|id| id.starts_with("lock1-"))
            .count()
            >= expected.len())
        .then_some(())
    });
    let _ = rogue.disconnect();
    let _ = pump.join();
    let ids: Vec<String> = hub
        .events_kind_seal_ids()
        .into_iter()
        .filter(|id| id.starts_with("lock1-"))
        .collect();
    assert_eq!(ids.len(), expected.len());
}
