//! Lane plate cameras and gate loops publishing JSON to the gateway's MQTT broker, QoS 1, as
//! an `mqtt` source reads them (see the commented `filter = "lane/+/plate"` example in
//! `config/agent.toml`):
//!
//! - `<prefix>/<lane>/plate` when a truck reaches a lane's camera:
//!   `{"msgId", "plateNo", "direction", "confidence", "image", "ts"}` (`image` the snapshot's
//!   URL, `ts` Unix ms), every field of which the `lane-cameras` source of
//!   `config/agent-devices.toml` maps;
//! - `<prefix>/<lane>/loop` when it has passed the barrier's loop (by the time the next truck
//!   reaches that lane's camera): `{"msgId", "direction", "event": "passed", "ts"}`.
//!
//! Odd lanes are entry lanes, even lanes exit lanes. Message ids carry the time, so a second run
//! is not taken for redeliveries of the first by the source's `id_field` duplicate detection.

use crate::uplink::backoff::Backoff;
use anyhow::Context;
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(clap::Args, Debug)]
pub struct GateArgs {
    /// The broker the agent's `mqtt` source reads (the gateway's local broker).
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: String,
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// First topic level: `<prefix>/<lane>/plate` and `<prefix>/<lane>/loop`.
    #[arg(long, default_value = "lane")]
    pub topic_prefix: String,
    /// Lanes at the checkpoint.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub lanes: u32,
    /// Trucks (plate reads) per second, over all lanes.
    #[arg(long, value_name = "HZ", default_value_t = 0.2)]
    pub rate: f64,
    /// Stop after N plate reads (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// The same seed gives the same plates.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const MAX_LANES: u32 = 64;
const MAX_RATE_HZ: f64 = 1000.0;
/// Failed connection attempts in a row after which the simulator gives up.
const MAX_BROKER_FAILURES: u32 = 8;
/// How long the broker may take to acknowledge the last messages.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: GateArgs) -> anyhow::Result<()> {
    let plan = GatePlan::from_args(&args)?;
    println!(
        "{} lane(s) publishing to {}:{} under {}/<lane>/plate and /loop, {} trucks/s",
        plan.lanes, plan.host, plan.port, plan.prefix, args.rate
    );
    let report = super::runtime()?.block_on(publish(plan, super::interrupted()))?;
    println!(
        "gate: {} plate reads; {} messages published, {} acknowledged by the broker",
        report.passages, report.published, report.acked
    );
    if report.acked < report.published {
        println!(
            "{} messages were not acknowledged before the end: the broker may not have them",
            report.published - report.acked
        );
    }
    Ok(())
}

/// How the lanes run, checked.
#[derive(Debug, Clone)]
pub struct GatePlan {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
    pub prefix: String,
    pub lanes: u32,
    pub period: Duration,
    pub count: Option<u64>,
    pub seed: u64,
}

impl GatePlan {
    fn from_args(a: &GateArgs) -> anyhow::Result<GatePlan> {
        let (host, port) = a
            .broker
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_start_matches('[').trim_end_matches(']'),
                    p.parse().ok()?,
                ))
            })
            .filter(|(h, _)| !h.is_empty())
            .with_context(|| format!("--broker must be HOST:PORT (got {:?})", a.broker))?;
        if !(1..=MAX_LANES).contains(&a.lanes) {
            anyhow::bail!("--lanes must be 1 to {MAX_LANES} (got {})", a.lanes);
        }
        if a.topic_prefix.is_empty() || a.topic_prefix.contains(['+', '#']) {
            anyhow::bail!(
                "--topic-prefix must be a topic without wildcards (got {:?})",
                a.topic_prefix
            );
        }
        Ok(GatePlan {
            host: host.to_string(),
            port,
            credentials: a.username.clone().zip(a.password.clone()),
            prefix: a.topic_prefix.clone(),
            lanes: a.lanes,
            period: super::period_of(a.rate, MAX_RATE_HZ)?,
            count: a.count,
            seed: a.seed,
        })
    }
}

// ---- The lanes (pure) ----

/// One MQTT message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A truck read by a lane's camera that has not passed the lane's loop yet.
#[derive(Debug, Clone)]
struct Waiting {
    direction: &'static str,
}

/// The checkpoint's lanes: plate reads and loop passages, deterministic for a seed.
#[derive(Debug, Clone)]
pub struct GateLanes {
    rng: StdRng,
    prefix: String,
    waiting: Vec<Option<Waiting>>,
    seq: u64,
}

impl GateLanes {
    pub fn new(prefix: &str, lanes: u32, seed: u64) -> GateLanes {
        GateLanes {
            rng: StdRng::seed_from_u64(seed),
            prefix: prefix.to_string(),
            waiting: vec![None; lanes.max(1) as usize],
            seq: 0,
        }
    }

    /// A truck reaches a lane's camera at `now_ms` (Unix ms): the loop message of the truck
    /// before it on that lane, if any, then its plate read.
    pub fn passage(&mut self, now_ms: i64) -> Vec<Message> {
        let i = self.rng.random_range(0..self.waiting.len());
        let lane = i + 1;
        let mut out = Vec::with_capacity(2);
        if let Some(w) = self.waiting[i].take() {
            out.push(self.loop_message(lane, &w, now_ms));
        }
        let direction = if lane % 2 == 1 { "in" } else { "out" };
        let msg_id = self.msg_id(lane, now_ms);
        let payload = json!({
            "msgId": msg_id,
            "plateNo": super::plate(&mut self.rng),
            "direction": direction,
            "confidence": (self.rng.random_range(0.80..0.999f64) * 1000.0).round() / 1000.0,
            "image": format!("http://lane{lane}-cam.local/snapshots/{msg_id}.jpg"),
            "ts": now_ms,
        });
        out.push(Message {
            topic: format!("{}/{lane}/plate", self.prefix),
            payload: payload.to_string().into_bytes(),
        });
        self.waiting[i] = Some(Waiting { direction });
        out
    }

    /// The loop messages of the trucks still between a camera and its loop.
    pub fn finish(&mut self, now_ms: i64) -> Vec<Message> {
        let waiting: Vec<(usize, Waiting)> = self
            .waiting
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| Some((i + 1, w.take()?)))
            .collect();
        waiting
            .into_iter()
            .map(|(lane, w)| self.loop_message(lane, &w, now_ms))
            .collect()
    }

    fn loop_message(&mut self, lane: usize, w: &Waiting, now_ms: i64) -> Message {
        let payload = json!({
            "msgId": self.msg_id(lane, now_ms),
            "direction": w.direction,
            "event": "passed",
            "ts": now_ms,
        });
        Message {
            topic: format!("{}/{lane}/loop", self.prefix),
            payload: payload.to_string().into_bytes(),
        }
    }

    fn msg_id(&mut self, lane: usize, now_ms: i64) -> String {
        self.seq += 1;
        format!("L{lane}-{now_ms}-{:06}", self.seq)
    }
}

// ---- Publishing ----

/// What a run published.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GateReport {
    pub passages: u64,
    pub published: u64,
    /// PUBACKs received.
    pub acked: u64,
}

/// What the connection task saw.
enum Polled {
    Connected,
    Acked,
    Failed(String),
}

/// Publishes `plan`'s passages at its rate until its count (then waits, at most
/// [`ACK_TIMEOUT`], for the broker's acknowledgements) or until `stop` resolves.
pub async fn publish(plan: GatePlan, stop: impl Future<Output = ()>) -> anyhow::Result<GateReport> {
    let mut opts = MqttOptions::new(
        format!("qyt-simulate-gate-{}", std::process::id()),
        plan.host.clone(),
        plan.port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = &plan.credentials {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The event loop runs on its own so that a publish waiting for room in the client's queue
    // never waits on the loop that empties it.
    let mut poller = tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let polled = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    Polled::Connected
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => Polled::Acked,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => continue,
                Err(e) => {
                    let delay = backoff.next_delay(&mut rand::rng());
                    if tx.send(Polled::Failed(e.to_string())).is_err() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            if tx.send(polled).is_err() {
                return;
            }
        }
    });

    let mut lanes = GateLanes::new(&plan.prefix, plan.lanes, plan.seed);
    let mut ticks = tokio::time::interval(plan.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = GateReport::default();
    let (mut connected, mut failures) = (false, 0u32);
    let mut acks_due: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let more = plan.count.is_none_or(|n| report.passages < n);
        if !more {
            if report.acked >= report.published {
                break;
            }
            acks_due.get_or_insert_with(|| Instant::now() + ACK_TIMEOUT);
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep_until(acks_due.unwrap_or_else(Instant::now)), if acks_due.is_some() => break,
            polled = rx.recv() => match polled {
                Some(Polled::Connected) => (connected, failures) = (true, 0),
                Some(Polled::Acked) => report.acked += 1,
                Some(Polled::Failed(e)) => {
                    connected = false;
                    failures += 1;
                    if failures >= MAX_BROKER_FAILURES {
                        anyhow::bail!(
                            "cannot reach the MQTT broker at {}:{}: {e} (is it running there? are --username and --password right?)",
                            plan.host,
                            plan.port
                        );
                    }
                }
                None => anyhow::bail!("the MQTT connection task ended unexpectedly"),
            },
            _ = ticks.tick(), if connected && more => {
                let now_ms = Utc::now().timestamp_millis();
                let mut messages = lanes.passage(now_ms);
                report.passages += 1;
                if plan.count == Some(report.passages) {
                    messages.extend(lanes.finish(now_ms));
                }
                for m in messages {
                    client
                        .publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                        .await
                        .context("the MQTT client stopped")?;
                    report.published += 1;
                }
            }
        }
    }
    let _ = client.disconnect().await;
    if tokio::time::timeout(Duration::from_secs(2), &mut poller)
        .await
        .is_err()
    {
        poller.abort();
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mapping::{map, TopicMapping};
    use mqtt5::broker::{BrokerConfig, MqttBroker, StorageBackendType, StorageConfig};
    use qyt_proto::{Body, Direction, GatePassage};
    use serde_json::Value;

    /// The commented `filter = "lane/+/plate"` example of config/agent.toml, uncommented.
    fn example_mapping() -> TopicMapping {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.toml");
        let text = std::fs::read_to_string(path).expect("config/agent.toml");
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.trim() == "# filter = \"lane/+/plate\"")
            .expect("the lane/+/plate example is in config/agent.toml");
        let mut table = String::new();
        for line in &lines[start..] {
            let Some(rest) = line.strip_prefix('#') else {
                break;
            };
            let rest = rest.trim_start();
            if rest.starts_with("[[") {
                break;
            }
            table.push_str(&rest.replace("[source.topic.", "["));
            table.push('\n');
        }
        toml::from_str(&table).expect("the example mapping parses")
    }

    /// The `lane/+/plate` topic of the `lane-cameras` source in config/agent-devices.toml.
    fn devices_config_mapping() -> TopicMapping {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent-devices.toml");
        let text = std::fs::read_to_string(path).expect("config/agent-devices.toml");
        let config: toml::Value = toml::from_str(&text).expect("TOML");
        let source = config["source"]
            .as_array()
            .and_then(|s| {
                s.iter()
                    .find(|s| s["name"].as_str() == Some("lane-cameras"))
            })
            .expect("the lane-cameras source");
        source["topic"][0]
            .clone()
            .try_into()
            .expect("a topic mapping")
    }

    fn payload(m: &Message) -> Value {
        serde_json::from_slice(&m.payload).expect("JSON")
    }

    fn messages(n: usize) -> Vec<Message> {
        let mut lanes = GateLanes::new("lane", 4, 6);
        let mut out: Vec<Message> = (0..n)
            .flat_map(|i| lanes.passage(1_760_000_000_000 + i as i64 * 5000))
            .collect();
        out.extend(lanes.finish(1_760_000_999_000));
        out
    }

    #[test]
    fn plate_reads_map_with_the_example_mapping() {
        let m = example_mapping();
        let all = messages(50);
        let plates: Vec<&Message> = all.iter().filter(|m| m.topic.ends_with("/plate")).collect();
        assert_eq!(plates.len(), 50);
        for msg in plates {
            assert!(rumqttc::matches(&msg.topic, &m.filter), "{}", msg.topic);
            let p = payload(msg);
            let mapped = map(&msg.topic, &msg.payload, &m).expect("mapped");
            let Body::Gate(g) = mapped.body else {
                panic!("{mapped:?}")
            };
            assert_eq!(g.lane, msg.topic.split('/').nth(1).expect("lane"));
            assert_eq!(g.plate.as_deref(), p["plateNo"].as_str());
            assert_eq!(g.confidence, p["confidence"].as_f64());
            // The example takes the direction and the image from the payload.
            let direction = match p["direction"].as_str() {
                Some("in") => Direction::In,
                _ => Direction::Out,
            };
            assert_eq!(g.direction, direction);
            assert_eq!(g.image_ref.as_deref(), p["image"].as_str());
        }
    }

    #[test]
    fn every_field_maps_with_the_devices_config_and_every_truck_passes_its_loop() {
        let plate = devices_config_mapping();
        let passed: TopicMapping = toml::from_str(
            "filter = \"lane/+/loop\"\nkind = \"gate\"\nid_field = \"msgId\"\nobserved_at_field = \"ts\"\n[fields]\nlane = \"$topic[1]\"\n",
        )
        .expect("mapping");
        let all = messages(40);
        let mut ids = std::collections::BTreeSet::new();
        let mut on_lane: std::collections::BTreeMap<String, i32> = Default::default();
        for msg in &all {
            let p = payload(msg);
            let lane = msg.topic.split('/').nth(1).expect("lane").to_string();
            let direction = if lane.parse::<u32>().expect("number") % 2 == 1 {
                Direction::In
            } else {
                Direction::Out
            };
            let is_plate = msg.topic.ends_with("/plate");
            let mapped = map(
                &msg.topic,
                &msg.payload,
                if is_plate { &plate } else { &passed },
            )
            .expect("mapped");
            assert_eq!(
                mapped.observed_at.map(|t| t.timestamp_millis()),
                p["ts"].as_i64()
            );
            assert!(
                ids.insert(mapped.message_id.expect("an id")),
                "ids are unique"
            );
            let Body::Gate(g) = mapped.body else { panic!() };
            let expected = GatePassage {
                lane: lane.clone(),
                direction,
                plate: is_plate.then(|| p["plateNo"].as_str().expect("plate").to_string()),
                confidence: p["confidence"].as_f64(),
                image_ref: p["image"].as_str().map(String::from),
            };
            assert_eq!(g, expected);
            // A lane holds one truck between its camera and its loop.
            let n = on_lane.entry(lane).or_default();
            *n += if is_plate { 1 } else { -1 };
            assert!((0..=1).contains(n), "{}", msg.topic);
        }
        assert!(on_lane.values().all(|&n| n == 0));
        assert_eq!(all.len(), 80);
    }

    #[test]
    fn arguments_are_checked() {
        let args = |broker: &str, lanes: u32, prefix: &str| GateArgs {
            broker: broker.into(),
            username: None,
            password: None,
            topic_prefix: prefix.into(),
            lanes,
            rate: 1.0,
            count: None,
            seed: 1,
        };
        let p = GatePlan::from_args(&args("[::1]:1884", 2, "lane")).expect("valid");
        assert_eq!((p.host.as_str(), p.port), ("::1", 1884));
        let err = |a: GateArgs| GatePlan::from_args(&a).unwrap_err().to_string();
        assert!(err(args("localhost", 2, "lane")).contains("HOST:PORT"));
        assert!(err(args("h:1", 0, "lane")).contains("--lanes"));
        assert!(err(args("h:1", 1, "lane/#")).contains("wildcards"));
    }

    /// The simulator publishing to a real broker on 127.0.0.1, read by a subscriber.
    #[tokio::test]
    async fn publishes_to_a_broker_with_qos_1() {
        let cfg = BrokerConfig::default()
            .with_bind_address(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .with_storage(
                StorageConfig::new()
                    .with_backend(StorageBackendType::Memory)
                    .with_persistence(false),
            )
            .with_sys_topics_enabled(false);
        let mut broker = MqttBroker::with_config(cfg).await.expect("broker starts");
        let addr = broker.local_addr().expect("listener");
        let mut ready = broker.ready_receiver();
        let broker_stop = broker.shutdown_handle();
        let broker_task = tokio::spawn(async move { broker.run().await });
        let deadline = Duration::from_secs(30);
        tokio::time::timeout(deadline, ready.wait_for(|r| *r))
            .await
            .expect("ready in time")
            .expect("ready");

        // The subscriber is subscribed before anything is published.
        let mut opts = MqttOptions::new("watcher", "127.0.0.1", addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        let (sub, mut events) = AsyncClient::new(opts, 16);
        sub.subscribe("lane/#", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let (tx, mut got) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(None);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Some(Message {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                        }));
                    }
                    Ok(_) => {}
                    Err(e) => panic!("subscriber: {e}"),
                }
            }
        });
        assert_eq!(
            tokio::time::timeout(deadline, got.recv())
                .await
                .expect("suback in time"),
            Some(None)
        );

        let plan = GatePlan {
            host: "127.0.0.1".into(),
            port: addr.port(),
            credentials: None,
            prefix: "lane".into(),
            lanes: 2,
            period: Duration::from_millis(10),
            count: Some(5),
            seed: 2,
        };
        let report = tokio::time::timeout(deadline, publish(plan, std::future::pending()))
            .await
            .expect("done in time")
            .expect("published");
        assert_eq!(
            (report.passages, report.published, report.acked),
            (5, 10, 10)
        );
        let example = example_mapping();
        let mut plates = 0;
        for _ in 0..10 {
            let m = tokio::time::timeout(deadline, got.recv())
                .await
                .expect("delivered")
                .flatten()
                .expect("a message");
            if m.topic.ends_with("/plate") {
                plates += 1;
                assert!(matches!(
                    map(&m.topic, &m.payload, &example).expect("mapped").body,
                    Body::Gate(_)
                ));
            } else {
                assert!(m.topic.ends_with("/loop"), "{}", m.topic);
            }
        }
        assert_eq!(plates, 5);
        watcher.abort();
        broker_stop.shutdown();
        let _ = tokio::time::timeout(deadline, broker_task).await;
    }
}
