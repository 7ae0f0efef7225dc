//! Assembling the hub: store, broker, MQTT consumer, ingest writer and HTTP API, started in an
//! order that never leaves half a service running, and stopped in one that loses nothing.
//!
//! Everything that can fail at start (config, database, binding the ports, reading secrets)
//! happens before the first task is spawned.

use crate::access::{Role, TokenBook};
use crate::api::{self, ApiState};
use crate::broker::{BrokerError, Embedded, HUB_USER};
use crate::clock::{Clock, SystemClock};
use crate::config::{BrokerUrl, Config, ConfigIssue};
use crate::consumer::{self, Settings};
use crate::ingest::{IngestError, Writer};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{Reader, Store, StoreError};
use crate::supervision::service::Supervision;
use crate::validate::Validator;
use crate::webhook::sender::Sender;
use qyt_proto::SiteId;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long a stopping hub waits to hand its last acks to the broker. Acks not delivered are not
/// lost work: the agents keep those events and resend them.
const ACK_FLUSH_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid configuration:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigIssue>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("cannot read the hub's MQTT password from {path}: {source} (broker.password_file)")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}: {source} (is http.listen free?)")]
    HttpBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("the hub's {0} stopped unexpectedly")]
    Ended(&'static str),
    #[error("the hub's {0} panicked: {1}")]
    Panicked(&'static str, String),
}

/// A running hub. Start it with [`Hub::start`], stop it with [`Hub::run_until`].
pub struct Hub {
    broker_addr: Option<SocketAddr>,
    broker_tls_addr: Option<SocketAddr>,
    http_addr: SocketAddr,
    subscribed: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    broker_shutdown: Option<mqtt5::broker::BrokerShutdownHandle>,
    writer: Part,
    acks: Part,
    consumer: Part,
    http: Part,
    broker: Part,
    supervisor: Part,
    sender: Part,
    supervision: Supervision,
    webhooks: Sender,
}

impl Hub {
    /// Validates `config`, opens the database, binds the broker and HTTP ports and starts every
    /// part. Port 0 in `broker.listen` / `http.listen` picks a free port; see [`Hub::broker_addr`]
    /// and [`Hub::http_addr`].
    pub async fn start(config: Config) -> Result<Hub, HubError> {
        Hub::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Hub::start`] with another clock: tests pass a [`crate::clock::ManualClock`] and drive
    /// the supervision timers through [`Hub::supervision`].
    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Hub, HubError> {
        let issues = config.check();
        if !issues.is_empty() {
            return Err(HubError::Config(issues));
        }
        let sites: Vec<SiteId> = config.sites.iter().map(|s| s.id.clone()).collect();
        let store = Store::open(&config.store.path)?;
        let registry = Arc::new(Registry::new(store.load(&sites)?));
        let reader = Reader::open(&config.store.path)?;
        let metrics = Arc::new(Metrics::default());
        let webhooks = Sender::open(&config.store.path, config.webhooks.clone(), clock.clone())?;
        let waker = webhooks.clone();
        let supervision = Supervision::open(
            &config.store.path,
            config.supervision.clone(),
            config
                .sites
                .iter()
                .map(|s| (s.id.clone(), s.area))
                .collect(),
            registry.clone(),
            metrics.clone(),
            clock.clone(),
            Arc::new(move || waker.wake()),
        )?;
        let tokens = TokenBook::open(
            Store::writer(&config.store.path)?,
            token_digests(&config),
            clock.clone(),
        )?;

        let (embedded, settings) = match &config.broker.url {
            None => {
                let password = hex::encode(rand::random::<[u8; 16]>());
                let embedded = Embedded::bind(&config, &password).await?;
                let addr = embedded.local_addr();
                let settings = settings(
                    &config,
                    loopback_for(addr.ip()).to_string(),
                    addr.port(),
                    Some((HUB_USER.to_string(), password)),
                    // The consumer reaches the embedded broker over loopback.
                    None,
                );
                (Some(embedded), settings)
            }
            Some(url) => {
                let url = BrokerUrl::parse(url).map_err(|message| {
                    HubError::Config(vec![ConfigIssue {
                        key: "broker.url".into(),
                        line: None,
                        message,
                    }])
                })?;
                let credentials = match (&config.broker.username, &config.broker.password_file) {
                    (Some(user), Some(path)) => {
                        let password = std::fs::read_to_string(path).map_err(|source| {
                            HubError::PasswordFile {
                                path: path.clone(),
                                source,
                            }
                        })?;
                        Some((
                            user.clone(),
                            password.trim_end_matches(['\r', '\n']).to_string(),
                        ))
                    }
                    (Some(user), None) => Some((user.clone(), String::new())),
                    _ => None,
                };
                let tls = match (&config.broker.external_tls, url.tls) {
                    (Some(t), true) => Some(qyt_tls::client_config(t).map_err(|e| {
                        HubError::Config(vec![ConfigIssue {
                            key: "broker.external_tls".into(),
                            line: None,
                            message: e.to_string(),
                        }])
                    })?),
                    _ => None,
                };
                (
                    None,
                    settings(&config, url.host, url.port, credentials, tls),
                )
            }
        };
        let listener = TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| HubError::HttpBind {
                addr: config.http.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| HubError::HttpBind {
            addr: config.http.listen,
            source,
        })?;

        // Nothing below can fail: from here on the parts are spawned.
        let broker_addr = embedded.as_ref().map(Embedded::local_addr);
        let broker_tls_addr = embedded.as_ref().and_then(Embedded::tls_addr);
        let (broker_shutdown, broker) = match embedded {
            Some(embedded) => {
                let (shutdown, run) = embedded.run();
                let task = tokio::spawn(async move { run.await.map_err(HubError::from) });
                (Some(shutdown), Part::new("embedded broker", task))
            }
            None => (None, Part::none("embedded broker")),
        };
        let (stop, stop_rx) = watch::channel(false);
        let (jobs_tx, jobs_rx) = mpsc::channel(config.ingest.queue_batches);
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let validator = Validator::new(sites, config.ingest.max_batch_bytes);
        let (client, subscribed, drive) =
            consumer::connect(settings, validator, metrics.clone(), jobs_tx);
        let consumer = Part::new(
            "MQTT consumer",
            tokio::spawn(async move {
                drive.await;
                Ok(())
            }),
        );
        let ack_metrics = metrics.clone();
        let acks = Part::new(
            "ack sender",
            tokio::spawn(async move {
                consumer::send_acks(client, acks_rx, ack_metrics).await;
                Ok(())
            }),
        );
        let writer = Writer {
            registry: registry.clone(),
            metrics: metrics.clone(),
            acks: acks_tx,
            max_events_per_commit: config.ingest.max_events_per_commit,
            clock,
            feed: supervision.feed(),
        };
        let writer = Part::new(
            "ingest writer",
            tokio::spawn(async move {
                writer
                    .run(store, jobs_rx, stop_rx)
                    .await
                    .map_err(HubError::from)
            }),
        );
        let supervisor = Part::new(
            "supervision",
            tokio::spawn({
                let run = supervision.clone().run(stop.subscribe());
                async move {
                    run.await;
                    Ok(())
                }
            }),
        );
        let sender = Part::new(
            "webhook sender",
            tokio::spawn({
                let run = webhooks.clone().run(stop.subscribe());
                async move {
                    run.await;
                    Ok(())
                }
            }),
        );
        let state = ApiState {
            registry,
            reader: Arc::new(Mutex::new(reader)),
            metrics,
            tokens: Arc::new(tokens),
            supervision: supervision.clone(),
            subscribed: subscribed.clone(),
            stop: stop.subscribe(),
            webhooks: webhooks.clone(),
        };
        let mut http_stop = stop.subscribe();
        let http = Part::new(
            "HTTP server",
            tokio::spawn(async move {
                axum::serve(listener, api::router(state))
                    .with_graceful_shutdown(async move {
                        let _ = http_stop.wait_for(|s| *s).await;
                    })
                    .await
                    .map_err(HubError::Http)
            }),
        );
        info!(broker = ?broker_addr, broker_tls = ?broker_tls_addr, http = %http_addr, sites = config.sites.len(), "hub started");
        Ok(Hub {
            broker_addr,
            broker_tls_addr,
            http_addr,
            subscribed,
            stop,
            broker_shutdown,
            writer,
            acks,
            consumer,
            http,
            broker,
            supervisor,
            sender,
            supervision,
            webhooks,
        })
    }

    /// The running supervision, e.g. for a test to apply what is committed ([`Supervision::settle`])
    /// or run the timers now ([`Supervision::tick`]).
    pub fn supervision(&self) -> Supervision {
        self.supervision.clone()
    }

    /// The webhook sender, e.g. for a test to attempt what is due now
    /// ([`Sender::deliver_due`]).
    pub fn webhooks(&self) -> Sender {
        self.webhooks.clone()
    }

    /// Where the embedded broker listens; `None` when the hub uses an external broker.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// Where the embedded broker's TLS listener is bound, when `broker.tls` is configured.
    pub fn broker_tls_addr(&self) -> Option<SocketAddr> {
        self.broker_tls_addr
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Resolves once the hub is subscribed to the broker, i.e. ingesting. With an external
    /// broker that is down this waits until it comes up.
    pub fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut subscribed = self.subscribed.clone();
        async move {
            let _ = subscribed.wait_for(|s| *s).await;
        }
    }

    /// Runs until `shutdown` resolves (or a part fails), then stops: no new intake, queued
    /// batches committed and acked, broker and HTTP closed.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), HubError> {
        let failure = tokio::select! {
            () = shutdown => None,
            e = self.writer.ended() => Some(e),
            e = self.acks.ended() => Some(e),
            e = self.consumer.ended() => Some(e),
            e = self.http.ended() => Some(e),
            e = self.broker.ended() => Some(e),
            e = self.supervisor.ended() => Some(e),
            e = self.sender.ended() => Some(e),
        };
        if let Some(e) = &failure {
            tracing::error!(error = %e, "stopping the hub after a failure");
        }
        info!("stopping: intake closed, committing what is queued");
        self.stop.send_replace(true);
        let mut result = self.writer.join().await;
        // The ack sender ends when the writer has, then disconnects, which ends the consumer.
        let flushed = tokio::time::timeout(ACK_FLUSH_GRACE, async {
            let acks = self.acks.join().await;
            acks.and(self.consumer.join().await)
        })
        .await;
        match flushed {
            Ok(r) => result = result.and(r),
            Err(_) => {
                warn!(
                    "broker unreachable: last acks not delivered, agents will resend those events"
                );
                self.acks.abort();
                self.consumer.abort();
            }
        }
        if let Some(shutdown) = self.broker_shutdown.take() {
            shutdown.shutdown();
        }
        result = result.and(self.broker.join().await);
        result = result.and(self.http.join().await);
        result = result.and(self.supervisor.join().await);
        result = result.and(self.sender.join().await);
        info!("hub stopped");
        match failure {
            Some(e) => Err(e),
            None => result,
        }
    }
}

/// Starts a hub and runs it until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), HubError> {
    Hub::start(config).await?.run_until(shutdown).await
}

fn settings(
    config: &Config,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
) -> Settings {
    Settings {
        tls,
        host,
        port,
        client_id: config.broker.client_id.clone(),
        credentials,
        keep_alive: Duration::from_secs(config.broker.keep_alive_s),
        max_packet_bytes: config.broker.max_packet_bytes,
    }
}

/// The address the consumer dials to reach the embedded broker listening on `ip`.
fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

fn token_digests(config: &Config) -> Vec<([u8; 32], String, Role)> {
    config
        .api
        .tokens
        .iter()
        .filter_map(|t| {
            let mut digest = [0u8; 32];
            // `Config::check` has verified the hex and the role; a failure here cannot happen.
            hex::decode_to_slice(t.sha256.to_ascii_lowercase(), &mut digest).ok()?;
            Some((digest, t.name.clone(), t.role.clone()?))
        })
        .collect()
}

/// A spawned part of the hub. Before shutdown, its ending at all is a failure.
struct Part {
    name: &'static str,
    handle: Option<JoinHandle<Result<(), HubError>>>,
}

impl Part {
    fn new(name: &'static str, handle: JoinHandle<Result<(), HubError>>) -> Part {
        Part {
            name,
            handle: Some(handle),
        }
    }

    fn none(name: &'static str) -> Part {
        Part { name, handle: None }
    }

    /// Resolves when the part ends, with why that is a failure; never, if it is not running.
    async fn ended(&mut self) -> HubError {
        match self.join_inner().await {
            Some(Err(e)) => e,
            Some(Ok(())) => HubError::Ended(self.name),
            None => std::future::pending().await,
        }
    }

    /// Waits for the part to end (it was asked to) and returns its result.
    async fn join(&mut self) -> Result<(), HubError> {
        self.join_inner().await.unwrap_or(Ok(()))
    }

    async fn join_inner(&mut self) -> Option<Result<(), HubError>> {
        let handle = self.handle.as_mut()?;
        let result = match handle.await {
            Ok(r) => r,
            Err(e) => Err(HubError::Panicked(self.name, e.to_string())),
        };
        self.handle = None;
        Some(result)
    }

    fn abort(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}
