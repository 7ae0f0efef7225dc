//! The transit's timeline (the evidence) and the audit log of operators' actions.

use super::*;

impl Engine {
    pub(super) fn advance(&mut self, t: &mut Transit, c: &Ctx, to: Status, text: String) {
        let from = t.status;
        t.status = to;
        t.updated_at = c.now;
        self.entry(
            t,
            c.at,
            c.now,
            EntryKind::Status,
            (Some(from), Some(to)),
            Cause::from(&c.cause),
            text,
            None,
        );
    }

    pub(super) fn note(&mut self, t: &mut Transit, c: &Ctx, text: String) {
        t.updated_at = c.now.max(t.updated_at);
        self.entry(
            t,
            c.at,
            c.now,
            EntryKind::Note,
            (None, None),
            Cause::from(&c.cause),
            text,
            None,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn entry(
        &mut self,
        t: &mut Transit,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        kind: EntryKind,
        (from, to): (Option<Status>, Option<Status>),
        cause: Cause,
        text: String,
        comment: Option<String>,
    ) {
        t.timeline_len += 1;
        self.touched.insert(t.id().clone());
        self.out.timeline.push((
            t.id().clone(),
            TimelineEntry {
                n: t.timeline_len,
                at,
                recorded_at: now,
                kind,
                from,
                to,
                cause,
                text,
                comment,
            },
        ));
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit(
        &mut self,
        by: &Caller,
        now: DateTime<Utc>,
        action: &str,
        target: String,
        from: Option<&str>,
        to: Option<&str>,
        detail: serde_json::Value,
    ) {
        self.out.audit.push(AuditEntry {
            at: now,
            actor: by.name.clone(),
            role: by.role.to_string(),
            action: action.into(),
            target,
            from_state: from.map(String::from),
            to_state: to.map(String::from),
            detail,
        });
    }
}
