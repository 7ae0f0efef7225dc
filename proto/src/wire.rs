//! Messages on the wire: events, the batch envelope, acks and the agent's status.
//!
//! Every message carries the protocol version `v`; a receiver rejects any version it does not
//! speak with [`WireError::UnsupportedVersion`] instead of guessing at its fields.

use crate::body::Body;
use crate::ids::{Seq, SiteId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The version of this contract. Bumped on any change an older peer could misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default largest encoded batch, in bytes. Agents size batches below it; the hub rejects
/// anything larger (its own limit is configurable, this is the shipped default).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// One reading, durable in the agent's buffer under its `(site, seq)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub site: SiteId,
    pub seq: Seq,
    /// When the device observed it (the device's clock, converted to UTC), or the agent's
    /// reception time when the device gives none.
    pub observed_at: DateTime<Utc>,
    /// When the agent received it (the agent's clock).
    pub received_at: DateTime<Utc>,
    /// The configured name of the source that produced it.
    pub source: String,
    pub body: Body,
}

/// Agent → hub: events of one site, in ascending seq order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub v: u32,
    pub site: SiteId,
    pub events: Vec<Event>,
}

impl Batch {
    /// Builds the encoded batch from events that are already JSON (as the agent's buffer keeps
    /// them), without decoding and re-encoding each one.
    pub fn encode_from_json<'a>(
        site: &SiteId,
        events: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"{\"v\":");
        out.extend_from_slice(PROTOCOL_VERSION.to_string().as_bytes());
        out.extend_from_slice(b",\"site\":");
        // A SiteId holds only [A-Za-z0-9._-], so it needs no escaping.
        out.push(b'"');
        out.extend_from_slice(site.as_str().as_bytes());
        out.extend_from_slice(b"\",\"events\":[");
        for (i, e) in events.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(e);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// Hub → agent: what the hub has committed to its store for a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub v: u32,
    pub site: SiteId,
    /// Every seq from 1 to this one is stored (or was declared dropped by a gap event), so the
    /// agent may delete them.
    pub contiguous: Seq,
    /// Ranges above `contiguous` the hub knows it lacks (inclusive `[from, to]`): something
    /// beyond them has arrived, they have not. The agent resends them.
    #[serde(default)]
    pub missing: Vec<[Seq; 2]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    Starting,
    Connected,
    Retrying,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub name: String,
    pub state: SourceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub received: u64,
    pub decode_errors: u64,
    pub duplicates: u64,
}

/// Agent → hub, retained on the status topic. The last will is the same message with
/// `state: offline` and the figures left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub v: u32,
    pub site: SiteId,
    pub state: Presence,
    #[serde(default)]
    pub agent_version: String,
    #[serde(default)]
    pub uptime_s: u64,
    #[serde(default)]
    pub buffered_events: u64,
    #[serde(default)]
    pub buffered_bytes: u64,
    /// Age of the oldest event not yet acknowledged by the hub; absent when all are acked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unacked_age_s: Option<f64>,
    #[serde(default)]
    pub sources: Vec<SourceHealth>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{what} has protocol version {found}, this build speaks {supported}: upgrade the older side")]
    UnsupportedVersion {
        what: &'static str,
        found: u64,
        supported: u32,
    },
    #[error("{what} is not valid JSON of the expected shape: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u64,
}

/// Decodes a message of type `T`; when it does not parse, tells an unknown version apart from
/// plain garbage so the log says which side needs fixing.
fn decode<'a, T: Deserialize<'a> + HasVersion>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, WireError> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(m) if m.version() == PROTOCOL_VERSION => Ok(m),
        Ok(m) => Err(WireError::UnsupportedVersion {
            what,
            found: m.version().into(),
            supported: PROTOCOL_VERSION,
        }),
        Err(source) => match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(VersionOnly { v }) if v != u64::from(PROTOCOL_VERSION) => {
                Err(WireError::UnsupportedVersion {
                    what,
                    found: v,
                    supported: PROTOCOL_VERSION,
                })
            }
            _ => Err(WireError::Malformed { what, source }),
        },
    }
}

trait HasVersion {
    fn version(&self) -> u32;
}
impl HasVersion for Batch {
    fn version(&self) -> u32 {
        self.v
    }
}
impl HasVersion for Ack {
    fn version(&self) -> u32 {
        self.v
    }
}
impl HasVersion for AgentStatus {
    fn version(&self) -> u32 {
        self.v
    }
}

pub fn decode_batch(bytes: &[u8]) -> Result<Batch, WireError> {
    decode("batch", bytes)
}

pub fn decode_ack(bytes: &[u8]) -> Result<Ack, WireError> {
    decode("ack", bytes)
}

pub fn decode_status(bytes: &[u8]) -> Result<AgentStatus, WireError> {
    decode("status", bytes)
}

/// Encodes any wire message. Serialising these types cannot fail (no maps with non-string keys).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("wire types always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{Direction, GatePassage};

    fn ev(seq: u64) -> Event {
        Event {
            site: SiteId::new("s1").unwrap(),
            seq: Seq(seq),
            observed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            received_at: DateTime::from_timestamp(1_700_000_001, 0).unwrap(),
            source: "cam".into(),
            body: Body::Gate(GatePassage {
                lane: "1".into(),
                direction: Direction::In,
                plate: Some("沪A12345".into()),
                confidence: Some(0.9),
                image_ref: None,
            }),
        }
    }

    #[test]
    fn batch_from_stored_json_decodes() {
        let site = SiteId::new("s1").unwrap();
        let raw: Vec<Vec<u8>> = (1..=3).map(|i| encode(&ev(i))).collect();
        let bytes = Batch::encode_from_json(&site, raw.iter().map(|v| v.as_slice()));
        let b = decode_batch(&bytes).unwrap();
        assert_eq!(b.v, PROTOCOL_VERSION);
        assert_eq!(b.events, vec![ev(1), ev(2), ev(3)]);
        let empty = Batch::encode_from_json(&site, std::iter::empty());
        assert!(decode_batch(&empty).unwrap().events.is_empty());
    }

    #[test]
    fn unknown_version_is_named_not_malformed() {
        let err = decode_batch(br#"{"v":2,"site":"s1","events":[],"new":1}"#).unwrap_err();
        assert!(
            matches!(err, WireError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        let err = decode_batch(br#"{"v":9,"totally":"different"}"#).unwrap_err();
        assert!(
            matches!(err, WireError::UnsupportedVersion { found: 9, .. }),
            "{err}"
        );
        let err = decode_ack(br#"{"v":1,"site":"s1"}"#).unwrap_err();
        assert!(matches!(err, WireError::Malformed { .. }), "{err}");
        assert!(decode_batch(b"\xff\x00").is_err());
    }

    #[test]
    fn last_will_status_decodes_with_defaults() {
        let s = decode_status(br#"{"v":1,"site":"s1","state":"offline"}"#).unwrap();
        assert_eq!(s.state, Presence::Offline);
        assert_eq!(s.buffered_events, 0);
    }

    #[test]
    fn ack_round_trips() {
        let a = Ack {
            v: PROTOCOL_VERSION,
            site: SiteId::new("s1").unwrap(),
            contiguous: Seq(10),
            missing: vec![[Seq(12), Seq(14)]],
        };
        assert_eq!(decode_ack(&encode(&a)).unwrap(), a);
    }
}
