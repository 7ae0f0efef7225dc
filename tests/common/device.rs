//! A device on the gateway's broker: publishes seal readings with QoS 1 and counts the broker's
//! PUBACKs — from the device's side, an acknowledged message is one the system must not lose.

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

pub struct Device {
    client: Client,
    pub acked: Arc<AtomicU64>,
    pub published: u64,
    thread: Option<std::thread::JoinHandle<()>>,
    pub name: String,
}

/// The topic mapping the tests' agents use for these devices.
pub const AGENT_TOPIC_MAPPING: &str = r#"
[[source.topic]]
filter = "dev/+/seal"
kind = "seal"
id_field = "id"
observed_at_field = "ts"
[source.topic.fields]
seal_id = "seal"
device_id = "$topic[1]"
"#;

impl Device {
    pub fn connect(broker: SocketAddr, name: &str) -> Device {
        let mut opts = MqttOptions::new(
            format!("test-device-{name}"),
            broker.ip().to_string(),
            broker.port(),
        );
        opts.set_keep_alive(Duration::from_secs(30))
            .set_inflight(200);
        let (client, mut connection) = Client::new(opts, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        let thread = std::thread::spawn(move || {
            for n in connection.iter() {
                match n {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, SeqCst);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Device {
            client,
            acked,
            published: 0,
            thread: Some(thread),
            name: name.into(),
        }
    }

    /// The message id of the i-th reading: unique across devices and runs of a test.
    pub fn id(&self, i: u64) -> String {
        format!("{}-{i}", self.name)
    }

    /// Publishes readings `from..to` (QoS 1). Seal ids equal message ids so the hub's store
    /// shows which device message each event came from.
    pub fn publish_range(&mut self, from: u64, to: u64) {
        for i in from..to {
            let payload = format!(
                r#"{{"id":"{id}","seal":"{id}","state":"sealed","ts":{ts}}}"#,
                id = self.id(i),
                ts = chrono::Utc::now().timestamp_millis()
            );
            self.client
                .publish(
                    format!("dev/{}/seal", self.name),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .unwrap();
            self.published += 1;
        }
    }

    /// Publishes one message as it is (for malformed payloads).
    pub fn publish_raw(&mut self, payload: &[u8]) {
        self.client
            .publish(
                format!("dev/{}/seal", self.name),
                QoS::AtLeastOnce,
                false,
                payload.to_vec(),
            )
            .unwrap();
        self.published += 1;
    }

    pub fn wait_all_acked(&self, secs: u64) {
        super::process::wait_until(secs, "the broker to PUBACK every device message", || {
            (self.acked.load(SeqCst) >= self.published).then_some(())
        });
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
