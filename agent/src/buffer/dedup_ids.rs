//! The on-disk form of an accepted device message id, shared by both engines.
//!
//! Ids are stored in the commit of their event (see [`super::IntakeStore::commit`]) so that a
//! source can still recognise a broker's redelivery after the agent was killed between making
//! the event durable and acknowledging the message.

/// A device message id a source accepted, and when (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DedupEntry {
    // Field order is the stored order (time, then key), so derived `Ord` matches the engines'.
    pub accepted_ms: i64,
    /// The source's key for the message (unique across sources: it starts with the source's
    /// name).
    pub key: String,
}

/// Bytes of the time prefix of a stored id.
pub const TIME_LEN: usize = 8;

/// `accepted_ms` as a key prefix whose byte order is time order, negative times included.
pub fn time_prefix(ms: i64) -> [u8; TIME_LEN] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

impl DedupEntry {
    /// The stored key: the time prefix, then the key's UTF-8. Ordered by time, so that pruning
    /// by age and loading the recent ids read only the range they need.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(TIME_LEN + self.key.len());
        v.extend_from_slice(&time_prefix(self.accepted_ms));
        v.extend_from_slice(self.key.as_bytes());
        v
    }

    /// `None` for bytes this build did not write (too short, or a key that is not UTF-8).
    pub fn decode(v: &[u8]) -> Option<DedupEntry> {
        let (t, key) = v.split_at_checked(TIME_LEN)?;
        let t = u64::from_be_bytes(t.try_into().ok()?) ^ (1 << 63);
        Some(DedupEntry {
            accepted_ms: t as i64,
            key: std::str::from_utf8(key).ok()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_byte_order_is_time_order() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        let mut encoded = Vec::new();
        for t in times {
            let e = DedupEntry {
                accepted_ms: t,
                key: "src\0topic/+\0id-1".into(),
            };
            let v = e.encode();
            assert_eq!(DedupEntry::decode(&v), Some(e));
            encoded.push(v);
        }
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
        assert_eq!(DedupEntry::decode(&[1, 2, 3]), None);
        assert_eq!(DedupEntry::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0xFF]), None);
    }
}
