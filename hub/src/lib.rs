//! QuanYuTong hub: receives batches of events from the checkpoint agents over MQTT, stores each
//! (site, seq) exactly once and acks what is durable; serves the state of every site over HTTP.
//!
//! Data flow: agent → broker (embedded mqtt5, or external) → consumer (rumqttc;
//! validates, refuses with a reason) → bounded queue → ingest writer (one SQLite transaction per
//! group of waiting batches) → Ack per site → broker → agent. The registry holds the committed
//! per-site state (contiguous seq, holes, presence) that acks and the HTTP API report.
//!
//! Supervision ([`supervision`]) follows the commits without slowing them: the writer only marks
//! which sites have new events; the supervision task reads them back from the store in
//! (site, seq) order and applies them to a pure engine (transits, alarm rules, timers on an
//! injected [`clock`]), persisting each step with its progress marks in one transaction, so every
//! stored event is applied exactly once, also across crashes. Operators, enterprises and admins
//! use it through the HTTP API ([`api`], roles in [`access`]); enterprises may get signed webhooks
//! ([`webhook`]).
//!
//! Starting one in-process, e.g. from a launcher or a test:
//!
//! ```no_run
//! # async fn demo(config: qyt_hub::Config) -> Result<(), qyt_hub::HubError> {
//! let hub = qyt_hub::Hub::start(config).await?; // port 0 in the config picks free ports
//! println!("broker {:?}, http {}", hub.broker_addr(), hub.http_addr());
//! hub.ready().await;
//! hub.run_until(async {
//!     tokio::signal::ctrl_c().await.ok();
//! })
//! .await
//! # }
//! ```

pub mod access;
pub mod api;
mod audit;
mod broker;
pub mod clock;
pub mod config;
mod consumer;
mod hub;
mod ingest;
mod metrics;
mod progress;
mod registry;
pub mod secret;
mod store;
pub mod supervision;
pub mod systemd;
mod validate;
pub mod webhook;

pub use config::Config;
pub use hub::{run, Hub, HubError};
