//! Long-lived secrets: generated from the OS CSPRNG, recognisable by prefix, carrying their id.
//!
//! Format: `<prefix><id: 32 hex><random: 43 base64url>` where the random part is 256 bits. The
//! prefix names the kind (`bthr_` robot token, `btha_` API key, `btht_` registry token, `bthf_`
//! refresh token), so secret scanners can find leaked ones and a lookup is one read by id. Only
//! the SHA-256 of the whole secret is stored, and it is compared in constant time.

use std::fmt;

use base64::Engine as _;
use rand::TryRngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

/// The kinds of long-lived secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    RobotToken,
    ApiKey,
    RegistryToken,
    RefreshToken,
}

impl SecretKind {
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::RobotToken => "bthr_",
            SecretKind::ApiKey => "btha_",
            SecretKind::RegistryToken => "btht_",
            SecretKind::RefreshToken => "bthf_",
        }
    }

    /// The `kind` column of the credentials table.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::RobotToken => "robot_token",
            SecretKind::ApiKey => "api_key",
            SecretKind::RegistryToken => "registry_token",
            SecretKind::RefreshToken => "refresh_token",
        }
    }

    /// The kind a `kind` column names.
    pub fn from_column(text: &str) -> Option<SecretKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub(crate) const ALL: [SecretKind; 4] = [
        SecretKind::RobotToken,
        SecretKind::ApiKey,
        SecretKind::RegistryToken,
        SecretKind::RefreshToken,
    ];
}

/// A secret as presented or just generated. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Secret {
    kind: SecretKind,
    id: uuid::Uuid,
    text: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

const RANDOM_BYTES: usize = 32;
const RANDOM_CHARS: usize = 43;

impl Secret {
    /// A new secret of `kind` with a fresh id, from the OS CSPRNG.
    pub fn generate(kind: SecretKind) -> Result<Secret, rand::rand_core::OsError> {
        let mut bytes = [0u8; RANDOM_BYTES + 16];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
        let id =
            uuid::Builder::from_random_bytes(bytes[RANDOM_BYTES..].try_into().unwrap_or([0; 16]))
                .into_uuid();
        let random =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..RANDOM_BYTES]);
        Ok(Secret {
            kind,
            id,
            text: format!("{}{}{random}", kind.prefix(), id.simple()),
        })
    }

    /// A new secret for credential `id` (a rotation: same id, new random part).
    pub fn generate_for(
        kind: SecretKind,
        id: uuid::Uuid,
    ) -> Result<Secret, rand::rand_core::OsError> {
        let fresh = Secret::generate(kind)?;
        let random = &fresh.text[kind.prefix().len() + 32..];
        Ok(Secret {
            kind,
            id,
            text: format!("{}{}{random}", kind.prefix(), id.simple()),
        })
    }

    /// Parses a presented secret. `None` if it is not one of ours (no lookup is made then).
    pub fn parse(text: &str) -> Option<Secret> {
        let kind = SecretKind::ALL
            .into_iter()
            .find(|k| text.starts_with(k.prefix()))?;
        let rest = &text[kind.prefix().len()..];
        if rest.len() != 32 + RANDOM_CHARS || !rest.is_ascii() {
            return None;
        }
        let id = uuid::Uuid::try_parse(&rest[..32]).ok()?;
        let random_ok = rest[32..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        random_ok.then(|| Secret {
            kind,
            id,
            text: text.to_owned(),
        })
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// The secret itself, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What is stored.
    pub fn hash(&self) -> Vec<u8> {
        sha2::Sha256::digest(self.text.as_bytes()).to_vec()
    }

    /// Compares with a stored hash in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        self.hash().ct_eq(stored).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        for kind in SecretKind::ALL {
            let s = Secret::generate(kind).unwrap();
            assert_eq!(s.expose().len(), 5 + 32 + 43);
            let p = Secret::parse(s.expose()).unwrap();
            assert_eq!((p.kind(), p.id()), (kind, s.id()));
            assert!(p.matches(&s.hash()));
            let mut tampered = s.expose().to_owned();
            let last = tampered.pop().unwrap();
            tampered.push(if last == 'A' { 'B' } else { 'A' });
            assert!(!Secret::parse(&tampered).unwrap().matches(&s.hash()));
        }
        assert_ne!(
            Secret::generate(SecretKind::ApiKey).unwrap().expose(),
            Secret::generate(SecretKind::ApiKey).unwrap().expose()
        );
        assert!(Secret::parse("bthr_short").is_none());
        assert!(Secret::parse("password").is_none());
        assert!(!format!("{:?}", Secret::generate(SecretKind::ApiKey).unwrap()).contains("btha_"));
    }
}
