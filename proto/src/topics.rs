//! Every MQTT topic the agent and the hub use, in one place, under a versioned prefix.

use crate::ids::SiteId;

/// Topic names for protocol version 1. A future incompatible version gets a new prefix, so old
/// and new agents can share one broker during a migration.
pub struct Topics;

impl Topics {
    pub const PREFIX: &'static str = "qyt/v1";

    /// Agent → hub: [`crate::Batch`]es of events (QoS 1).
    pub fn events(site: &SiteId) -> String {
        format!("{}/site/{site}/events", Self::PREFIX)
    }

    /// Hub → agent: [`crate::Ack`]s (QoS 1).
    pub fn acks(site: &SiteId) -> String {
        format!("{}/site/{site}/acks", Self::PREFIX)
    }

    /// Agent → hub: [`crate::AgentStatus`], retained; the agent's last will says "offline" here.
    pub fn status(site: &SiteId) -> String {
        format!("{}/site/{site}/status", Self::PREFIX)
    }

    /// The hub's subscription for every site's events.
    pub const ALL_EVENTS: &'static str = "qyt/v1/site/+/events";
    /// The hub's subscription for every site's status.
    pub const ALL_STATUS: &'static str = "qyt/v1/site/+/status";

    /// The site named in a topic of the form `qyt/v1/site/{site}/{leaf}`, if it has that form.
    pub fn site_of<'a>(topic: &'a str, leaf: &str) -> Option<&'a str> {
        let rest = topic.strip_prefix(Self::PREFIX)?.strip_prefix("/site/")?;
        let (site, l) = rest.split_once('/')?;
        (l == leaf && !site.is_empty()).then_some(site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_site() {
        let s = SiteId::new("gate-7").unwrap();
        assert_eq!(Topics::events(&s), "qyt/v1/site/gate-7/events");
        assert_eq!(
            Topics::site_of(&Topics::events(&s), "events"),
            Some("gate-7")
        );
        assert_eq!(
            Topics::site_of(&Topics::status(&s), "status"),
            Some("gate-7")
        );
        assert_eq!(Topics::site_of(&Topics::acks(&s), "events"), None);
        assert_eq!(Topics::site_of("other/site/x/events", "events"), None);
    }
}
