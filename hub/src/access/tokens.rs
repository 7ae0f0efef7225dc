//! The bearer tokens the API accepts: those of the config file and those an admin issued through
//! the API. Only SHA-256 digests are kept, in memory and in the database; a token issued through
//! the API is shown once, in the answer to its creation.

use crate::access::role::{is_token, Role};
use crate::audit::{self, AuditEntry};
use crate::clock::Clock;
use crate::secret::token_digest;
use crate::store::{parse_time, time_text, Context, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_tokens (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    sha256      TEXT NOT NULL UNIQUE,   -- lowercase hex; the token itself is never stored
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  TEXT,
    revoked_by  TEXT
);
";

/// Who is calling: resolved from the bearer token by the API's authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token holder's name (config `name`, or the name given at creation).
    pub name: String,
    pub role: Role,
}

/// Where a token is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `[[api.tokens]]` in hub.toml: changed only by editing the file.
    Config,
    /// Issued by an admin through the API.
    Api,
}

/// A token as admins see it: never its value, nor its digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

/// A token just issued: the only time its value leaves the hub.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("a token named {0:?} already exists: choose another name or revoke that one first")]
    NameTaken(String),
    #[error("no token with id {0:?}: list them with GET /api/admin/tokens")]
    Unknown(String),
    #[error(
        "token {0:?} is defined in hub.toml: remove its [[api.tokens]] entry there and restart"
    )]
    FromConfig(String),
    #[error("token {id:?} was already revoked at {at}")]
    AlreadyRevoked { id: String, at: DateTime<Utc> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every accepted token, by digest. The database holds the API-issued ones durably; this keeps
/// them in memory too so that authenticating a request costs one hash and one map lookup.
pub struct TokenBook {
    by_digest: RwLock<HashMap<[u8; 32], (TokenInfo, Caller)>>,
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
}

impl TokenBook {
    /// `config` are the `[[api.tokens]]` entries as (digest, name, role), already validated.
    pub fn open(
        conn: Connection,
        config: Vec<([u8; 32], String, Role)>,
        clock: Arc<dyn Clock>,
    ) -> Result<TokenBook, StoreError> {
        let mut by_digest = HashMap::new();
        for (n, (digest, name, role)) in config.into_iter().enumerate() {
            let info = TokenInfo {
                id: format!("config-{n}"),
                name: name.clone(),
                role: role.clone(),
                origin: Origin::Config,
                created_at: None,
                created_by: None,
                revoked_at: None,
                revoked_by: None,
            };
            by_digest.insert(digest, (info, Caller { name, role }));
        }
        for (digest, info) in load(&conn)? {
            if info.revoked_at.is_none() {
                let caller = Caller {
                    name: info.name.clone(),
                    role: info.role.clone(),
                };
                by_digest.insert(digest, (info, caller));
            }
        }
        Ok(TokenBook {
            by_digest: RwLock::new(by_digest),
            conn: Mutex::new(conn),
            clock,
        })
    }

    /// The caller holding `token`, if the token is accepted.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let digest = token_digest(token);
        let map = self.by_digest.read().unwrap_or_else(|p| p.into_inner());
        map.get(&digest).map(|(_, caller)| caller.clone())
    }

    /// Every token: config ones first, then the issued ones (revoked included), oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let mut config: Vec<TokenInfo> = {
            let map = self.by_digest.read().unwrap_or_else(|p| p.into_inner());
            map.values()
                .filter(|(i, _)| i.origin == Origin::Config)
                .map(|(i, _)| i.clone())
                .collect()
        };
        config.sort_by_key(|i| i.id[7..].parse::<usize>().unwrap_or(usize::MAX));
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        config.extend(load(&conn)?.into_iter().map(|(_, i)| i));
        Ok(config)
    }

    /// Issues a new random token with `role`, named `name`, on behalf of `by`.
    pub fn issue(&self, name: &str, role: Role, by: &Caller) -> Result<Issued, TokenError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(TokenError::Invalid(
                "name must be 1 to 100 characters: say who holds the token".into(),
            ));
        }
        let taken = {
            let map = self.by_digest.read().unwrap_or_else(|p| p.into_inner());
            map.values().any(|(i, _)| i.name == name)
        };
        if taken {
            return Err(TokenError::NameTaken(name.into()));
        }
        let token = format!("qyt_{}", hex::encode(rand::random::<[u8; 32]>()));
        let digest = token_digest(&token);
        let now = self.clock.now();
        let info = TokenInfo {
            id: format!("tok-{}", hex::encode(rand::random::<[u8; 6]>())),
            name: name.into(),
            role: role.clone(),
            origin: Origin::Api,
            created_at: Some(now),
            created_by: Some(by.name.clone()),
            revoked_at: None,
            revoked_by: None,
        };
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin a token transaction")?;
        tx.execute(
            "INSERT INTO api_tokens (id, name, role, sha256, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                info.id,
                info.name,
                role.to_string(),
                hex::encode(digest),
                time_text(now),
                by.name
            ],
        )
        .ctx("store a new token")?;
        audit::append(
            &tx,
            &[AuditEntry {
                at: now,
                actor: by.name.clone(),
                role: by.role.to_string(),
                action: "token.create".into(),
                target: format!("token:{}", info.id),
                from_state: None,
                to_state: Some("active".into()),
                detail: serde_json::json!({ "name": info.name, "role": role.to_string() }),
            }],
        )?;
        tx.commit().ctx("commit a new token")?;
        let caller = Caller {
            name: info.name.clone(),
            role,
        };
        self.by_digest
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, (info.clone(), caller));
        Ok(Issued { info, token })
    }

    /// Revokes an API-issued token; it stops working at once.
    pub fn revoke(&self, id: &str, by: &Caller) -> Result<TokenInfo, TokenError> {
        if !is_token(id, 64) {
            return Err(TokenError::Unknown(id.into()));
        }
        let from_config = {
            let map = self.by_digest.read().unwrap_or_else(|p| p.into_inner());
            map.values()
                .any(|(i, _)| i.id == id && i.origin == Origin::Config)
        };
        if from_config {
            return Err(TokenError::FromConfig(id.into()));
        }
        let now = self.clock.now();
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin a token transaction")?;
        let row = tx
            .query_row(
                "SELECT sha256, revoked_at FROM api_tokens WHERE id = ?1",
                [id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()
            .ctx("read a token")?;
        let Some((sha, revoked)) = row else {
            return Err(TokenError::Unknown(id.into()));
        };
        if let Some(at) = revoked {
            return Err(TokenError::AlreadyRevoked {
                id: id.into(),
                at: parse_time(&at, "api_tokens.revoked_at")?,
            });
        }
        tx.execute(
            "UPDATE api_tokens SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1",
            params![id, time_text(now), by.name],
        )
        .ctx("revoke a token")?;
        audit::append(
            &tx,
            &[AuditEntry {
                at: now,
                actor: by.name.clone(),
                role: by.role.to_string(),
                action: "token.revoke".into(),
                target: format!("token:{id}"),
                from_state: Some("active".into()),
                to_state: Some("revoked".into()),
                detail: serde_json::json!({}),
            }],
        )?;
        tx.commit().ctx("commit a token revocation")?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&sha, &mut digest).map_err(|e| StoreError::Corrupt {
            what: "api_tokens.sha256",
            detail: format!("token {id}: {e}"),
        })?;
        let mut map = self.by_digest.write().unwrap_or_else(|p| p.into_inner());
        let (mut info, _) = map
            .remove(&digest)
            .ok_or_else(|| TokenError::Unknown(id.into()))?;
        info.revoked_at = Some(now);
        info.revoked_by = Some(by.name.clone());
        Ok(info)
    }
}

fn load(conn: &Connection) -> Result<Vec<([u8; 32], TokenInfo)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, name, role, sha256, created_at, created_by, revoked_at, revoked_by
             FROM api_tokens ORDER BY created_at, id",
        )
        .ctx("prepare the token query")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .ctx("read tokens")?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, role, sha, created_at, created_by, revoked_at, revoked_by) =
            row.ctx("read a token")?;
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "api_tokens",
            detail,
        };
        let role: Role = role
            .parse()
            .map_err(|e| corrupt(format!("token {id}: {e}")))?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&sha, &mut digest).map_err(|e| corrupt(format!("token {id}: {e}")))?;
        out.push((
            digest,
            TokenInfo {
                id,
                name,
                role,
                origin: Origin::Api,
                created_at: Some(parse_time(&created_at, "api_tokens.created_at")?),
                created_by: Some(created_by),
                revoked_at: revoked_at
                    .map(|t| parse_time(&t, "api_tokens.revoked_at"))
                    .transpose()?,
                revoked_by,
            },
        ));
    }
    Ok(out)
}
