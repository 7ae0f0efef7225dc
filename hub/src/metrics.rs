//! Counters for `/metrics`, in the Prometheus text format.
//!
//! A handful of atomics rendered by hand: the hub exports a dozen series, which does not justify
//! a metrics framework and its registry.

use crate::validate::Reason;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the commit latency histogram: an fsync takes a few milliseconds on
/// an SSD and tens on a spinning disk or a busy VM.
const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
pub struct Metrics {
    batches_ingested: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
    status_received: AtomicU64,
    status_rejected: AtomicU64,
    events_stored: AtomicU64,
    duplicates: AtomicU64,
    acks_sent: AtomicU64,
    commits: AtomicU64,
    commit_failures: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    supervised: AtomicU64,
    supervision_failures: AtomicU64,
    alarms_raised: AtomicU64,
}

impl Metrics {
    pub fn rejected(&self, reason: Reason) {
        let i = Reason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is in ALL");
        self.rejected[i].fetch_add(1, Relaxed);
    }

    pub fn status_received(&self) {
        self.status_received.fetch_add(1, Relaxed);
    }

    pub fn status_rejected(&self) {
        self.status_rejected.fetch_add(1, Relaxed);
    }

    pub fn committed(&self, batches: u64, stored: u64, duplicates: u64, took: Duration) {
        self.batches_ingested.fetch_add(batches, Relaxed);
        self.events_stored.fetch_add(stored, Relaxed);
        self.duplicates.fetch_add(duplicates, Relaxed);
        self.commits.fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Relaxed);
    }

    pub fn supervised(&self, events: u64) {
        self.supervised.fetch_add(events, Relaxed);
    }

    pub fn supervision_failed(&self) {
        self.supervision_failures.fetch_add(1, Relaxed);
    }

    pub fn alarms_raised(&self, n: u64) {
        self.alarms_raised.fetch_add(n, Relaxed);
    }

    pub fn ack_sent(&self) {
        self.acks_sent.fetch_add(1, Relaxed);
    }

    /// The exposition text; `sites_online` is sampled by the caller.
    pub fn render(&self, sites_online: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "qyt_hub_batches_ingested_total",
            "Batches committed to the store (replays included).",
            self.batches_ingested.load(Relaxed),
        );
        counter(
            "qyt_hub_events_stored_total",
            "Events newly stored.",
            self.events_stored.load(Relaxed),
        );
        counter(
            "qyt_hub_duplicates_ignored_total",
            "Events received again and ignored because their (site, seq) was already stored.",
            self.duplicates.load(Relaxed),
        );
        counter(
            "qyt_hub_acks_sent_total",
            "Acks handed to the MQTT client after a commit.",
            self.acks_sent.load(Relaxed),
        );
        counter(
            "qyt_hub_status_received_total",
            "Agent status messages accepted.",
            self.status_received.load(Relaxed),
        );
        counter(
            "qyt_hub_status_rejected_total",
            "Agent status messages refused (unknown site, malformed, site mismatch).",
            self.status_rejected.load(Relaxed),
        );
        counter(
            "qyt_hub_commit_failures_total",
            "Transactions that failed; their batches were not acked and will be resent.",
            self.commit_failures.load(Relaxed),
        );
        counter(
            "qyt_hub_supervised_events_total",
            "Stored events applied by the supervision engine.",
            self.supervised.load(Relaxed),
        );
        counter(
            "qyt_hub_supervision_failures_total",
            "Supervision steps that could not be recorded (retried from the database).",
            self.supervision_failures.load(Relaxed),
        );
        counter(
            "qyt_hub_alarms_raised_total",
            "Alarms raised by the supervision rules.",
            self.alarms_raised.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP qyt_hub_batches_rejected_total Batches refused, by reason.\n\
             # TYPE qyt_hub_batches_rejected_total counter"
        );
        for (reason, count) in Reason::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "qyt_hub_batches_rejected_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                count.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP qyt_hub_sites_online Declared sites whose agent reports online.\n\
             # TYPE qyt_hub_sites_online gauge\nqyt_hub_sites_online {sites_online}"
        );
        let _ = writeln!(
            out,
            "# HELP qyt_hub_commit_seconds Time to write and fsync one ingest transaction.\n\
             # TYPE qyt_hub_commit_seconds histogram"
        );
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            let _ = writeln!(
                out,
                "qyt_hub_commit_seconds_bucket{{le=\"{bound}\"}} {}",
                count.load(Relaxed)
            );
        }
        let commits = self.commits.load(Relaxed);
        let sum = self.latency_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "qyt_hub_commit_seconds_bucket{{le=\"+Inf\"}} {commits}\n\
             qyt_hub_commit_seconds_sum {sum}\nqyt_hub_commit_seconds_count {commits}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_labels_and_histogram() {
        let m = Metrics::default();
        m.rejected(Reason::Oversize);
        m.rejected(Reason::Oversize);
        m.committed(2, 10, 3, Duration::from_millis(3));
        let text = m.render(1);
        assert!(text.contains("qyt_hub_batches_rejected_total{reason=\"oversize\"} 2"));
        assert!(text.contains("qyt_hub_batches_rejected_total{reason=\"malformed\"} 0"));
        assert!(text.contains("qyt_hub_events_stored_total 10"));
        assert!(text.contains("qyt_hub_duplicates_ignored_total 3"));
        assert!(text.contains("qyt_hub_commit_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("qyt_hub_commit_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("qyt_hub_commit_seconds_count 1"));
        assert!(text.contains("qyt_hub_sites_online 1"));
    }
}
