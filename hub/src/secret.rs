//! Hashes of the secrets the hub checks: API tokens (SHA-256) and MQTT passwords (Argon2).
//!
//! API tokens are long random strings, so a fast hash suffices and keeps every API call cheap;
//! MQTT passwords may be chosen by people, so they get Argon2, checked once per connection.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(argon2::password_hash::Error);

/// SHA-256 of an API token, as stored in the config (`[[api.tokens]] sha256`) once hex-encoded.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Argon2id PHC string of a site's MQTT password, with the library's recommended cost.
pub fn password_hash(password: &str) -> Result<String, HashError> {
    hash(&Argon2::default(), password)
}

/// Argon2id PHC string at minimal cost, for a random 128-bit password: a slow hash protects
/// guessable passwords, and this one cannot be guessed, so the cost would only slow start-up.
pub fn random_password_hash(password: &str) -> Result<String, HashError> {
    let params = Params::new(Params::MIN_M_COST, 1, 1, None)
        .map_err(|e| HashError(argon2::password_hash::Error::from(e)))?;
    hash(
        &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        password,
    )
}

fn hash(argon: &Argon2<'_>, password: &str) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(HashError)?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn token_digest_is_plain_sha256() {
        assert_eq!(
            hex::encode(token_digest("demo-operator-token")),
            hex::encode(Sha256::digest(b"demo-operator-token"))
        );
    }

    #[test]
    fn password_hashes_verify() {
        for hash in [
            password_hash("pw").unwrap(),
            random_password_hash("pw").unwrap(),
        ] {
            let parsed = PasswordHash::new(&hash).unwrap();
            assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
            assert!(Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err());
        }
    }
}
