//! Alarms: the command centre's list and its actions (acknowledge, dispatch, close); an
//! enterprise sees the alarms about its own transits that are not closed, without the
//! operators' steps and comments.

use crate::access::{Caller, Role};
use crate::api::error::{query_error, JsonBody};
use crate::api::{limit, read, ApiError, ApiState};
use crate::supervision::alarm::{Alarm, AlarmId, AlarmState, CloseReason};
use crate::supervision::engine::{Changes, EngineError};
use crate::supervision::persist::{self, AlarmFilter};
use crate::supervision::rules::{Rule, Severity};
use crate::supervision::service::ActionError;
use crate::supervision::transit::TransitId;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an enterprise sees of an alarm.
#[derive(Debug, Clone, Serialize)]
pub struct PublicAlarm {
    id: AlarmId,
    rule: Rule,
    severity: Severity,
    state: AlarmState,
    transit: Option<TransitId>,
    message: String,
    raised_at: DateTime<Utc>,
    observed_at: DateTime<Utc>,
    active: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AlarmView {
    Full(Box<Alarm>),
    Public(PublicAlarm),
}

/// The alarm as `caller` may see it (the caller's right to see it at all is checked before).
pub fn visible_alarm(a: Alarm, caller: &Caller) -> AlarmView {
    match caller.role {
        Role::Enterprise(_) => AlarmView::Public(PublicAlarm {
            id: a.id,
            rule: a.rule,
            severity: a.severity,
            state: a.state,
            transit: a.transit,
            message: a.message,
            raised_at: a.raised_at,
            observed_at: a.observed_at,
            active: a.active,
        }),
        _ => AlarmView::Full(Box::new(a)),
    }
}

const NOT_CLOSED: [&str; 3] = ["open", "acknowledged", "dispatched"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// One state, or `unclosed` for open, acknowledged and dispatched.
    state: Option<String>,
    rule: Option<String>,
    severity: Option<String>,
    transit: Option<String>,
    site: Option<String>,
    enterprise: Option<String>,
    active: Option<bool>,
    limit: Option<u32>,
    #[serde(default)]
    offset: u32,
}

pub async fn list(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<AlarmView>>, ApiError> {
    let Query(q) = q.map_err(|e| {
        query_error(
            e,
            "use ?state=&rule=&severity=&transit=&site=&enterprise=&active=true|false&limit=N&offset=N",
        )
    })?;
    let states = match q.state.as_deref() {
        None => vec![],
        Some("unclosed") => NOT_CLOSED.map(String::from).to_vec(),
        Some(s) if AlarmState::parse(s).is_some() => vec![s.to_string()],
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "state {s:?} is unknown: use open, acknowledged, dispatched, closed or unclosed"
            )))
        }
    };
    if let Some(r) = q.rule.as_deref().filter(|r| Rule::parse(r).is_none()) {
        return Err(ApiError::bad_request(format!(
            "rule {r:?} is unknown: use one of {}",
            Rule::ALL.map(Rule::as_str).join(", ")
        )));
    }
    if let Some(s) = q
        .severity
        .as_deref()
        .filter(|s| Severity::parse(s).is_none())
    {
        return Err(ApiError::bad_request(format!(
            "severity {s:?} is unknown: use info, minor, major or critical"
        )));
    }
    let mut filter = AlarmFilter {
        states,
        rule: q.rule,
        severity: q.severity,
        transit: q.transit,
        site: q.site,
        enterprise: q.enterprise,
        active: q.active,
        limit: limit(q.limit, 100, 1000)?,
        offset: q.offset,
    };
    if let Some(own) = caller.role.enterprise() {
        // Its own transits' alarms that are not closed, whatever it asks for.
        filter.enterprise = Some(own.to_string());
        filter.site = None;
        filter.states = match filter.states.first().map(String::as_str) {
            Some(s) if NOT_CLOSED.contains(&s) && filter.states.len() == 1 => filter.states,
            _ => NOT_CLOSED.map(String::from).to_vec(),
        };
    }
    let alarms = read(&st, move |c| persist::alarms(c, &filter)).await?;
    Ok(Json(
        alarms
            .into_iter()
            .map(|a| visible_alarm(a, &caller))
            .collect(),
    ))
}

fn alarm_id(id: &str) -> Result<AlarmId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no alarm {id:?}: alarm ids are numbers")))
}

pub async fn detail(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<AlarmView>, ApiError> {
    let n = alarm_id(&id)?;
    let a = read(&st, move |c| persist::alarm(c, n)).await?;
    let a = a
        .filter(|a| match caller.role.enterprise() {
            Some(own) => a.enterprise.as_ref() == Some(own) && a.state != AlarmState::Closed,
            None => true,
        })
        .ok_or_else(|| ApiError::not_found(format!("no alarm {id}")))?;
    Ok(Json(visible_alarm(a, &caller)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispatch {
    unit: String,
    comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Close {
    reason: CloseReason,
    comment: String,
}

pub async fn acknowledge(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Acknowledge>,
) -> Result<Json<Alarm>, ApiError> {
    let n = alarm_id(&id)?;
    step(&st, n, move |engine, now| {
        engine.acknowledge(n, body.comment, &caller, now)
    })
    .await
}

pub async fn dispatch(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Dispatch>,
) -> Result<Json<Alarm>, ApiError> {
    let n = alarm_id(&id)?;
    step(&st, n, move |engine, now| {
        engine.dispatch(n, &body.unit, body.comment, &caller, now)
    })
    .await
}

pub async fn close(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Close>,
) -> Result<Json<Alarm>, ApiError> {
    let n = alarm_id(&id)?;
    step(&st, n, move |engine, now| {
        engine.close(n, body.reason, Some(body.comment), &caller, now)
    })
    .await
}

/// Runs one lifecycle step; an alarm the engine does not hold is closed (409) or unknown (404).
async fn step(
    st: &ApiState,
    id: AlarmId,
    f: impl FnOnce(
            &mut crate::supervision::engine::Engine,
            DateTime<Utc>,
        ) -> Result<Changes, EngineError>
        + Send
        + 'static,
) -> Result<Json<Alarm>, ApiError> {
    let changes = st
        .supervision
        .act(move |engine, conn, now| match f(engine, now) {
            Err(EngineError::UnknownAlarm(_)) => match persist::alarm(conn, id)? {
                Some(a) => Err(ActionError::Engine(EngineError::Conflict(format!(
                    "alarm {id} is {}: nothing more can be done to it",
                    a.state.as_str()
                )))),
                None => Err(EngineError::UnknownAlarm(id).into()),
            },
            other => Ok(other?),
        })
        .await?;
    changes.alarms.get(&id).cloned().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "changed alarm missing from the result",
        )
    })
}
