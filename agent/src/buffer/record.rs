//! The on-disk form of one buffered event: a small header and the event's JSON, checksummed so
//! damage is found at start-up instead of being forwarded.

use qyt_proto::{EventClass, Seq};

/// One event as the buffer keeps it. `payload` is the complete JSON of the `qyt_proto::Event`
/// (seq included), so the uplink sends it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: Seq,
    pub class: EventClass,
    /// When the agent received the event, milliseconds since the Unix epoch (for the age of
    /// the oldest unacked event).
    pub received_ms: i64,
    pub payload: Vec<u8>,
}

// Layout: version (1) | class code (1) | received_ms (8, BE) | crc32 of everything else (4, BE) | payload.
const VERSION: u8 = 1;
const HEADER: usize = 14;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record too short ({0} bytes)")]
    Truncated(usize),
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("unknown event class code {0}")]
    Class(u8),
    #[error("checksum mismatch")]
    Checksum,
}

impl StoredRecord {
    /// The value stored under the record's seq key.
    pub fn encode_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + self.payload.len());
        v.push(VERSION);
        v.push(self.class.code());
        v.extend_from_slice(&self.received_ms.to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&self.payload);
        let crc = checksum(&v);
        v[10..14].copy_from_slice(&crc.to_be_bytes());
        v
    }

    pub fn decode_value(seq: Seq, v: &[u8]) -> Result<StoredRecord, RecordError> {
        if v.len() < HEADER {
            return Err(RecordError::Truncated(v.len()));
        }
        let stored = u32::from_be_bytes(v[10..14].try_into().expect("4 bytes"));
        let mut h = crc32fast::Hasher::new();
        h.update(&v[..10]);
        h.update(&v[14..]);
        if h.finalize() != stored {
            return Err(RecordError::Checksum);
        }
        if v[0] != VERSION {
            return Err(RecordError::Version(v[0]));
        }
        let class = EventClass::from_code(v[1]).ok_or(RecordError::Class(v[1]))?;
        Ok(StoredRecord {
            seq,
            class,
            received_ms: i64::from_be_bytes(v[2..10].try_into().expect("8 bytes")),
            payload: v[14..].to_vec(),
        })
    }

    /// Bytes this record counts against the buffer's size (header included).
    pub fn encoded_len(&self) -> u64 {
        (HEADER + self.payload.len()) as u64
    }
}

fn checksum(v: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&v[..10]);
    h.update(&v[14..]);
    h.finalize()
}

/// Keys are big-endian seqs so that byte order is seq order in both engines.
pub fn key(seq: Seq) -> [u8; 8] {
    seq.0.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_any_flipped_byte() {
        let r = StoredRecord {
            seq: Seq(7),
            class: EventClass::Seal,
            received_ms: 1_700_000_000_123,
            payload: br#"{"x":1}"#.to_vec(),
        };
        let v = r.encode_value();
        assert_eq!(StoredRecord::decode_value(Seq(7), &v).unwrap(), r);
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x40;
            assert!(
                StoredRecord::decode_value(Seq(7), &bad).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(
            StoredRecord::decode_value(Seq(7), &v[..5]),
            Err(RecordError::Truncated(5))
        );
    }
}
