//! The checkpoint gateway's side: a real Mosquitto as the gateway broker, and devices publishing
//! seal readings to it with QoS 1 — from the device's side, a PUBACKed message is one the
//! system must not lose.

use super::system::{free_addr, wait_for, Proc};
use anyhow::{bail, Context, Result};
use rumqttc::{Client, ClientError, Event, MqttOptions, Packet, QoS};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Size of each device message, like the peer's (about 200 bytes of JSON).
const PAYLOAD_BYTES: usize = 200;

pub struct Mosquitto {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Mosquitto {
    /// Persistence on (autosave left at Mosquitto's default, as in the peer's gateway), a deep
    /// queue, and 1000 messages in flight to the agent so the agent's group commit can batch.
    pub fn start(dir: &Path) -> Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let addr = free_addr()?;
        // As root, Mosquitto drops to its own user, which cannot write the run's temp dir.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root\n"
        } else {
            ""
        };
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
                 max_inflight_messages 1000\nmax_queued_messages 10000000\n\
                 log_dest stderr\nlog_type error\nlog_type warning\n{user}",
                addr.port(),
                dir.display()
            ),
        )?;
        let conf = conf.to_str().context("non-UTF-8 temp path")?;
        let mut proc = Proc::spawn("mosquitto", Path::new(MOSQUITTO), &["-c", conf], dir)?;
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(10),
            "mosquitto to listen",
            || {
                proc.ensure_running()?;
                Ok(std::net::TcpStream::connect(addr).ok().map(|_| ()))
            },
        )?;
        Ok(Mosquitto { proc, addr })
    }
}

/// The agent's `[[source]]` for these devices: the message id for duplicate detection and the
/// device's publish time as the observation time (for the latency figure).
pub fn mqtt_source(gateway: SocketAddr) -> String {
    format!(
        "[[source]]\ntype = \"mqtt\"\nname = \"gateway\"\nhost = \"{}\"\nport = {}\n\n\
         [[source.topic]]\nfilter = \"dev/+/seal\"\nkind = \"seal\"\nid_field = \"id\"\nobserved_at_field = \"ts\"\n\
         [source.topic.fields]\nseal_id = \"seal\"\ndevice_id = \"$topic[1]\"\n",
        gateway.ip(),
        gateway.port()
    )
}

/// A seal reading whose seal id is its message id, so the hub's store shows which device
/// message each event came from; `ts` is the publish time in Unix ms.
fn payload(id: &str, ts_ms: i64) -> Vec<u8> {
    let head = format!(r#"{{"id":"{id}","seal":"{id}","state":"sealed","ts":{ts_ms},"pad":""#);
    let pad = PAYLOAD_BYTES.saturating_sub(head.len() + 2);
    let mut p = head.into_bytes();
    p.resize(p.len() + pad, b'x');
    p.extend_from_slice(b"\"}");
    p
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One device: a QoS 1 MQTT client with a bounded in-flight window, counting PUBACKs.
pub struct Device {
    client: Client,
    topic: String,
    pub acked: Arc<AtomicU64>,
    pub published: u64,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Device {
    pub fn connect(broker: SocketAddr, name: &str, window: u16) -> Result<Device> {
        let mut opts = MqttOptions::new(
            format!("bench-device-{name}"),
            broker.ip().to_string(),
            broker.port(),
        );
        opts.set_keep_alive(Duration::from_secs(30))
            .set_inflight(window);
        // The request channel no deeper than the window: publishing waits for PUBACKs instead
        // of queueing without bound in this process.
        let (client, mut connection) = Client::new(opts, window.into());
        let acked = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (acked, connected, stop) = (acked.clone(), connected.clone(), stop.clone());
            std::thread::spawn(move || {
                // recv_timeout so that the stop flag is seen even when the broker went silent.
                while !stop.load(Relaxed) {
                    match connection.recv_timeout(Duration::from_millis(200)) {
                        Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                            acked.fetch_add(1, Relaxed);
                        }
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            connected.store(true, Relaxed);
                        }
                        Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
                        Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                        Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
        };
        let device = Device {
            client,
            topic: format!("dev/{name}/seal"),
            acked,
            published: 0,
            stop,
            thread: Some(thread),
        };
        wait_for(
            Duration::from_secs(15),
            Duration::from_millis(5),
            "a device to connect to the gateway broker",
            || Ok(connected.load(Relaxed).then_some(())),
        )?;
        Ok(device)
    }

    /// Publishes one reading with id `id`, waiting (bounded) while the in-flight window is full.
    pub fn publish(&mut self, id: &str, deadline: Instant) -> Result<()> {
        let mut payload = payload(id, now_ms());
        loop {
            match self
                .client
                .try_publish(&self.topic, QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => {
                    self.published += 1;
                    return Ok(());
                }
                Err(ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                    if Instant::now() > deadline {
                        bail!(
                            "publishing stalled: {} of {} PUBACKed",
                            self.acked.load(Relaxed),
                            self.published
                        );
                    }
                    payload = p.payload.to_vec();
                    std::thread::sleep(Duration::from_micros(100));
                }
                Err(e) => bail!("publish failed: {e}"),
            }
        }
    }

    /// Publishes `ids` one after another as fast as the window allows, then waits for every
    /// PUBACK.
    pub fn publish_all(
        &mut self,
        ids: impl Iterator<Item = String>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for id in ids {
            self.publish(&id, deadline)?;
        }
        self.wait_acked(deadline)
    }

    pub fn wait_acked(&self, deadline: Instant) -> Result<()> {
        wait_for(
            deadline.saturating_duration_since(Instant::now()),
            Duration::from_millis(2),
            "the gateway broker to PUBACK every message",
            || Ok((self.acked.load(Relaxed) >= self.published).then_some(())),
        )
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
