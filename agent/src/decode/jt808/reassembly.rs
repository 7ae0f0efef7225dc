//! Sub-packaged (long) messages: a body over 1023 bytes is sent as `total` frames numbered
//! `index` 1..=total with consecutive serials. Parts are held per connection until the message
//! is whole, bounded in the number of messages, in bytes and in age, so a terminal that never
//! sends the last part (or lies about `total`) costs a bounded amount of memory for a bounded
//! time. Time is passed in.

use super::frame::{Header, Package};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::BTreeMap;

/// What a held part costs beyond its bytes (map entry, vector header): counted so that
/// thousands of empty parts cannot slip under the byte bound.
const PART_OVERHEAD: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Long messages being put together at once (per connection).
    pub max_messages: usize,
    /// Bytes held for them together.
    pub max_bytes: usize,
    /// How long a message may take to arrive whole.
    pub max_age: TimeDelta,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    #[error("sub-package {index} of {total}: the index must be within 1..=total")]
    Invalid { total: u16, index: u16 },
    #[error("sub-package of 0x{msg_id:04X} says {total} parts, an earlier one said {expected}")]
    TotalChanged {
        msg_id: u16,
        total: u16,
        expected: u16,
    },
    #[error("{max} long messages are already being put together; this one is refused")]
    TooMany { max: usize },
    #[error("long message 0x{msg_id:04X} would take more than {max} bytes; dropped")]
    TooLarge { msg_id: u16, max: usize },
    #[error("long message 0x{msg_id:04X}: {have} of {total} parts after {age_s} s; dropped")]
    Expired {
        msg_id: u16,
        have: usize,
        total: u16,
        age_s: i64,
    },
}

impl ReassemblyError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReassemblyError::Invalid { .. } | ReassemblyError::TotalChanged { .. } => {
                "bad_subpackage"
            }
            ReassemblyError::TooMany { .. } | ReassemblyError::TooLarge { .. } => {
                "subpackage_overflow"
            }
            ReassemblyError::Expired { .. } => "subpackage_expired",
        }
    }
}

#[derive(Debug)]
struct Pending {
    msg_id: u16,
    /// Serial of part 1: with the message id, what tells one long message from another.
    first_serial: u16,
    total: u16,
    started: DateTime<Utc>,
    parts: BTreeMap<u16, Vec<u8>>,
}

impl Pending {
    fn cost(&self) -> usize {
        self.parts.values().map(|p| p.len() + PART_OVERHEAD).sum()
    }
}

#[derive(Debug)]
pub struct Reassembly {
    limits: ReassemblyLimits,
    pending: Vec<Pending>,
}

impl Reassembly {
    pub fn new(limits: ReassemblyLimits) -> Reassembly {
        Reassembly {
            limits,
            pending: Vec::new(),
        }
    }

    /// Adds one part; returns the whole body once its last missing part arrived. A part sent
    /// again (the terminal retransmits unanswered frames) replaces the earlier copy.
    pub fn push(
        &mut self,
        header: &Header,
        package: Package,
        body: Vec<u8>,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, ReassemblyError> {
        let Package { total, index } = package;
        if index == 0 || index > total {
            return Err(ReassemblyError::Invalid { total, index });
        }
        let msg_id = header.msg_id;
        let first_serial = header.serial.wrapping_sub(index - 1);
        let held: usize = self.pending.iter().map(Pending::cost).sum();
        let pos = self
            .pending
            .iter()
            .position(|p| p.msg_id == msg_id && p.first_serial == first_serial);
        let pos = match pos {
            Some(i) => {
                if self.pending[i].total != total {
                    return Err(ReassemblyError::TotalChanged {
                        msg_id,
                        total,
                        expected: self.pending[i].total,
                    });
                }
                i
            }
            None => {
                if self.pending.len() >= self.limits.max_messages {
                    return Err(ReassemblyError::TooMany {
                        max: self.limits.max_messages,
                    });
                }
                self.pending.push(Pending {
                    msg_id,
                    first_serial,
                    total,
                    started: now,
                    parts: BTreeMap::new(),
                });
                self.pending.len() - 1
            }
        };
        let replaced = self.pending[pos]
            .parts
            .get(&index)
            .map_or(0, |p| p.len() + PART_OVERHEAD);
        if held - replaced + body.len() + PART_OVERHEAD > self.limits.max_bytes {
            self.pending.remove(pos);
            return Err(ReassemblyError::TooLarge {
                msg_id,
                max: self.limits.max_bytes,
            });
        }
        let p = &mut self.pending[pos];
        p.parts.insert(index, body);
        if p.parts.len() < total as usize {
            return Ok(None);
        }
        let p = self.pending.remove(pos);
        Ok(Some(p.parts.into_values().flatten().collect()))
    }

    /// Drops the messages that have been incomplete for longer than the limit.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<ReassemblyError> {
        let max_age = self.limits.max_age;
        let mut expired = Vec::new();
        self.pending.retain(|p| {
            let age = now - p.started;
            if age <= max_age {
                return true;
            }
            expired.push(ReassemblyError::Expired {
                msg_id: p.msg_id,
                have: p.parts.len(),
                total: p.total,
                age_s: age.num_seconds(),
            });
            false
        });
        expired
    }

    /// Bytes held for incomplete messages (with the per-part overhead).
    pub fn held_bytes(&self) -> usize {
        self.pending.iter().map(Pending::cost).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{Phone, Version};
    use super::*;

    fn limits() -> ReassemblyLimits {
        ReassemblyLimits {
            max_messages: 2,
            max_bytes: 4096,
            max_age: TimeDelta::seconds(60),
        }
    }

    fn header(msg_id: u16, serial: u16) -> Header {
        Header {
            msg_id,
            version: Version::V2013,
            phone: Phone::from_digits("1", Version::V2013).expect("digits"),
            serial,
            package: None,
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).expect("valid")
    }

    fn part(total: u16, index: u16) -> Package {
        Package { total, index }
    }

    #[test]
    fn parts_in_any_order_make_the_whole_body_once() {
        let mut r = Reassembly::new(limits());
        // Serials 10, 11, 12 for parts 1, 2, 3; sent 3, 1, 1 again, 2.
        assert_eq!(
            r.push(&header(0x0801, 12), part(3, 3), vec![5, 6], t(0)),
            Ok(None)
        );
        assert_eq!(
            r.push(&header(0x0801, 10), part(3, 1), vec![9], t(1)),
            Ok(None)
        );
        assert_eq!(
            r.push(&header(0x0801, 10), part(3, 1), vec![1], t(2)),
            Ok(None)
        );
        assert_eq!(
            r.push(&header(0x0801, 11), part(3, 2), vec![2, 3, 4], t(3)),
            Ok(Some(vec![1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(r.held_bytes(), 0);
        // Serial wrap-around: parts 1 and 2 at serials 65535 and 0.
        assert_eq!(
            r.push(&header(0x0900, 65535), part(2, 1), vec![1], t(4)),
            Ok(None)
        );
        assert_eq!(
            r.push(&header(0x0900, 0), part(2, 2), vec![2], t(4)),
            Ok(Some(vec![1, 2]))
        );
    }

    #[test]
    fn bounds_in_count_size_and_age() {
        let mut r = Reassembly::new(limits());
        assert_eq!(
            r.push(&header(1, 1), part(0, 0), vec![], t(0)),
            Err(ReassemblyError::Invalid { total: 0, index: 0 })
        );
        assert_eq!(
            r.push(&header(1, 5), part(2, 3), vec![], t(0)),
            Err(ReassemblyError::Invalid { total: 2, index: 3 })
        );
        assert_eq!(
            r.push(&header(1, 1), part(2, 1), vec![0; 10], t(0)),
            Ok(None)
        );
        assert_eq!(
            r.push(&header(2, 1), part(2, 1), vec![0; 10], t(0)),
            Ok(None)
        );
        assert_eq!(
            r.push(&header(3, 1), part(2, 1), vec![0; 10], t(0)),
            Err(ReassemblyError::TooMany { max: 2 })
        );
        assert_eq!(
            r.push(&header(1, 2), part(3, 2), vec![0; 10], t(0)),
            Err(ReassemblyError::TotalChanged {
                msg_id: 1,
                total: 3,
                expected: 2
            })
        );
        assert_eq!(
            r.push(&header(2, 2), part(2, 2), vec![0; 5000], t(0)),
            Err(ReassemblyError::TooLarge {
                msg_id: 2,
                max: 4096
            })
        );
        assert!(r.held_bytes() <= 4096);
        assert_eq!(r.expire(t(60)), []);
        assert_eq!(
            r.expire(t(61)),
            [ReassemblyError::Expired {
                msg_id: 1,
                have: 1,
                total: 2,
                age_s: 61
            }]
        );
        assert_eq!(r.held_bytes(), 0);
    }
}
