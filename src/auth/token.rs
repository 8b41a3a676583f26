//! JWTs: ES256, `kid` and `x5c` in the header; claims `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//! `jti`, `access` (the Docker token specification's grant list). Verification needs no
//! database read: only the loaded public keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::Keys;
use crate::store::now;

/// One entry of the `access` claim: `{"type":"repository","name":"acme/app","actions":["pull"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// The revocation keys this token depends on: its subject's id and its lineage (see
    /// `auth::revoked`). A token whose key is revoked is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("signing: {0}")]
    Signing(String),
}

#[derive(Clone)]
pub struct TokenService {
    keys: Keys,
    issuer: String,
    ttl: Duration,
    revoked: std::sync::Arc<super::revoked::Revoked>,
    /// Tokens verified before, by their SHA-256 (expired ones swept: about those still alive).
    verified:
        std::sync::Arc<std::sync::Mutex<super::swept::Swept<[u8; 32], std::sync::Arc<Claims>>>>,
}

/// Verified tokens remembered at most; the cache is emptied when live ones grow past this.
const VERIFIED_MAX: usize = 50_000;

/// Leeway for clock differences between berth nodes and verifiers.
const LEEWAY_SECS: u64 = 30;

impl TokenService {
    pub fn new(keys: Keys, issuer: String, ttl: Duration) -> TokenService {
        TokenService {
            keys,
            issuer,
            ttl,
            revoked: std::sync::Arc::default(),
            verified: std::sync::Arc::default(),
        }
    }

    /// The revocation set every verification consults.
    pub fn revoked(&self) -> &super::revoked::Revoked {
        &self.revoked
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs a token for `sub` with audience `aud`, the given grants and the revocation keys it
    /// depends on.
    pub fn issue(
        &self,
        sub: &str,
        aud: &str,
        access: Vec<AccessEntry>,
        src: Vec<String>,
    ) -> Result<(String, Claims), TokenError> {
        self.issue_until(sub, aud, access, src, None)
    }

    /// Like `issue`, expiring no later than `not_after` (a workload's own token's expiry).
    pub fn issue_until(
        &self,
        sub: &str,
        aud: &str,
        access: Vec<AccessEntry>,
        src: Vec<String>,
        not_after: Option<i64>,
    ) -> Result<(String, Claims), TokenError> {
        let key = self
            .keys
            .current()
            .ok_or_else(|| TokenError::Signing("no signing key".into()))?;
        let iat = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: aud.to_owned(),
            exp: iat
                .saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(300))
                .min(not_after.unwrap_or(i64::MAX)),
            // A little back-dated, so verifiers whose clocks lag a moment accept it at once.
            nbf: iat - 1,
            iat,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
            src,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.x5c = Some(vec![key.cert_b64.clone()]);
        let jwt = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok((jwt, claims))
    }

    /// Verifies signature, issuer, audience, times and revocation. A token verified before is
    /// not verified again (clients reuse one token for many requests): its audience, expiry and
    /// revocation are re-checked against the remembered claims, keyed by the token's SHA-256.
    pub fn verify(&self, jwt: &str, aud: &str) -> Result<Claims, TokenError> {
        let claims = self.verify_unrevoked(jwt, aud)?;
        if self.revoked.any(&claims.src) {
            return Err(TokenError::Invalid("token revoked".into()));
        }
        Ok(claims)
    }

    fn verify_unrevoked(&self, jwt: &str, aud: &str) -> Result<Claims, TokenError> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::digest(jwt.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(claims) = cached {
            let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
            if claims.aud == aud && claims.exp + leeway > now() {
                return Ok((*claims).clone());
            }
            return Err(TokenError::Invalid(
                "token expired or for another audience".into(),
            ));
        }
        let claims = self.verify_signed(jwt, aud)?;
        let (leeway, t) = (i64::try_from(LEEWAY_SECS).unwrap_or(0), now());
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                key,
                std::sync::Arc::new(claims.clone()),
                |c| c.exp.saturating_add(leeway) > t,
                VERIFIED_MAX,
            );
        Ok(claims)
    }

    fn verify_signed(&self, jwt: &str, aud: &str) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(jwt).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != jsonwebtoken::Algorithm::ES256 {
            return Err(TokenError::Invalid("algorithm must be ES256".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let key = self
            .keys
            .by_kid(&kid)
            .ok_or_else(|| TokenError::Invalid("unknown signing key".into()))?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&[aud]);
        v.set_issuer(&[&self.issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "sub", "aud"]);
        jsonwebtoken::decode::<Claims>(jwt, &key.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// RFC 3339 UTC time of Unix seconds (for `issued_at`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Unix seconds of a UTC time written `YYYY-MM-DDTHH:MM[:SS][Z]` (RFC 3339 in UTC, or what a
/// browser's `datetime-local` field sends, read as UTC).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, clock) = s.split_once('T')?;
    let num = |t: &str, len: usize| -> Option<i64> {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())?
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let mut c = clock.split(':');
    let (h, min) = (num(c.next()?, 2)?, num(c.next()?, 2)?);
    let sec = match c.next() {
        Some(t) => num(t, 2)?,
        None => 0,
    };
    if d.next().is_some()
        || c.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || h > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    // Days-from-civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + sec)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_rfc3339_round_trips() {
        for t in [0, 951_782_400, 1_795_305_600, 1_795_391_999] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(t)), Some(t));
        }
        assert_eq!(
            super::parse_rfc3339("2026-11-22T00:00"),
            Some(1_795_305_600)
        );
        for bad in [
            "2026-13-01T00:00",
            "2026-11-22",
            "x",
            "2026-11-22T24:00",
            "2026-11-22T00:00:00+01:00",
        ] {
            assert_eq!(super::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
    }
}
