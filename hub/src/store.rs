//! The hub's durable store: every (site, seq) exactly once, in SQLite.
//!
//! WAL with `synchronous = FULL`: an Ack promises the events survive a power cut, so a commit
//! must have reached the disk before it returns. SQL is kept to what PostgreSQL also speaks
//! (`ON CONFLICT ... DO NOTHING / DO UPDATE`), except the pragmas and `WITHOUT ROWID`.
//!
//! The same file holds the supervision tables (transits, alarms, audit log, API tokens); each
//! module owns its schema text and [`Store::open`] creates them all, under one schema version.

use crate::progress::Progress;
use crate::registry::SiteState;
use chrono::{DateTime, SecondsFormat, Utc};
use qyt_proto::{AgentStatus, Batch, Body, DropReason, Presence, SiteId};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// 2: supervision (transits, alarms, progress), audit log, API-issued tokens, webhooks.
const SCHEMA_VERSION: i64 = 2;

/// How long a writer waits for another writer's transaction. Ingest, supervision and token
/// changes each have their own connection; their transactions are short, so waiting beats
/// failing (an ingest commit that failed would only be resent, but late).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    site        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    observed_at TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    body        TEXT    NOT NULL,  -- the event body as JSON, `kind` included
    ingested_at TEXT    NOT NULL,  -- when the hub committed it
    PRIMARY KEY (site, seq)        -- the UNIQUE(site, seq) that makes replays harmless
) WITHOUT ROWID;

-- Seqs an agent declared dropped (from its gap events), so they count as settled.
CREATE TABLE IF NOT EXISTS gaps (
    site        TEXT    NOT NULL,
    from_seq    INTEGER NOT NULL,
    to_seq      INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    declared_by INTEGER NOT NULL,  -- seq of the gap event
    PRIMARY KEY (site, from_seq, to_seq)
) WITHOUT ROWID;

-- Per-site summary, written in the same transaction as the events it summarises.
CREATE TABLE IF NOT EXISTS sites (
    site          TEXT    NOT NULL PRIMARY KEY,
    contiguous    INTEGER NOT NULL,
    stored_events INTEGER NOT NULL,
    last_seen     TEXT,
    backlog       INTEGER NOT NULL
);
";

const INSERT_EVENT: &str = "INSERT INTO events
    (site, seq, kind, observed_at, received_at, source, body, ingested_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (site, seq) DO NOTHING";

const INSERT_GAP: &str = "INSERT INTO gaps (site, from_seq, to_seq, reason, declared_by)
    VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (site, from_seq, to_seq) DO NOTHING";

const UPSERT_SITE: &str = "INSERT INTO sites (site, contiguous, stored_events, last_seen, backlog)
    VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (site) DO UPDATE SET contiguous = excluded.contiguous,
        stored_events = excluded.stored_events, last_seen = excluded.last_seen,
        backlog = excluded.backlog";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {path} for the database: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open SQLite database {path}: {source} (check store.path and its permissions)")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, this hub knows only {SCHEMA_VERSION}: run a newer qyt-hub")]
    SchemaTooNew { path: PathBuf, found: i64 },
    #[error("SQLite failed to {op}: {source}")]
    Sql {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

pub(crate) trait Context<T> {
    fn ctx(self, op: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, rusqlite::Error> {
    fn ctx(self, op: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { op, source })
    }
}

/// One unit of work for a transaction, in arrival order.
#[derive(Debug)]
pub enum Job {
    /// A validated batch.
    Batch(Batch),
    /// A validated status message.
    Status(AgentStatus),
}

/// What one commit did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Committed {
    pub batches: u64,
    pub stored: u64,
    pub duplicates: u64,
}

/// The writing connection. There is exactly one, owned by the ingest writer.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database and its directory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
            });
        }
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        for schema in [
            SCHEMA,
            crate::audit::SCHEMA,
            crate::access::SCHEMA,
            crate::supervision::SCHEMA,
            crate::webhook::SCHEMA,
        ] {
            conn.execute_batch(schema).ctx("create the schema")?;
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .ctx("record the schema version")?;
        Ok(Store { conn })
    }

    /// Another writing connection to the database [`Store::open`] has created, for the parts
    /// that write besides ingest (supervision, tokens).
    pub fn writer(path: &Path) -> Result<Connection, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        Ok(conn)
    }

    /// Rebuilds the state of the declared sites from what is stored.
    pub fn load(&self, sites: &[SiteId]) -> Result<BTreeMap<SiteId, SiteState>, StoreError> {
        let mut summary = self
            .conn
            .prepare(
                "SELECT contiguous, stored_events, last_seen, backlog FROM sites WHERE site = ?1",
            )
            .ctx("prepare the site summary query")?;
        let mut above = self
            .conn
            .prepare("SELECT seq FROM events WHERE site = ?1 AND seq > ?2 ORDER BY seq")
            .ctx("prepare the stored seqs query")?;
        let mut gaps = self
            .conn
            .prepare("SELECT from_seq, to_seq FROM gaps WHERE site = ?1 AND to_seq > ?2")
            .ctx("prepare the gaps query")?;
        let mut out = BTreeMap::new();
        for site in sites {
            let row = summary
                .query_row([site.as_str()], |r| {
                    Ok((
                        r.get::<_, u64>(0)?,
                        r.get::<_, u64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, u64>(3)?,
                    ))
                })
                .optional()
                .ctx("read a site summary")?;
            let Some((contiguous, stored_events, last_seen, backlog)) = row else {
                out.insert(site.clone(), SiteState::default());
                continue;
            };
            let mut progress = Progress::starting_at(contiguous);
            // Only the part above `contiguous` can hold holes, so only that part is read.
            let seqs = above
                .query_map(params![site.as_str(), contiguous], |r| r.get::<_, u64>(0))
                .ctx("read stored seqs")?
                .collect::<Result<Vec<_>, _>>()
                .ctx("read stored seqs")?;
            progress.record_stored(&seqs);
            let ranges = gaps
                .query_map(params![site.as_str(), contiguous], |r| {
                    Ok((r.get::<_, u64>(0)?, r.get::<_, u64>(1)?))
                })
                .ctx("read gaps")?;
            for range in ranges {
                let (from, to) = range.ctx("read gaps")?;
                progress.record_dropped(from, to);
            }
            let last_seen = last_seen.map(|t| parse_time(&t, "last_seen")).transpose()?;
            out.insert(
                site.clone(),
                SiteState {
                    progress,
                    stored_events,
                    last_seen,
                    backlog,
                    online: false,
                    agent_version: None,
                    status_at: None,
                    oldest_unacked_age_s: None,
                },
            );
        }
        Ok(out)
    }

    /// Stores a group of jobs in one transaction, updating `sites` (copies of the registry
    /// entries of every site in the group) to what the database holds once it commits. On error
    /// nothing is stored and `sites` must be discarded.
    pub fn commit(
        &mut self,
        jobs: &[Job],
        sites: &mut HashMap<SiteId, SiteState>,
        now: DateTime<Utc>,
    ) -> Result<Committed, StoreError> {
        let now_text = time_text(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin a transaction")?;
        let mut done = Committed::default();
        {
            let mut insert = tx
                .prepare_cached(INSERT_EVENT)
                .ctx("prepare the event insert")?;
            let mut insert_gap = tx
                .prepare_cached(INSERT_GAP)
                .ctx("prepare the gap insert")?;
            for job in jobs {
                match job {
                    Job::Batch(batch) => {
                        let state = sites.entry(batch.site.clone()).or_default();
                        let site = batch.site.as_str();
                        let mut stored = Vec::with_capacity(batch.events.len());
                        for e in &batch.events {
                            let body = serde_json::to_string(&e.body)
                                .expect("event bodies always serialise");
                            let inserted = insert
                                .execute(params![
                                    site,
                                    e.seq.0,
                                    e.body.class().as_str(),
                                    time_text(e.observed_at),
                                    time_text(e.received_at),
                                    e.source,
                                    body,
                                    now_text,
                                ])
                                .ctx("insert an event")?;
                            if inserted == 0 {
                                done.duplicates += 1;
                                continue;
                            }
                            stored.push(e.seq.0);
                            if let Body::Gap(gap) = &e.body {
                                for [from, to] in &gap.ranges {
                                    insert_gap
                                        .execute(params![
                                            site,
                                            from.0,
                                            to.0,
                                            drop_reason(gap.reason),
                                            e.seq.0
                                        ])
                                        .ctx("insert a gap")?;
                                    state.progress.record_dropped(from.0, to.0);
                                }
                            }
                        }
                        done.batches += 1;
                        done.stored += stored.len() as u64;
                        state.progress.record_stored(&stored);
                        state.stored_events += stored.len() as u64;
                        state.last_seen = Some(now);
                    }
                    Job::Status(status) => {
                        let state = sites.entry(status.site.clone()).or_default();
                        state.online = status.state == Presence::Online;
                        if state.online {
                            state.last_seen = Some(now);
                            // The last will carries no figures, so only an online status
                            // updates them; offline keeps what the agent last said it held.
                            state.backlog = status.buffered_events;
                            state.agent_version = Some(status.agent_version.clone());
                            state.status_at = Some(now);
                            state.oldest_unacked_age_s = status.oldest_unacked_age_s;
                        }
                    }
                }
            }
            let mut upsert = tx
                .prepare_cached(UPSERT_SITE)
                .ctx("prepare the site upsert")?;
            for (site, s) in sites.iter() {
                upsert
                    .execute(params![
                        site.as_str(),
                        s.progress.contiguous(),
                        s.stored_events,
                        s.last_seen.map(time_text),
                        s.backlog,
                    ])
                    .ctx("update a site summary")?;
            }
        }
        tx.commit().ctx("commit")?;
        Ok(done)
    }
}

/// A read-only connection for the API; WAL lets it read while the writer commits.
pub struct Reader {
    conn: Connection,
}

/// One stored event as the API shows it: envelope fields and the body's fields side by side.
pub type EventJson = serde_json::Map<String, serde_json::Value>;

impl Reader {
    /// The connection, for the queries other modules own (supervision, audit).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(5))
            .ctx("set the reader's busy timeout")?;
        Ok(Reader { conn })
    }
}

/// Up to `limit` events of `site` with seq above `after`, in seq order.
pub fn events(
    conn: &Connection,
    site: &SiteId,
    after: u64,
    limit: u32,
) -> Result<Vec<EventJson>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, kind, observed_at, received_at, source, body, ingested_at
             FROM events WHERE site = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .ctx("prepare the events query")?;
    let rows = stmt
        .query_map(params![site.as_str(), after, limit], |r| {
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .ctx("query events")?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, kind, observed_at, received_at, source, body, ingested_at) =
            row.ctx("read an event")?;
        let mut json = match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(StoreError::Corrupt {
                    what: "event body",
                    detail: format!("site {site} seq {seq} is not a JSON object"),
                })
            }
        };
        json.insert("seq".into(), seq.into());
        json.insert("kind".into(), kind.into());
        json.insert("observed_at".into(), observed_at.into());
        json.insert("received_at".into(), received_at.into());
        json.insert("source".into(), source.into());
        json.insert("ingested_at".into(), ingested_at.into());
        out.push(json);
    }
    Ok(out)
}

pub(crate) fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn parse_time(text: &str, what: &'static str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what,
            detail: format!("{text:?} is not an RFC 3339 time: {e}"),
        })
}

fn drop_reason(r: DropReason) -> &'static str {
    match r {
        DropReason::BufferFull => "buffer_full",
        DropReason::Corrupt => "corrupt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyt_proto::{Event, GapBody, Seq, PROTOCOL_VERSION};

    fn site() -> SiteId {
        SiteId::new("gate-1").unwrap()
    }

    fn ev(seq: u64, body: Body) -> Event {
        Event {
            site: site(),
            seq: Seq(seq),
            observed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            received_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
            source: "cam".into(),
            body,
        }
    }

    fn raw(seq: u64) -> Event {
        ev(
            seq,
            Body::Raw {
                payload: serde_json::json!({"n": seq}),
            },
        )
    }

    fn batch(events: Vec<Event>) -> Job {
        Job::Batch(Batch {
            v: PROTOCOL_VERSION,
            site: site(),
            events,
        })
    }

    /// Commits like the writer does: on copies, published only on success.
    fn commit(
        store: &mut Store,
        state: &mut BTreeMap<SiteId, SiteState>,
        jobs: &[Job],
    ) -> Committed {
        let mut copies: HashMap<_, _> = state.clone().into_iter().collect();
        let done = store.commit(jobs, &mut copies, Utc::now()).unwrap();
        state.extend(copies);
        done
    }

    #[test]
    fn replays_are_stored_once_and_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/hub.db");
        let mut store = Store::open(&path).unwrap();
        let mut state = store.load(&[site()]).unwrap();
        assert_eq!(state[&site()], SiteState::default());

        let done = commit(
            &mut store,
            &mut state,
            &[batch(vec![raw(1), raw(2), raw(3)])],
        );
        assert_eq!(
            done,
            Committed {
                batches: 1,
                stored: 3,
                duplicates: 0
            }
        );
        let done = commit(
            &mut store,
            &mut state,
            &[
                batch(vec![raw(2), raw(3)]),
                batch(vec![raw(3), raw(6), raw(7)]),
            ],
        );
        assert_eq!(
            done,
            Committed {
                batches: 2,
                stored: 2,
                duplicates: 3
            }
        );
        let gap = GapBody::from_sorted([Seq(9)], DropReason::BufferFull);
        commit(
            &mut store,
            &mut state,
            &[batch(vec![ev(10, Body::Gap(gap)), raw(12)])],
        );
        let s = &state[&site()];
        assert_eq!(s.stored_events, 7);
        assert_eq!(s.progress.contiguous(), 3);
        assert_eq!(s.progress.missing(10), vec![[4, 5], [8, 8], [11, 11]]);
        drop(store);

        let store = Store::open(&path).unwrap();
        let reloaded = store.load(&[site()]).unwrap();
        let r = &reloaded[&site()];
        assert_eq!(r.progress, s.progress);
        assert_eq!(r.stored_events, 7);
        assert_eq!(r.last_seen, s.last_seen);
        assert!(!r.online);
    }

    #[test]
    fn gaps_persist_and_close_holes_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let mut store = Store::open(&path).unwrap();
        let mut state = store.load(&[site()]).unwrap();
        let gap = GapBody::from_sorted([Seq(2), Seq(3)], DropReason::BufferFull);
        commit(
            &mut store,
            &mut state,
            &[batch(vec![ev(5, Body::Gap(gap))])],
        );
        drop(store);
        let mut store = Store::open(&path).unwrap();
        let mut state = store.load(&[site()]).unwrap();
        assert_eq!(state[&site()].progress.missing(10), vec![[1, 1], [4, 4]]);
        commit(&mut store, &mut state, &[batch(vec![raw(1), raw(4)])]);
        assert_eq!(state[&site()].progress.contiguous(), 5);
    }

    #[test]
    fn reader_flattens_bodies_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.db");
        let mut store = Store::open(&path).unwrap();
        let mut state = store.load(&[site()]).unwrap();
        commit(&mut store, &mut state, &[batch((1..=5).map(raw).collect())]);
        let reader = Reader::open(&path).unwrap();
        let page = events(reader.conn(), &site(), 2, 2).unwrap();
        let seqs: Vec<_> = page.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![3, 4]);
        assert_eq!(page[0]["kind"], "raw");
        assert_eq!(page[0]["payload"], serde_json::json!({"n": 3}));
        assert_eq!(page[0]["observed_at"], "2023-11-14T22:13:20Z");
        assert_eq!(page[0]["source"], "cam");
    }
}
