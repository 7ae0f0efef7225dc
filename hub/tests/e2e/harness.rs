//! The test harness: a real hub on ephemeral ports over a SQLite file in a temp dir, fake
//! agents speaking MQTT 3.1.1 through rumqttc, and a minimal HTTP client.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::DateTime;
use qyt_hub::clock::{Clock, SystemClock};
use qyt_hub::config::{ApiToken, BrokerUrl, SiteConfig};
use qyt_hub::supervision::service::Supervision;
use qyt_hub::{Config, Hub, HubError};
use qyt_proto::{
    decode_ack, encode, Ack, AgentStatus, Batch, Body, DropReason, Event, GapBody, Presence,
    SealId, SealReading, SealState, Seq, SiteId, Topics, PROTOCOL_VERSION,
};
use rumqttc::{
    AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode,
};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-operator-token";
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Tokens of two enterprises, `acme` and `globex`.
pub const ACME_TOKEN: &str = "test-acme-token";
pub const GLOBEX_TOKEN: &str = "test-globex-token";
pub const SITES: [&str; 3] = ["gate-a", "gate-b", "gate-c"];
/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn password(site: &str) -> String {
    format!("pw-{site}")
}

/// Argon2 at minimal cost, so debug-build tests do not spend seconds hashing.
fn cheap_hash(password: &str) -> String {
    let params = Params::new(Params::MIN_M_COST, 1, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A config for tests: every port 0, the database under `dir`.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.broker.listen = "127.0.0.1:0".parse().unwrap();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.store.path = dir.join("hub.db");
    c.api.tokens = [
        ("tests", TOKEN, "operator"),
        ("admin", ADMIN_TOKEN, "admin"),
        ("acme", ACME_TOKEN, "enterprise:acme"),
        ("globex", GLOBEX_TOKEN, "enterprise:globex"),
    ]
    .into_iter()
    .map(|(name, token, role)| ApiToken {
        name: name.into(),
        sha256: hex::encode(qyt_hub::secret::token_digest(token)),
        role: Some(role.parse().unwrap()),
    })
    .collect();
    c.sites = SITES
        .iter()
        .map(|s| SiteConfig {
            id: SiteId::new(*s).unwrap(),
            mqtt_password_hash: Some(cheap_hash(&password(s))),
            area: None,
        })
        .collect();
    c
}

/// A hub running in this process until [`TestHub::stop`].
pub struct TestHub {
    /// The embedded broker, or the external one the hub uses.
    pub broker: SocketAddr,
    pub http: SocketAddr,
    pub supervision: Supervision,
    pub webhooks: qyt_hub::webhook::sender::Sender,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), HubError>>,
}

impl TestHub {
    pub async fn start(config: Config) -> TestHub {
        TestHub::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// A hub whose supervision runs on `clock` (a `ManualClock` the test moves).
    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> TestHub {
        let external = config.broker.url.as_deref().map(|url| {
            let url = BrokerUrl::parse(url).unwrap();
            SocketAddr::new(url.host.parse().unwrap(), url.port)
        });
        let hub = Hub::start_with_clock(config, clock)
            .await
            .expect("hub starts");
        let supervision = hub.supervision();
        let webhooks = hub.webhooks();
        let broker = external.or(hub.broker_addr()).unwrap();
        let http = hub.http_addr();
        within("the hub to subscribe", hub.ready()).await;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(hub.run_until(async {
            stopped.await.ok();
        }));
        TestHub {
            broker,
            http,
            supervision,
            webhooks,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        within("the hub to stop", self.task)
            .await
            .unwrap()
            .expect("clean shutdown");
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        http_get(self.http, path, Some(TOKEN)).await
    }

    /// A request as `token`'s holder.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        http(self.http, method, path, Some(token), body.as_ref()).await
    }

    pub async fn site(&self, site: &str) -> serde_json::Value {
        let (status, sites) = self.get("/api/sites").await;
        assert_eq!(status, 200, "{sites}");
        sites
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == site)
            .cloned()
            .unwrap_or_else(|| panic!("site {site} missing from {sites}"))
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get_text(self.http, "/metrics", None).await;
        assert_eq!(status, 200);
        body
    }

    /// The value of one metric line, e.g. `qyt_hub_events_stored_total`.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }
}

/// Fails the test if `fut` takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` until it holds, failing the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub enum AgentEvent {
    Ack(Ack),
    PubAck,
    /// Whether the broker granted a subscription.
    SubAck(bool),
}

/// A fake agent: an MQTT 3.1.1 client logged in as its site.
pub struct Agent {
    pub site: SiteId,
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    task: JoinHandle<()>,
}

impl Agent {
    pub async fn connect(broker: SocketAddr, site: &str) -> Agent {
        Agent::connect_as(broker, site, Some((site.to_string(), password(site)))).await
    }

    /// Connects with the given login (or anonymously) and subscribes to the site's acks.
    pub async fn connect_as(
        broker: SocketAddr,
        site: &str,
        login: Option<(String, String)>,
    ) -> Agent {
        let site = SiteId::new(site).unwrap();
        let mut options = MqttOptions::new(
            format!("agent-{site}"),
            broker.ip().to_string(),
            broker.port(),
        );
        options.set_max_packet_size(16 << 20, 16 << 20);
        options.set_keep_alive(Duration::from_secs(5));
        let will = encode(&AgentStatus {
            v: PROTOCOL_VERSION,
            site: site.clone(),
            state: Presence::Offline,
            agent_version: String::new(),
            uptime_s: 0,
            buffered_events: 0,
            buffered_bytes: 0,
            oldest_unacked_age_s: None,
            sources: vec![],
        });
        options.set_last_will(LastWill::new(
            Topics::status(&site),
            will,
            QoS::AtLeastOnce,
            true,
        ));
        if let Some((user, pw)) = login {
            options.set_credentials(user, pw);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed) = oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let acks_topic = Topics::acks(&site);
        client
            .subscribe(&acks_topic, QoS::AtLeastOnce)
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::SubAck(s))) => {
                        let ok = matches!(s.return_codes[..], [SubscribeReasonCode::Success(_)]);
                        match subscribed_tx.take() {
                            Some(first) => drop(first.send(ok)),
                            None => drop(tx.send(AgentEvent::SubAck(ok))),
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) if p.topic == acks_topic => {
                        let _ = tx.send(AgentEvent::Ack(
                            decode_ack(&p.payload).expect("acks decode"),
                        ));
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                        let _ = tx.send(AgentEvent::PubAck);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("agent connection failed: {e}"),
                }
            }
        });
        let ok = within("the agent's subscription", subscribed)
            .await
            .unwrap();
        assert!(ok, "broker refused {site}'s subscription to its own acks");
        Agent {
            site,
            client,
            events,
            task,
        }
    }

    /// Publishes `payload` on this site's events topic.
    pub async fn send(&self, payload: Vec<u8>) {
        self.send_to(&Topics::events(&self.site), payload, false)
            .await;
    }

    pub async fn send_to(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }

    /// Waits for the broker to confirm `n` of this agent's publishes.
    pub async fn puback(&mut self, mut n: usize) {
        while n > 0 {
            if let AgentEvent::PubAck = self.next().await {
                n -= 1;
            }
        }
    }

    /// Whether the broker granted this agent's next subscription.
    pub async fn suback(&mut self) -> bool {
        loop {
            if let AgentEvent::SubAck(ok) = self.next().await {
                return ok;
            }
        }
    }

    /// The next ack for which `pred` holds (earlier ones are skipped).
    pub async fn ack_where(&mut self, pred: impl Fn(&Ack) -> bool) -> Ack {
        loop {
            if let AgentEvent::Ack(ack) = self.next().await {
                if pred(&ack) {
                    return ack;
                }
            }
        }
    }

    async fn next(&mut self) -> AgentEvent {
        within("an event for the agent", self.events.recv())
            .await
            .expect("agent event loop alive")
    }

    /// Publishes its online status, retained, as the agent does.
    pub async fn online(&self, buffered_events: u64) {
        self.status(Presence::Online, buffered_events, None).await;
    }

    /// Publishes a status, retained; `offline` is what its last will would say.
    pub async fn status(
        &self,
        state: Presence,
        buffered_events: u64,
        oldest_unacked_age_s: Option<f64>,
    ) {
        let status = AgentStatus {
            v: PROTOCOL_VERSION,
            site: self.site.clone(),
            state,
            agent_version: "test-agent 0.0".into(),
            uptime_s: 1,
            buffered_events,
            buffered_bytes: buffered_events * 200,
            oldest_unacked_age_s,
            sources: vec![],
        };
        self.send_to(&Topics::status(&self.site), encode(&status), true)
            .await;
    }

    /// Drops the connection without DISCONNECT, as a crashing agent or a cut cable would.
    pub fn vanish(self) {
        self.task.abort();
    }
}

pub fn seal_event(site: &str, seq: u64) -> Event {
    Event {
        site: SiteId::new(site).unwrap(),
        seq: Seq(seq),
        observed_at: DateTime::from_timestamp(1_700_000_000 + seq as i64, 0).unwrap(),
        received_at: DateTime::from_timestamp(1_700_000_001 + seq as i64, 0).unwrap(),
        source: "seal-reader-1".into(),
        body: Body::Seal(SealReading {
            seal_id: SealId(format!("CN{seq:06}")),
            state: SealState::Opened,
            battery_pct: Some(80.0),
            device_id: None,
        }),
    }
}

pub fn gap_event(site: &str, seq: u64, dropped: impl IntoIterator<Item = u64>) -> Event {
    let mut e = seal_event(site, seq);
    e.body = Body::Gap(GapBody::from_sorted(
        dropped.into_iter().map(Seq),
        DropReason::BufferFull,
    ));
    e
}

pub fn batch_of(site: &str, events: Vec<Event>) -> Vec<u8> {
    encode(&Batch {
        v: PROTOCOL_VERSION,
        site: SiteId::new(site).unwrap(),
        events,
    })
}

/// An encoded batch of seal events with the given seqs.
pub fn batch(site: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
    batch_of(
        site,
        seqs.into_iter().map(|s| seal_event(site, s)).collect(),
    )
}

pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, body) = http_get_text(addr, path, token).await;
    let json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, json)
}

/// A bare HTTP/1.1 GET, enough for an API that answers with Content-Length.
pub async fn http_get_text(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    http_text(addr, "GET", path, token, None).await
}

/// Any request with an optional JSON body; the answer parsed as JSON.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = http_text(addr, method, path, token, body).await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, json)
}

pub async fn http_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let content = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n{auth}{content}\r\n{body}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    within("the HTTP response", stream.read_to_string(&mut raw))
        .await
        .unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("HTTP response has a body separator");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}
