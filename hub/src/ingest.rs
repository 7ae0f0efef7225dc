//! The ingest writer: commits queued jobs, then acks.
//!
//! Whatever is waiting when the writer gets to it goes into one transaction (up to
//! `ingest.max_events_per_commit` events), so the cost of the fsync is shared by many batches
//! under load while a lone batch is still committed at once. Acks are sent only after the commit
//! returned, and the shared registry only then shows the new state. Then, and without waiting,
//! supervision is told which sites have new events (it reads them from the store itself).

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::progress::MAX_MISSING_RANGES;
use crate::registry::Registry;
use crate::store::{Committed, Job, Store};
use crate::supervision::service::Feed;
use qyt_proto::{Ack, Seq, SiteId, PROTOCOL_VERSION};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info_span, Instrument};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest writer panicked while committing: {0}")]
    Panicked(String),
}

pub struct Writer {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub acks: mpsc::UnboundedSender<Ack>,
    pub max_events_per_commit: usize,
    pub clock: Arc<dyn Clock>,
    pub feed: Arc<Feed>,
}

impl Writer {
    /// Runs until `stop` turns true, then stores what is already queued and returns.
    pub async fn run(
        self,
        mut store: Store,
        mut jobs: mpsc::Receiver<Job>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), IngestError> {
        let mut stopping = false;
        loop {
            let first = if stopping {
                jobs.recv().await
            } else {
                tokio::select! {
                    job = jobs.recv() => job,
                    _ = stop.wait_for(|s| *s) => {
                        // No new work from now on; what is queued was received and is stored.
                        stopping = true;
                        jobs.close();
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            let mut events = job_events(&first);
            let mut group = vec![first];
            while events < self.max_events_per_commit {
                match jobs.try_recv() {
                    Ok(job) => {
                        events += job_events(&job);
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            let span = info_span!("commit", batches = group.len(), events);
            store = self.commit(store, group).instrument(span).await?;
        }
        Ok(())
    }

    async fn commit(&self, mut store: Store, group: Vec<Job>) -> Result<Store, IngestError> {
        let sites: HashSet<&SiteId> = group.iter().map(job_site).collect();
        let mut copies = self.registry.copies(sites);
        let acked: BTreeSet<SiteId> = group
            .iter()
            .filter_map(|j| match j {
                Job::Batch(b) => Some(b.site.clone()),
                Job::Status(_) => None,
            })
            .collect();
        let started = Instant::now();
        let now = self.clock.now();
        // SQLite blocks (fsync), so it runs off the async workers; the store travels with it.
        let (store_back, result, copies) = tokio::task::spawn_blocking(move || {
            let result = store.commit(&group, &mut copies, now);
            (store, result, copies)
        })
        .await
        .map_err(|e| IngestError::Panicked(e.to_string()))?;
        store = store_back;
        match result {
            Ok(Committed {
                batches,
                stored,
                duplicates,
            }) => {
                self.metrics
                    .committed(batches, stored, duplicates, started.elapsed());
                debug!(
                    stored,
                    duplicates,
                    took_ms = started.elapsed().as_millis() as u64,
                    "committed"
                );
                let acks: Vec<Ack> = acked
                    .into_iter()
                    .filter_map(|site| {
                        let p = &copies.get(&site)?.progress;
                        Some(Ack {
                            v: PROTOCOL_VERSION,
                            contiguous: Seq(p.contiguous()),
                            missing: p
                                .missing(MAX_MISSING_RANGES)
                                .into_iter()
                                .map(|[a, b]| [Seq(a), Seq(b)])
                                .collect(),
                            site,
                        })
                    })
                    .collect();
                self.registry.replace(copies);
                if stored > 0 {
                    self.feed.committed(acks.iter().map(|a| a.site.clone()));
                }
                for ack in acks {
                    debug!(site = %ack.site, seq = ack.contiguous.0, missing = ?ack.missing, "ack");
                    // Fails only when the ack sender is gone, i.e. the hub is going down.
                    let _ = self.acks.send(ack);
                }
            }
            Err(e) => {
                self.metrics.commit_failed();
                error!(error = %e, "commit failed: nothing of this group is stored or acked; agents resend it");
            }
        }
        Ok(store)
    }
}

fn job_site(job: &Job) -> &SiteId {
    match job {
        Job::Batch(b) => &b.site,
        Job::Status(s) => &s.site,
    }
}

fn job_events(job: &Job) -> usize {
    match job {
        Job::Batch(b) => b.events.len(),
        Job::Status(_) => 0,
    }
}
