//! Customs supervision on the hub: transits moved through their life by what checkpoints and
//! e-locks report, alarm rules, the alarm lifecycle, and the audit of operator actions.
//!
//! - [`transit`]: declarations, statuses, timelines, arrival reconciliation.
//! - [`rules`]: every alarm rule, its trigger, thresholds and severity (`[supervision]`).
//! - [`alarm`]: alarms and their lifecycle.
//! - [`engine`]: the pure state machine (events, actions and time in; changes out).
//! - [`persist`]: the SQL behind it.
//! - [`service`]: the engine in the running hub (fed after ingest commits, ticked, persisted).

pub mod alarm;
pub mod engine;
pub mod geo;
pub mod persist;
pub mod rules;
pub mod service;
pub mod transit;

pub use persist::SCHEMA;
