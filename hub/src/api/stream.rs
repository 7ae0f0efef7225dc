//! The live stream (server-sent events) of transit changes and alarms for the operators' page;
//! an enterprise gets its own transits and their alarms, without the operators' comments.
//!
//! Events: `ready` once subscribed, then `transit` (a transit summary) and `alarm` (the alarm,
//! or its public view), and `lagged` if the client fell behind and must reload its lists. The
//! stream ends when the hub stops.

use crate::access::Caller;
use crate::api::alarms::visible_alarm;
use crate::api::ApiState;
use crate::supervision::service::Update;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

pub async fn events(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.supervision.subscribe();
    let ready = Event::default().event("ready").data("{}");
    let updates = stream::unfold(
        (rx, st.stop.clone(), caller),
        |(mut rx, mut stop, caller)| async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    _ = stop.wait_for(|s| *s) => return None,
                };
                let event = match next {
                    Ok(update) => render(update, &caller),
                    Err(RecvError::Lagged(n)) => Some(
                        Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{n}}}")),
                    ),
                    Err(RecvError::Closed) => return None,
                };
                if let Some(event) = event {
                    return Some((Ok(event), (rx, stop, caller)));
                }
            }
        },
    );
    Sse::new(stream::once(async { Ok(ready) }).chain(updates)).keep_alive(KeepAlive::default())
}

/// The update as `caller` may see it, if at all.
fn render(update: Update, caller: &Caller) -> Option<Event> {
    let own = caller.role.enterprise();
    let (name, data) = match update {
        Update::Transit { transit } => {
            if own.is_some_and(|e| *e != transit.enterprise) {
                return None;
            }
            ("transit", serde_json::to_string(&transit))
        }
        Update::Alarm { alarm } => {
            if own.is_some() && alarm.enterprise.as_ref() != own {
                return None;
            }
            (
                "alarm",
                serde_json::to_string(&visible_alarm(*alarm, caller)),
            )
        }
    };
    Some(Event::default().event(name).data(data.ok()?))
}
