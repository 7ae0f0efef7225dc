//! Raising, deduplicating and clearing alarms.

use super::*;

impl Engine {
    /// An act: raised once per `key` per transit; while the alarm is open a new act counts as
    /// another occurrence.
    pub(super) fn raise_act(
        &mut self,
        t: &mut Transit,
        rule: Rule,
        c: &Ctx,
        key: String,
        text: String,
    ) {
        if !t.reported.insert(key) {
            return;
        }
        let sub = subject(Some(t.id()), None);
        if let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        {
            a.occurrences += 1;
            a.last_occurrence_at = c.now;
            a.active = true;
            self.out.alarms.insert(a.id, a.clone());
            return;
        }
        let enterprise = Some(t.declaration.enterprise.clone());
        let id = self.new_alarm(
            rule,
            Some(t.id().clone()),
            enterprise,
            None,
            c.at,
            Some(c.cause.clone()),
            c.now,
            text.clone(),
        );
        self.entry(
            t,
            c.at,
            c.now,
            EntryKind::Alarm,
            (None, None),
            Cause::from(&c.cause),
            format!("alarm {id} ({}): {text}", rule.as_str()),
            None,
        );
    }

    /// A condition holds: raise it, or, if its alarm is open, mark it active again (a new
    /// occurrence only if it had cleared).
    pub(super) fn raise_condition(
        &mut self,
        t: &mut Transit,
        rule: Rule,
        observed: DateTime<Utc>,
        c: Option<&Ctx>,
        now: DateTime<Utc>,
        text: String,
    ) {
        let sub = subject(Some(t.id()), None);
        if let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        {
            if !a.active {
                a.active = true;
                a.occurrences += 1;
                a.last_occurrence_at = now;
                self.out.alarms.insert(a.id, a.clone());
            }
            return;
        }
        let cause = c.map(|c| c.cause.clone());
        let enterprise = Some(t.declaration.enterprise.clone());
        let id = self.new_alarm(
            rule,
            Some(t.id().clone()),
            enterprise,
            None,
            observed,
            cause.clone(),
            now,
            text.clone(),
        );
        let why = cause.as_ref().map_or(Cause::Timer, Cause::from);
        self.entry(
            t,
            observed,
            now,
            EntryKind::Alarm,
            (None, None),
            why,
            format!("alarm {id} ({}): {text}", rule.as_str()),
            None,
        );
    }

    pub(super) fn raise_site(
        &mut self,
        site: &SiteId,
        rule: Rule,
        observed: DateTime<Utc>,
        now: DateTime<Utc>,
        text: String,
    ) {
        let sub = subject(None, Some(site));
        if let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        {
            if !a.active {
                a.active = true;
                a.occurrences += 1;
                a.last_occurrence_at = now;
                self.out.alarms.insert(a.id, a.clone());
            }
            return;
        }
        self.new_alarm(
            rule,
            None,
            None,
            Some(site.clone()),
            observed,
            None,
            now,
            text,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_alarm(
        &mut self,
        rule: Rule,
        transit: Option<TransitId>,
        enterprise: Option<crate::access::EnterpriseId>,
        site: Option<SiteId>,
        observed: DateTime<Utc>,
        cause: Option<EventRef>,
        now: DateTime<Utc>,
        message: String,
    ) -> AlarmId {
        let id = self.next_alarm_id;
        self.next_alarm_id += 1;
        let a = Alarm {
            id,
            rule,
            severity: self.cfg.severity(rule),
            state: AlarmState::Open,
            transit,
            enterprise,
            site,
            message,
            raised_at: now,
            observed_at: observed,
            cause,
            active: true,
            occurrences: 1,
            last_occurrence_at: now,
            acknowledged: None,
            dispatched: None,
            unit: None,
            closed: None,
            close_reason: None,
        };
        self.open_by_key.insert((rule, a.subject()), id);
        self.out.raised.push(id);
        self.out.alarms.insert(id, a.clone());
        self.alarms.insert(id, a);
        id
    }

    /// The condition of an open alarm no longer holds. Returns whether it was active.
    pub(super) fn deactivate(
        &mut self,
        rule: Rule,
        t: Option<&Transit>,
        site: Option<&SiteId>,
        now: DateTime<Utc>,
    ) -> bool {
        let sub = subject(t.map(Transit::id), site);
        let Some(a) = self
            .open_by_key
            .get(&(rule, sub))
            .and_then(|id| self.alarms.get_mut(id))
        else {
            return false;
        };
        if !a.active {
            return false;
        }
        a.active = false;
        a.last_occurrence_at = a.last_occurrence_at.max(now);
        self.out.alarms.insert(a.id, a.clone());
        true
    }
}
