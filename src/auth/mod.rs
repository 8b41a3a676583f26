//! "Who are you": credentials → `Principal`, and the grants that come with it.
//!
//! The login user name names the kind of secret (PRODUCT.md, "Authentication"): `iamapikey`
//! (an API key), `iambearer` (an access token JWT), `iamrefresh` (a refresh token), `token` (a
//! registry token), a robot token's accessId, or a user name with that user's password or API
//! key. Failures are rate-limited per user name and per client address, and audited. "Last used"
//! is recorded write-behind (`Usage::flush`), never as a write per request.

pub mod keys;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::iam::{AuditEvent, IamService, Secret, SecretKind};
use crate::policy::Grants;
use crate::store::{CredentialRow, now};
pub use token::{AccessEntry, Claims, TokenService};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User {
        id: i64,
        name: String,
        admin: bool,
    },
    Robot {
        id: i64,
        org: String,
        name: String,
    },
    RegistryToken {
        id: String,
        org: String,
        readwrite: bool,
    },
}

impl Principal {
    /// The `sub` of tokens issued to this principal; `from_subject` reads it back.
    pub fn subject(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User { name, .. } => format!("user:{name}"),
            Principal::Robot { org, name, .. } => format!("robot:{org}/{name}"),
            Principal::RegistryToken { id, .. } => format!("token:{id}"),
        }
    }
}

/// Where a request came from, for rate limits, audit and "last used".
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub addr: Option<IpAddr>,
    pub agent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication failed")]
    Invalid,
    #[error("too many failed attempts")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    Internal(String),
}

impl From<crate::iam::Error> for AuthError {
    fn from(e: crate::iam::Error) -> Self {
        AuthError::Internal(e.to_string())
    }
}

/// Failed attempts allowed per window, per user name and per client address.
const MAX_FAILURES_PER_NAME: u32 = 10;
const MAX_FAILURES_PER_ADDR: u32 = 30;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Limiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    /// `Some(retry_after)` if `key` is over `max` failures in the current window.
    fn blocked(&self, key: &str, max: u32) -> Option<Duration> {
        let map = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (start, n) = map.get(key)?;
        let left = FAILURE_WINDOW.checked_sub(start.elapsed())?;
        (*n >= max).then_some(left.max(Duration::from_secs(1)))
    }

    fn fail(&self, key: String) {
        let mut map = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| start.elapsed() < FAILURE_WINDOW);
        }
        let e = map.entry(key).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= FAILURE_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

/// When, from which address and with which user agent a credential was last used.
type LastUse = (i64, Option<String>, Option<String>);

/// "Last used" of credentials and audit events, kept in memory and written in batches, so that
/// issuing a token costs no write of its own.
#[derive(Default)]
struct Usage {
    pending: Mutex<HashMap<String, LastUse>>,
    audit: Mutex<Vec<AuditEvent>>,
}

/// How long a verified login is remembered. A revoked or expired credential stops working within
/// this time (the bound is 30 s).
const VERIFIED_TTL: Duration = Duration::from_secs(10);

/// Recently verified logins, keyed by an HMAC of user name and secret under a per-process random
/// key, so that memory never holds anything a secret could be recovered from.
type VerifiedLogin = (Instant, Principal, Option<String>);

struct Verified {
    key: ring::hmac::Key,
    /// Fingerprint → (verified at, principal, credential id).
    entries: Mutex<HashMap<[u8; 32], VerifiedLogin>>,
}

impl Verified {
    fn new() -> Verified {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, uuid::Uuid::new_v4().as_bytes())
        });
        Verified {
            key,
            entries: Mutex::default(),
        }
    }

    fn fingerprint(&self, username: &str, secret: &str) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(username.as_bytes());
        ctx.update(&[0]);
        ctx.update(secret.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        out
    }

    /// The principal and credential id of a login verified within the TTL.
    fn get(&self, fp: &[u8; 32]) -> Option<(Principal, Option<String>)> {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(fp)
            .filter(|(at, ..)| at.elapsed() < VERIFIED_TTL)
            .map(|(_, p, id)| (p.clone(), id.clone()))
    }

    fn put(&self, fp: [u8; 32], p: Principal, credential: Option<String>) {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 100_000 {
            map.retain(|_, (at, ..)| at.elapsed() < VERIFIED_TTL);
        }
        map.insert(fp, (Instant::now(), p, credential));
    }
}

#[derive(Clone)]
pub struct AuthService {
    iam: IamService,
    tokens: TokenService,
    limiter: Arc<Limiter>,
    usage: Arc<Usage>,
    verified: Arc<Verified>,
    /// The audience of session access tokens (`iambearer`, the management API).
    pub(crate) api_audience: String,
}

impl AuthService {
    pub fn new(iam: IamService, tokens: TokenService) -> AuthService {
        AuthService {
            iam,
            tokens,
            limiter: Arc::default(),
            usage: Arc::default(),
            verified: Arc::new(Verified::new()),
            api_audience: "berth-api".into(),
        }
    }

    pub fn iam(&self) -> &IamService {
        &self.iam
    }

    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Checks a user name and secret (Basic auth, the token endpoint, the login API). Blocking.
    pub fn login(
        &self,
        username: &str,
        secret: &str,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        let name_key = format!("name:{username}");
        let addr_key = client.addr.map(|a| format!("addr:{a}"));
        // The name limit holds for everyone: it is what stops guessing one account's secret.
        if let Some(retry_after) = self.limiter.blocked(&name_key, MAX_FAILURES_PER_NAME) {
            self.audit_failure(username, client, "rate limited");
            return Err(AuthError::RateLimited { retry_after });
        }
        // A login verified moments ago is served before the address limit, so that other
        // callers' failures from the same address (a NAT, a CI farm) do not lock it out.
        let fp = self.verified.fingerprint(username, secret);
        if let Some((p, credential)) = self.verified.get(&fp) {
            if let Some(id) = credential {
                self.record_use(&id, client);
            }
            return Ok(p);
        }
        if let Some(retry_after) = addr_key
            .as_deref()
            .and_then(|k| self.limiter.blocked(k, MAX_FAILURES_PER_ADDR))
        {
            self.audit_failure(username, client, "rate limited");
            return Err(AuthError::RateLimited { retry_after });
        }
        match self.check(username, secret, client) {
            Ok(Some((p, credential))) => {
                self.verified.put(fp, p.clone(), credential);
                Ok(p)
            }
            Ok(None) => {
                self.limiter.fail(name_key);
                if let Some(k) = addr_key {
                    self.limiter.fail(k);
                }
                self.audit_failure(username, client, "invalid credentials");
                Err(AuthError::Invalid)
            }
            Err(e) => Err(e),
        }
    }

    fn audit_failure(&self, username: &str, client: &ClientInfo, why: &str) {
        // A secret pasted into the user-name field (swapped arguments) must not land in the
        // audit trail.
        let actor = if Secret::parse(username).is_some() || username.starts_with("eyJ") {
            "[a secret given as user name]".to_owned()
        } else {
            username.chars().take(128).collect()
        };
        self.audit(AuditEvent {
            actor: Some(actor),
            action: "login",
            success: false,
            client_addr: client.addr.map(|a| a.to_string()),
            detail: Some(why.into()),
            ..AuditEvent::default()
        });
    }

    /// Queues an audit event; `flush_usage` writes it within a second.
    pub fn audit(&self, event: AuditEvent) {
        self.usage
            .audit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// The principal (and the credential used, if any) for valid credentials, `None` for wrong ones.
    fn check(
        &self,
        username: &str,
        secret: &str,
        client: &ClientInfo,
    ) -> Result<Option<(Principal, Option<String>)>, AuthError> {
        let used = std::cell::RefCell::new(None);
        let verified = |kind: SecretKind| -> Result<Option<CredentialRow>, AuthError> {
            let Some(s) = Secret::parse(secret).filter(|s| s.kind() == kind) else {
                return Ok(None);
            };
            let row = self.iam.verify_secret(&s)?;
            if let Some(r) = &row {
                self.record_use(&r.id, client);
                *used.borrow_mut() = Some(r.id.clone());
            }
            Ok(row)
        };
        let principal = self.check_kind(username, secret, verified)?;
        Ok(principal.map(|p| (p, used.into_inner())))
    }

    fn check_kind(
        &self,
        username: &str,
        secret: &str,
        verified: impl Fn(SecretKind) -> Result<Option<CredentialRow>, AuthError>,
    ) -> Result<Option<Principal>, AuthError> {
        match username {
            "iamapikey" => match verified(SecretKind::ApiKey)? {
                Some(row) => self.owner_principal(&row),
                None => Ok(None),
            },
            "iamrefresh" => match verified(SecretKind::RefreshToken)? {
                Some(row) => self.owner_principal(&row),
                None => Ok(None),
            },
            "token" => match verified(SecretKind::RegistryToken)? {
                Some(row) => self.owner_principal(&row),
                None => Ok(None),
            },
            "iambearer" => match self.tokens.verify(secret, &self.api_audience) {
                Ok(claims) => self.principal_from_subject(&claims.sub),
                Err(_) => Ok(None),
            },
            _ if uuid::Uuid::try_parse(username).is_ok() => {
                // A robot token's accessId: the secret must be that very credential.
                let Some(s) = Secret::parse(secret).filter(|s| s.kind() == SecretKind::RobotToken)
                else {
                    return Ok(None);
                };
                if uuid::Uuid::try_parse(username).ok() != Some(s.id()) {
                    return Ok(None);
                }
                match verified(SecretKind::RobotToken)? {
                    Some(row) => self.owner_principal(&row),
                    None => Ok(None),
                }
            }
            _ => {
                // A user name with the user's API key, or the user's password.
                if Secret::parse(secret).is_some_and(|s| s.kind() == SecretKind::ApiKey) {
                    return match verified(SecretKind::ApiKey)? {
                        Some(row) => match self.owner_principal(&row)? {
                            Some(p @ Principal::User { .. })
                                if p.subject() == format!("user:{username}") =>
                            {
                                Ok(Some(p))
                            }
                            _ => Ok(None),
                        },
                        None => Ok(None),
                    };
                }
                Ok(self
                    .iam
                    .check_password(username, secret)?
                    .map(|u| Principal::User {
                        id: u.id,
                        name: u.name,
                        admin: u.admin,
                    }))
            }
        }
    }

    /// The principal a credential acts as: its user, its robot, or (registry tokens) its org.
    fn owner_principal(&self, row: &CredentialRow) -> Result<Option<Principal>, AuthError> {
        let meta = self.iam.meta();
        if let Some(uid) = row.user_id {
            return Ok(meta
                .read(|r| r.user_by_id(uid))
                .map_err(|e| AuthError::Internal(e.to_string()))?
                .map(|u| Principal::User {
                    id: u.id,
                    name: u.name,
                    admin: u.admin,
                }));
        }
        if let Some(rid) = row.robot_id {
            return Ok(meta
                .read(|r| r.robot_by_id(rid))
                .map_err(|e| AuthError::Internal(e.to_string()))?
                .map(|r| Principal::Robot {
                    id: r.id,
                    org: r.org,
                    name: r.name,
                }));
        }
        if let Some(oid) = row.org_id {
            let org = meta
                .read(|r| r.org_by_id(oid))
                .map_err(|e| AuthError::Internal(e.to_string()))?;
            return Ok(org.map(|o| Principal::RegistryToken {
                id: row.id.clone(),
                org: o.name,
                readwrite: row.readwrite,
            }));
        }
        Ok(None)
    }

    /// Reads a token's `sub` back into a principal (still existing, credential still valid).
    pub fn principal_from_subject(&self, sub: &str) -> Result<Option<Principal>, AuthError> {
        let internal = |e: crate::iam::Error| AuthError::Internal(e.to_string());
        if let Some(name) = sub.strip_prefix("user:") {
            return Ok(self
                .iam
                .meta()
                .read(|r| r.user_by_name(name))
                .map_err(|e| AuthError::Internal(e.to_string()))?
                .map(|u| Principal::User {
                    id: u.id,
                    name: u.name,
                    admin: u.admin,
                }));
        }
        if let Some(full) = sub.strip_prefix("robot:") {
            let Some((org, name)) = full.split_once('/') else {
                return Ok(None);
            };
            return match self.iam.robot(org, name) {
                Ok(r) => Ok(Some(Principal::Robot {
                    id: r.id,
                    org: r.org,
                    name: r.name,
                })),
                Err(crate::iam::Error::NotFound(_)) => Ok(None),
                Err(e) => Err(internal(e)),
            };
        }
        if let Some(id) = sub.strip_prefix("token:") {
            let Some(row) = self.iam.credential(id).map_err(internal)? else {
                return Ok(None);
            };
            if row.revoked_at.is_some() || row.expires_at.is_some_and(|e| e <= now()) {
                return Ok(None);
            }
            return self.owner_principal(&row);
        }
        Ok(None)
    }

    /// What the principal may do. Blocking (reads memberships and bindings).
    pub fn grants(&self, p: &Principal) -> Result<Grants, AuthError> {
        Ok(match p {
            Principal::Anonymous => Grants::default(),
            Principal::User { id, admin, .. } => self.iam.grants(("user", *id), *admin)?,
            Principal::Robot { id, .. } => self.iam.grants(("robot", *id), false)?,
            Principal::RegistryToken { org, readwrite, .. } => Grants {
                registry_token: Some((org.clone(), *readwrite)),
                ..Grants::default()
            },
        })
    }

    fn record_use(&self, id: &str, client: &ClientInfo) {
        let agent = client.agent.as_ref().map(|a| a.chars().take(256).collect());
        self.usage
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id.to_owned(),
                (now(), client.addr.map(|a| a.to_string()), agent),
            );
    }

    /// Writes the pending audit events and "last used" records. Blocking.
    pub fn flush_usage(&self) -> Result<usize, AuthError> {
        let events = std::mem::take(
            &mut *self
                .usage
                .audit
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if !events.is_empty() {
            self.iam.audit_all(&events)?;
        }
        let pending: Vec<_> = std::mem::take(
            &mut *self
                .usage
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_iter()
        .map(|(id, (at, addr, agent))| (id, at, addr, agent))
        .collect();
        if !pending.is_empty() {
            self.iam.touch_credentials(&pending)?;
        }
        Ok(pending.len())
    }
}
