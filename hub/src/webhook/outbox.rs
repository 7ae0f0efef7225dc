//! Webhook settings and the delivery outbox, in SQLite (portable SQL; times that are compared
//! are kept as integer milliseconds, since RFC 3339 text does not sort with varying fractions).

use crate::access::Caller;
use crate::audit::{self, AuditEntry};
use crate::store::{parse_time, time_text, Context, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks (
    enterprise  TEXT NOT NULL PRIMARY KEY,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,    -- as given: HMAC signing needs it
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id          INTEGER NOT NULL PRIMARY KEY,
    enterprise  TEXT    NOT NULL,
    transit     TEXT    NOT NULL,
    status      TEXT    NOT NULL,  -- the transit status announced
    payload     TEXT    NOT NULL,  -- the JSON body, fixed when the change commits
    state       TEXT    NOT NULL,  -- pending, delivered, gave_up, cancelled
    attempts    INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    next_ms     INTEGER NOT NULL,  -- next attempt, Unix milliseconds
    log         TEXT    NOT NULL   -- JSON array of Attempt
);
CREATE INDEX IF NOT EXISTS webhook_pending ON webhook_deliveries (state, id);
CREATE INDEX IF NOT EXISTS webhook_by_enterprise ON webhook_deliveries (enterprise, id);
";

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    pub url: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: u64,
    pub transit: String,
    pub status: String,
    pub state: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (pending deliveries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    pub log: Vec<Attempt>,
}

/// A delivery due now, with where and how to send it.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: u64,
    pub payload: String,
    pub attempts: u32,
    pub url: String,
    pub secret: String,
}

/// Queues a delivery inside the caller's transaction, if the enterprise has a webhook.
pub fn enqueue(
    conn: &Connection,
    enterprise: &str,
    transit: &str,
    status: &str,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO webhook_deliveries
             (enterprise, transit, status, payload, state, attempts, created_at, next_ms, log)
         SELECT ?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6, '[]'
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE enterprise = ?1)",
    )
    .ctx("prepare the webhook enqueue")?
    .execute(params![
        enterprise,
        transit,
        status,
        payload.to_string(),
        time_text(now),
        now.timestamp_millis()
    ])
    .ctx("queue a webhook delivery")?;
    Ok(())
}

pub fn set(
    conn: &mut Connection,
    enterprise: &str,
    url: &str,
    secret: &str,
    by: &Caller,
    now: DateTime<Utc>,
) -> Result<Webhook, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin a webhook transaction")?;
    let before = tx
        .query_row(
            "SELECT url FROM webhooks WHERE enterprise = ?1",
            [enterprise],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .ctx("read a webhook")?;
    tx.execute(
        "INSERT INTO webhooks (enterprise, url, secret, updated_at, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (enterprise) DO UPDATE SET url = excluded.url, secret = excluded.secret,
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        params![enterprise, url, secret, time_text(now), by.name],
    )
    .ctx("store a webhook")?;
    audit::append(
        &tx,
        &[AuditEntry {
            at: now,
            actor: by.name.clone(),
            role: by.role.to_string(),
            action: "webhook.set".into(),
            target: format!("webhook:{enterprise}"),
            from_state: before.map(|_| "set".into()),
            to_state: Some("set".into()),
            detail: serde_json::json!({ "url": url }),
        }],
    )?;
    tx.commit().ctx("commit a webhook")?;
    Ok(Webhook {
        url: url.into(),
        updated_at: now,
    })
}

pub fn get(conn: &Connection, enterprise: &str) -> Result<Option<Webhook>, StoreError> {
    let row = conn
        .query_row(
            "SELECT url, updated_at FROM webhooks WHERE enterprise = ?1",
            [enterprise],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()
        .ctx("read a webhook")?;
    row.map(|(url, at)| {
        Ok(Webhook {
            url,
            updated_at: parse_time(&at, "webhooks.updated_at")?,
        })
    })
    .transpose()
}

/// Removes the webhook and cancels what it still had to deliver. Whether there was one.
pub fn delete(
    conn: &mut Connection,
    enterprise: &str,
    by: &Caller,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin a webhook transaction")?;
    let removed = tx
        .execute("DELETE FROM webhooks WHERE enterprise = ?1", [enterprise])
        .ctx("delete a webhook")?;
    if removed == 0 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE webhook_deliveries SET state = 'cancelled'
         WHERE enterprise = ?1 AND state = 'pending'",
        [enterprise],
    )
    .ctx("cancel pending deliveries")?;
    audit::append(
        &tx,
        &[AuditEntry {
            at: now,
            actor: by.name.clone(),
            role: by.role.to_string(),
            action: "webhook.delete".into(),
            target: format!("webhook:{enterprise}"),
            from_state: Some("set".into()),
            to_state: None,
            detail: serde_json::json!({}),
        }],
    )?;
    tx.commit().ctx("commit a webhook removal")?;
    Ok(true)
}

/// Deliveries to attempt now: per enterprise only its oldest pending one, and only if due, so
/// that a failing receiver gets its statuses in order once it recovers.
pub fn due(conn: &Connection, now: DateTime<Utc>, limit: usize) -> Result<Vec<Due>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT d.id, d.enterprise, d.payload, d.attempts, d.next_ms, w.url, w.secret
             FROM webhook_deliveries d JOIN webhooks w ON w.enterprise = d.enterprise
             WHERE d.state = 'pending' ORDER BY d.id",
        )
        .ctx("prepare the due deliveries query")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .ctx("read due deliveries")?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for row in rows {
        let (id, enterprise, payload, attempts, next_ms, url, secret) =
            row.ctx("read a due delivery")?;
        if !seen.insert(enterprise) {
            continue;
        }
        if next_ms <= now.timestamp_millis() {
            out.push(Due {
                id,
                payload,
                attempts,
                url,
                secret,
            });
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

/// Records an attempt: delivered, retried at `retry_at`, or given up (`retry_at` none).
pub fn record(
    conn: &Connection,
    id: u64,
    attempt: Attempt,
    delivered: bool,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let log: String = conn
        .query_row(
            "SELECT log FROM webhook_deliveries WHERE id = ?1",
            [id as i64],
            |r| r.get(0),
        )
        .ctx("read a delivery log")?;
    let mut log: Vec<Attempt> = serde_json::from_str(&log).map_err(|e| StoreError::Corrupt {
        what: "webhook delivery log",
        detail: e.to_string(),
    })?;
    log.push(attempt);
    let state = match (delivered, retry_at) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "gave_up",
    };
    conn.execute(
        "UPDATE webhook_deliveries SET state = ?2, attempts = attempts + 1, next_ms = ?3, log = ?4
         WHERE id = ?1",
        params![
            id as i64,
            state,
            retry_at.map_or(0, |t| t.timestamp_millis()),
            serde_json::to_string(&log).expect("attempts serialise")
        ],
    )
    .ctx("record a delivery attempt")?;
    Ok(())
}

/// An enterprise's deliveries, newest first.
pub fn deliveries(
    conn: &Connection,
    enterprise: &str,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, transit, status, state, attempts, created_at, next_ms, log
             FROM webhook_deliveries WHERE enterprise = ?1 ORDER BY id DESC LIMIT ?2",
        )
        .ctx("prepare the deliveries query")?;
    let rows = stmt
        .query_map(params![enterprise, limit], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
            ))
        })
        .ctx("read deliveries")?;
    let mut out = Vec::new();
    for row in rows {
        let (id, transit, status, state, attempts, created_at, next_ms, log) =
            row.ctx("read a delivery")?;
        out.push(Delivery {
            id,
            transit,
            status,
            next_at: (state == "pending")
                .then(|| DateTime::from_timestamp_millis(next_ms))
                .flatten(),
            state,
            attempts,
            created_at: parse_time(&created_at, "webhook_deliveries.created_at")?,
            log: serde_json::from_str(&log).map_err(|e| StoreError::Corrupt {
                what: "webhook delivery log",
                detail: e.to_string(),
            })?,
        });
    }
    Ok(out)
}
