//! The agent's counters and gauges, shared by every task, rendered in Prometheus text format
//! for `/metrics` and summarised in the status message.

use qyt_proto::{SourceHealth, SourceState};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Per-source counters and state. Each source task holds its own `Arc` and updates it.
#[derive(Debug)]
pub struct SourceMetrics {
    pub name: String,
    /// Device messages received (before decoding).
    pub received: AtomicU64,
    /// Messages rejected by the decoder / mapping, by reason.
    decode_errors: Mutex<BTreeMap<String, u64>>,
    /// Device messages dropped because their id was already accepted within the dedup window.
    pub duplicates: AtomicU64,
    state: Mutex<(SourceState, Option<String>)>,
}

impl SourceMetrics {
    fn new(name: &str) -> SourceMetrics {
        SourceMetrics {
            name: name.to_string(),
            received: AtomicU64::new(0),
            decode_errors: Mutex::new(BTreeMap::new()),
            duplicates: AtomicU64::new(0),
            state: Mutex::new((SourceState::Starting, None)),
        }
    }

    pub fn decode_error(&self, reason: &str) {
        *lock(&self.decode_errors)
            .entry(reason.to_string())
            .or_default() += 1;
    }

    pub fn decode_errors_total(&self) -> u64 {
        lock(&self.decode_errors).values().sum()
    }

    pub fn set_state(&self, state: SourceState, last_error: Option<String>) {
        let mut s = lock(&self.state);
        s.0 = state;
        if last_error.is_some() {
            s.1 = last_error;
        }
    }

    pub fn health(&self) -> SourceHealth {
        let (state, last_error) = lock(&self.state).clone();
        SourceHealth {
            name: self.name.clone(),
            state,
            last_error,
            received: self.received.load(Relaxed),
            decode_errors: self.decode_errors_total(),
            duplicates: self.duplicates.load(Relaxed),
        }
    }
}

/// Why events were dropped or refused; the label of `qyt_agent_events_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropKind {
    /// Evicted from a full buffer (oldest droppable first); forwarded as a gap.
    BufferFull,
    /// A never-drop event refused at intake because the buffer is full (the device keeps it).
    RefusedFull,
    /// Found damaged on disk at start-up; forwarded as a gap.
    Corrupt,
}

impl DropKind {
    fn label(self) -> &'static str {
        match self {
            DropKind::BufferFull => "buffer_full",
            DropKind::RefusedFull => "refused_full",
            DropKind::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    sources: Mutex<BTreeMap<String, Arc<SourceMetrics>>>,
    /// Events made durable in the buffer.
    pub durable: AtomicU64,
    /// Group commits performed.
    pub commits: AtomicU64,
    /// Events published to the hub (resends included).
    pub sent: AtomicU64,
    /// Events deleted after the hub acknowledged them.
    pub acked: AtomicU64,
    /// Batches published to the hub.
    pub batches_sent: AtomicU64,
    /// Resends after a reconnect, an ack timeout or a missing range reported by the hub.
    pub resends: AtomicU64,
    dropped: Mutex<BTreeMap<DropKind, u64>>,
    pub buffer_events: AtomicU64,
    pub buffer_bytes: AtomicU64,
    pub buffer_disk_bytes: AtomicU64,
    /// Receive time (ms since epoch) of the oldest unacked event; 0 when none.
    pub oldest_unacked_ms: AtomicI64,
    pub uplink_connected: AtomicBool,
    pub uplink_reconnects: AtomicU64,
    /// Acks from the hub that could not be decoded or were for another site.
    pub bad_acks: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The counters of one source, created on first use.
    pub fn source(&self, name: &str) -> Arc<SourceMetrics> {
        lock(&self.sources)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(SourceMetrics::new(name)))
            .clone()
    }

    pub fn dropped(&self, kind: DropKind, n: u64) {
        *lock(&self.dropped).entry(kind).or_default() += n;
    }

    pub fn dropped_total(&self, kind: DropKind) -> u64 {
        lock(&self.dropped).get(&kind).copied().unwrap_or(0)
    }

    pub fn source_health(&self) -> Vec<SourceHealth> {
        lock(&self.sources).values().map(|s| s.health()).collect()
    }

    /// Age in seconds of the oldest unacked event at `now_ms`, if any is held.
    pub fn oldest_unacked_age_s(&self, now_ms: i64) -> Option<f64> {
        match self.oldest_unacked_ms.load(Relaxed) {
            0 => None,
            t => Some(((now_ms - t).max(0)) as f64 / 1000.0),
        }
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self, now_ms: i64) -> String {
        let mut o = String::with_capacity(4096);
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let sources: Vec<Arc<SourceMetrics>> = lock(&self.sources).values().cloned().collect();
        let _ = writeln!(
            o,
            "# HELP qyt_agent_events_received_total Device messages received, by source.\n# TYPE qyt_agent_events_received_total counter"
        );
        for s in &sources {
            let _ = writeln!(
                o,
                "qyt_agent_events_received_total{{source=\"{}\"}} {}",
                esc(&s.name),
                s.received.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP qyt_agent_decode_errors_total Device messages rejected, by source and reason.\n# TYPE qyt_agent_decode_errors_total counter"
        );
        for s in &sources {
            for (reason, n) in lock(&s.decode_errors).iter() {
                let _ = writeln!(
                    o,
                    "qyt_agent_decode_errors_total{{source=\"{}\",reason=\"{}\"}} {n}",
                    esc(&s.name),
                    esc(reason)
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP qyt_agent_duplicates_total Device messages dropped as redeliveries of one already accepted, by source.\n# TYPE qyt_agent_duplicates_total counter"
        );
        for s in &sources {
            let _ = writeln!(
                o,
                "qyt_agent_duplicates_total{{source=\"{}\"}} {}",
                esc(&s.name),
                s.duplicates.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP qyt_agent_source_up Whether the source is connected to its device or broker (1) or not (0).\n# TYPE qyt_agent_source_up gauge"
        );
        for s in &sources {
            let up = matches!(lock(&s.state).0, SourceState::Connected) as u8;
            let _ = writeln!(o, "qyt_agent_source_up{{source=\"{}\"}} {up}", esc(&s.name));
        }
        counter(
            &mut o,
            "qyt_agent_events_durable_total",
            "Events made durable in the buffer.",
            self.durable.load(Relaxed),
        );
        counter(
            &mut o,
            "qyt_agent_group_commits_total",
            "Durable group commits of the buffer.",
            self.commits.load(Relaxed),
        );
        counter(
            &mut o,
            "qyt_agent_events_sent_total",
            "Events published to the hub, resends included.",
            self.sent.load(Relaxed),
        );
        counter(
            &mut o,
            "qyt_agent_batches_sent_total",
            "Batches published to the hub.",
            self.batches_sent.load(Relaxed),
        );
        counter(
            &mut o,
            "qyt_agent_resends_total",
            "Times the uplink went back to resend unacked events.",
            self.resends.load(Relaxed),
        );
        counter(
            &mut o,
            "qyt_agent_events_acked_total",
            "Events acknowledged as stored by the hub and deleted.",
            self.acked.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP qyt_agent_events_dropped_total Events dropped or refused, by reason.\n# TYPE qyt_agent_events_dropped_total counter"
        );
        for k in [
            DropKind::BufferFull,
            DropKind::RefusedFull,
            DropKind::Corrupt,
        ] {
            let _ = writeln!(
                o,
                "qyt_agent_events_dropped_total{{reason=\"{}\"}} {}",
                k.label(),
                self.dropped_total(k)
            );
        }
        counter(
            &mut o,
            "qyt_agent_bad_acks_total",
            "Acks from the hub that were malformed or not for this site.",
            self.bad_acks.load(Relaxed),
        );
        counter(
            &mut o,
            "qyt_agent_uplink_reconnects_total",
            "Connections to the hub's broker established after the first.",
            self.uplink_reconnects.load(Relaxed),
        );
        gauge(
            &mut o,
            "qyt_agent_buffer_events",
            "Events held in the buffer, not yet acknowledged.",
            self.buffer_events.load(Relaxed) as f64,
        );
        gauge(
            &mut o,
            "qyt_agent_buffer_bytes",
            "Encoded bytes of the events held.",
            self.buffer_bytes.load(Relaxed) as f64,
        );
        gauge(
            &mut o,
            "qyt_agent_buffer_disk_bytes",
            "Bytes the buffer's files occupy on disk.",
            self.buffer_disk_bytes.load(Relaxed) as f64,
        );
        gauge(
            &mut o,
            "qyt_agent_oldest_unacked_age_seconds",
            "Age of the oldest event not yet acknowledged by the hub (0 when none).",
            self.oldest_unacked_age_s(now_ms).unwrap_or(0.0),
        );
        gauge(
            &mut o,
            "qyt_agent_uplink_connected",
            "Whether the uplink is connected to the hub's broker.",
            self.uplink_connected.load(Relaxed) as u8 as f64,
        );
        o
    }
}

/// A poisoned lock only means another thread panicked while counting; the counts stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters() {
        let m = Metrics::new();
        let s = m.source("gw\"1");
        s.received.fetch_add(3, Relaxed);
        s.decode_error("bad_json");
        m.dropped(DropKind::BufferFull, 2);
        let text = m.render(0);
        assert!(
            text.contains("qyt_agent_events_received_total{source=\"gw\\\"1\"} 3"),
            "{text}"
        );
        assert!(text
            .contains("qyt_agent_decode_errors_total{source=\"gw\\\"1\",reason=\"bad_json\"} 1"));
        assert!(text.contains("qyt_agent_events_dropped_total{reason=\"buffer_full\"} 2"));
        assert_eq!(m.source_health()[0].decode_errors, 1);
    }
}
