//! Alarms and their lifecycle: open → acknowledged → dispatched (to a named unit) → closed
//! (with a reason code and a comment). Closing is allowed from any open state (a false alarm
//! needs no dispatch); every step is an operator action and goes to the audit log.

use crate::access::EnterpriseId;
use crate::supervision::rules::{Rule, Severity};
use crate::supervision::transit::{EventRef, TransitId};
use chrono::{DateTime, Utc};
use qyt_proto::SiteId;
use serde::{Deserialize, Serialize};

pub type AlarmId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Open,
    Acknowledged,
    Dispatched,
    Closed,
}

impl AlarmState {
    pub const ALL: [AlarmState; 4] = [
        AlarmState::Open,
        AlarmState::Acknowledged,
        AlarmState::Dispatched,
        AlarmState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Open => "open",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::Dispatched => "dispatched",
            AlarmState::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmState> {
        AlarmState::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Why an alarm was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The violation happened (evidence gathered; enquiry or bond call follows elsewhere).
    ConfirmedViolation,
    /// Nothing happened: a misreading, a wrong declaration corrected.
    FalseAlarm,
    /// The device misbehaved (sensor, battery, antenna), not the cargo.
    DeviceFault,
    /// An opening customs authorised (inspection, transhipment under supervision).
    AuthorisedOpening,
    /// The condition passed and needs no further action (a site back online, a stop explained).
    Resolved,
    /// Set by the hub itself: data that arrived late shows the condition never held (e.g. the
    /// arrival was before the deadline). Operators may not use it.
    Disproved,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ConfirmedViolation => "confirmed_violation",
            CloseReason::FalseAlarm => "false_alarm",
            CloseReason::DeviceFault => "device_fault",
            CloseReason::AuthorisedOpening => "authorised_opening",
            CloseReason::Resolved => "resolved",
            CloseReason::Disproved => "disproved",
        }
    }
}

/// An operator's step, as recorded on the alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: AlarmId,
    pub rule: Rule,
    pub severity: Severity,
    pub state: AlarmState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit: Option<TransitId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise: Option<EnterpriseId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteId>,
    /// What triggered it, in words.
    pub message: String,
    /// When the hub raised it.
    pub raised_at: DateTime<Utc>,
    /// When the triggering condition was observed (device time, or the hub's for timers).
    pub observed_at: DateTime<Utc>,
    /// The event that triggered it; none for timers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<EventRef>,
    /// Whether the condition holds now (acts stay active until closed).
    pub active: bool,
    /// How often the condition was triggered while this alarm was open (1 at first).
    pub occurrences: u32,
    pub last_occurrence_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched: Option<Step>,
    /// The unit it was dispatched to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<CloseReason>,
}

/// What may be done to an alarm in its present state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("alarm {id} is {state}: only an open alarm can be acknowledged")]
    CannotAcknowledge { id: AlarmId, state: &'static str },
    #[error("alarm {id} is {state}: acknowledge it before dispatching (a dispatched alarm may be re-dispatched)")]
    CannotDispatch { id: AlarmId, state: &'static str },
    #[error("alarm {id} is already closed")]
    AlreadyClosed { id: AlarmId },
    #[error("reason \"disproved\" is reserved for the hub: use confirmed_violation, false_alarm, device_fault, authorised_opening or resolved")]
    ReservedReason,
    #[error("a unit is required: name the unit the alarm is dispatched to")]
    NoUnit,
    #[error("a comment is required when closing: say what was found")]
    NoComment,
}

impl Alarm {
    pub fn acknowledge(&mut self, step: Step) -> Result<(), LifecycleError> {
        if self.state != AlarmState::Open {
            return Err(LifecycleError::CannotAcknowledge {
                id: self.id,
                state: self.state.as_str(),
            });
        }
        self.state = AlarmState::Acknowledged;
        self.acknowledged = Some(step);
        Ok(())
    }

    pub fn dispatch(&mut self, unit: &str, step: Step) -> Result<(), LifecycleError> {
        if !matches!(
            self.state,
            AlarmState::Acknowledged | AlarmState::Dispatched
        ) {
            return Err(LifecycleError::CannotDispatch {
                id: self.id,
                state: self.state.as_str(),
            });
        }
        if unit.trim().is_empty() {
            return Err(LifecycleError::NoUnit);
        }
        self.state = AlarmState::Dispatched;
        self.unit = Some(unit.trim().to_string());
        self.dispatched = Some(step);
        Ok(())
    }

    /// Closes it; `by_hub` allows the reserved reason.
    pub fn close(
        &mut self,
        reason: CloseReason,
        step: Step,
        by_hub: bool,
    ) -> Result<(), LifecycleError> {
        if self.state == AlarmState::Closed {
            return Err(LifecycleError::AlreadyClosed { id: self.id });
        }
        if reason == CloseReason::Disproved && !by_hub {
            return Err(LifecycleError::ReservedReason);
        }
        if step.comment.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(LifecycleError::NoComment);
        }
        self.state = AlarmState::Closed;
        self.close_reason = Some(reason);
        self.closed = Some(step);
        Ok(())
    }

    /// The subject that makes two alarms of one rule the same alarm while open.
    pub fn subject(&self) -> String {
        subject(self.transit.as_ref(), self.site.as_ref())
    }
}

/// `transit:<id>` or `site:<id>`: at most one open alarm per (rule, subject).
pub fn subject(transit: Option<&TransitId>, site: Option<&SiteId>) -> String {
    match (transit, site) {
        (Some(t), _) => format!("transit:{t}"),
        (None, Some(s)) => format!("site:{s}"),
        (None, None) => "hub".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm() -> Alarm {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Alarm {
            id: 7,
            rule: Rule::SealOpened,
            severity: Severity::Critical,
            state: AlarmState::Open,
            transit: None,
            enterprise: None,
            site: None,
            message: "m".into(),
            raised_at: t,
            observed_at: t,
            cause: None,
            active: true,
            occurrences: 1,
            last_occurrence_at: t,
            acknowledged: None,
            dispatched: None,
            unit: None,
            closed: None,
            close_reason: None,
        }
    }

    fn step(comment: Option<&str>) -> Step {
        Step {
            at: DateTime::from_timestamp(1_800_000_100, 0).unwrap(),
            by: "op".into(),
            comment: comment.map(String::from),
        }
    }

    #[test]
    fn lifecycle_goes_forward_only() {
        let mut a = alarm();
        assert!(matches!(
            a.dispatch("unit 3", step(None)),
            Err(LifecycleError::CannotDispatch { .. })
        ));
        a.acknowledge(step(None)).unwrap();
        assert!(a.acknowledge(step(None)).is_err());
        assert_eq!(a.dispatch(" ", step(None)), Err(LifecycleError::NoUnit));
        a.dispatch("unit 3", step(Some("go"))).unwrap();
        a.dispatch("unit 4", step(None)).unwrap();
        assert_eq!(a.unit.as_deref(), Some("unit 4"));
        assert_eq!(
            a.close(CloseReason::FalseAlarm, step(None), false),
            Err(LifecycleError::NoComment)
        );
        assert_eq!(
            a.close(CloseReason::Disproved, step(Some("x")), false),
            Err(LifecycleError::ReservedReason)
        );
        a.close(CloseReason::FalseAlarm, step(Some("misread")), false)
            .unwrap();
        assert_eq!(a.state, AlarmState::Closed);
        assert!(matches!(
            a.close(CloseReason::FalseAlarm, step(Some("again")), false),
            Err(LifecycleError::AlreadyClosed { .. })
        ));
        // Closing straight from open is allowed.
        let mut b = alarm();
        b.close(CloseReason::Resolved, step(Some("ok")), false)
            .unwrap();
    }
}
