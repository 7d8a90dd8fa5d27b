//! Who may do what: roles, JWT (HS256) issue and verification, API keys (random, stored hashed). Verification is
//! strict: the algorithm is pinned to HS256 (so `alg: none` and key-confusion tokens fail), `exp` is required and
//! enforced without leeway, and the role claim must be one we know. This module knows nothing about transports.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::base::Role;
use crate::base::time::unix_now;
use crate::error::{Error, Result};
use crate::storage::Db;

/// The claims of the tokens camhub issues, as the contract names them.
#[derive(Debug, Serialize)]
pub struct Claims {
    pub user_id: String,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
}

/// The claims of a token to verify. `iat` and `exp` are RFC 7519 NumericDates: JSON numbers of seconds, which may
/// have a fraction (clients that mint tokens with Python's `time.time()` send `1796132913.25`). `exp` is optional
/// here only so that its absence gets its own message.
#[derive(Debug, Deserialize)]
struct PresentedClaims {
    user_id: String,
    role: String,
    #[allow(dead_code, reason = "required by the contract; its value is not checked")]
    iat: f64,
    exp: Option<f64>,
}

/// Who a verified credential belongs to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
    /// When the credential stops being valid; `None` for API keys (valid until revoked).
    pub expires_at: Option<SystemTime>,
}

impl Principal {
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|exp| SystemTime::now() >= exp)
    }
}

/// The token of an `Authorization` header value (`Bearer <token>`), if it is one.
pub fn bearer(header_value: &str) -> Option<&str> {
    header_value.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty())
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
const MEDIA_SCOPE: &str = "media";

/// A media token's claims: what it opens (`scope`, always `media`), for which camera, until when.
#[derive(Debug, Serialize, Deserialize)]
struct MediaClaims {
    scope: String,
    cam: String,
    exp: u64,
}

impl Authenticator {
    pub fn new(secret: &[u8], db: Db) -> Authenticator {
        // The algorithm is pinned here. `exp` is checked in `verify_jwt`, not by jsonwebtoken, which reads only
        // integer NumericDates and would refuse a valid `exp` with a fraction as missing.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
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
        let data = jsonwebtoken::decode::<PresentedClaims>(token, &self.decoding, &self.validation).map_err(|e| {
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
        let claims = data.claims;
        let exp = claims.exp.ok_or_else(|| Error::Unauthenticated("token lacks a required claim".into()))?;
        let expires_at = (exp.is_finite() && exp > 0.0)
            .then(|| UNIX_EPOCH.checked_add(Duration::from_secs_f64(exp.min(1e15))))
            .flatten()
            .ok_or_else(|| Error::Unauthenticated("malformed token".into()))?;
        // No leeway: a token is valid until its `exp`, not a moment longer.
        if SystemTime::now() >= expires_at {
            return Err(Error::Unauthenticated("token expired".into()));
        }
        let role =
            Role::parse(&claims.role).ok_or_else(|| Error::Unauthenticated("token has an unknown role".into()))?;
        Ok(Principal { user_id: claims.user_id, role, expires_at: Some(expires_at) })
    }

    /// Creates an API key for `role`; the key is returned once and only its hash is stored.
    /// A media token: a short-lived signed credential for one camera's media (HLS, playback), for players that cannot
    /// set a header and so carry it in the URL (`?token=`). It has no user and no role, so it opens nothing else: the
    /// API refuses it as a token without the required claims. Its expiry is rounded up to the minute, so tokens for a
    /// camera minted within the same minute are the same text (a live playlist's URIs stay the same across reloads,
    /// and players do not take a changed token for a new init segment).
    pub fn issue_media(&self, camera: &str, ttl: Duration) -> Result<(String, u64)> {
        let exp = (unix_now() + ttl.as_secs()).div_ceil(60) * 60;
        let claims = MediaClaims { scope: MEDIA_SCOPE.into(), cam: camera.into(), exp };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(Error::internal)?;
        Ok((token, exp))
    }

    /// Verifies a media token for `camera`: signature, expiry (no leeway) and the camera it was issued for.
    pub fn verify_media(&self, token: &str, camera: &str) -> Result<()> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<MediaClaims>(token, &self.decoding, &validation)
            .map_err(|_| Error::Unauthenticated("invalid or expired media token".into()))?;
        if data.claims.scope != MEDIA_SCOPE || data.claims.cam != camera {
            return Err(Error::Unauthenticated("the media token is for another camera".into()));
        }
        Ok(())
    }

    pub async fn create_api_key(&self, role: Role, name: &str) -> Result<String> {
        let key = new_key(API_KEY_PREFIX);
        self.db.insert_api_key(&hash_key(&key), &key[..12], name, role).await?;
        Ok(key)
    }
}

/// A new secret key: `prefix` and 256 random bits in hex.
pub fn new_key(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The SHA-256 (hex) under which a key (API key, stream key) is stored: keys are 256-bit random values, so a plain
/// hash is enough.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The file in the data dir that keeps the JWT secret when the config gives none (backups carry it).
pub const SECRET_FILE: &str = "jwt_secret";

/// The configured secret, or the one kept in the data dir (created, mode 0600, on first use).
pub fn load_or_create_secret(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
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
    async fn media_tokens_open_their_camera_only_and_never_the_api() {
        let (a, _d) = auth().await;
        let (t, exp) = a.issue_media("cam0", Duration::from_secs(60)).expect("issue");
        assert!(exp > unix_now());
        a.verify_media(&t, "cam0").expect("its camera");
        assert!(a.verify_media(&t, "cam1").is_err(), "another camera");
        assert!(a.verify(&t).await.is_err(), "a media token is no API credential");
        let user = a.issue("alice", Role::Admin, Duration::from_secs(60)).expect("issue");
        assert!(a.verify_media(&user, "cam0").is_err(), "an API token is no media token");
        let (again, exp_again) = a.issue_media("cam0", Duration::from_secs(60)).expect("issue");
        assert!(again == t || exp_again != exp, "the same within the minute");
        let claims = MediaClaims { scope: MEDIA_SCOPE.into(), cam: "cam0".into(), exp: unix_now() - 1 };
        let old = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding).expect("encode");
        assert!(a.verify_media(&old, "cam0").is_err(), "expired");
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

    /// RFC 7519 NumericDates may have a fraction: Python clients mint `iat`/`exp` with `time.time()`.
    #[tokio::test]
    async fn numeric_dates_with_a_fraction_verify() {
        let (a, _d) = auth().await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64();
        for (iat, exp) in
            [(format!("{now}"), format!("{}", now + 600.25)), ("1.0".into(), format!("{:.1}", now + 60.0))]
        {
            let claims = serde_json::json!({ "user_id": "py", "role": "viewer", "iat": iat.parse::<f64>().expect("number"),
                "exp": exp.parse::<f64>().expect("number") });
            let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding).expect("encode");
            let p = a.verify(&token).await.unwrap_or_else(|e| panic!("iat {iat} exp {exp}: {e}"));
            assert_eq!(p.role, Role::Viewer);
        }
        let expired = serde_json::json!({ "user_id": "py", "role": "viewer", "iat": now - 10.5, "exp": now - 0.5 });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &expired, &a.encoding).expect("encode");
        let e = a.verify(&token).await.expect_err("expired");
        assert!(e.to_string().contains("expired"), "{e}");
        let no_exp = serde_json::json!({ "user_id": "py", "role": "viewer", "iat": now });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &no_exp, &a.encoding).expect("encode");
        let e = a.verify(&token).await.expect_err("no exp");
        assert!(e.to_string().contains("required claim"), "{e}");
    }
}
