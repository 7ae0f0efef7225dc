//! The hub's live view of every declared site: what is stored and whether its agent is there.
//!
//! Only the ingest writer changes it, and only with state that is already committed, so the API
//! and the acks never show anything the database does not hold.

use crate::progress::Progress;
use chrono::{DateTime, Utc};
use qyt_proto::SiteId;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteState {
    pub progress: Progress,
    pub stored_events: u64,
    /// When the hub last heard from the agent (a batch or an online status).
    pub last_seen: Option<DateTime<Utc>>,
    /// Events the agent last reported as buffered, not yet acknowledged.
    pub backlog: u64,
    /// From the retained status; not persisted, because after a restart the broker (or the
    /// agent reconnecting) tells the truth again.
    pub online: bool,
    pub agent_version: Option<String>,
    /// When the last online status arrived, and the age of the agent's oldest unacknowledged
    /// event it reported then (`None`: everything acked). Not persisted, like `online`.
    pub status_at: Option<DateTime<Utc>>,
    pub oldest_unacked_age_s: Option<f64>,
}

#[derive(Debug)]
pub struct Registry {
    sites: RwLock<BTreeMap<SiteId, SiteState>>,
}

impl Registry {
    pub fn new(sites: BTreeMap<SiteId, SiteState>) -> Registry {
        Registry {
            sites: RwLock::new(sites),
        }
    }

    /// Runs `f` over all sites under the read lock.
    pub fn read<R>(&self, f: impl FnOnce(&BTreeMap<SiteId, SiteState>) -> R) -> R {
        f(&self.sites.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Copies of the named sites' state, for the writer to update inside a transaction.
    pub fn copies<'a>(
        &self,
        sites: impl IntoIterator<Item = &'a SiteId>,
    ) -> HashMap<SiteId, SiteState> {
        self.read(|all| {
            sites
                .into_iter()
                .filter_map(|s| all.get(s).map(|st| (s.clone(), st.clone())))
                .collect()
        })
    }

    /// Publishes state that has been committed.
    pub fn replace(&self, updated: HashMap<SiteId, SiteState>) {
        let mut all = self.sites.write().unwrap_or_else(|p| p.into_inner());
        all.extend(updated);
    }

    pub fn online_count(&self) -> usize {
        self.read(|all| all.values().filter(|s| s.online).count())
    }
}
