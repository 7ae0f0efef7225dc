//! Who may do what: the three roles of the API and the identifiers they carry.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An enterprise (importer, carrier, broker) as named in transit declarations and in
/// `enterprise:<id>` roles. Restricted to the characters of a site id, so it is safe in paths,
/// logs and role strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EnterpriseId(String);

impl EnterpriseId {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if is_token(&s, Self::MAX_LEN) {
            Ok(EnterpriseId(s))
        } else {
            Err(format!(
                "enterprise id {s:?} is invalid: use 1 to {} characters of A-Z, a-z, 0-9, '-', '_' or '.'",
                Self::MAX_LEN
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for EnterpriseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EnterpriseId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EnterpriseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The characters allowed in ids that travel in URLs and role strings.
pub fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A token's role. Written `admin`, `operator` or `enterprise:<id>` in config and API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sites and tokens: runs the hub, sees no supervision data beyond site health.
    Admin,
    /// The command centre (and the declaration system): every transit and alarm, and the
    /// actions on them.
    Operator,
    /// One enterprise: its own transits and the open alarms concerning them, nothing else.
    Enterprise(EnterpriseId),
}

/// A role without its enterprise id, for access rules that name roles, not holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleKind {
    Admin,
    Operator,
    Enterprise,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Admin => "admin",
            RoleKind::Operator => "operator",
            RoleKind::Enterprise => "enterprise",
        }
    }
}

impl Role {
    pub fn kind(&self) -> RoleKind {
        match self {
            Role::Admin => RoleKind::Admin,
            Role::Operator => RoleKind::Operator,
            Role::Enterprise(_) => RoleKind::Enterprise,
        }
    }

    pub fn enterprise(&self) -> Option<&EnterpriseId> {
        match self {
            Role::Enterprise(e) => Some(e),
            _ => None,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            _ => match s.strip_prefix("enterprise:") {
                Some(id) => EnterpriseId::new(id).map(Role::Enterprise),
                None => Err(format!(
                    "role {s:?} is unknown: use \"admin\", \"operator\" or \"enterprise:<id>\""
                )),
            },
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Operator => f.write_str("operator"),
            Role::Enterprise(e) => write!(f, "enterprise:{e}"),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_bad_ones_say_what_is_allowed() {
        for text in ["admin", "operator", "enterprise:acme-01"] {
            let role: Role = text.parse().unwrap();
            assert_eq!(role.to_string(), text);
        }
        assert_eq!(
            "enterprise:acme".parse::<Role>().unwrap().enterprise(),
            Some(&EnterpriseId::new("acme").unwrap())
        );
        for bad in ["root", "enterprise:", "enterprise:a/b", "Operator"] {
            let err = bad.parse::<Role>().unwrap_err();
            assert!(err.contains(bad.trim_start_matches("enterprise:")), "{err}");
        }
    }
}
