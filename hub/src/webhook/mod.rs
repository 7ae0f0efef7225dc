//! Optional webhooks per enterprise: a signed POST to the enterprise's URL on every status change
//! of its transits, retried with capped exponential backoff, with a delivery log.
//!
//! Deliveries are written in the same transaction as the status change that causes them (an
//! outbox), so a crash loses none; a worker sends the due ones, oldest first and one at a time
//! per enterprise so that a receiver sees the statuses of its transits in order.
//!
//! Each POST carries `X-QYT-Delivery` (the delivery id, to recognise retries),
//! `X-QYT-Timestamp` (Unix seconds) and `X-QYT-Signature: sha256=<hex>`, the HMAC-SHA256 of
//! `<timestamp>.<body>` with the secret the enterprise set. The secret is kept in the database as
//! given: HMAC needs it to sign.

pub mod outbox;
pub mod sender;
pub mod sign;

use serde::{Deserialize, Serialize};

pub use outbox::SCHEMA;

/// `[webhooks]` in hub.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// How often the worker looks for due deliveries (it is also woken after each change).
    pub poll_s: u64,
    /// Per request: connect, send and receive.
    pub timeout_s: u64,
    /// Attempts per delivery before giving up.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each failure...
    pub backoff_base_s: u64,
    /// ...up to this.
    pub backoff_max_s: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            poll_s: 1,
            timeout_s: 10,
            max_attempts: 8,
            backoff_base_s: 5,
            backoff_max_s: 600,
        }
    }
}

impl WebhookConfig {
    pub fn check(&self) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        for (key, value, min, max) in [
            ("poll_s", self.poll_s, 1, 3600),
            ("timeout_s", self.timeout_s, 1, 300),
            ("max_attempts", u64::from(self.max_attempts), 1, 100),
            ("backoff_base_s", self.backoff_base_s, 1, 86_400),
            ("backoff_max_s", self.backoff_max_s, 1, 7 * 86_400),
        ] {
            if !(min..=max).contains(&value) {
                bad.push((
                    format!("webhooks.{key}"),
                    format!("is {value}: use {min} to {max}"),
                ));
            }
        }
        if self.backoff_max_s < self.backoff_base_s {
            bad.push((
                "webhooks.backoff_max_s".into(),
                format!(
                    "is below backoff_base_s ({}): the cap must be at least the first wait",
                    self.backoff_base_s
                ),
            ));
        }
        bad
    }

    /// The wait after the `attempts`-th failed attempt.
    pub fn backoff(&self, attempts: u32) -> std::time::Duration {
        let factor = 1u64 << attempts.saturating_sub(1).min(30);
        std::time::Duration::from_secs(
            self.backoff_base_s
                .saturating_mul(factor)
                .min(self.backoff_max_s),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let c = WebhookConfig::default();
        let waits: Vec<u64> = (1..=10).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert!(c.check().is_empty());
        let bad = WebhookConfig {
            backoff_max_s: 1,
            ..WebhookConfig::default()
        };
        assert_eq!(bad.check().len(), 1);
    }
}
