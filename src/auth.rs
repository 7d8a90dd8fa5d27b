//! Who may do what: roles, JWT (HS256) issue and verification, API keys (random, stored hashed). Verification is
//! strict: the algorithm is pinned to HS256 (so `alg: none` and key-confusion tokens fail), `exp` is required and
//! enforced without leeway, and the role claim must be one we know. This module knows nothing about transports.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::storage::Db;

/// Roles, ordered: each can do everything the ones below it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn permissions(self) -> &'static [&'static str] {
        match self {
            Role::Viewer => &["view"],
            Role::Operator => &["view", "control"],
            Role::Admin => &["view", "control", "admin"],
        }
    }
}

/// The claims of our tokens, as the contract names them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub user_id: String,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
}

/// Who a verified credential belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
    /// Unix seconds after which the credential is no longer valid; `None` for API keys (valid until revoked).
    pub expires_at: Option<u64>,
}

impl Principal {
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|exp| unix_now() >= exp)
    }
}

/// Verifies tokens and API keys. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    db: Db,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

/// API keys start with this, so they are told apart from JWTs and recognised by secret scanners.
const API_KEY_PREFIX: &str = "chk_";

impl Authenticator {
    pub fn new(secret: &[u8], db: Db) -> Authenticator {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Authenticator {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            db,
        }
    }

    /// Signs a token for `user_id` with `role`, valid for `ttl`.
    pub fn issue(&self, user_id: &str, role: Role, ttl: Duration) -> Result<String> {
        let iat = unix_now();
        let claims = Claims { user_id: user_id.into(), role: role.as_str().into(), iat, exp: iat + ttl.as_secs() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(Error::internal)
    }

    /// Verifies a JWT or an API key.
    pub async fn verify(&self, credential: &str) -> Result<Principal> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(Error::Unauthenticated("empty credential".into()));
        }
        if credential.starts_with(API_KEY_PREFIX) {
            return match self.db.api_key_role(&hash_key(credential)).await? {
                Some((id, role)) => Ok(Principal { user_id: format!("apikey:{id}"), role, expires_at: None }),
                None => Err(Error::Unauthenticated("unknown or revoked api key".into())),
            };
        }
        self.verify_jwt(credential)
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            Error::Unauthenticated(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidSignature => "invalid token signature",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "token algorithm must be HS256",
                    ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                    _ => "malformed token",
                }
                .into(),
            )
        })?;
        let role =
            Role::parse(&data.claims.role).ok_or_else(|| Error::Unauthenticated("token has an unknown role".into()))?;
        Ok(Principal { user_id: data.claims.user_id, role, expires_at: Some(data.claims.exp) })
    }

    /// Creates an API key for `role`; the key is returned once and only its hash is stored.
    pub async fn create_api_key(&self, role: Role, name: &str) -> Result<String> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let key = format!("{API_KEY_PREFIX}{}", hex::encode(bytes));
        self.db.insert_api_key(&hash_key(&key), &key[..12], name, role).await?;
        Ok(key)
    }
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The configured secret, or the one kept in the data dir (created, mode 0600, on first use).
pub fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => return Err(std::io::Error::other(format!("{} is too short", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    async fn auth() -> (Authenticator, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("t.db")).await.expect("db");
        (Authenticator::new(b"0123456789abcdef0123456789abcdef", db), dir)
    }

    #[tokio::test]
    async fn issued_tokens_verify_with_their_role() {
        let (a, _d) = auth().await;
        let t = a.issue("alice", Role::Operator, Duration::from_secs(60)).expect("issue");
        let p = a.verify(&t).await.expect("verify");
        assert_eq!((p.user_id.as_str(), p.role), ("alice", Role::Operator));
    }

    #[tokio::test]
    async fn bad_tokens_are_refused() {
        let (a, _d) = auth().await;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let exp = unix_now() + 600;
        let claims = format!(r#"{{"user_id":"x","role":"admin","iat":1,"exp":{exp}}}"#);
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        assert!(a.verify(&none).await.is_err(), "alg none");
        let other = Authenticator::new(b"another-secret-another-secret-xx", a.db.clone());
        let foreign = other.issue("x", Role::Admin, Duration::from_secs(60)).expect("issue");
        assert!(a.verify(&foreign).await.is_err(), "foreign secret");
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims { user_id: "x".into(), role: "admin".into(), iat: 1, exp: unix_now() - 1 },
            &a.encoding,
        )
        .expect("encode");
        let e = a.verify(&expired).await.expect_err("expired");
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(a.verify("garbage").await.is_err());
        assert!(a.verify("").await.is_err());
    }

    #[tokio::test]
    async fn api_keys_verify_and_unknown_keys_do_not() {
        let (a, _d) = auth().await;
        let key = a.create_api_key(Role::Viewer, "test").await.expect("create");
        assert!(key.starts_with("chk_") && key.len() == 68);
        assert_eq!(a.verify(&key).await.expect("verify").role, Role::Viewer);
        assert!(a.verify("chk_0000").await.is_err());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Role::Admin.permissions(), ["view", "control", "admin"]);
    }
}
