//! The hub as a client of an external broker (here a separate mqtt5 broker standing in for
//! Mosquitto or EMQX): same ingest, and a persistent session that keeps batches for it.

use crate::harness::*;
use mqtt5::broker::config::{StorageBackend, StorageConfig};
use mqtt5::broker::{BrokerConfig, MqttBroker};

#[tokio::test]
async fn batches_sent_while_the_hub_is_down_are_delivered_when_it_returns() {
    let broker_config = BrokerConfig {
        bind_addresses: vec!["127.0.0.1:0".parse().unwrap()],
        storage_config: StorageConfig::default().with_backend(StorageBackend::Memory),
        ..BrokerConfig::default()
    };
    let mut broker = MqttBroker::with_config(broker_config).await.unwrap();
    let addr = broker.local_addr().unwrap();
    let shutdown = broker.shutdown_handle();
    let broker_task = tokio::spawn(async move { broker.run().await });

    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.broker.url = Some(format!("mqtt://{addr}"));
    let hub = TestHub::start(c.clone()).await;
    let mut agent = Agent::connect_as(addr, "gate-a", None).await;
    agent.send(batch("gate-a", 1..=3)).await;
    assert_eq!(agent.ack_where(|_| true).await.contiguous.0, 3);
    hub.stop().await;

    // The hub is away; the broker keeps this batch in the hub's persistent session.
    agent.send(batch("gate-a", 4..=6)).await;
    agent.puback(1).await;
    let hub = TestHub::start(c).await;
    let ack = agent.ack_where(|_| true).await;
    assert_eq!(
        ack.contiguous.0, 6,
        "delivered from the session, not resent by the agent"
    );
    hub.stop().await;
    shutdown.shutdown();
    within("the external broker to stop", broker_task)
        .await
        .unwrap()
        .unwrap();
}
