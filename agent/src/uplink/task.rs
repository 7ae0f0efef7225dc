//! The tokio side of the uplink: three tasks around one rumqttc client.
//!
//! - The **poller** owns the `EventLoop` and does nothing but poll it: awaiting
//!   `client.publish()` from the task that polls deadlocks once the request channel fills. It
//!   sleeps with capped, jittered backoff between failed polls (rumqttc retries at once, a hot
//!   loop against a dead broker), and on every ConnAck puts the ack subscription and the online
//!   status at the head of the outgoing queue (a clean session restores no subscription).
//! - The **driver** owns the [`UplinkState`] and performs its actions: reads batches from the
//!   buffer and publishes them, deletes what the hub acknowledged. Reads, publishes and deletes
//!   run as futures polled alongside everything else, so acks, connection changes and shutdown
//!   are handled while a publish waits for room in the client's queue.
//! - The **status** task refreshes the retained presence message.

use super::backoff::Backoff;
use super::state::{Action, Limits, SendOutcome, SendRequest, UplinkState};
use super::status::StatusSource;
use super::{UplinkConfig, UplinkError};
use crate::buffer::{Buffer, BufferStats, StoredRecord};
use crate::metrics::Metrics;
use qyt_proto::{Batch, Seq, SiteId, Topics};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, Publish, QoS, Request, Subscribe, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn, Instrument};

/// How long a graceful stop may take to publish the offline status and disconnect; the agent's
/// own stop allows the uplink 5 s in all.
const GRACEFUL_STOP: Duration = Duration::from_secs(3);
/// Pause after a failed buffer read or delete before touching storage again.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// Acks are small; the largest is one listing many missing ranges.
const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// MQTT's own limit. Batches are sized by `max_batch_bytes`; only a single event larger than that
/// makes a bigger one, and the client must not turn such an event into a reconnect loop.
const MAX_OUTGOING_PACKET: usize = 268_435_455;

/// What the poller tells the driver.
#[derive(Debug)]
enum LinkEvent {
    Connected,
    Disconnected,
    Ack(Vec<u8>),
}

/// The state machine's clock: tokio's, so that a paused test runtime drives it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs the uplink until `shutdown` resolves; then publishes the offline status and disconnects.
/// Returns an error only for a config that fails [`UplinkConfig::validate`] or TLS material that
/// cannot be loaded (found before connecting), or if the MQTT client dies.
pub async fn run(
    cfg: UplinkConfig,
    site: SiteId,
    buffer: Arc<dyn Buffer>,
    durable: watch::Receiver<Seq>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UplinkError> {
    cfg.validate().map_err(UplinkError::Config)?;
    let tls = cfg.tls.as_ref().map(qyt_tls::client_config).transpose()?;
    let span = tracing::info_span!("uplink", site = %site, broker = %format_args!("{}:{}", cfg.host, cfg.port));
    run_inner(cfg, tls, site, buffer, durable, metrics, shutdown)
        .instrument(span)
        .await
}

async fn run_inner(
    cfg: UplinkConfig,
    tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
    site: SiteId,
    buffer: Arc<dyn Buffer>,
    mut durable: watch::Receiver<Seq>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), UplinkError> {
    // The first status goes out with the ConnAck: give it the buffer's figures. In-memory
    // tallies and one file's metadata, short enough for an async worker.
    update_gauges(&metrics, &buffer.stats(), buffer.disk_bytes());
    let status = StatusSource::new(site.clone(), metrics.clone(), now());
    let (client, mut eventloop) =
        AsyncClient::new(mqtt_options(&cfg, &site, tls, &status), request_room(&cfg));
    // Batches and acks are small and latency matters (device → hub commit); Nagle's algorithm
    // held them back by tens of milliseconds.
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (link_tx, mut link_rx) = mpsc::channel(256);
    let stopping = Arc::new(AtomicBool::new(false));
    let poller = Poller {
        eventloop,
        link: link_tx,
        backoff: Backoff::new(
            Duration::from_millis(cfg.reconnect_min_ms),
            Duration::from_millis(cfg.reconnect_max_ms),
        ),
        metrics: metrics.clone(),
        ack_topic: Topics::acks(&site),
        status_topic: Topics::status(&site),
        status: status.clone(),
        stopping: stopping.clone(),
    };
    let mut poller = AbortOnDrop(tokio::spawn(poller.run().in_current_span()));
    let status_task = AbortOnDrop(tokio::spawn(
        status_loop(
            client.clone(),
            Topics::status(&site),
            status.clone(),
            Duration::from_secs(cfg.status_interval_s),
            metrics.clone(),
            buffer.clone(),
        )
        .in_current_span(),
    ));

    let envelope = Batch::encode_from_json(&site, std::iter::empty()).len();
    let limits = Limits {
        max_batch_events: cfg.max_batch_events,
        max_batch_payload: cfg.max_batch_bytes.saturating_sub(envelope),
        max_inflight_batches: cfg.max_inflight_batches,
        ack_timeout: Duration::from_millis(cfg.ack_timeout_ms),
        storage_retry: STORAGE_RETRY,
    };
    let next_seq = (*durable.borrow_and_update()).max(buffer.next_seq());
    let mut driver = Driver {
        state: UplinkState::new(limits, buffer.acked(), next_seq),
        buffer: buffer.clone(),
        client: client.clone(),
        site: site.clone(),
        events_topic: Topics::events(&site),
        max_batch_bytes: cfg.max_batch_bytes,
        metrics: metrics.clone(),
        sending: None,
        deleting: None,
    };
    info!(acked = %driver.state.acked(), next_seq = %next_seq, "uplink starting");

    let result = driver.run(&mut link_rx, &mut durable, shutdown).await;

    // Stop: no more batches. A batch being published is simply dropped; it is unacked, so the
    // next run sends it again (the hub dedups).
    let deadline = tokio::time::Instant::now() + GRACEFUL_STOP;
    drop(status_task);
    stopping.store(true, Relaxed);
    driver.sending = None;
    if let Some(d) = driver.deleting.take() {
        // A delete runs on a blocking thread and finishes anyway; wait so the metrics say so.
        if let Ok(done) = tokio::time::timeout_at(deadline, d).await {
            driver.deleted(done);
        }
    }
    if result.is_ok() && driver.state.is_connected() {
        let farewell = async {
            let queued = client
                .publish(
                    Topics::status(&site),
                    QoS::AtLeastOnce,
                    true,
                    status.offline_payload(),
                )
                .await
                .is_ok()
                && client.disconnect().await.is_ok();
            // The poller ends once the DISCONNECT is on the wire.
            queued && (&mut poller.0).await.is_ok()
        };
        // Acks may still arrive meanwhile: the poller must not block forwarding them.
        let drain = async {
            while link_rx.recv().await.is_some() {}
            std::future::pending::<()>().await
        };
        let clean = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                clean = farewell => clean,
                _ = drain => false,
            }
        })
        .await;
        if clean == Ok(true) {
            info!("uplink stopped: offline status published, disconnected");
        } else {
            warn!(
                "uplink stopped without a clean disconnect; the broker will publish the last will"
            );
        }
    }
    drop(poller);
    metrics.uplink_connected.store(false, Relaxed);
    result
}

/// A spawned task that ends with its owner: if the uplink's future is dropped (its task
/// aborted), the poller and the status task must not live on with the connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn mqtt_options(
    cfg: &UplinkConfig,
    site: &SiteId,
    tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
    status: &StatusSource,
) -> MqttOptions {
    let id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("qyt-agent-{site}"));
    let mut o = MqttOptions::new(id, cfg.host.clone(), cfg.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s));
    // Nothing is expected of the broker across connections: after every ConnAck the state
    // machine sends everything unacked again, and the poller resubscribes.
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    o.set_inflight(u16::try_from(request_room(cfg)).unwrap_or(u16::MAX));
    o.set_last_will(LastWill::new(
        Topics::status(site),
        status.offline_payload(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(tls) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    o
}

/// Room in the client's request queue and in its QoS 1 in-flight window: a full window of
/// batches plus status messages, so publishing waits only when the broker stops acknowledging.
fn request_room(cfg: &UplinkConfig) -> usize {
    cfg.max_inflight_batches + 16
}

struct Poller {
    eventloop: EventLoop,
    link: mpsc::Sender<LinkEvent>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    ack_topic: String,
    status_topic: String,
    status: StatusSource,
    stopping: Arc<AtomicBool>,
}

impl Poller {
    async fn run(mut self) {
        let mut connected = false;
        let mut ever_connected = false;
        let mut failures: u64 = 0;
        loop {
            let event = match self.eventloop.poll().await {
                Ok(event) => event,
                Err(e) => {
                    let was_connected = std::mem::take(&mut connected);
                    if was_connected {
                        self.metrics.uplink_connected.store(false, Relaxed);
                        if self.link.send(LinkEvent::Disconnected).await.is_err() {
                            return;
                        }
                    }
                    if self.stopping.load(Relaxed) {
                        return;
                    }
                    failures += 1;
                    let delay = self.backoff.next_delay(&mut rand::rng());
                    let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    if was_connected {
                        warn!(error = %e, retry_in_ms, "connection to the hub's broker lost; reconnecting");
                    } else {
                        warn!(error = %e, attempt = failures, retry_in_ms, "cannot connect to the hub's broker: {}", hint(&e));
                    }
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    self.backoff.reset();
                    failures = 0;
                    connected = true;
                    self.metrics.uplink_connected.store(true, Relaxed);
                    if std::mem::replace(&mut ever_connected, true) {
                        self.metrics.uplink_reconnects.fetch_add(1, Relaxed);
                    }
                    // Queued ahead of any batch: the subscription must exist before the hub can
                    // answer, and the retained status replaces the last will at once.
                    let mut online = Publish::new(
                        self.status_topic.clone(),
                        QoS::AtLeastOnce,
                        self.status.online_payload(),
                    );
                    online.retain = true;
                    self.eventloop.pending.push_front(Request::Publish(online));
                    self.eventloop
                        .pending
                        .push_front(Request::Subscribe(Subscribe::new(
                            self.ack_topic.clone(),
                            QoS::AtLeastOnce,
                        )));
                    info!("connected to the hub's broker");
                    if self.link.send(LinkEvent::Connected).await.is_err() {
                        return;
                    }
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == self.ack_topic => {
                    let forwarded = self.link.send(LinkEvent::Ack(p.payload.to_vec())).await;
                    if forwarded.is_err() {
                        return;
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    debug!(topic = %p.topic, "ignoring a message on a topic the uplink did not subscribe to");
                }
                Event::Incoming(Packet::SubAck(s))
                    if s.return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
                {
                    error!(
                        topic = %self.ack_topic,
                        "the broker refused the subscription to the ack topic: no event can be deleted until it is \
                         allowed; grant this client subscribe access to it in the broker's ACL"
                    );
                }
                Event::Outgoing(Outgoing::Disconnect) => return,
                _ => {}
            }
        }
    }
}

/// What to check for a failed connection attempt.
fn hint(e: &ConnectionError) -> &'static str {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => "check uplink.username / uplink.password and the broker's ACL",
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => "check uplink.client_id",
        ConnectionError::ConnectionRefused(_) => "the broker refused the connection",
        ConnectionError::Tls(_) => "check uplink.tls (CA file, server name, client certificate) against the broker's certificate",
        ConnectionError::Io(_) | ConnectionError::NetworkTimeout => {
            "check uplink.host / uplink.port, the network, and that the broker is running"
        }
        _ => "retrying",
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A finished read-and-publish.
struct Sent {
    req: SendRequest,
    outcome: SendOutcome,
    bytes: usize,
    read_error: Option<String>,
}

/// A finished delete: what was asked, then deleted count, stats and disk size, or the error.
type Deleted = (Seq, Result<(u64, BufferStats, u64), String>);

struct Driver {
    state: UplinkState,
    buffer: Arc<dyn Buffer>,
    client: AsyncClient,
    site: SiteId,
    events_topic: String,
    max_batch_bytes: usize,
    metrics: Arc<Metrics>,
    sending: Option<BoxFuture<Result<Sent, UplinkError>>>,
    deleting: Option<BoxFuture<Deleted>>,
}

impl Driver {
    async fn run(
        &mut self,
        link: &mut mpsc::Receiver<LinkEvent>,
        durable: &mut watch::Receiver<Seq>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), UplinkError> {
        tokio::pin!(shutdown);
        let mut durable_open = true;
        loop {
            self.perform_actions();
            let deadline = self.state.next_deadline();
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                ev = link.recv() => match ev {
                    Some(ev) => self.on_link(ev),
                    None => return Err(UplinkError::ClientGone("the event loop poller ended".into())),
                },
                changed = durable.changed(), if durable_open => match changed {
                    Ok(()) => self.state.on_durable(*durable.borrow_and_update()),
                    // The intake has stopped; what it committed is already known.
                    Err(_) => durable_open = false,
                },
                sent = in_slot(&mut self.sending) => {
                    self.sending = None;
                    self.sent(sent?);
                }
                done = in_slot(&mut self.deleting) => {
                    self.deleting = None;
                    self.deleted(done);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if self.state.tick(now()) {
                        self.metrics.resends.fetch_add(1, Relaxed);
                        warn!(from = %self.state.acked().next(), "no ack progress within the ack timeout; sending everything unacked again");
                    }
                }
            }
        }
    }

    fn perform_actions(&mut self) {
        while let Some(action) = self.state.poll_action(now()) {
            match action {
                Action::Send(req) => {
                    self.sending = Some(Box::pin(send_batch(
                        self.buffer.clone(),
                        self.client.clone(),
                        self.site.clone(),
                        self.events_topic.clone(),
                        self.max_batch_bytes,
                        req,
                    )));
                }
                Action::Delete { through } => {
                    let buffer = self.buffer.clone();
                    // Deleting commits durably (an fsync): off the async workers, so keep-alives
                    // and acks are not held up behind the disk.
                    self.deleting = Some(Box::pin(async move {
                        let done = tokio::task::spawn_blocking(move || {
                            let n = buffer.ack_through(through).map_err(|e| e.to_string())?;
                            Ok((n, buffer.stats(), buffer.disk_bytes()))
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("the delete task failed: {e}")));
                        (through, done)
                    }));
                }
            }
        }
    }

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                if self.state.on_connected() {
                    self.metrics.resends.fetch_add(1, Relaxed);
                    info!(from = %self.state.acked().next(), "connected: resending everything not yet acknowledged");
                }
            }
            LinkEvent::Disconnected => self.state.on_disconnected(),
            LinkEvent::Ack(bytes) => self.on_ack(&bytes),
        }
    }

    fn on_ack(&mut self, bytes: &[u8]) {
        let ack = match qyt_proto::decode_ack(bytes) {
            Ok(a) => a,
            Err(e) => {
                self.metrics.bad_acks.fetch_add(1, Relaxed);
                warn!(error = %e, len = bytes.len(), "ignoring an ack that cannot be decoded; check that the hub speaks this protocol version");
                return;
            }
        };
        if ack.site != self.site {
            self.metrics.bad_acks.fetch_add(1, Relaxed);
            warn!(ack_site = %ack.site, "ignoring an ack for another site on this site's ack topic; check the hub's topic routing");
            return;
        }
        let out = self.state.on_ack(ack.contiguous, &ack.missing, now());
        if out.stale {
            debug!(contiguous = %ack.contiguous, acked = %self.state.acked(), "ignoring an ack older than one already applied");
        }
        if let Some(beyond) = out.beyond_sent {
            warn!(
                contiguous = %beyond,
                sent_through = %self.state.sent_through(),
                "the hub acknowledged events this agent has not sent yet (another agent with this site id, or a hub \
                 restored from elsewhere?); applying the ack only up to what was sent"
            );
        }
        if out.resend_queued {
            self.metrics.resends.fetch_add(1, Relaxed);
            info!(missing = ?ack.missing, "the hub reports missing events; resending them");
        }
    }

    fn sent(&mut self, s: Sent) {
        if let Some(e) = &s.read_error {
            error!(error = %e, from = %s.req.from, "cannot read events from the buffer; retrying shortly");
        }
        if let SendOutcome::Published(seqs) = &s.outcome {
            self.metrics.sent.fetch_add(seqs.len() as u64, Relaxed);
            self.metrics.batches_sent.fetch_add(1, Relaxed);
            debug!(from = %s.req.from, events = seqs.len(), bytes = s.bytes, kind = ?s.req.kind, "batch published");
        }
        self.state.on_sent(s.req, s.outcome, now());
    }

    fn deleted(&mut self, (through, done): Deleted) {
        match done {
            Ok((n, stats, disk)) => {
                self.state.on_deleted(through, true, now());
                self.metrics.acked.fetch_add(n, Relaxed);
                update_gauges(&self.metrics, &stats, disk);
                debug!(%through, deleted = n, "deleted events the hub has stored");
            }
            Err(e) => {
                self.state.on_deleted(through, false, now());
                error!(error = %e, %through, "cannot delete acknowledged events from the buffer; retrying shortly");
            }
        }
    }
}

fn update_gauges(metrics: &Metrics, stats: &BufferStats, disk: u64) {
    metrics.buffer_events.store(stats.events, Relaxed);
    metrics.buffer_bytes.store(stats.live_bytes, Relaxed);
    metrics.buffer_disk_bytes.store(disk, Relaxed);
    metrics
        .oldest_unacked_ms
        .store(stats.oldest_received_ms.unwrap_or(0), Relaxed);
}

/// Awaits the future in `slot`, or never when the slot is empty (a `select!` branch at rest).
async fn in_slot<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Reads `req` from the buffer and publishes it as one batch.
async fn send_batch(
    buffer: Arc<dyn Buffer>,
    client: AsyncClient,
    site: SiteId,
    topic: String,
    max_batch_bytes: usize,
    req: SendRequest,
) -> Result<Sent, UplinkError> {
    let done = |outcome, bytes, read_error| Sent {
        req,
        outcome,
        bytes,
        read_error,
    };
    // A read may touch up to a batch's worth of disk pages: off the async workers.
    let read = tokio::task::spawn_blocking(move || {
        buffer.read_from(req.from, req.max_events, req.max_bytes)
    })
    .await
    .unwrap_or_else(|e| {
        Err(crate::buffer::BufferError::Storage {
            path: "(buffer)".into(),
            detail: format!("the read task failed: {e}"),
        })
    });
    let mut records = match read {
        Ok(r) => r,
        Err(e) => return Ok(done(SendOutcome::ReadFailed, 0, Some(e.to_string()))),
    };
    records.retain(|r| r.seq >= req.from && r.seq <= req.through);
    let size = fit_batch(&mut records, &site, max_batch_bytes);
    let Some(first) = records.first().map(|r| r.seq) else {
        return Ok(done(SendOutcome::Nothing, 0, None));
    };
    if size > max_batch_bytes {
        error!(
            seq = %first,
            bytes = size,
            max_batch_bytes,
            "an event is larger than uplink.max_batch_bytes; it is sent alone and the hub may refuse it"
        );
    }
    let payload = Batch::encode_from_json(&site, records.iter().map(|r| r.payload.as_slice()));
    let bytes = payload.len();
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .map_err(|e| UplinkError::ClientGone(e.to_string()))?;
    Ok(done(
        SendOutcome::Published(records.iter().map(|r| r.seq).collect()),
        bytes,
        None,
    ))
}

/// Drops records from the end until the encoded batch fits `max_batch_bytes` (keeping at least
/// one); returns the encoded size. `read_from` bounds the payload bytes only, not the envelope
/// and the commas between events.
fn fit_batch(records: &mut Vec<StoredRecord>, site: &SiteId, max_batch_bytes: usize) -> usize {
    let envelope = Batch::encode_from_json(site, std::iter::empty()).len();
    let mut size = envelope
        + records.iter().map(|r| r.payload.len()).sum::<usize>()
        + records.len().saturating_sub(1);
    while size > max_batch_bytes && records.len() > 1 {
        if let Some(r) = records.pop() {
            size -= r.payload.len() + 1;
        }
    }
    size
}

/// Refreshes the retained status every `interval` while connected. `try_publish`: a status is
/// worth nothing late, so one that finds the client's queue full is skipped, never waited on.
async fn status_loop(
    client: AsyncClient,
    topic: String,
    status: StatusSource,
    interval: Duration,
    metrics: Arc<Metrics>,
    buffer: Arc<dyn Buffer>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and each ConnAck already announces the agent.
    tick.tick().await;
    loop {
        tick.tick().await;
        // The intake keeps these gauges current as it commits; refreshing them here keeps the
        // status right while nothing is committed or acked. Both calls read in-memory tallies
        // and one file's metadata: short enough for an async worker.
        update_gauges(&metrics, &buffer.stats(), buffer.disk_bytes());
        if !metrics.uplink_connected.load(Relaxed) {
            continue;
        }
        if let Err(e) = client.try_publish(
            topic.clone(),
            QoS::AtLeastOnce,
            true,
            status.online_payload(),
        ) {
            debug!(error = %e, "status refresh skipped: the client's queue is full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyt_proto::EventClass;

    #[test]
    fn batches_are_trimmed_to_fit_but_never_emptied() {
        let site = SiteId::new("s1").unwrap();
        let rec = |seq: u64, len: usize| StoredRecord {
            seq: Seq(seq),
            class: EventClass::Raw,
            received_ms: 0,
            payload: vec![b'1'; len],
        };
        let encoded = |records: &[StoredRecord]| {
            Batch::encode_from_json(&site, records.iter().map(|r| r.payload.as_slice())).len()
        };
        let mut records: Vec<StoredRecord> = (1..=10).map(|s| rec(s, 100)).collect();
        let max = encoded(&records[..4]);
        let size = fit_batch(&mut records, &site, max);
        assert_eq!(records.len(), 4);
        assert_eq!(size, encoded(&records));

        let mut one = vec![rec(1, 5000)];
        let size = fit_batch(&mut one, &site, 4096);
        assert_eq!(
            (one.len(), size),
            (1, encoded(&one)),
            "an oversized event still goes, alone"
        );
    }
}
