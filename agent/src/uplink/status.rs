//! The agent's presence on the hub's broker: a retained [`AgentStatus`] on `Topics::status`,
//! republished every `status_interval_s`, with a retained last will saying "offline" for when the
//! agent disappears without a word.

use crate::metrics::Metrics;
use qyt_proto::{AgentStatus, Presence, SiteId, PROTOCOL_VERSION};
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Builds this agent's status messages.
#[derive(Debug, Clone)]
pub struct StatusSource {
    site: SiteId,
    metrics: Arc<Metrics>,
    started: Instant,
}

/// The offline message: the status with the figures left out, as `AgentStatus` documents.
#[derive(Serialize)]
struct Offline<'a> {
    v: u32,
    site: &'a SiteId,
    state: Presence,
}

impl StatusSource {
    pub fn new(site: SiteId, metrics: Arc<Metrics>, started: Instant) -> StatusSource {
        StatusSource {
            site,
            metrics,
            started,
        }
    }

    /// The online status as of `now` (`now_ms`: wall clock, for the age of the oldest event).
    pub fn online(&self, now: Instant, now_ms: i64) -> AgentStatus {
        let m = &self.metrics;
        AgentStatus {
            v: PROTOCOL_VERSION,
            site: self.site.clone(),
            state: Presence::Online,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: now.saturating_duration_since(self.started).as_secs(),
            buffered_events: m.buffer_events.load(Relaxed),
            buffered_bytes: m.buffer_bytes.load(Relaxed),
            oldest_unacked_age_s: m.oldest_unacked_age_s(now_ms),
            sources: m.source_health(),
        }
    }

    pub fn online_payload(&self) -> Vec<u8> {
        qyt_proto::encode(&self.online(Instant::now(), chrono::Utc::now().timestamp_millis()))
    }

    /// `{"v":1,"site":..,"state":"offline"}`: the last will, and what a graceful stop publishes.
    pub fn offline_payload(&self) -> Vec<u8> {
        qyt_proto::encode(&Offline {
            v: PROTOCOL_VERSION,
            site: &self.site,
            state: Presence::Offline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn online_status_reports_the_metrics_and_offline_decodes() {
        let m = Metrics::new();
        m.buffer_events.store(12, Relaxed);
        m.buffer_bytes.store(3400, Relaxed);
        m.oldest_unacked_ms.store(1_000, Relaxed);
        m.source("cam-1");
        let t0 = Instant::now();
        let s = StatusSource::new(SiteId::new("gate-1").unwrap(), m, t0);
        let st = s.online(t0 + Duration::from_secs(90), 3_500);
        assert_eq!(
            (st.state, st.uptime_s, st.buffered_events, st.buffered_bytes),
            (Presence::Online, 90, 12, 3400)
        );
        assert_eq!(st.oldest_unacked_age_s, Some(2.5));
        assert_eq!(st.sources.len(), 1);
        assert_eq!(st.agent_version, env!("CARGO_PKG_VERSION"));
        let back = qyt_proto::decode_status(&s.online_payload()).unwrap();
        assert_eq!(back.site.as_str(), "gate-1");

        let off = s.offline_payload();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&off).unwrap(),
            serde_json::json!({"v": 1, "site": "gate-1", "state": "offline"})
        );
        assert_eq!(
            qyt_proto::decode_status(&off).unwrap().state,
            Presence::Offline
        );
    }
}
