//! The `mqtt` source: subscribes to topics on the gateway's local broker (where cameras, gate
//! controllers and seal readers publish), maps each JSON message to an event body and makes it
//! durable before acknowledging it.
//!
//! Guarantee: a QoS 1 message is PUBACKed only after its event is durable. The session is
//! persistent (fixed client id, clean session off) and acks are manual, so if the agent dies
//! before the PUBACK the broker redelivers; the optional message id then recognises the copy.
//! Its key is stored in the commit of its event, and loaded back when the source starts, so
//! that this also holds after kill -9.
//! PUBACKs go out in the order the messages arrived, as MQTT 3.1.1 §4.6 requires.

use super::dedup::{key_prefix, DedupWindow};
use super::mapping::{self, TopicMapping};
use super::{SourceContext, SourceError};
use crate::buffer::intake::{IntakeError, PendingEvent};
use crate::uplink::backoff::Backoff;
use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use qyt_proto::{EventClass, SourceState};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Must be stable across restarts: the broker keeps the session (and unacked messages)
    /// under it. Default `qyt-agent-<site>-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// How long a message id is remembered for duplicate detection.
    #[serde(default = "default_dedup_window")]
    pub dedup_window_s: u64,
    /// Most remembered message ids (oldest forgotten first).
    #[serde(default = "default_dedup_max")]
    pub dedup_max_ids: usize,
    /// Messages being made durable at once; the group commit batches across them.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    #[serde(rename = "topic")]
    pub topics: Vec<TopicMapping>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_keep_alive() -> u64 {
    30
}
fn default_dedup_window() -> u64 {
    3600
}
// Hours of traffic at a busy lane (a few messages a second) in a few MB of memory.
fn default_dedup_max() -> usize {
    50_000
}
fn default_max_pending() -> usize {
    1000
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

impl MqttSourceConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.topics.is_empty() {
            p.push((
                "topic".into(),
                "at least one [[source.topic]] is needed".into(),
            ));
        }
        if self.max_pending == 0 {
            p.push(("max_pending".into(), "must be at least 1".into()));
        }
        if self.keep_alive_s < 5 {
            p.push(("keep_alive_s".into(), "must be at least 5 seconds".into()));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if t.filter.is_empty() {
                p.push((format!("topic[{i}].filter"), "must not be empty".into()));
            }
            if t.kind == EventClass::Gap {
                p.push((
                    format!("topic[{i}].kind"),
                    "gap events are made by the agent, not by devices".into(),
                ));
            }
            let known = mapping::known_fields(t.kind);
            for f in t
                .fields
                .keys()
                .chain(t.constants.keys())
                .chain(t.values.keys())
            {
                if !known.contains(&f.as_str()) {
                    p.push((
                        format!("topic[{i}].fields"),
                        format!(
                            "{f:?} is not a field of a {} body; known: {}",
                            t.kind.as_str(),
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        p
    }
}

/// A device message on its way to the buffer: the event to submit, or why it was not one.
enum Outcome {
    Submit(PendingEvent),
    Skip,
}

pub async fn run(cfg: MqttSourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("qyt-agent-{}-{}", ctx.site, cfg.name));
    let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    opts.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s))
        .set_max_packet_size(1 << 20, 1 << 20);
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    // Acks are queued on the client's request channel; it is sized so that acking every
    // pending message never waits on it.
    let (client, mut eventloop) = AsyncClient::new(opts, cfg.max_pending * 2 + 16);
    // PUBACKs are tiny; without TCP_NODELAY they wait for Nagle's timer, which stalls the
    // broker's in-flight window.
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (tx, rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll(
        eventloop,
        client.clone(),
        cfg.clone(),
        ctx.clone(),
        tx,
    ));
    let result = process(cfg, ctx, client.clone(), rx).await;
    let _ = client.disconnect().await;
    poller.abort();
    result
}

/// Drives the connection. Never awaits the client (that would deadlock once its channel
/// fills): subscriptions use `try_subscribe`, messages go to the processor unbounded — their
/// number is bounded by the broker's in-flight window, since nothing is acked before processing.
async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    cfg: MqttSourceConfig,
    mut ctx: SourceContext,
    tx: mpsc::UnboundedSender<Publish>,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_millis(cfg.reconnect_max_ms),
    );
    loop {
        let ev = tokio::select! {
            _ = ctx.shutdown.wait() => return,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                info!(source = %ctx.name, session_present = ack.session_present, "connected to the device broker");
                ctx.metrics.set_state(SourceState::Connected, None);
                // rumqttc does not restore subscriptions; the broker may have kept them, but
                // subscribing again is harmless and covers a lost session.
                for t in &cfg.topics {
                    if let Err(e) = client.try_subscribe(t.filter.clone(), QoS::AtLeastOnce) {
                        warn!(source = %ctx.name, filter = %t.filter, error = %e, "could not queue a subscription");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let delay = backoff.next_delay(&mut rand::rng());
                warn!(source = %ctx.name, error = %e, retry_in_ms = delay.as_millis() as u64, "device broker connection failed");
                ctx.metrics
                    .set_state(SourceState::Retrying, Some(e.to_string()));
                tokio::select! {
                    _ = ctx.shutdown.wait() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn process(
    cfg: MqttSourceConfig,
    ctx: SourceContext,
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<Publish>,
) -> Result<(), SourceError> {
    let mut stop = ctx.shutdown.clone();
    let mut dedup = DedupWindow::new(cfg.dedup_window_s as i64 * 1000, cfg.dedup_max_ids);
    let preloaded = ctx
        .preload_dedup(&mut dedup, &key_prefix(&ctx.name), cfg.dedup_window_s)
        .await?;
    if preloaded > 0 {
        info!(source = %ctx.name, ids = preloaded, "remembering device message ids accepted before this start");
    }
    let mut pending = FuturesOrdered::new();
    let source: Arc<str> = ctx.name.clone();
    loop {
        tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => {
                let (publish, result): (Publish, Result<bool, SourceError>) = done;
                // Not acked (the agent is stopping while the buffer is full): the broker keeps
                // the message and redelivers it to the next run.
                if !result? {
                    continue;
                }
                // Ordered: this PUBACK follows those of every earlier message.
                if client.ack(&publish).await.is_err() {
                    // The connection is gone; the broker redelivers the message.
                    debug!(source = %source, "ack not sent: client closed");
                }
            }
            msg = rx.recv(), if pending.len() < cfg.max_pending && !ctx.shutdown.is_set() => {
                let Some(publish) = msg else { break };
                ctx.metrics.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let outcome = decode(&cfg, &ctx, &mut dedup, &publish);
                let ctx = ctx.clone();
                pending.push_back(async move {
                    let result = match outcome {
                        Outcome::Skip => Ok(true),
                        Outcome::Submit(ev) => submit_until_accepted(ev, ctx).await,
                    };
                    (publish, result)
                });
            }
            _ = stop.wait(), if pending.is_empty() => break,
        }
    }
    Ok(())
}

/// The key a device message id is remembered under. It starts with the source's name because
/// the buffer keeps the keys of every source together.
fn dedup_key(source: &str, filter: &str, id: &str) -> String {
    format!("{}{filter}\u{0}{id}", key_prefix(source))
}

fn decode(
    cfg: &MqttSourceConfig,
    ctx: &SourceContext,
    dedup: &mut DedupWindow,
    p: &Publish,
) -> Outcome {
    let now = Utc::now();
    let Some(m) = cfg
        .topics
        .iter()
        .find(|t| rumqttc::matches(&p.topic, &t.filter))
    else {
        ctx.metrics.decode_error("unmapped_topic");
        warn!(source = %ctx.name, topic = %p.topic, "message on a topic no mapping covers; dropped");
        return Outcome::Skip;
    };
    match mapping::map(&p.topic, &p.payload, m) {
        Ok(mapped) => {
            let key = mapped
                .message_id
                .as_deref()
                .map(|id| dedup_key(&ctx.name, &m.filter, id));
            if let (Some(id), Some(key)) = (&mapped.message_id, &key) {
                if dedup.contains(key, now.timestamp_millis()) {
                    ctx.metrics
                        .duplicates
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    debug!(source = %ctx.name, topic = %p.topic, id = %id, "duplicate device message dropped");
                    return Outcome::Skip;
                }
                dedup.insert(key.clone(), now.timestamp_millis());
            }
            Outcome::Submit(PendingEvent {
                observed_at: mapped.observed_at.unwrap_or(now),
                received_at: now,
                source: ctx.name.clone(),
                body: mapped.body,
                dedup_key: key,
            })
        }
        Err(e) => {
            ctx.metrics.decode_error(e.reason());
            let sample: String = String::from_utf8_lossy(&p.payload)
                .chars()
                .take(200)
                .collect();
            warn!(source = %ctx.name, topic = %p.topic, reason = e.reason(), error = %e, "device message rejected");
            debug!(source = %ctx.name, topic = %p.topic, sample = %sample, "rejected payload");
            Outcome::Skip
        }
    }
}

/// Submits one event; while the buffer is full, keeps trying (the message stays unacked, so the
/// broker holds it and, once its in-flight window is full, stops sending). Returns whether the
/// message may be acked.
async fn submit_until_accepted(
    ev: PendingEvent,
    mut ctx: SourceContext,
) -> Result<bool, SourceError> {
    let mut refusals: u32 = 0;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match ctx.intake.submit(vec![ev.clone()]).await {
            Ok(_) => {
                if refusals > 0 {
                    info!(source = %ctx.name, refusals, "buffer has room again; message accepted");
                }
                return Ok(true);
            }
            Err(IntakeError::Full { class }) => {
                refusals = refusals.saturating_add(1);
                if refusals == 1 {
                    warn!(source = %ctx.name, class = class.as_str(), "buffer full: holding the message unacked on the device broker");
                }
                let delay = backoff.next_delay(&mut rand::rng());
                tokio::select! {
                    _ = ctx.shutdown.wait() => return Ok(false),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(IntakeError::Closed) => {
                return Err(SourceError::IntakeClosed {
                    source_name: ctx.name.to_string(),
                })
            }
            Err(IntakeError::Storage(detail)) => {
                return Err(SourceError::Storage {
                    source_name: ctx.name.to_string(),
                    detail,
                })
            }
        }
    }
}
