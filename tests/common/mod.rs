//! Harness for the cross-process tests: the hub and the agent as real processes from the
//! workspace's binaries, a real gateway broker, real devices publishing over MQTT, and the
//! hub's HTTP API as the observer.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod broker;
pub mod device;
pub mod process;

use broker::GatewayBroker;
use process::{wait_until, Proc};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const SITE: &str = "demo-gate-01";
pub const SITE_PASSWORD: &str = "demo-gate-01-password";
pub const TOKEN: &str = "demo-operator-token";

/// The `[[api.tokens]]` and `[[sites]]` of the shipped config/hub.toml (the demo credentials
/// above), so the tests also prove the shipped hashes match the documented plain values.
fn shipped_hub_auth() -> String {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hub.toml"))
            .unwrap();
    let start = shipped
        .find("[[api.tokens]]")
        .expect("shipped hub.toml has [[api.tokens]]");
    shipped[start..].to_string()
}

/// A `qyt-*` process started from a config file, ready once its `/healthz` answers 200.
pub struct Service {
    pub proc: Proc,
    pub http: SocketAddr,
    pub config: PathBuf,
    binary: &'static str,
}

impl Service {
    fn start(binary: &'static str, config: PathBuf, http: SocketAddr) -> Service {
        let mut service = Service {
            proc: Self::spawn(binary, &config),
            http,
            config,
            binary,
        };
        service.wait_ready();
        service
    }

    fn spawn(binary: &'static str, config: &Path) -> Proc {
        let name = binary.trim_start_matches("qyt-");
        Proc::spawn(
            name,
            binary,
            &["--config", config.to_str().unwrap()],
            config.parent().unwrap(),
        )
    }

    /// Starts the process again with the same config (after a kill or a stop).
    pub fn restart(&mut self) {
        self.proc = Self::spawn(self.binary, &self.config);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let url = format!("http://{}/healthz", self.http);
        let (proc, binary) = (&mut self.proc, self.binary);
        wait_until(60, &format!("{binary} to be ready"), || {
            assert!(proc.is_running(), "{binary} exited: {}", proc.log_text());
            ureq::get(&url)
                .call()
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        });
    }

    pub fn metric(&self, name: &str) -> f64 {
        scrape(self.http, name)
    }
}

pub struct Hub {
    pub service: Service,
    pub broker: SocketAddr,
}

impl std::ops::Deref for Hub {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl std::ops::DerefMut for Hub {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.service
    }
}

impl Hub {
    /// A hub with its embedded broker (or `external` broker URL), on fixed free ports so that
    /// a restart comes back where the agent expects it.
    pub fn start(dir: &Path, external: Option<SocketAddr>) -> Hub {
        Hub::start_with(dir, external, "")
    }

    /// [`Hub::start`] with more TOML after the `[broker]` keys (e.g. a `[broker.tls]` table).
    pub fn start_with(dir: &Path, external: Option<SocketAddr>, broker_extra: &str) -> Hub {
        let broker =
            external.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], broker::free_port())));
        let broker_section = match external {
            Some(addr) => format!("url = \"mqtt://{addr}\"\n"),
            None => format!("listen = \"{broker}\"\nallow_anonymous = false\n"),
        };
        Hub::start_config(dir, broker, &format!("{broker_section}\n{broker_extra}"))
    }

    /// A hub whose `[broker]` table is `broker_toml`; agents reach its broker at `broker`.
    pub fn start_config(dir: &Path, broker: SocketAddr, broker_toml: &str) -> Hub {
        let http = SocketAddr::from(([127, 0, 0, 1], broker::free_port()));
        let config = dir.join("hub.toml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            &config,
            format!(
                "[broker]\n{broker_toml}\n[store]\npath = \"{}\"\n\n[http]\nlisten = \"{http}\"\n\n{}",
                dir.join("hub.db").display(),
                shipped_hub_auth()
            ),
        )
        .unwrap();
        Hub {
            service: Service::start("qyt-hub", config, http),
            broker,
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let mut resp = ureq::get(&format!("http://{}{path}", self.http))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        resp.body_mut().read_json().unwrap()
    }

    /// The `/api/sites` entry of the test site.
    pub fn site(&self) -> Value {
        let sites = self.get("/api/sites");
        sites
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == SITE)
            .cloned()
            .expect("the test site is listed")
    }

    pub fn stored(&self) -> u64 {
        self.site()["stored_events"].as_u64().unwrap()
    }

    /// Every stored event of the test site, in seq order, read through the paged API.
    pub fn events(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get(&format!(
                "/api/sites/{SITE}/events?after={after}&limit=1000"
            ));
            let page = page.as_array().unwrap().clone();
            if page.is_empty() {
                return all;
            }
            after = page.last().unwrap()["seq"].as_u64().unwrap();
            all.extend(page);
        }
    }

    /// The seal ids of the stored seal events, in seq order.
    pub fn events_kind_seal_ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["kind"] == "seal")
            .filter_map(|e| e["seal_id"].as_str().map(String::from))
            .collect()
    }
}

/// Sum of a Prometheus metric's samples whose name and labels start with `name`.
pub fn scrape(http: SocketAddr, name: &str) -> f64 {
    let text = ureq::get(&format!("http://{http}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub struct Agent {
    pub service: Service,
}

impl std::ops::Deref for Agent {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Service {
        &mut self.service
    }
}

impl Agent {
    /// An agent for the test site whose uplink goes to `hub_broker`, with `sources` (TOML of
    /// [[source]] tables) and extra `[buffer]` keys.
    pub fn start(
        dir: &Path,
        hub_broker: SocketAddr,
        anonymous: bool,
        buffer_extra: &str,
        sources: &str,
    ) -> Agent {
        Agent::start_with_uplink(dir, hub_broker, anonymous, buffer_extra, sources, "")
    }

    /// [`Agent::start`] with more TOML after the `[uplink]` keys (e.g. an `[uplink.tls]` table).
    pub fn start_with_uplink(
        dir: &Path,
        hub_broker: SocketAddr,
        anonymous: bool,
        buffer_extra: &str,
        sources: &str,
        uplink_extra: &str,
    ) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        let http = SocketAddr::from(([127, 0, 0, 1], broker::free_port()));
        let login = if anonymous {
            String::new()
        } else {
            format!("username = \"{SITE}\"\npassword = \"{SITE_PASSWORD}\"\n")
        };
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "site = \"{SITE}\"\n\n[buffer]\ndir = \"{}\"\n{buffer_extra}\n\n[uplink]\nhost = \"{}\"\nport = {}\n{login}\
                 ack_timeout_ms = 3000\nreconnect_min_ms = 50\nreconnect_max_ms = 500\nstatus_interval_s = 1\n{uplink_extra}\n\
                 [http]\nlisten = \"{http}\"\n\n{sources}",
                dir.join("buffer").display(),
                hub_broker.ip(),
                hub_broker.port()
            ),
        )
        .unwrap();
        Agent {
            service: Service::start("qyt-agent", config, http),
        }
    }
}

/// The `[[source]]` of an agent reading test devices from the gateway broker at `gw`.
pub fn mqtt_source(gw: SocketAddr) -> String {
    format!(
        "[[source]]\ntype = \"mqtt\"\nname = \"gateway\"\nhost = \"{}\"\nport = {}\n{}",
        gw.ip(),
        gw.port(),
        device::AGENT_TOPIC_MAPPING
    )
}

/// Asserts the hub holds exactly the device messages `expected` (by message id), each once,
/// with seqs that are unique and ascending.
pub fn assert_exactly_once(hub: &Hub, expected: &[String]) {
    let events = hub.events();
    let mut seen = std::collections::HashMap::new();
    let mut last_seq = 0;
    for e in &events {
        let seq = e["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "seqs not ascending at {seq}");
        last_seq = seq;
        if e["kind"] == "seal" {
            let id = e["seal_id"].as_str().unwrap().to_string();
            if let Some(prev) = seen.insert(id.clone(), seq) {
                panic!("device message {id} stored twice: seq {prev} and seq {seq}");
            }
        }
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} device messages never reached the hub, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        seen.len(),
        expected.len(),
        "the hub holds seal events no device sent"
    );
}

/// Publishes one message and waits until the hub has it: proves the agent's subscription on
/// the gateway broker is in place before a test's real traffic starts.
pub fn prime(gw: &GatewayBroker, hub: &Hub) -> String {
    let mut probe = device::Device::connect(gw.addr(), "probe");
    let before = hub.stored();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut i = 0;
    // The first probe may be published before the agent's subscription exists (then the broker
    // has no session to keep it in); keep probing until one arrives.
    loop {
        probe.publish_range(i, i + 1);
        i += 1;
        let arrived = (0..40).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(25));
            hub.stored() > before
        });
        if arrived {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never forwarded a probe message"
        );
    }
    // Probes published before the subscription existed are lost for good; later ones may still
    // be on their way. A sentinel settles it: messages of one device keep their order through
    // broker, agent (seq order) and hub, so once the sentinel is stored with nothing missing
    // below it, every probe that will ever arrive has arrived.
    probe.publish_range(i, i + 1);
    let sentinel = probe.id(i);
    process::wait_until(
        60,
        "the sentinel probe stored with nothing missing below it",
        || {
            let seq = hub
                .events()
                .iter()
                .find(|e| e["seal_id"] == sentinel.as_str())
                .and_then(|e| e["seq"].as_u64())?;
            (hub.site()["contiguous_seq"].as_u64()? >= seq).then_some(())
        },
    );
    probe.wait_all_acked(30);
    sentinel
}

pub fn probe_ids(hub: &Hub) -> Vec<String> {
    hub.events()
        .iter()
        .filter_map(|e| {
            e["seal_id"]
                .as_str()
                .filter(|s| s.starts_with("probe-"))
                .map(String::from)
        })
        .collect()
}

pub fn setup(dir: &Path) -> (GatewayBroker, Hub, Agent) {
    let gw = GatewayBroker::start(&dir.join("gateway"));
    let hub = Hub::start(&dir.join("hub"), None);
    let agent = Agent::start(
        &dir.join("agent"),
        hub.broker,
        false,
        "",
        &mqtt_source(gw.addr()),
    );
    prime(&gw, &hub);
    (gw, hub, agent)
}
