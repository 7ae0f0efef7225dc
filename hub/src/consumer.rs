//! The hub's MQTT client: takes batches and status messages off the broker, validates them and
//! queues them for the writer; sends the writer's acks back.
//!
//! rumqttc only makes progress while its event loop is polled, so the task polling it never
//! awaits a client request (that deadlocks once the request channel is full): subscribing is
//! spawned, acks go through their own task. Connection errors are retried with capped backoff,
//! because `poll()` itself retries at once and would spin.

use crate::metrics::Metrics;
use crate::store::Job;
use crate::validate::{Rejection, Validator};
use qyt_proto::{encode, Ack, Topics};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, info_span, warn, Instrument};

/// How the consumer reaches the broker.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
    /// TLS to an external `mqtts://` broker.
    pub tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
}

/// Prepares the connection. Returns the client for sending acks, a flag that is true while the
/// hub is subscribed, and the event loop future, which connects and keeps the hub connected
/// until [`send_acks`] disconnects it.
pub fn connect(
    settings: Settings,
    validator: Validator,
    metrics: Arc<Metrics>,
    jobs: mpsc::Sender<Job>,
) -> (
    AsyncClient,
    watch::Receiver<bool>,
    impl Future<Output = ()> + Send,
) {
    let mut options = MqttOptions::new(settings.client_id, settings.host, settings.port);
    options
        .set_keep_alive(settings.keep_alive)
        // A persistent session: QoS 1 batches published while the hub was away are kept for it.
        .set_clean_session(false)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes);
    if let Some((user, password)) = settings.credentials {
        options.set_credentials(user, password);
    }
    if let Some(tls) = settings.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    // Acks are small and agents wait for them; Nagle's algorithm delayed them by tens of ms.
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (subscribed_tx, subscribed) = watch::channel(false);
    let intake = Intake {
        validator,
        metrics,
        jobs: Some(jobs),
    };
    let drive = drive(eventloop, client.clone(), intake, subscribed_tx);
    (client, subscribed, drive)
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mut intake: Intake,
    subscribed: watch::Sender<bool>,
) {
    let mut backoff = Backoff::default();
    let mut disconnecting = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                // Every time: a broker that lost the session (restart, expiry) forgot them.
                let client = client.clone();
                tokio::spawn(async move {
                    let filters = [Topics::ALL_EVENTS, Topics::ALL_STATUS]
                        .map(|t| SubscribeFilter::new(t.to_string(), QoS::AtLeastOnce));
                    if let Err(e) = client.subscribe_many(filters).await {
                        warn!(error = %e, "cannot request the subscriptions; the event loop has stopped");
                    }
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if ok {
                    info!("subscribed to every site's events and status");
                    subscribed.send_replace(true);
                } else {
                    error!(
                        codes = ?ack.return_codes,
                        "the broker refused the hub's subscriptions: allow its user to read \
                         qyt/v1/site/+/events and qyt/v1/site/+/status"
                    );
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => intake.handle(p).await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                disconnecting = true;
                subscribed.send_replace(false);
            }
            Ok(_) => {}
            Err(_) if disconnecting => break,
            Err(e) => {
                subscribed.send_replace(false);
                let wait = backoff.next();
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "MQTT connection lost or refused; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
    info!("disconnected from the MQTT broker");
}

/// Validates incoming messages and queues the good ones for the writer.
struct Intake {
    validator: Validator,
    metrics: Arc<Metrics>,
    /// `None` once the writer has stopped taking work (shutdown).
    jobs: Option<mpsc::Sender<Job>>,
}

impl Intake {
    async fn handle(&mut self, p: Publish) {
        let topic = p.topic;
        if Topics::site_of(&topic, "status").is_some() {
            if p.payload.is_empty() {
                // Someone cleared a retained status; there is nothing to record.
                return;
            }
            let checked = self
                .validator
                .site_of_topic(&topic, "status")
                .and_then(|site| self.validator.status(&site, &p.payload));
            match checked {
                Ok(status) => {
                    self.metrics.status_received();
                    let span = info_span!("status", site = %status.site, state = ?status.state);
                    self.queue(Job::Status(status)).instrument(span).await;
                }
                Err(e) => {
                    self.metrics.status_rejected();
                    warn!(topic, reason = e.reason().as_str(), "rejected status: {e}");
                }
            }
            return;
        }
        let checked = self
            .validator
            .site_of_topic(&topic, "events")
            .and_then(|site| self.validator.batch(&site, &p.payload));
        match checked {
            Ok(batch) => {
                let span = info_span!(
                    "batch",
                    site = %batch.site,
                    seq = batch.events.first().map(|e| e.seq.0),
                    last_seq = batch.events.last().map(|e| e.seq.0),
                );
                self.queue(Job::Batch(batch)).instrument(span).await;
            }
            Err(e) => self.reject(&topic, &e),
        }
    }

    fn reject(&self, topic: &str, e: &Rejection) {
        self.metrics.rejected(e.reason());
        let site = Topics::site_of(topic, "events").unwrap_or("");
        warn!(
            site,
            topic,
            reason = e.reason().as_str(),
            "rejected batch: {e}"
        );
    }

    async fn queue(&mut self, job: Job) {
        let Some(jobs) = &self.jobs else {
            debug!("hub is stopping; message dropped, the agent resends it until acked");
            return;
        };
        // Waits while the writer is behind: back-pressure reaches the broker instead of memory.
        if jobs.send(job).await.is_err() {
            debug!("hub is stopping; message dropped, the agent resends it until acked");
            self.jobs = None;
        }
    }
}

/// Publishes the writer's acks, then disconnects once the writer is done (its channel closes).
pub async fn send_acks(
    client: AsyncClient,
    mut acks: mpsc::UnboundedReceiver<Ack>,
    metrics: Arc<Metrics>,
) {
    while let Some(ack) = acks.recv().await {
        let topic = Topics::acks(&ack.site);
        if let Err(e) = client
            .publish(topic, QoS::AtLeastOnce, false, encode(&ack))
            .await
        {
            error!(site = %ack.site, error = %e, "cannot queue an ack: the MQTT event loop has stopped");
            return;
        }
        metrics.ack_sent();
    }
    if let Err(e) = client.disconnect().await {
        debug!(error = %e, "MQTT event loop already stopped");
    }
}

/// Doubling delay between reconnection attempts, from 100 ms up to 10 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        now
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..9).map(|_| b.next().as_millis()).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        b.reset();
        assert_eq!(b.next(), Backoff::FIRST);
    }
}
