//! Sites: their ingest state, and the events they sent.

use crate::api::error::query_error;
use crate::api::{limit, read, ApiError, ApiState};
use crate::progress::MAX_MISSING_RANGES;
use crate::store::EventJson;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use qyt_proto::SiteId;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub struct SiteView {
    site: SiteId,
    online: bool,
    last_seen: Option<DateTime<Utc>>,
    stored_events: u64,
    contiguous_seq: u64,
    missing: Vec<[u64; 2]>,
    backlog: u64,
    agent_version: Option<String>,
}

pub async fn list(State(st): State<ApiState>) -> Json<Vec<SiteView>> {
    Json(st.registry.read(|all| {
        all.iter()
            .map(|(site, s)| SiteView {
                site: site.clone(),
                online: s.online,
                last_seen: s.last_seen,
                stored_events: s.stored_events,
                contiguous_seq: s.progress.contiguous(),
                missing: s.progress.missing(MAX_MISSING_RANGES),
                backlog: s.backlog,
                agent_version: s.agent_version.clone(),
            })
            .collect()
    }))
}

#[derive(Deserialize)]
pub struct Page {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

pub async fn events(
    State(st): State<ApiState>,
    Path(site): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Vec<EventJson>>, ApiError> {
    let Query(page) =
        page.map_err(|e| query_error(e, "use ?after=SEQ&limit=N with whole numbers"))?;
    let site = SiteId::new(&site)
        .ok()
        .filter(|s| st.registry.read(|all| all.contains_key(s)))
        .ok_or_else(|| {
            ApiError::not_found(format!("site {site:?} is not declared in the hub config"))
        })?;
    let limit = limit(page.limit, 100, 1000)?;
    let rows = read(&st, move |conn| {
        crate::store::events(conn, &site, page.after, limit)
    })
    .await?;
    Ok(Json(rows))
}
