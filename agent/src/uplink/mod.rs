//! Uplink to the hub: forwards buffered events over MQTT and deletes them only once the hub
//! acknowledges that it has stored them (an [`qyt_proto::Ack`] on `Topics::acks(site)`; the
//! broker's PUBACK proves nothing about the hub).
//!
//! Split after rumqtt's own layering: [`state`] is the pure ack/resend state machine, [`task`]
//! the tokio side (event loop poller, batch sender, deleter), [`status`] the retained presence
//! message, [`backoff`] the delay between connection attempts; the rustls client config comes from
//! [`qyt_tls`], shared with the hub.

pub mod backoff;
pub mod state;
pub mod status;
mod task;

#[cfg(test)]
mod tests;

pub use qyt_tls::{TlsConfig, TlsError};
pub use task::run;

use qyt_proto::MAX_BATCH_BYTES;
use serde::{Deserialize, Serialize};

/// `[uplink]`: how to reach the hub's MQTT broker and how to pace the upload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The broker's host name or IP address.
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// MQTT client id; `qyt-agent-{site}` by default. Must be unique on the broker.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// MQTT keep-alive: a dead connection is noticed within about 1.5 times this.
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Most events in one batch.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// Largest encoded batch, at most the hub's limit `qyt_proto::MAX_BATCH_BYTES`.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Most batches published and not yet acknowledged by the hub.
    #[serde(default = "default_max_inflight_batches")]
    pub max_inflight_batches: usize,
    /// Without any ack progress for this long, everything unacked is sent again.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// First delay between failed connection attempts; it doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// How often the retained status message is refreshed.
    #[serde(default = "default_status_interval_s")]
    pub status_interval_s: u64,
    /// Connect with TLS when present.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_port() -> u16 {
    1883
}
fn default_keep_alive_s() -> u64 {
    30
}
fn default_max_batch_events() -> usize {
    1000
}
fn default_max_batch_bytes() -> usize {
    MAX_BATCH_BYTES
}
fn default_max_inflight_batches() -> usize {
    8
}
fn default_ack_timeout_ms() -> u64 {
    30_000
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_status_interval_s() -> u64 {
    30
}

/// Smallest `max_batch_bytes` accepted: room for the envelope and a typical event.
pub const MIN_BATCH_BYTES: usize = 4096;
/// Most batches in flight: each one may hold `max_batch_bytes` in the MQTT client's memory.
pub const MAX_INFLIGHT_BATCHES: usize = 256;

impl UplinkConfig {
    /// A config with every default, for `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> UplinkConfig {
        UplinkConfig {
            host: host.into(),
            port,
            client_id: None,
            username: None,
            password: None,
            keep_alive_s: default_keep_alive_s(),
            max_batch_events: default_max_batch_events(),
            max_batch_bytes: default_max_batch_bytes(),
            max_inflight_batches: default_max_inflight_batches(),
            ack_timeout_ms: default_ack_timeout_ms(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            status_interval_s: default_status_interval_s(),
            tls: None,
        }
    }

    /// Every problem with this config, as `(key under uplink., what is wrong and what to do)`.
    /// TLS files are read and parsed here, so a bad certificate is found by `check-config`, not
    /// at the first connection attempt.
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |k: &str, m: String| p.push((k.to_string(), m));
        if self.host.trim().is_empty() || self.host.chars().any(char::is_whitespace) {
            bad(
                "host",
                format!("{:?} is not a host name or IP address", self.host),
            );
        }
        if self.port == 0 {
            bad("port", "must be 1 to 65535".into());
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 65_535 || id.chars().any(char::is_control) {
                bad("client_id", "must be 1 to 65535 bytes without control characters (or left out for qyt-agent-{site})".into());
            }
        }
        if self.password.is_some() && self.username.is_none() {
            bad(
                "password",
                "MQTT 3.1.1 sends a password only with a username: set username too".into(),
            );
        }
        if !(5..=65_535).contains(&self.keep_alive_s) {
            bad("keep_alive_s", "must be 5 to 65535 seconds".into());
        }
        if self.max_batch_events == 0 || self.max_batch_events > 100_000 {
            bad("max_batch_events", "must be 1 to 100000".into());
        }
        if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&self.max_batch_bytes) {
            bad(
                "max_batch_bytes",
                format!("must be {MIN_BATCH_BYTES} to {MAX_BATCH_BYTES} (the hub refuses larger batches)"),
            );
        }
        if self.max_inflight_batches == 0 || self.max_inflight_batches > MAX_INFLIGHT_BATCHES {
            bad(
                "max_inflight_batches",
                format!("must be 1 to {MAX_INFLIGHT_BATCHES}"),
            );
        }
        if self.ack_timeout_ms < 100 {
            bad(
                "ack_timeout_ms",
                "must be at least 100 ms (the hub needs time to commit)".into(),
            );
        }
        if self.reconnect_min_ms == 0 {
            bad(
                "reconnect_min_ms",
                "must be at least 1 ms, or a dead broker is retried in a busy loop".into(),
            );
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            bad(
                "reconnect_max_ms",
                format!(
                    "must be at least reconnect_min_ms ({})",
                    self.reconnect_min_ms
                ),
            );
        }
        if self.status_interval_s == 0 {
            bad("status_interval_s", "must be at least 1 second".into());
        }
        if let Some(t) = &self.tls {
            if let Err(e) = qyt_tls::client_config(t) {
                let key = match e.config_key() {
                    "" => "tls".to_string(),
                    k => format!("tls.{k}"),
                };
                bad(&key, e.to_string());
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("uplink config is invalid: {}", .0.iter().map(|(k, m)| format!("uplink.{k}: {m}")).collect::<Vec<_>>().join("; "))]
    Config(Vec<(String, String)>),
    #[error("uplink TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("the MQTT client's event loop is gone ({0}); this is a bug, restart the agent")]
    ClientGone(String),
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn defaults_apply_and_validate() {
        let c: UplinkConfig = toml::from_str("host = \"hub.example\"").unwrap();
        assert_eq!(
            (c.port, c.max_batch_events, c.max_batch_bytes),
            (1883, 1000, MAX_BATCH_BYTES)
        );
        c.validate().unwrap();
        assert!(toml::from_str::<UplinkConfig>("host = \"h\"\ncolour = 1").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut c = UplinkConfig::new("", 0);
        c.password = Some("x".into());
        c.keep_alive_s = 1;
        c.max_batch_events = 0;
        c.max_batch_bytes = MAX_BATCH_BYTES + 1;
        c.max_inflight_batches = 0;
        c.ack_timeout_ms = 1;
        c.reconnect_min_ms = 10;
        c.reconnect_max_ms = 5;
        c.status_interval_s = 0;
        c.tls = Some(TlsConfig {
            ca_file: "/nonexistent/ca.pem".into(),
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
        });
        let keys: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in [
            "host",
            "port",
            "password",
            "keep_alive_s",
            "max_batch_events",
            "max_batch_bytes",
            "max_inflight_batches",
            "ack_timeout_ms",
            "reconnect_max_ms",
            "status_interval_s",
            "tls.ca_file",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }
}
