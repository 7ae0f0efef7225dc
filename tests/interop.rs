//! Interop with Mosquitto, the broker checkpoint operators already run: as the gateway's local
//! broker (devices publish there) and as the hub's external broker. Skipped when Mosquitto is
//! not installed, unless QYT_REQUIRE_MOSQUITTO is set (CI installs it and sets it).

mod common;

use common::broker::{mosquitto_path, mosquitto_required, GatewayBroker};
use common::device::Device;
use common::process::wait_until;
use common::{assert_exactly_once, mqtt_source, prime, probe_ids, Agent, Hub};

#[test]
fn mosquitto_as_gateway_broker_and_as_the_hubs_external_broker() {
    let Some(bin) = mosquitto_path() else {
        assert!(
            !mosquitto_required(),
            "QYT_REQUIRE_MOSQUITTO is set but mosquitto is not installed"
        );
        eprintln!("skipped: mosquitto is not installed (CI installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = GatewayBroker::mosquitto(
        bin,
        &dir.path().join("gateway"),
        common::broker::free_port(),
    );
    let central = GatewayBroker::mosquitto(
        bin,
        &dir.path().join("central"),
        common::broker::free_port(),
    );
    assert!(gw.is_mosquitto() && central.is_mosquitto());
    let mut hub = Hub::start(&dir.path().join("hub"), Some(central.addr()));
    // Mosquitto here allows anonymous clients: the agent logs in without credentials.
    let mut agent = Agent::start(
        &dir.path().join("agent"),
        central.addr(),
        true,
        "",
        &mqtt_source(gw.addr()),
    );
    prime(&gw, &hub);
    let mut expected = probe_ids(&hub);

    let mut dev = Device::connect(gw.addr(), "lock1");
    dev.publish_range(0, 2000);
    expected.extend((0..2000).map(|i| dev.id(i)));
    wait_until(120, "half the stream at the hub", || {
        (hub.stored() >= 1000).then_some(())
    });
    // Both of our processes die at once mid-stream; Mosquitto keeps both sessions.
    agent.proc.kill9();
    hub.proc.kill9();
    dev.publish_range(2000, 3000);
    expected.extend((2000..3000).map(|i| dev.id(i)));
    hub.restart();
    agent.restart();
    dev.wait_all_acked(60);
    wait_until(180, "every device message in the hub", || {
        (hub.stored() >= expected.len() as u64).then_some(())
    });
    assert_exactly_once(&hub, &expected);
}
