//! The durable spine, end to end, with real processes: devices publish to a real gateway broker,
//! a `qyt-agent` process forwards to a `qyt-hub` process (embedded broker, SQLite file), and the
//! hub's API shows what was stored. Processes are killed with SIGKILL at awkward moments.

mod common;

use common::device::Device;
use common::process::wait_until;
use common::{assert_exactly_once, probe_ids, setup};

#[test]
fn ten_thousand_device_messages_arrive_exactly_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, hub, _agent) = setup(dir.path());
    let probes = probe_ids(&hub);
    let mut dev = Device::connect(gw.addr(), "lock1");
    dev.publish_range(0, 10_000);
    dev.wait_all_acked(120);
    let total = probes.len() as u64 + 10_000;
    wait_until(180, "10,000 events in the hub", || {
        (hub.stored() >= total).then_some(())
    });

    let events = hub.events();
    assert_eq!(events.len() as u64, total);
    // In order: seqs 1..=total without a hole, and the device's messages in publish order.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1));
    }
    let ids: Vec<&str> = events[probes.len()..]
        .iter()
        .map(|e| e["seal_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..10_000).map(|i| dev.id(i)).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    let site = hub.site();
    assert_eq!(site["contiguous_seq"].as_u64(), Some(total));
    assert_eq!(site["missing"], serde_json::json!([]));
}

#[test]
fn agent_killed_with_sigkill_mid_stream_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, hub, mut agent) = setup(dir.path());
    let mut dev = Device::connect(gw.addr(), "lock1");
    let mut expected = probe_ids(&hub);
    // Four rounds: publish a burst, let the agent get partway through it, kill -9, restart.
    for round in 0..4u64 {
        dev.publish_range(round * 1500, (round + 1) * 1500);
        expected.extend((round * 1500..(round + 1) * 1500).map(|i| dev.id(i)));
        let target = (expected.len() as u64).saturating_sub(1500) + 200 * (round + 1);
        wait_until(120, "the agent to be partway through the burst", || {
            (hub.stored() >= target).then_some(())
        });
        agent.proc.kill9();
        agent.restart();
    }
    dev.wait_all_acked(120);
    wait_until(180, "every device message in the hub", || {
        (hub.stored() >= expected.len() as u64).then_some(())
    });
    assert_exactly_once(&hub, &expected);
    let site = hub.site();
    assert_eq!(site["missing"], serde_json::json!([]), "{site}");
}

#[test]
fn hub_down_the_agent_buffers_and_delivers_everything_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, mut hub, agent) = setup(dir.path());
    let mut expected = probe_ids(&hub);
    let status = hub.proc.terminate();
    assert!(status.success(), "hub did not stop cleanly: {status}");

    let mut dev = Device::connect(gw.addr(), "lock1");
    dev.publish_range(0, 3000);
    expected.extend((0..3000).map(|i| dev.id(i)));
    dev.wait_all_acked(60);
    wait_until(120, "the agent to buffer the 3000 events", || {
        (agent.metric("qyt_agent_buffer_events") >= 3000.0).then_some(())
    });
    assert_eq!(agent.metric("qyt_agent_uplink_connected"), 0.0);

    hub.restart();
    wait_until(180, "the backlog to reach the hub", || {
        (hub.stored() >= expected.len() as u64).then_some(())
    });
    assert_exactly_once(&hub, &expected);
    wait_until(60, "the agent to delete what the hub acked", || {
        (agent.metric("qyt_agent_buffer_events") == 0.0).then_some(())
    });
}

#[test]
fn hub_killed_with_sigkill_mid_stream_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, mut hub, _agent) = setup(dir.path());
    let mut expected = probe_ids(&hub);
    let mut dev = Device::connect(gw.addr(), "lock1");
    for round in 0..3u64 {
        dev.publish_range(round * 2000, (round + 1) * 2000);
        expected.extend((round * 2000..(round + 1) * 2000).map(|i| dev.id(i)));
        let target = (expected.len() as u64).saturating_sub(2000) + 500;
        wait_until(120, "the hub to be partway through the burst", || {
            (hub.stored() >= target).then_some(())
        });
        hub.proc.kill9();
        hub.restart();
    }
    dev.wait_all_acked(60);
    wait_until(180, "every device message in the hub", || {
        (hub.stored() >= expected.len() as u64).then_some(())
    });
    assert_exactly_once(&hub, &expected);
}

#[test]
fn graceful_stop_of_the_agent_exits_zero_and_keeps_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, mut hub, mut agent) = setup(dir.path());
    let mut expected = probe_ids(&hub);
    hub.proc.kill9();
    let mut dev = Device::connect(gw.addr(), "lock1");
    dev.publish_range(0, 500);
    expected.extend((0..500).map(|i| dev.id(i)));
    dev.wait_all_acked(60);
    wait_until(60, "the agent to buffer", || {
        (agent.metric("qyt_agent_buffer_events") >= 500.0).then_some(())
    });
    let status = agent.proc.terminate();
    assert!(
        status.success(),
        "SIGTERM exit status {status}; log: {}",
        agent.proc.log_text()
    );
    hub.restart();
    agent.restart();
    wait_until(120, "the backlog to arrive after restarts", || {
        (hub.stored() >= expected.len() as u64).then_some(())
    });
    assert_exactly_once(&hub, &expected);
}
