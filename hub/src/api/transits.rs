//! Transits: declared by the declaration system (operator role), followed by operators and by
//! their enterprise (its own only; another's answers 404).

use crate::access::{Caller, Role};
use crate::api::alarms::{visible_alarm, AlarmView};
use crate::api::error::{query_error, JsonBody};
use crate::api::{limit, read, ApiError, ApiState};
use crate::supervision::persist::{self, AlarmFilter, TransitFilter};
use crate::supervision::service::ActionError;
use crate::supervision::transit::{
    Declaration, LastPosition, Reconciliation, Seen, Status, TimelineEntry, Transit, TransitId,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use qyt_proto::SealId;
use serde::{Deserialize, Serialize};

/// A transit as the API shows it: its declaration, where it is, and what was seen of it.
#[derive(Debug, Serialize)]
pub struct TransitView {
    #[serde(flatten)]
    declaration: Declaration,
    status: Status,
    /// The seals on the truck now (differs from `seal_ids` after a reseal).
    seals: Vec<SealId>,
    /// The effective time limit.
    limit: Option<DateTime<Utc>>,
    declared_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sealed: Option<Seen>,
    departed: Option<Seen>,
    in_transit: Option<Seen>,
    arrived: Option<Seen>,
    verified: Option<Seen>,
    released_at: Option<DateTime<Utc>>,
    last_position: Option<LastPosition>,
    battery_pct: Option<f64>,
}

impl From<Transit> for TransitView {
    fn from(t: Transit) -> TransitView {
        TransitView {
            limit: t.limit(),
            declaration: t.declaration,
            status: t.status,
            seals: t.seals,
            declared_at: t.declared_at,
            updated_at: t.updated_at,
            sealed: t.sealed,
            departed: t.departed,
            in_transit: t.in_transit,
            arrived: t.arrived,
            verified: t.verified,
            released_at: t.released_at,
            last_position: t.last_position,
            battery_pct: t.battery_pct,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TransitDetail {
    #[serde(flatten)]
    transit: TransitView,
    /// Everything that happened to it, in observed-time order, each with its cause.
    timeline: Vec<TimelineEntry>,
    /// Origin against destination, once arrived.
    reconciliation: Option<Reconciliation>,
    /// Operators: every alarm about it; enterprises: the ones not closed.
    alarms: Vec<AlarmView>,
}

pub async fn declare(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(declaration): JsonBody<Declaration>,
) -> Result<(StatusCode, Json<TransitView>), ApiError> {
    let id = declaration.id.clone();
    let changes = st
        .supervision
        .act(move |engine, conn, now| {
            let taken = persist::transit_exists(conn, &declaration.id)?;
            Ok(engine.declare(declaration, taken, &caller, now)?)
        })
        .await?;
    let t = changes.transits.get(&id).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "declared transit missing from the result",
        )
    })?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    enterprise: Option<String>,
    site: Option<String>,
    plate: Option<String>,
    limit: Option<u32>,
    #[serde(default)]
    offset: u32,
}

pub async fn list(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<TransitView>>, ApiError> {
    let Query(q) =
        q.map_err(|e| query_error(e, "use ?status=&enterprise=&site=&plate=&limit=N&offset=N"))?;
    if let Some(s) = q.status.as_deref().filter(|s| Status::parse(s).is_none()) {
        return Err(ApiError::bad_request(format!(
            "status {s:?} is unknown: use one of {}",
            Status::ALL.map(Status::as_str).join(", ")
        )));
    }
    let filter = TransitFilter {
        status: q.status,
        // An enterprise sees its own transits whatever it asks for.
        enterprise: match caller.role.enterprise() {
            Some(own) => Some(own.to_string()),
            None => q.enterprise,
        },
        site: q.site,
        plate: q.plate,
        limit: limit(q.limit, 100, 1000)?,
        offset: q.offset,
    };
    let list = read(&st, move |c| persist::transits(c, &filter)).await?;
    Ok(Json(list.into_iter().map(TransitView::from).collect()))
}

/// The transit if the caller may see it; 404 otherwise (also for another enterprise's).
async fn visible(st: &ApiState, caller: &Caller, id: &str) -> Result<Transit, ApiError> {
    let key = id.to_string();
    let t = read(st, move |c| persist::transit(c, &key)).await?;
    t.filter(|t| match &caller.role {
        Role::Enterprise(own) => t.declaration.enterprise == *own,
        _ => true,
    })
    .ok_or_else(|| ApiError::not_found(format!("no transit {id:?}")))
}

pub async fn detail(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TransitDetail>, ApiError> {
    let t = visible(&st, &caller, &id).await?;
    let tid = t.id().clone();
    let enterprise = caller.role.enterprise().is_some();
    let filter = AlarmFilter {
        transit: Some(tid.to_string()),
        states: if enterprise {
            vec!["open".into(), "acknowledged".into(), "dispatched".into()]
        } else {
            vec![]
        },
        limit: 1000,
        ..AlarmFilter::default()
    };
    let (mut timeline, alarms) = read(&st, move |c| {
        Ok((persist::timeline(c, &tid)?, persist::alarms(c, &filter)?))
    })
    .await?;
    if enterprise {
        for e in &mut timeline {
            e.comment = None;
        }
    }
    let tolerance = st.supervision.config().weight_tolerance_pct;
    Ok(Json(TransitDetail {
        reconciliation: t.reconciliation(tolerance),
        transit: t.into(),
        timeline,
        alarms: alarms
            .into_iter()
            .map(|a| visible_alarm(a, &caller))
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reseal {
    seal_ids: Vec<SealId>,
    comment: Option<String>,
}

pub async fn reseal(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Reseal>,
) -> Result<Json<TransitView>, ApiError> {
    let tid = transit_id(&id)?;
    let key = tid.clone();
    let changes = st
        .supervision
        .act(move |engine, conn, now| {
            closed_or(
                conn,
                &key,
                engine.reseal(&key, body.seal_ids, body.comment, &caller, now),
            )
        })
        .await?;
    changed(changes, &tid)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    comment: Option<String>,
}

pub async fn release(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Release>,
) -> Result<Json<TransitView>, ApiError> {
    let tid = transit_id(&id)?;
    let key = tid.clone();
    let changes = st
        .supervision
        .act(move |engine, conn, now| {
            closed_or(conn, &key, engine.release(&key, body.comment, &caller, now))
        })
        .await?;
    changed(changes, &tid)
}

fn transit_id(id: &str) -> Result<TransitId, ApiError> {
    TransitId::new(id).map_err(|_| ApiError::not_found(format!("no transit {id:?}")))
}

/// A transit the engine does not hold may exist released: that is a conflict, not a 404.
fn closed_or(
    conn: &rusqlite::Connection,
    id: &TransitId,
    r: Result<crate::supervision::engine::Changes, crate::supervision::engine::EngineError>,
) -> Result<crate::supervision::engine::Changes, ActionError> {
    match r {
        Err(crate::supervision::engine::EngineError::UnknownTransit(_))
            if persist::transit_exists(conn, id)? =>
        {
            Err(crate::supervision::engine::EngineError::Conflict(format!(
                "transit {id} is released: nothing more can be done to it"
            ))
            .into())
        }
        other => Ok(other?),
    }
}

fn changed(
    changes: crate::supervision::engine::Changes,
    id: &TransitId,
) -> Result<Json<TransitView>, ApiError> {
    changes
        .transits
        .get(id)
        .cloned()
        .map(|t| Json(t.into()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "changed transit missing from the result",
            )
        })
}
