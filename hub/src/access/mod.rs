//! Access to the HTTP API: roles, and the bearer tokens that carry them.

mod role;
mod tokens;

pub use role::{is_token, EnterpriseId, Role, RoleKind};
pub use tokens::{Caller, Issued, Origin, TokenBook, TokenError, TokenInfo, SCHEMA};
