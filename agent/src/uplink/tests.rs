//! The uplink against a real MQTT broker (mqtt5's, embedded, on 127.0.0.1 with an ephemeral
//! port) and a scripted hub (a rumqttc client that reads batches and publishes acks), with a real
//! redb buffer in a temporary directory.
//!
//! Nothing here waits by sleeping: every step waits for an event (a batch at the hub, a delete
//! in the buffer, a retained status), under a generous deadline that only turns a hang into a
//! failure. Timing is not paused: rumqttc's network timeouts run on tokio's clock too, and a paused
//! clock would expire them while real sockets are being served. The ack timeout of the tests that
//! need one is short instead, and nothing asserts on how long anything took.

use super::*;
use crate::buffer::IntakeStore;
use crate::buffer::{self, Buffer, BufferError, BufferStats, Engine, StoredRecord};
use crate::metrics::Metrics;
use mqtt5::broker::{
    BrokerConfig, BrokerShutdownHandle, MqttBroker, StorageBackendType, StorageConfig,
};
use qyt_proto::{
    decode_batch, decode_status, encode, Ack, AgentStatus, Batch, Body, EventClass, Presence, Seq,
    SiteId, Topics,
};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, Request, Subscribe};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Only turns a hang into a failure; never a measure of anything.
const DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---- The broker ----

struct Broker {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    stop: BrokerShutdownHandle,
    task: AbortOnDrop<()>,
}

fn broker_config(bind: SocketAddr) -> BrokerConfig {
    BrokerConfig::default()
        .with_bind_address(bind)
        .with_storage(
            StorageConfig::new()
                .with_backend(StorageBackendType::Memory)
                .with_persistence(false),
        )
        .with_sys_topics_enabled(false)
}

async fn start_broker(cfg: BrokerConfig) -> Broker {
    let mut broker = MqttBroker::with_config(cfg).await.expect("broker starts");
    let addr = broker.local_addr().expect("plain listener");
    let tls_addr = broker.tls_local_addr();
    let mut ready = broker.ready_receiver();
    let stop = broker.shutdown_handle();
    let task = tokio::spawn(async move {
        if let Err(e) = broker.run().await {
            panic!("broker failed: {e}");
        }
    });
    within("the broker to be ready", ready.wait_for(|r| *r))
        .await
        .expect("broker ready");
    Broker {
        addr,
        tls_addr,
        stop,
        task: AbortOnDrop(task),
    }
}

impl Broker {
    async fn stop(self) {
        self.stop.shutdown();
        let mut task = self.task;
        within("the broker to stop", &mut task.0)
            .await
            .expect("broker task");
    }
}

// ---- A plain MQTT client for the scripted hub and for watching statuses ----

struct Peer {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    subacks: watch::Receiver<u64>,
    _task: AbortOnDrop<()>,
}

/// Connects to `port`, subscribes to `topics` (again after every reconnect) and waits for the
/// first subscription to be granted.
async fn peer(id: &str, port: u16, topics: Vec<String>) -> Peer {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, messages) = mpsc::unbounded_channel();
    let (suback_tx, mut subacks) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    for t in &topics {
                        eventloop
                            .pending
                            .push_back(Request::Subscribe(Subscribe::new(
                                t.clone(),
                                QoS::AtLeastOnce,
                            )));
                    }
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    suback_tx.send_modify(|n| *n += 1);
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                // The broker is being restarted: retry shortly (a retry pace, not a wait for
                // anything in particular).
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    within("the peer's subscription", subacks.wait_for(|n| *n >= 1))
        .await
        .expect("suback");
    Peer {
        client,
        messages,
        subacks,
        _task: AbortOnDrop(task),
    }
}

impl Peer {
    async fn next_on(&mut self, topic: &str) -> Vec<u8> {
        within(&format!("a message on {topic}"), async {
            loop {
                match self.messages.recv().await {
                    Some((t, payload)) if t == topic => return payload,
                    Some(_) => {}
                    None => panic!("peer closed"),
                }
            }
        })
        .await
    }

    async fn next_batch(&mut self, site: &SiteId) -> Batch {
        decode_batch(&self.next_on(&Topics::events(site)).await).expect("a valid batch")
    }

    /// Batches until every seq in `want` has been seen; returns the seqs seen, repeats included.
    async fn receive_all(
        &mut self,
        site: &SiteId,
        want: impl IntoIterator<Item = u64>,
    ) -> Vec<u64> {
        let mut missing: BTreeSet<u64> = want.into_iter().collect();
        let mut seen = Vec::new();
        while !missing.is_empty() {
            for e in self.next_batch(site).await.events {
                missing.remove(&e.seq.0);
                seen.push(e.seq.0);
            }
        }
        seen
    }

    async fn ack(&self, site: &SiteId, contiguous: u64, missing: Vec<[Seq; 2]>) {
        let ack = Ack {
            v: qyt_proto::PROTOCOL_VERSION,
            site: site.clone(),
            contiguous: Seq(contiguous),
            missing,
        };
        self.publish_ack(site, encode(&ack)).await;
    }

    async fn publish_ack(&self, site: &SiteId, payload: Vec<u8>) {
        self.client
            .publish(Topics::acks(site), QoS::AtLeastOnce, false, payload)
            .await
            .expect("hub publishes");
    }

    async fn next_status(&mut self, site: &SiteId) -> AgentStatus {
        decode_status(&self.next_on(&Topics::status(site)).await).expect("a valid status")
    }
}

// ---- The agent side: a real buffer, watched for deletes ----

/// The real buffer, reporting each completed delete so tests can wait for it.
struct Watched {
    inner: Arc<dyn IntakeStore>,
    acked: watch::Sender<Seq>,
}

impl Buffer for Watched {
    fn next_seq(&self) -> Seq {
        self.inner.next_seq()
    }
    fn acked(&self) -> Seq {
        self.inner.acked()
    }
    fn read_from(
        &self,
        from: Seq,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BufferError> {
        self.inner.read_from(from, max_events, max_bytes)
    }
    fn ack_through(&self, through: Seq) -> Result<u64, BufferError> {
        let n = self.inner.ack_through(through)?;
        self.acked.send_replace(through);
        Ok(n)
    }
    fn stats(&self) -> BufferStats {
        self.inner.stats()
    }
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
    fn compact(&self) -> Result<bool, BufferError> {
        self.inner.compact()
    }
}

struct Agent {
    site: SiteId,
    buffer: Arc<dyn Buffer>,
    store: Arc<dyn IntakeStore>,
    deleted: watch::Receiver<Seq>,
    durable: watch::Sender<Seq>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), UplinkError>>,
    _dir: tempfile::TempDir,
}

fn site() -> SiteId {
    SiteId::new("gate-7").unwrap()
}

fn test_config(port: u16) -> UplinkConfig {
    UplinkConfig {
        max_batch_events: 10,
        reconnect_min_ms: 10,
        reconnect_max_ms: 200,
        keep_alive_s: 5,
        ..UplinkConfig::new("127.0.0.1", port)
    }
}

fn record(site: &SiteId, seq: u64) -> StoredRecord {
    let at = chrono::DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).unwrap();
    let event = qyt_proto::Event {
        site: site.clone(),
        seq: Seq(seq),
        observed_at: at,
        received_at: at,
        source: "test".into(),
        body: Body::Raw {
            payload: serde_json::json!({ "n": seq }),
        },
    };
    StoredRecord {
        seq: Seq(seq),
        class: EventClass::Raw,
        received_ms: at.timestamp_millis(),
        payload: encode(&event),
    }
}

/// The buffer as the uplink sees it, the store behind it (to append to, as the intake would),
/// and the deletes.
fn open_buffer(dir: &Path) -> (Arc<dyn Buffer>, Arc<dyn IntakeStore>, watch::Receiver<Seq>) {
    let (store, _) = buffer::open(Engine::Redb, dir).expect("buffer opens");
    let (acked, deleted) = watch::channel(store.acked());
    let watched = Watched {
        inner: store.clone(),
        acked,
    };
    (Arc::new(watched), store, deleted)
}

impl Agent {
    /// A buffer holding events `1..=events`, and the uplink running on it.
    fn start(cfg: UplinkConfig, events: u64) -> Agent {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let site = site();
        let (buffer, store, deleted) = open_buffer(dir.path());
        let records: Vec<StoredRecord> = (1..=events).map(|s| record(&site, s)).collect();
        store.append(&records).unwrap();
        let (durable, durable_rx) = watch::channel(buffer.next_seq());
        let metrics = Metrics::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(
            cfg,
            site.clone(),
            buffer.clone(),
            durable_rx,
            metrics.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Agent {
            site,
            buffer,
            store,
            deleted,
            durable,
            metrics,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// Makes events `from..=to` durable, as the intake does.
    fn add(&self, from: u64, to: u64) {
        let records: Vec<StoredRecord> = (from..=to).map(|s| record(&self.site, s)).collect();
        self.store.append(&records).unwrap();
        self.durable.send_replace(self.buffer.next_seq());
    }

    async fn deleted_through(&mut self, seq: u64) {
        within(
            &format!("the buffer to delete through {seq}"),
            self.deleted.wait_for(|s| s.0 >= seq),
        )
        .await
        .expect("buffer watch");
    }

    async fn stop(mut self) -> Arc<Metrics> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        within("the uplink to stop", &mut self.task)
            .await
            .expect("uplink task")
            .expect("uplink ends cleanly");
        self.metrics
    }
}

// ---- The scenarios ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_arrives_and_is_deleted_only_once_acked() {
    let broker = start_broker(broker_config("127.0.0.1:0".parse().unwrap())).await;
    let site = site();
    let mut hub = peer("hub", broker.addr.port(), vec![Topics::events(&site)]).await;
    let mut agent = Agent::start(test_config(broker.addr.port()), 25);

    let seen = hub.receive_all(&site, 1..=25).await;
    assert_eq!(
        seen,
        (1..=25).collect::<Vec<_>>(),
        "sent once each, in order"
    );
    // The broker has PUBACKed every batch; that alone deletes nothing.
    assert_eq!(agent.buffer.stats().events, 25);

    hub.ack(&site, 20, vec![]).await;
    agent.deleted_through(20).await;
    assert_eq!(agent.buffer.stats().events, 5);

    // New durable data is picked up and sent.
    agent.add(26, 30);
    hub.receive_all(&site, 26..=30).await;
    hub.ack(&site, 30, vec![]).await;
    agent.deleted_through(30).await;
    assert_eq!(agent.buffer.stats().events, 0);
    assert_eq!(agent.buffer.acked(), Seq(30));

    let m = agent.stop().await;
    assert_eq!(m.acked.load(Relaxed), 30);
    assert_eq!(m.sent.load(Relaxed), 30);
    assert!(m.batches_sent.load(Relaxed) >= 4);
    assert_eq!((m.resends.load(Relaxed), m.bad_acks.load(Relaxed)), (0, 0));
    assert_eq!(m.buffer_events.load(Relaxed), 0);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_acks_delete_nothing_and_everything_is_resent_after_the_ack_timeout() {
    let broker = start_broker(broker_config("127.0.0.1:0".parse().unwrap())).await;
    let site = site();
    let mut hub = peer("hub", broker.addr.port(), vec![Topics::events(&site)]).await;
    let cfg = UplinkConfig {
        ack_timeout_ms: 300,
        ..test_config(broker.addr.port())
    };
    let mut agent = Agent::start(cfg, 5);

    hub.receive_all(&site, 1..=5).await;
    // No ack: the same events come again, from the oldest.
    let again = hub.next_batch(&site).await;
    assert_eq!(again.events.first().map(|e| e.seq), Some(Seq(1)));
    assert_eq!(
        agent.buffer.stats().events,
        5,
        "nothing deleted without an ack"
    );
    assert_eq!(agent.buffer.acked(), Seq(0));
    assert!(agent.metrics.resends.load(Relaxed) >= 1);

    hub.ack(&site, 5, vec![]).await;
    agent.deleted_through(5).await;
    assert_eq!(agent.buffer.stats().events, 0);
    agent.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_range_reported_by_the_hub_is_resent() {
    let broker = start_broker(broker_config("127.0.0.1:0".parse().unwrap())).await;
    let site = site();
    let mut hub = peer("hub", broker.addr.port(), vec![Topics::events(&site)]).await;
    // A long ack timeout: any resend here comes from the missing range, not the timer.
    let mut agent = Agent::start(test_config(broker.addr.port()), 30);

    hub.receive_all(&site, 1..=30).await;
    // The hub pretends the second batch never reached it.
    hub.ack(&site, 10, vec![[Seq(11), Seq(20)]]).await;
    agent.deleted_through(10).await;
    let resent = hub.next_batch(&site).await;
    let seqs: Vec<u64> = resent.events.iter().map(|e| e.seq.0).collect();
    assert_eq!(seqs, (11..=20).collect::<Vec<_>>());
    assert_eq!(
        agent.buffer.stats().events,
        20,
        "the missing events are kept"
    );

    hub.ack(&site, 30, vec![]).await;
    agent.deleted_through(30).await;
    let m = agent.stop().await;
    assert_eq!(m.resends.load(Relaxed), 1);
    assert_eq!(m.sent.load(Relaxed), 40);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_foreign_acks_are_counted_and_ignored() {
    let broker = start_broker(broker_config("127.0.0.1:0".parse().unwrap())).await;
    let site = site();
    let mut hub = peer("hub", broker.addr.port(), vec![Topics::events(&site)]).await;
    let mut agent = Agent::start(test_config(broker.addr.port()), 5);
    hub.receive_all(&site, 1..=5).await;

    hub.publish_ack(&site, b"{ not json".to_vec()).await;
    hub.publish_ack(&site, br#"{"v":2,"site":"gate-7","contiguous":5}"#.to_vec())
        .await;
    let foreign = Ack {
        v: qyt_proto::PROTOCOL_VERSION,
        site: SiteId::new("gate-8").unwrap(),
        contiguous: Seq(5),
        missing: vec![],
    };
    hub.publish_ack(&site, encode(&foreign)).await;
    // Acks on one topic arrive in order: once this one is applied, the bad ones were seen.
    hub.ack(&site, 2, vec![]).await;
    agent.deleted_through(2).await;
    assert_eq!(agent.metrics.bad_acks.load(Relaxed), 3);
    assert_eq!(agent.buffer.acked(), Seq(2), "no bad ack deleted anything");
    assert_eq!(agent.buffer.stats().events, 3);
    agent.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_is_reconnected_and_unacked_events_are_resent() {
    let broker = start_broker(broker_config("127.0.0.1:0".parse().unwrap())).await;
    let addr = broker.addr;
    let site = site();
    let mut hub = peer("hub", addr.port(), vec![Topics::events(&site)]).await;
    let cfg = UplinkConfig {
        ack_timeout_ms: 500,
        ..test_config(addr.port())
    };
    let mut agent = Agent::start(cfg, 10);
    hub.receive_all(&site, 1..=10).await;
    hub.ack(&site, 4, vec![]).await;
    agent.deleted_through(4).await;

    broker.stop().await;
    let broker = start_broker(broker_config(addr)).await;
    within("the hub to resubscribe", hub.subacks.wait_for(|n| *n >= 2))
        .await
        .expect("suback");

    // Everything unacked comes again, from the oldest unacked, over the new connection.
    let seen = hub.receive_all(&site, 5..=10).await;
    assert!(!seen.contains(&4), "acked events are not resent: {seen:?}");
    assert!(agent.metrics.uplink_reconnects.load(Relaxed) >= 1);
    assert!(agent.metrics.resends.load(Relaxed) >= 1);
    hub.ack(&site, 10, vec![]).await;
    agent.deleted_through(10).await;
    assert!(agent.metrics.uplink_connected.load(Relaxed));
    agent.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_retained_online_then_offline_on_a_graceful_stop() {
    let broker = start_broker(broker_config("127.0.0.1:0".parse().unwrap())).await;
    let site = site();
    let cfg = UplinkConfig {
        status_interval_s: 1,
        ..test_config(broker.addr.port())
    };
    let agent = Agent::start(cfg, 3);
    let mut watcher = peer("watcher", broker.addr.port(), vec![Topics::status(&site)]).await;
    let mut online = watcher.next_status(&site).await;
    // The retained status from the ConnAck may predate the buffer's figures; the periodic
    // refresh carries them.
    while online.buffered_events != 3 {
        online = watcher.next_status(&site).await;
    }
    assert_eq!(online.state, Presence::Online);
    assert_eq!(online.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(online.oldest_unacked_age_s.is_some());

    agent.stop().await;
    let offline = loop {
        let s = watcher.next_status(&site).await;
        if s.state == Presence::Offline {
            break s;
        }
    };
    assert_eq!(offline.site, site);
    // Retained: a client arriving later sees it too.
    let mut late = peer("late", broker.addr.port(), vec![Topics::status(&site)]).await;
    assert_eq!(late.next_status(&site).await.state, Presence::Offline);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_will_says_offline_when_the_agent_vanishes() {
    let broker = start_broker(broker_config("127.0.0.1:0".parse().unwrap())).await;
    let site = site();
    let agent = Agent::start(test_config(broker.addr.port()), 1);
    let mut watcher = peer("watcher", broker.addr.port(), vec![Topics::status(&site)]).await;
    assert_eq!(watcher.next_status(&site).await.state, Presence::Online);
    // Dropping the uplink's future (as an abort does) drops its connection without a DISCONNECT.
    agent.task.abort();
    let will = loop {
        let s = watcher.next_status(&site).await;
        if s.state == Presence::Offline {
            break s;
        }
    };
    assert_eq!(will.site, site);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let pki = qyt_tls::test_pki::make_pki(dir.path(), &["127.0.0.1"]);
    let broker_tls =
        mqtt5::broker::config::TlsConfig::new(pki.server_cert.clone(), pki.server_key.clone())
            .with_ca_file(pki.ca.clone())
            .with_require_client_cert(true)
            .with_bind_address("127.0.0.1:0".parse::<SocketAddr>().unwrap());
    let broker =
        start_broker(broker_config("127.0.0.1:0".parse().unwrap()).with_tls(broker_tls)).await;
    let tls_port = broker.tls_addr.expect("TLS listener").port();
    let site = site();
    // The scripted hub uses the plain listener; the agent only TLS.
    let mut hub = peer("hub", broker.addr.port(), vec![Topics::events(&site)]).await;
    let cfg = UplinkConfig {
        tls: Some(TlsConfig {
            ca_file: pki.ca.clone(),
            client_cert_file: Some(pki.client_cert.clone()),
            client_key_file: Some(pki.client_key.clone()),
            server_name: None,
        }),
        ..test_config(tls_port)
    };
    let mut agent = Agent::start(cfg, 3);
    hub.receive_all(&site, 1..=3).await;
    hub.ack(&site, 3, vec![]).await;
    agent.deleted_through(3).await;
    agent.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_verifies_a_broker_reached_by_ip_against_its_dns_name() {
    let dir = tempfile::tempdir().unwrap();
    // The broker's certificate names only broker.test, and the agent connects to 127.0.0.1.
    let pki = qyt_tls::test_pki::make_pki(dir.path(), &["broker.test"]);
    let broker_tls =
        mqtt5::broker::config::TlsConfig::new(pki.server_cert.clone(), pki.server_key.clone())
            .with_bind_address("127.0.0.1:0".parse::<SocketAddr>().unwrap());
    let broker =
        start_broker(broker_config("127.0.0.1:0".parse().unwrap()).with_tls(broker_tls)).await;
    let tls_port = broker.tls_addr.expect("TLS listener").port();
    let site = site();
    let mut hub = peer("hub", broker.addr.port(), vec![Topics::events(&site)]).await;
    let tls = TlsConfig {
        ca_file: pki.ca.clone(),
        client_cert_file: None,
        client_key_file: None,
        server_name: Some("broker.test".into()),
    };
    let cfg = UplinkConfig {
        tls: Some(tls),
        ..test_config(tls_port)
    };
    let mut agent = Agent::start(cfg, 2);
    hub.receive_all(&site, 1..=2).await;
    hub.ack(&site, 2, vec![]).await;
    agent.deleted_through(2).await;
    agent.stop().await;
    broker.stop().await;
}

#[tokio::test]
async fn a_missing_ca_file_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, _, _) = open_buffer(dir.path());
    let (_durable, durable_rx) = watch::channel(Seq(1));
    let cfg = UplinkConfig {
        tls: Some(TlsConfig {
            ca_file: dir.path().join("missing-ca.pem"),
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
        }),
        // Nothing listens here; the error must come before any attempt.
        ..UplinkConfig::new("127.0.0.1", 9)
    };
    let err = run(
        cfg,
        site(),
        buffer,
        durable_rx,
        Metrics::new(),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("uplink.tls.ca_file") && text.contains("missing-ca.pem"),
        "{text}"
    );
}
