//! Identifier types, one per concept, so a site id can never be passed where a seal id belongs.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "{what} {value:?} is invalid: use 1 to {max} characters of A-Z, a-z, 0-9, '-', '_' or '.'"
    )]
    Invalid {
        what: &'static str,
        value: String,
        max: usize,
    },
}

fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A site (checkpoint or bonded site) as named in the hub's site registry. Site ids appear in MQTT
/// topics, so they are restricted to characters that are never MQTT wildcards or separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SiteId(String);

impl SiteId {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        if valid_token(&s, Self::MAX_LEN) {
            Ok(Self(s))
        } else {
            Err(IdError::Invalid {
                what: "site id",
                value: s,
                max: Self::MAX_LEN,
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SiteId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SiteId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SiteId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        SiteId::new(s)
    }
}

/// A seal's identity as printed on it / reported by its reader (ISO 18185: manufacturer + serial).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealId(pub String);

impl fmt::Display for SealId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-site sequence number. Assigned by the agent when an event becomes durable; starts at 1 and
/// is never reused, also across restarts. 0 means "nothing yet" in acks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);
    pub const FIRST: Seq = Seq(1);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids_reject_topic_metacharacters() {
        assert!(SiteId::new("gate-01").is_ok());
        for bad in ["", "a/b", "a+b", "a#", "with space", &"x".repeat(65)] {
            let err = SiteId::new(bad).unwrap_err();
            assert!(err.to_string().contains("site id"), "{err}");
        }
        let from_json: Result<SiteId, _> = serde_json::from_str("\"a/b\"");
        assert!(from_json.is_err());
    }
}
