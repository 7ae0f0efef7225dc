//! The append-only audit log of what people did through the API: who, when, what, on what, and
//! from which state to which. The hub only ever INSERTs into it; nothing updates or deletes.

use crate::store::{time_text, Context, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_log (
    id          INTEGER NOT NULL PRIMARY KEY,  -- order of the actions; PostgreSQL: BIGSERIAL
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,              -- the token holder's name
    role        TEXT    NOT NULL,
    action      TEXT    NOT NULL,              -- e.g. alarm.acknowledge, transit.release
    target      TEXT    NOT NULL,              -- e.g. alarm:12, transit:T-1, token:tok-ab12
    from_state  TEXT,
    to_state    TEXT,
    detail      TEXT    NOT NULL               -- JSON: comment, unit, reason, ...
);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit_log (target, id);
";

/// One operator or admin action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_state: Option<String>,
    pub detail: serde_json::Value,
}

/// Appends entries inside the caller's transaction, so an action and its record commit together.
pub fn append(conn: &Connection, entries: &[AuditEntry]) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO audit_log (at, actor, role, action, target, from_state, to_state, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .ctx("prepare the audit insert")?;
    for e in entries {
        insert
            .execute(params![
                time_text(e.at),
                e.actor,
                e.role,
                e.action,
                e.target,
                e.from_state,
                e.to_state,
                e.detail.to_string(),
            ])
            .ctx("append to the audit log")?;
    }
    Ok(())
}
