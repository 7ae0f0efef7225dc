//! What the hub accepts from the wire, and why it refuses the rest.
//!
//! Every check runs before anything is stored, so a batch is stored whole or not at all. Each
//! refusal has a stable reason label for metrics and a message that names the input and what the
//! sending side must change.

use qyt_proto::{
    decode_batch, decode_status, AgentStatus, Batch, Body, Seq, SiteId, Topics, WireError,
};
use std::collections::HashSet;

/// Largest seq accepted: 2^53, the largest integer a JSON consumer (JavaScript) reads exactly.
/// At a million events a second that is 285 years, so anything above is a bug, not traffic.
pub const MAX_SEQ: u64 = 1 << 53;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadTopic,
    UnknownSite,
    Oversize,
    Malformed,
    UnsupportedVersion,
    SiteMismatch,
    BadSeq,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::BadTopic,
        Reason::UnknownSite,
        Reason::Oversize,
        Reason::Malformed,
        Reason::UnsupportedVersion,
        Reason::SiteMismatch,
        Reason::BadSeq,
    ];

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadTopic => "bad_topic",
            Reason::UnknownSite => "unknown_site",
            Reason::Oversize => "oversize",
            Reason::Malformed => "malformed",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::SiteMismatch => "site_mismatch",
            Reason::BadSeq => "bad_seq",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("topic {topic:?} is not of the form qyt/v1/site/{{site}}/{leaf}: publish to Topics::{leaf}(site)")]
    BadTopic { topic: String, leaf: &'static str },
    #[error("site {site:?} is not declared in the hub config: add a [[sites]] entry or fix the agent's site id")]
    UnknownSite { site: String },
    #[error("{what} is {len} bytes, above the hub's limit of {max}: send smaller batches or raise ingest.max_batch_bytes")]
    Oversize {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{what} says site {inner:?} but arrived on the topic of site {topic_site:?}: an agent may only send its own site's data")]
    SiteMismatch {
        what: String,
        inner: String,
        topic_site: String,
    },
    #[error("event {index} has seq {seq}: {rule}")]
    BadSeq {
        index: usize,
        seq: u64,
        rule: &'static str,
    },
}

impl Rejection {
    pub fn reason(&self) -> Reason {
        match self {
            Rejection::BadTopic { .. } => Reason::BadTopic,
            Rejection::UnknownSite { .. } => Reason::UnknownSite,
            Rejection::Oversize { .. } => Reason::Oversize,
            Rejection::Wire(WireError::UnsupportedVersion { .. }) => Reason::UnsupportedVersion,
            Rejection::Wire(WireError::Malformed { .. }) => Reason::Malformed,
            Rejection::SiteMismatch { .. } => Reason::SiteMismatch,
            Rejection::BadSeq { .. } => Reason::BadSeq,
        }
    }
}

/// Checks incoming messages against the declared sites and the size limit.
#[derive(Debug, Clone)]
pub struct Validator {
    sites: HashSet<SiteId>,
    max_batch_bytes: usize,
}

impl Validator {
    pub fn new(sites: impl IntoIterator<Item = SiteId>, max_batch_bytes: usize) -> Validator {
        Validator {
            sites: sites.into_iter().collect(),
            max_batch_bytes,
        }
    }

    /// The declared site a topic of the form `qyt/v1/site/{site}/{leaf}` belongs to.
    pub fn site_of_topic(&self, topic: &str, leaf: &'static str) -> Result<SiteId, Rejection> {
        let site = Topics::site_of(topic, leaf).ok_or_else(|| Rejection::BadTopic {
            topic: topic.to_string(),
            leaf,
        })?;
        SiteId::new(site)
            .ok()
            .filter(|s| self.sites.contains(s))
            .ok_or_else(|| Rejection::UnknownSite {
                site: site.to_string(),
            })
    }

    /// A batch that may be stored as a whole: declared site, consistent sites, sane seqs.
    pub fn batch(&self, topic_site: &SiteId, payload: &[u8]) -> Result<Batch, Rejection> {
        if payload.len() > self.max_batch_bytes {
            return Err(Rejection::Oversize {
                what: "batch",
                len: payload.len(),
                max: self.max_batch_bytes,
            });
        }
        let batch = decode_batch(payload)?;
        if batch.site != *topic_site {
            return Err(Rejection::SiteMismatch {
                what: "batch".into(),
                inner: batch.site.to_string(),
                topic_site: topic_site.to_string(),
            });
        }
        let mut previous = 0;
        for (index, e) in batch.events.iter().enumerate() {
            if e.site != batch.site {
                return Err(Rejection::SiteMismatch {
                    what: format!("event {index} (seq {})", e.seq),
                    inner: e.site.to_string(),
                    topic_site: topic_site.to_string(),
                });
            }
            if let Body::Gap(gap) = &e.body {
                let sane = |r: &[Seq; 2]| 1 <= r[0].0 && r[0] <= r[1] && r[1].0 <= MAX_SEQ;
                if !gap.ranges.iter().all(sane) {
                    return Err(Rejection::BadSeq {
                        index,
                        seq: e.seq.0,
                        rule: "its gap ranges must each be [from, to] with 1 <= from <= to <= 2^53",
                    });
                }
            }
            let seq = e.seq.0;
            let rule = if seq == 0 {
                "seqs start at 1"
            } else if seq > MAX_SEQ {
                "seqs above 2^53 are refused as corrupt"
            } else if seq <= previous {
                "seqs must be strictly ascending within a batch"
            } else {
                previous = seq;
                continue;
            };
            return Err(Rejection::BadSeq { index, seq, rule });
        }
        Ok(batch)
    }

    /// A status message (presence) for the site of its topic.
    pub fn status(&self, topic_site: &SiteId, payload: &[u8]) -> Result<AgentStatus, Rejection> {
        // A status is a few hundred bytes; the batch limit is a generous bound for it too.
        if payload.len() > self.max_batch_bytes {
            return Err(Rejection::Oversize {
                what: "status",
                len: payload.len(),
                max: self.max_batch_bytes,
            });
        }
        let status = decode_status(payload)?;
        if status.site != *topic_site {
            return Err(Rejection::SiteMismatch {
                what: "status".into(),
                inner: status.site.to_string(),
                topic_site: topic_site.to_string(),
            });
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyt_proto::{encode, DropReason, Event, GapBody, PROTOCOL_VERSION};

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    fn event(s: &str, seq: u64) -> Event {
        Event {
            site: site(s),
            seq: Seq(seq),
            observed_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            received_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            source: "test".into(),
            body: Body::Raw {
                payload: serde_json::json!({"x": 1}),
            },
        }
    }

    fn batch(s: &str, events: Vec<Event>) -> Vec<u8> {
        encode(&Batch {
            v: PROTOCOL_VERSION,
            site: site(s),
            events,
        })
    }

    fn reason(v: &Validator, s: &str, payload: &[u8]) -> Reason {
        v.batch(&site(s), payload).unwrap_err().reason()
    }

    #[test]
    fn topics_must_name_a_declared_site() {
        let v = Validator::new([site("a")], 1024);
        assert_eq!(
            v.site_of_topic("qyt/v1/site/a/events", "events").unwrap(),
            site("a")
        );
        let e = v
            .site_of_topic("qyt/v1/site/b/events", "events")
            .unwrap_err();
        assert_eq!(e.reason(), Reason::UnknownSite);
        let e = v
            .site_of_topic("qyt/v1/site/a/other", "events")
            .unwrap_err();
        assert_eq!(e.reason(), Reason::BadTopic);
    }

    #[test]
    fn each_rule_has_its_reason() {
        let v = Validator::new([site("a"), site("b")], 4096);
        assert!(v
            .batch(&site("a"), &batch("a", vec![event("a", 1), event("a", 3)]))
            .is_ok());
        assert_eq!(reason(&v, "a", b"{not json"), Reason::Malformed);
        assert_eq!(
            reason(&v, "a", br#"{"v":7,"site":"a","events":[]}"#),
            Reason::UnsupportedVersion
        );
        assert_eq!(reason(&v, "a", &batch("b", vec![])), Reason::SiteMismatch);
        assert_eq!(
            reason(&v, "a", &batch("a", vec![event("b", 1)])),
            Reason::SiteMismatch
        );
        assert_eq!(
            reason(&v, "a", &batch("a", vec![event("a", 0)])),
            Reason::BadSeq
        );
        assert_eq!(
            reason(&v, "a", &batch("a", vec![event("a", 2), event("a", 2)])),
            Reason::BadSeq
        );
        assert_eq!(
            reason(&v, "a", &batch("a", vec![event("a", 3), event("a", 2)])),
            Reason::BadSeq
        );
        assert_eq!(
            reason(&v, "a", &batch("a", vec![event("a", MAX_SEQ + 1)])),
            Reason::BadSeq
        );
        let mut gap = event("a", 9);
        gap.body = Body::Gap(GapBody {
            ranges: vec![[Seq(5), Seq(3)]],
            count: 0,
            reason: DropReason::BufferFull,
        });
        assert_eq!(reason(&v, "a", &batch("a", vec![gap])), Reason::BadSeq);
        let big = batch("a", (1..100).map(|i| event("a", i)).collect());
        assert_eq!(reason(&v, "a", &big), Reason::Oversize);
    }

    #[test]
    fn messages_say_what_to_fix() {
        let v = Validator::new([site("a")], 4096);
        let e = v
            .batch(&site("a"), &batch("a", vec![event("a", 5), event("a", 4)]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "event 1 has seq 4: seqs must be strictly ascending within a batch"
        );
    }
}
