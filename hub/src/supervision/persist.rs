//! Supervision in SQLite: transits (their engine state as JSON beside the columns queries
//! filter on), their timelines, alarms, and how far the engine has applied each site's events.
//!
//! One transaction per engine step: the changes and the progress marks of the events that
//! caused them commit together, so after a crash every stored event is applied exactly once.
//! Portable SQL (PostgreSQL accepts the partial unique index that keeps one open alarm per rule
//! and subject).

use crate::audit::{self, AuditEntry};
use crate::progress::Progress;
use crate::store::{parse_time, time_text, Context, StoreError};
use crate::supervision::alarm::{Alarm, AlarmId};
use crate::supervision::engine::{Changes, Weighing, WEIGHINGS_KEPT};
use crate::supervision::transit::{
    normalize_plate, EntryKind, EventRef, TimelineEntry, Transit, TransitId,
};
use crate::webhook;
use qyt_proto::{Body, Event, Seq, SiteId};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS transits (
    id          TEXT NOT NULL PRIMARY KEY,
    enterprise  TEXT NOT NULL,
    status      TEXT NOT NULL,
    plate       TEXT NOT NULL,   -- normalised (upper case, no spaces or dashes)
    origin      TEXT NOT NULL,
    destination TEXT NOT NULL,
    declared_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    state       TEXT NOT NULL    -- the engine's Transit as JSON
);
CREATE INDEX IF NOT EXISTS transits_by_enterprise ON transits (enterprise, declared_at);
CREATE INDEX IF NOT EXISTS transits_by_status ON transits (status, declared_at);

CREATE TABLE IF NOT EXISTS transit_timeline (
    transit     TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    at          TEXT    NOT NULL,
    entry       TEXT    NOT NULL,  -- TimelineEntry as JSON
    PRIMARY KEY (transit, n)
);

CREATE TABLE IF NOT EXISTS alarms (
    id          INTEGER NOT NULL PRIMARY KEY,
    rule        TEXT    NOT NULL,
    subject     TEXT    NOT NULL,  -- transit:<id> or site:<id>
    severity    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    active      INTEGER NOT NULL,
    transit     TEXT,
    enterprise  TEXT,
    site        TEXT,
    raised_at   TEXT    NOT NULL,
    alarm       TEXT    NOT NULL   -- Alarm as JSON
);
-- An alarm whose condition returns while it is open is the same alarm.
CREATE UNIQUE INDEX IF NOT EXISTS alarms_one_open ON alarms (rule, subject) WHERE state <> 'closed';
CREATE INDEX IF NOT EXISTS alarms_by_transit ON alarms (transit, id);

-- Seqs of each site the engine has applied, as settled ranges.
CREATE TABLE IF NOT EXISTS supervision_progress (
    site        TEXT    NOT NULL,
    from_seq    INTEGER NOT NULL,
    to_seq      INTEGER NOT NULL,
    PRIMARY KEY (site, from_seq)
);

-- The latest stable weighings of each site, kept to match with the gate passage of a transit's
-- end (the engine's own list, so it survives a restart between weighing and gate).
CREATE TABLE IF NOT EXISTS supervision_weighings (
    site        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    at          TEXT    NOT NULL,
    kg          REAL    NOT NULL,
    PRIMARY KEY (site, seq)
);
";

/// Everything the engine needs to start where it stopped.
pub struct Loaded {
    pub transits: Vec<Transit>,
    pub alarms: Vec<Alarm>,
    pub next_alarm_id: AlarmId,
    pub progress: BTreeMap<SiteId, Progress>,
    pub weighings: Vec<Weighing>,
}

fn json<T: serde::de::DeserializeOwned>(text: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("supervision types always serialise")
}

pub fn load(conn: &Connection, sites: &[SiteId]) -> Result<Loaded, StoreError> {
    let mut stmt = conn
        .prepare("SELECT state FROM transits WHERE status <> 'released'")
        .ctx("prepare the open transits query")?;
    let transits = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .ctx("read open transits")?
        .map(|r| json(&r.ctx("read a transit")?, "transit state"))
        .collect::<Result<Vec<Transit>, _>>()?;
    let mut stmt = conn
        .prepare("SELECT alarm FROM alarms WHERE state <> 'closed'")
        .ctx("prepare the open alarms query")?;
    let alarms = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .ctx("read open alarms")?
        .map(|r| json(&r.ctx("read an alarm")?, "alarm"))
        .collect::<Result<Vec<Alarm>, _>>()?;
    let next_alarm_id: i64 = conn
        .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM alarms", [], |r| {
            r.get(0)
        })
        .ctx("read the next alarm id")?;
    let mut stmt = conn
        .prepare(
            "SELECT from_seq, to_seq FROM supervision_progress WHERE site = ?1 ORDER BY from_seq",
        )
        .ctx("prepare the progress query")?;
    let mut progress = BTreeMap::new();
    for site in sites {
        let ranges = stmt
            .query_map([site.as_str()], |r| {
                Ok([r.get::<_, u64>(0)?, r.get::<_, u64>(1)?])
            })
            .ctx("read supervision progress")?
            .collect::<Result<Vec<_>, _>>()
            .ctx("read supervision progress")?;
        progress.insert(site.clone(), Progress::from_ranges(&ranges));
    }
    let mut stmt = conn
        .prepare("SELECT site, seq, at, kg FROM supervision_weighings ORDER BY site, seq")
        .ctx("prepare the weighings query")?;
    let weighings = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, f64>(3)?,
            ))
        })
        .ctx("read kept weighings")?
        .map(|row| {
            let (site, seq, at, kg) = row.ctx("read a kept weighing")?;
            Ok(Weighing {
                at: parse_time(&at, "weighing time")?,
                kg,
                cause: EventRef {
                    site: SiteId::new(site).map_err(|e| StoreError::Corrupt {
                        what: "weighing site",
                        detail: e.to_string(),
                    })?,
                    seq,
                },
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Loaded {
        transits,
        alarms,
        next_alarm_id: next_alarm_id as AlarmId,
        progress,
        weighings,
    })
}

/// A stored event, or its seq and why it cannot be decoded.
pub type Stored = Result<Event, (u64, String)>;

/// Stored events of `site` with seq in `from..=to`, at most `limit`, in seq order.
pub fn events(
    conn: &Connection,
    site: &SiteId,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<Stored>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, observed_at, received_at, source, body FROM events
             WHERE site = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
        )
        .ctx("prepare the supervision events query")?;
    let rows = stmt
        .query_map(
            params![site.as_str(), from, to.min(i64::MAX as u64), limit as i64],
            |r| {
                Ok((
                    r.get::<_, u64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .ctx("read events to supervise")?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, observed, received, source, body) = row.ctx("read an event to supervise")?;
        let decoded = (|| {
            Ok::<_, String>(Event {
                site: site.clone(),
                seq: Seq(seq),
                observed_at: parse_time(&observed, "observed_at").map_err(|e| e.to_string())?,
                received_at: parse_time(&received, "received_at").map_err(|e| e.to_string())?,
                source,
                body: serde_json::from_str::<Body>(&body).map_err(|e| e.to_string())?,
            })
        })();
        out.push(decoded.map_err(|e| (seq, e)));
    }
    Ok(out)
}

/// Writes one engine step and the progress of the sites it read, in one transaction.
pub fn save(
    conn: &mut Connection,
    changes: &Changes,
    progress: &BTreeMap<&SiteId, &Progress>,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin a supervision transaction")?;
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO transits (id, enterprise, status, plate, origin, destination,
                     declared_at, updated_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status,
                     updated_at = excluded.updated_at, state = excluded.state",
            )
            .ctx("prepare the transit upsert")?;
        for (id, t) in &changes.transits {
            upsert
                .execute(params![
                    id.as_str(),
                    t.declaration.enterprise.as_str(),
                    t.status.as_str(),
                    normalize_plate(&t.declaration.plate),
                    t.declaration.origin.as_str(),
                    t.declaration.destination.as_str(),
                    time_text(t.declared_at),
                    time_text(t.updated_at),
                    to_json(t),
                ])
                .ctx("store a transit")?;
        }
        let mut entry = tx
            .prepare_cached(
                "INSERT INTO transit_timeline (transit, n, at, entry) VALUES (?1, ?2, ?3, ?4)",
            )
            .ctx("prepare the timeline insert")?;
        for (id, e) in &changes.timeline {
            entry
                .execute(params![id.as_str(), e.n, time_text(e.at), to_json(e)])
                .ctx("append to a timeline")?;
            if let (EntryKind::Status, Some(to), Some(t)) = (e.kind, e.to, changes.transits.get(id))
            {
                let enterprise = t.declaration.enterprise.as_str();
                let payload = serde_json::json!({
                    "type": "transit.status",
                    "transit": id,
                    "enterprise": enterprise,
                    "from": e.from,
                    "status": to,
                    "at": e.at,
                    "cause": e.cause,
                    "text": e.text,
                });
                webhook::outbox::enqueue(
                    &tx,
                    enterprise,
                    id.as_str(),
                    to.as_str(),
                    &payload,
                    e.recorded_at,
                )?;
            }
        }
        // In id order: an alarm closed in this step frees its (rule, subject) before a newer
        // one of the same rule and subject is written.
        let mut alarm = tx
            .prepare_cached(
                "INSERT INTO alarms (id, rule, subject, severity, state, active, transit,
                     enterprise, site, raised_at, alarm)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                     active = excluded.active, alarm = excluded.alarm",
            )
            .ctx("prepare the alarm upsert")?;
        for (id, a) in &changes.alarms {
            alarm
                .execute(params![
                    *id as i64,
                    a.rule.as_str(),
                    a.subject(),
                    a.severity.as_str(),
                    a.state.as_str(),
                    a.active,
                    a.transit.as_ref().map(TransitId::as_str),
                    a.enterprise.as_ref().map(|e| e.as_str()),
                    a.site.as_ref().map(SiteId::as_str),
                    time_text(a.raised_at),
                    to_json(a),
                ])
                .ctx("store an alarm")?;
        }
        audit::append(&tx, &changes.audit)?;
        let mut weighing = tx
            .prepare_cached(
                "INSERT INTO supervision_weighings (site, seq, at, kg) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (site, seq) DO NOTHING",
            )
            .ctx("prepare the weighing insert")?;
        // Only the latest WEIGHINGS_KEPT of a site, as the engine keeps them.
        let mut prune = tx
            .prepare_cached(
                "DELETE FROM supervision_weighings WHERE site = ?1 AND seq < (
                     SELECT MIN(seq) FROM (
                         SELECT seq FROM supervision_weighings WHERE site = ?1
                         ORDER BY seq DESC LIMIT ?2
                     ) AS kept
                 )",
            )
            .ctx("prepare the weighing prune")?;
        let mut weighed = std::collections::BTreeSet::new();
        for w in &changes.weighings {
            weighing
                .execute(params![
                    w.cause.site.as_str(),
                    w.cause.seq,
                    time_text(w.at),
                    w.kg
                ])
                .ctx("keep a weighing")?;
            weighed.insert(&w.cause.site);
        }
        for site in weighed {
            prune
                .execute(params![site.as_str(), WEIGHINGS_KEPT as i64])
                .ctx("prune kept weighings")?;
        }
        let mut clear = tx
            .prepare_cached("DELETE FROM supervision_progress WHERE site = ?1")
            .ctx("prepare the progress reset")?;
        let mut mark = tx
            .prepare_cached(
                "INSERT INTO supervision_progress (site, from_seq, to_seq) VALUES (?1, ?2, ?3)",
            )
            .ctx("prepare the progress insert")?;
        for (site, p) in progress {
            clear
                .execute([site.as_str()])
                .ctx("reset supervision progress")?;
            for [from, to] in p.ranges() {
                mark.execute(params![site.as_str(), from, to])
                    .ctx("record supervision progress")?;
            }
        }
    }
    tx.commit().ctx("commit supervision changes")
}

pub fn transit_exists(conn: &Connection, id: &TransitId) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT 1 FROM transits WHERE id = ?1",
        [id.as_str()],
        |_| Ok(()),
    )
    .optional()
    .ctx("look a transit up")
    .map(|r| r.is_some())
}

/// Filters of the transit list; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct TransitFilter {
    pub status: Option<String>,
    pub enterprise: Option<String>,
    /// Origin or destination.
    pub site: Option<String>,
    pub plate: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

pub fn transits(conn: &Connection, f: &TransitFilter) -> Result<Vec<Transit>, StoreError> {
    let mut sql = String::from("SELECT state FROM transits WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut eq = |column: &str, v: &Option<String>, args: &mut Vec<Value>| {
        if let Some(v) = v {
            args.push(Value::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    };
    eq("status", &f.status, &mut args);
    eq("enterprise", &f.enterprise, &mut args);
    eq("plate", &f.plate.as_deref().map(normalize_plate), &mut args);
    if let Some(site) = &f.site {
        args.push(Value::Text(site.clone()));
        let n = args.len();
        sql.push_str(&format!(" AND (origin = ?{n} OR destination = ?{n})"));
    }
    args.push(Value::Integer(f.limit.into()));
    args.push(Value::Integer(f.offset.into()));
    sql.push_str(&format!(
        " ORDER BY declared_at DESC, id LIMIT ?{} OFFSET ?{}",
        args.len() - 1,
        args.len()
    ));
    let mut stmt = conn.prepare(&sql).ctx("prepare the transit list")?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
        .ctx("list transits")?;
    rows.map(|r| json(&r.ctx("read a transit")?, "transit state"))
        .collect()
}

pub fn transit(conn: &Connection, id: &str) -> Result<Option<Transit>, StoreError> {
    let state = conn
        .query_row("SELECT state FROM transits WHERE id = ?1", [id], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .ctx("read a transit")?;
    state.map(|s| json(&s, "transit state")).transpose()
}

/// A transit's timeline in the order things happened (observed time), then as recorded.
pub fn timeline(conn: &Connection, id: &TransitId) -> Result<Vec<TimelineEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT entry FROM transit_timeline WHERE transit = ?1 ORDER BY at, n")
        .ctx("prepare the timeline query")?;
    let rows = stmt
        .query_map([id.as_str()], |r| r.get::<_, String>(0))
        .ctx("read a timeline")?;
    rows.map(|r| json(&r.ctx("read a timeline entry")?, "timeline entry"))
        .collect()
}

#[derive(Debug, Default, Clone)]
pub struct AlarmFilter {
    /// States to include; empty means all.
    pub states: Vec<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub transit: Option<String>,
    pub site: Option<String>,
    pub enterprise: Option<String>,
    pub active: Option<bool>,
    pub limit: u32,
    pub offset: u32,
}

pub fn alarms(conn: &Connection, f: &AlarmFilter) -> Result<Vec<Alarm>, StoreError> {
    let mut sql = String::from("SELECT alarm FROM alarms WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if !f.states.is_empty() {
        let mut marks = Vec::new();
        for s in &f.states {
            args.push(Value::Text(s.clone()));
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
    }
    for (column, v) in [
        ("rule", &f.rule),
        ("severity", &f.severity),
        ("transit", &f.transit),
        ("site", &f.site),
        ("enterprise", &f.enterprise),
    ] {
        if let Some(v) = v {
            args.push(Value::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    if let Some(active) = f.active {
        args.push(Value::Integer(active.into()));
        sql.push_str(&format!(" AND active = ?{}", args.len()));
    }
    args.push(Value::Integer(f.limit.into()));
    args.push(Value::Integer(f.offset.into()));
    sql.push_str(&format!(
        " ORDER BY id DESC LIMIT ?{} OFFSET ?{}",
        args.len() - 1,
        args.len()
    ));
    let mut stmt = conn.prepare(&sql).ctx("prepare the alarm list")?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
        .ctx("list alarms")?;
    rows.map(|r| json(&r.ctx("read an alarm")?, "alarm"))
        .collect()
}

pub fn alarm(conn: &Connection, id: AlarmId) -> Result<Option<Alarm>, StoreError> {
    let text = conn
        .query_row("SELECT alarm FROM alarms WHERE id = ?1", [id as i64], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .ctx("read an alarm")?;
    text.map(|t| json(&t, "alarm")).transpose()
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    /// Entries with a larger id only.
    pub after: u64,
    pub limit: u32,
}

/// Audit entries with their ids, oldest first.
pub fn audit_log(conn: &Connection, f: &AuditFilter) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
    let mut sql = String::from(
        "SELECT id, at, actor, role, action, target, from_state, to_state, detail
         FROM audit_log WHERE id > ?1",
    );
    let mut args: Vec<Value> = vec![Value::Integer(f.after.min(i64::MAX as u64) as i64)];
    for (column, v) in [
        ("actor", &f.actor),
        ("target", &f.target),
        ("action", &f.action),
    ] {
        if let Some(v) = v {
            args.push(Value::Text(v.clone()));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    args.push(Value::Integer(f.limit.into()));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare(&sql).ctx("prepare the audit query")?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, String>(8)?,
            ))
        })
        .ctx("read the audit log")?;
    let mut out = Vec::new();
    for row in rows {
        let (id, at, actor, role, action, target, from_state, to_state, detail) =
            row.ctx("read an audit entry")?;
        out.push((
            id,
            AuditEntry {
                at: parse_time(&at, "audit_log.at")?,
                actor,
                role,
                action,
                target,
                from_state,
                to_state,
                detail: json(&detail, "audit detail")?,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn kept_weighings_survive_a_reload_and_only_the_latest_per_site() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        Store::open(&path).unwrap();
        let mut conn = Store::writer(&path).unwrap();
        let site = |s: &str| SiteId::new(s).unwrap();
        let weighing = |s: &str, seq: u64| Weighing {
            at: "2026-03-02T08:00:00Z"
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
                + chrono::Duration::seconds(seq as i64),
            kg: 1000.0 + seq as f64,
            cause: EventRef { site: site(s), seq },
        };
        // Two steps, the second repeating one weighing (a replay) and passing the limit.
        let first = Changes {
            weighings: (1..=40).map(|n| weighing("gate-a", n)).collect(),
            ..Changes::default()
        };
        let second = Changes {
            weighings: (40..=70)
                .map(|n| weighing("gate-a", n))
                .chain([weighing("gate-b", 5)])
                .collect(),
            ..Changes::default()
        };
        save(&mut conn, &first, &BTreeMap::new()).unwrap();
        save(&mut conn, &second, &BTreeMap::new()).unwrap();

        let loaded = load(&conn, &[site("gate-a"), site("gate-b")]).unwrap();
        let a: Vec<u64> = loaded
            .weighings
            .iter()
            .filter(|w| w.cause.site == site("gate-a"))
            .map(|w| w.cause.seq)
            .collect();
        let kept = WEIGHINGS_KEPT as u64;
        assert_eq!(a, ((70 - kept + 1)..=70).collect::<Vec<_>>());
        assert!(loaded.weighings.contains(&weighing("gate-a", 70)));
        assert!(loaded.weighings.contains(&weighing("gate-b", 5)));
    }
}
