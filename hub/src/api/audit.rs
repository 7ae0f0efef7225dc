//! The audit log of operator and admin actions, oldest first, paged by id.

use crate::api::error::query_error;
use crate::api::{limit, read, ApiError, ApiState};
use crate::audit::AuditEntry;
use crate::supervision::persist::{self, AuditFilter};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    actor: Option<String>,
    target: Option<String>,
    action: Option<String>,
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct Line {
    id: u64,
    #[serde(flatten)]
    entry: AuditEntry,
}

pub async fn list(
    State(st): State<ApiState>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Vec<Line>>, ApiError> {
    let Query(q) = q.map_err(|e| query_error(e, "use ?actor=&target=&action=&after=ID&limit=N"))?;
    let filter = AuditFilter {
        actor: q.actor,
        target: q.target,
        action: q.action,
        after: q.after,
        limit: limit(q.limit, 100, 1000)?,
    };
    let rows = read(&st, move |c| persist::audit_log(c, &filter)).await?;
    Ok(Json(
        rows.into_iter()
            .map(|(id, entry)| Line { id, entry })
            .collect(),
    ))
}
