//! Device sources. Each source is a task that reads its devices, turns what they send into
//! [`PendingEvent`]s (through a pure decoder or mapping) and submits them to the [`Intake`];
//! it acknowledges its device only after `submit` returns, i.e. once the events are durable.
//!
//! Each kind of source (MQTT, serial line, JT/T 808 TCP server, simulator) is a config type and
//! a `run` function of the same shape: none of them touches the buffer or the uplink.

pub mod dedup;
pub mod jt808_tcp;
pub mod mapping;
pub mod mqtt;
pub mod serial;
pub mod simulate;

use crate::buffer::intake::Intake;
use crate::config::SourceConfig;
use crate::metrics::SourceMetrics;
use dedup::DedupWindow;
use qyt_proto::SiteId;
use std::sync::Arc;
use tokio::sync::watch;

/// Everything a source task gets from the agent.
#[derive(Clone)]
pub struct SourceContext {
    pub site: SiteId,
    pub name: Arc<str>,
    pub intake: Intake,
    pub metrics: Arc<SourceMetrics>,
    pub shutdown: Shutdown,
}

impl SourceContext {
    /// Fills `dedup` with the device message keys starting with `prefix` that were made durable
    /// within the last `window_s` before this start (they are stored in their events' commits),
    /// so a message redelivered because the last run never acknowledged it is recognised.
    /// Returns how many.
    pub async fn preload_dedup(
        &self,
        dedup: &mut DedupWindow,
        prefix: &str,
        window_s: u64,
    ) -> Result<usize, SourceError> {
        let since = chrono::Utc::now().timestamp_millis() - window_s as i64 * 1000;
        let stored =
            self.intake
                .recent_dedup_keys(since)
                .await
                .map_err(|e| SourceError::Storage {
                    source_name: self.name.to_string(),
                    detail: e.to_string(),
                })?;
        let mut n = 0usize;
        for e in stored.into_iter().filter(|e| e.key.starts_with(prefix)) {
            dedup.insert(e.key, e.accepted_ms);
            n += 1;
        }
        Ok(n)
    }
}

/// Resolves when the agent stops taking new input. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A trigger and the signal it drives.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    pub async fn wait(&mut self) {
        // An error means the sender is gone, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

/// Runs one configured source until shutdown. Errors a source can recover from (a device or
/// broker that goes away) are handled inside it with backoff; what returns here is fatal.
pub async fn run(cfg: SourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    match cfg {
        SourceConfig::Mqtt(c) => mqtt::run(c, ctx).await,
        SourceConfig::Simulate(c) => simulate::run(c, ctx).await,
        SourceConfig::Serial(c) => serial::run(c, ctx).await,
        SourceConfig::Jt808Tcp(c) => jt808_tcp::run(c, ctx).await,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {source_name}: the intake is closed (the agent is stopping)")]
    IntakeClosed { source_name: String },
    #[error("source {source_name}: the buffer failed: {detail}")]
    Storage { source_name: String, detail: String },
}
