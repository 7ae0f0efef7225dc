//! The delivery worker: sends due webhook deliveries, records each attempt, schedules retries.

use crate::clock::Clock;
use crate::store::{Store, StoreError};
use crate::webhook::outbox::{self, Attempt, Due};
use crate::webhook::sign::signature;
use crate::webhook::WebhookConfig;
use chrono::Duration as ChronoDuration;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{debug, error, warn};

/// Deliveries attempted per round; the rest wait for the next one.
const ROUND: usize = 100;

/// The webhook sender of one hub; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    conn: Arc<Mutex<Connection>>,
    cfg: WebhookConfig,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    http: ureq::Agent,
    /// One round at a time: the worker and a test's call must not send the same delivery twice.
    rounds: Arc<Mutex<()>>,
}

impl Sender {
    pub fn open(
        path: &Path,
        cfg: WebhookConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Sender, StoreError> {
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(cfg.timeout_s)))
            // A receiver's error status is an outcome to log, not a failure of the call.
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(Sender {
            conn: Arc::new(Mutex::new(Store::writer(path)?)),
            cfg,
            clock,
            wake: Arc::new(Notify::new()),
            http,
            rounds: Arc::new(Mutex::new(())),
        })
    }

    /// The database connection the API uses for webhook settings (one writer for both).
    pub fn conn(&self) -> Arc<Mutex<Connection>> {
        self.conn.clone()
    }

    /// Something may be due: a change committed, or a webhook was set.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(self.cfg.poll_s)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.deliver_due().await;
        }
    }

    /// Attempts every delivery due at the clock's present time, once, after any round already
    /// running. Tests call it instead of waiting for the worker.
    pub async fn deliver_due(&self) {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.round()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "webhook deliveries could not be read or recorded; retrying later")
            }
            Err(e) => error!(error = %e, "the webhook sender panicked"),
        }
    }

    fn round(&self) -> Result<(), StoreError> {
        let _one = self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let due = {
            let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            outbox::due(&conn, now, ROUND)?
        };
        for d in &due {
            // The request runs without the connection held: the API may set webhooks meanwhile.
            let attempt = self.send(d);
            let delivered = attempt.http_status.is_some_and(|s| (200..300).contains(&s));
            let attempts = d.attempts + 1;
            let retry_at = (!delivered && attempts < self.cfg.max_attempts).then(|| {
                let wait = self.cfg.backoff(attempts);
                now + ChronoDuration::milliseconds(wait.as_millis() as i64)
            });
            if !delivered {
                warn!(delivery = d.id, url = %d.url, attempts, status = ?attempt.http_status,
                      error = ?attempt.error, retry_at = ?retry_at, "webhook delivery failed");
            } else {
                debug!(delivery = d.id, attempts, "webhook delivered");
            }
            let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            outbox::record(&conn, d.id, attempt, delivered, retry_at)?;
        }
        Ok(())
    }

    fn send(&self, d: &Due) -> Attempt {
        let at = self.clock.now();
        let timestamp = at.timestamp();
        let sig = signature(&d.secret, timestamp, d.payload.as_bytes());
        let result = self
            .http
            .post(&d.url)
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("qyt-hub/", env!("CARGO_PKG_VERSION")))
            .header("X-QYT-Delivery", d.id.to_string())
            .header("X-QYT-Timestamp", timestamp.to_string())
            .header("X-QYT-Signature", sig)
            .send(d.payload.as_bytes());
        match result {
            Ok(response) => Attempt {
                at,
                http_status: Some(response.status().as_u16()),
                error: None,
            },
            Err(e) => Attempt {
                at,
                http_status: None,
                error: Some(e.to_string()),
            },
        }
    }
}
