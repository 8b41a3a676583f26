//! "Who are you": credentials → `Principal`, and the grants that come with it.
//!
//! The login user name names the kind of secret (PRODUCT.md, "Authentication"): `iamapikey`
//! (an API key), `iambearer` (an access token JWT), `iamrefresh` (a refresh token), `token` (a
//! registry token), a robot token's accessId, or a user name with that user's password or API
//! key. Failures are limited by `limit` (keys that cannot be aimed at others) and audited in
//! aggregate; "last used" is recorded write-behind (`Usage::flush`), never as a write per
//! request. Every login carries its `Lineage`: the revocation keys of what it came from, which
//! tokens issued to it name (see `revoked`).

pub mod keys;
pub(crate) mod limit;
pub mod oidc;
pub mod revoked;
pub mod sso;
pub(crate) mod swept;
pub mod token;
pub mod workload;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::iam::{AuditEvent, IamService, Secret, SecretKind};
use crate::iam::{Credential, User};
use crate::policy::Grants;
use crate::store::now;
use limit::Limiter;
use swept::Swept;
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
    /// The `sub` of tokens issued to this principal.
    pub fn subject(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User { name, .. } => format!("user:{name}"),
            Principal::Robot { org, name, .. } => format!("robot:{org}/{name}"),
            Principal::RegistryToken { id, .. } => format!("token:{id}"),
        }
    }

    /// The revocation key of the identity itself (by id, never by name).
    pub fn id_key(&self) -> Option<String> {
        match self {
            Principal::Anonymous => None,
            Principal::User { id, .. } => Some(format!("user:{id}")),
            Principal::Robot { id, .. } => Some(format!("robot:{id}")),
            Principal::RegistryToken { id, .. } => Some(format!("cred:{id}")),
        }
    }

    fn user(u: User) -> Principal {
        Principal::User {
            id: u.id,
            name: u.name,
            admin: u.admin,
        }
    }
}

/// What a login came from, as revocation keys: `pw:<uid>:<epoch>` (a password), `cred:<id>` (a
/// long-lived credential), `fam:<id>` plus its source (a refresh-token family).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage(pub Vec<String>);

impl Lineage {
    pub fn password(u: &User) -> Lineage {
        Lineage(vec![format!("pw:{}:{}", u.id, u.password_epoch)])
    }

    /// Whether the caller proved a password (directly or through a session opened with it).
    pub fn password_backed(&self) -> bool {
        self.0.iter().any(|k| k.starts_with("pw:"))
    }

    /// What a session opened through this caller depends on: every key of the caller, the
    /// session it came from included (an access token cannot open a session that outlives its
    /// own).
    pub fn session_provenance(&self) -> Vec<String> {
        self.0.clone()
    }

    /// What a long-lived object (a credential, a trust, a robot, a binding) made by principal
    /// `p` with this lineage depends on: the credential and generation, trust or robot behind
    /// the caller. A password (or a session opened with one) is a person acting: what they make
    /// stands on its own and does not end when they sign out or change the password.
    pub fn provenance(&self, p: &Principal) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .iter()
            .filter(|k| !k.starts_with("fam:") && !k.starts_with("pw:"))
            .cloned()
            .collect();
        if let Principal::Robot { .. } = p {
            keys.extend(p.id_key());
        }
        keys
    }

    /// The `src` claim of a token issued to `p` with this lineage.
    pub fn token_keys(&self, p: &Principal) -> Vec<String> {
        let mut keys = self.0.clone();
        keys.extend(p.id_key());
        keys
    }
}

/// A verified caller: who, and from what.
#[derive(Debug, Clone)]
pub struct Login {
    pub principal: Principal,
    pub lineage: Lineage,
    /// A workload's login (a token of a trusted issuer): ends with that token; tokens issued to
    /// it end no later.
    pub workload: Option<WorkloadLogin>,
}

/// What a workload presented: the trust it matched and its token's issuer, subject and expiry.
#[derive(Debug, Clone)]
pub struct WorkloadLogin {
    pub trust: String,
    pub issuer: String,
    pub subject: String,
    pub expires: i64,
}

impl Login {
    pub fn new(principal: Principal, lineage: Lineage) -> Login {
        Login {
            principal,
            lineage,
            workload: None,
        }
    }

    pub fn anonymous() -> Login {
        Login::new(Principal::Anonymous, Lineage::default())
    }

    /// The latest a token issued to this login may expire.
    pub fn not_after(&self) -> Option<i64> {
        self.workload
            .as_ref()
            .map(|w| w.expires.min(now() + workload::MAX_ISSUED_SECS))
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
        match e {
            // The password-hashing pool is full: the caller retries shortly.
            crate::iam::Error::Busy(_) => AuthError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            e => AuthError::Internal(e.to_string()),
        }
    }
}

/// Whose a credential tried in a failed login is: an organization's (a registry token) or a
/// robot's (of its organization).
#[derive(Clone, Copy)]
enum OrgOf {
    Org(i64),
    Robot(i64),
}

/// Failed logins are counted per address, reason and the organization of the credential tried
/// (when it is known: an expired or revoked credential of an org, a workload refused for an
/// org's robot).
type FailureKey = (Option<IpAddr>, &'static str, Option<String>);

/// Failed logins of one address and reason within one window: one audit row with a count.
struct FailureWindow {
    start: Instant,
    row: Option<i64>,
    pending: i64,
    /// The first few distinct user names typed (bounded), kept apart from any actor.
    names: Vec<String>,
}

impl FailureWindow {
    fn new() -> FailureWindow {
        FailureWindow {
            start: Instant::now(),
            row: None,
            pending: 0,
            names: Vec::new(),
        }
    }
}

/// Distinct attempted user names remembered per window, and their length.
const ATTEMPTED_NAMES: usize = 5;
const ATTEMPTED_LEN: usize = 64;

/// "Last used" of credentials and audit events, kept in memory and written in batches, so that
/// issuing a token costs no write of its own.
#[derive(Default)]
struct Usage {
    pending: Mutex<HashMap<String, LastUse>>,
    /// Trust id → last use.
    trusts: Mutex<HashMap<i64, i64>>,
    audit: Mutex<Vec<AuditEvent>>,
    failures: Mutex<HashMap<FailureKey, FailureWindow>>,
}

/// When, from which address and with which user agent a credential was last used.
type LastUse = (i64, Option<String>, Option<String>);

/// How long a verified login is remembered. A revoked or expired credential stops working within
/// this time (the bound is 30 s); a revocation seen by this node ends it at once.
const VERIFIED_TTL: Duration = Duration::from_secs(10);

/// Recently verified logins, keyed by an HMAC of user name and secret under a per-process random
/// key, so that memory never holds anything a secret could be recovered from.
type VerifiedLogin = (Instant, Login, Option<String>);

struct Verified {
    key: ring::hmac::Key,
    /// Fingerprint → (verified at, login, credential id).
    entries: Mutex<Swept<[u8; 32], VerifiedLogin>>,
    /// Fingerprint → the lock held by the one check of that user name and secret under way.
    in_flight: Mutex<HashMap<[u8; 32], Arc<Mutex<()>>>>,
}

/// The one check under way of a user name and secret: attempts that present the same pair wait
/// for it and then find its result in the cache (or make their own attempt, after a failure).
struct Flight<'a> {
    verified: &'a Verified,
    fp: [u8; 32],
    lock: Arc<Mutex<()>>,
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
            in_flight: Mutex::default(),
        }
    }

    /// Joins the check of `fp` under way, or starts it. Identical attempts (a fleet of clients
    /// sharing one robot token behind one address) are checked once, not each reserving a slot
    /// of the failure limit: an attacker repeating one guess learns nothing more by repeating it.
    fn flight(&self, fp: [u8; 32]) -> Flight<'_> {
        let lock = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(fp)
            .or_default()
            .clone();
        Flight {
            verified: self,
            fp,
            lock,
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

    /// The login and credential id of a login verified within the TTL.
    fn get(&self, fp: &[u8; 32]) -> Option<(Login, Option<String>)> {
        let map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(fp)
            .filter(|(at, l, _)| {
                at.elapsed() < VERIFIED_TTL && l.not_after().is_none_or(|n| n > now())
            })
            .map(|(_, l, id)| (l.clone(), id.clone()))
    }

    fn put(&self, fp: [u8; 32], l: Login, credential: Option<String>) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                fp,
                (Instant::now(), l, credential),
                |(at, ..)| at.elapsed() < VERIFIED_TTL,
                100_000,
            );
    }
}

impl Flight<'_> {
    /// Runs `f` once the attempts ahead of this one with the same fingerprint are done.
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let _turn = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        f()
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut map = self
            .verified
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The last attempt of this fingerprint removes its entry (the map holds one reference).
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.fp);
        }
    }
}

#[derive(Clone)]
pub struct AuthService {
    iam: IamService,
    tokens: TokenService,
    limiter: Arc<Limiter>,
    usage: Arc<Usage>,
    verified: Arc<Verified>,
    workloads: Arc<workload::Workloads>,
    exchanges: Arc<Exchanges>,
    policy: Arc<PolicyCache>,
    /// The audience of session access tokens (`iambearer`, the management API).
    pub(crate) api_audience: String,
    /// The registry's token service name: the default audience of workload tokens.
    pub(crate) service: String,
    /// The OpenID providers people sign in with and their sessions (`auth::sso`).
    sso: Option<Arc<sso::SsoService>>,
    /// Who may sign in with a local password.
    local_login: oidc::LocalLogin,
}

/// Grants and namespaces as read at one policy stamp: dropped whole when the stamp moves (a
/// local write, or a revocation or policy change of any node, read within a second).
#[derive(Default)]
struct PolicyCache(Mutex<PolicyMaps>);

#[derive(Default)]
struct PolicyMaps {
    stamp: (u64, i64),
    grants: HashMap<String, Grants>,
    namespaces: HashMap<String, Option<crate::iam::Namespace>>,
}

/// Entries kept at most per map; past this the map starts again.
const POLICY_CACHE_MAX: usize = 10_000;

impl PolicyCache {
    /// The maps, if they are of `stamp`: moved forward to a newer stamp (emptied), never back.
    fn maps(&self, stamp: (u64, i64)) -> Option<std::sync::MutexGuard<'_, PolicyMaps>> {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if m.stamp != stamp && stamp.0 >= m.stamp.0 && stamp.1 >= m.stamp.1 {
            *m = PolicyMaps {
                stamp,
                ..PolicyMaps::default()
            };
        }
        (m.stamp == stamp).then_some(m)
    }

    fn get_grants(&self, stamp: (u64, i64), key: &str) -> Option<Grants> {
        self.maps(stamp)?.grants.get(key).cloned()
    }

    fn put_grants(&self, stamp: (u64, i64), key: String, g: Grants) {
        if let Some(mut m) = self.maps(stamp) {
            if m.grants.len() >= POLICY_CACHE_MAX {
                m.grants.clear();
            }
            m.grants.insert(key, g);
        }
    }

    fn get_namespace(
        &self,
        stamp: (u64, i64),
        name: &str,
    ) -> Option<Option<crate::iam::Namespace>> {
        self.maps(stamp)?.namespaces.get(name).cloned()
    }

    fn put_namespace(&self, stamp: (u64, i64), name: String, n: Option<crate::iam::Namespace>) {
        if let Some(mut m) = self.maps(stamp) {
            if m.namespaces.len() >= POLICY_CACHE_MAX {
                m.namespaces.clear();
            }
            m.namespaces.insert(name, n);
        }
    }
}

/// Workload token exchanges counted by outcome.
#[derive(Default)]
struct Exchanges(Mutex<std::collections::BTreeMap<&'static str, u64>>);

impl Exchanges {
    fn count(&self, outcome: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(outcome)
            .or_default() += 1;
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ["granted", "refused", "unavailable"]
            .iter()
            .map(|o| (*o, m.get(o).copied().unwrap_or(0)))
            .collect()
    }
}

/// Robots whose trusts an exchange without `client_id` checks at most (each a signature check).
const MAX_EXCHANGE_ROBOTS: usize = 16;

/// The result of checking a secret: the login and the credential used, or `None` (wrong).
type Checked = Option<(Login, Option<String>)>;

impl AuthService {
    pub fn new(iam: IamService, tokens: TokenService) -> AuthService {
        AuthService {
            iam,
            tokens,
            limiter: Arc::default(),
            usage: Arc::default(),
            verified: Arc::new(Verified::new()),
            workloads: Arc::default(),
            exchanges: Arc::default(),
            policy: Arc::default(),
            api_audience: "berth-api".into(),
            service: "berth".into(),
            sso: None,
            local_login: oidc::LocalLogin::All,
        }
    }

    /// The registry's service name (the default audience of workload tokens) and the longest
    /// a workload token may live.
    pub fn with_workloads(
        mut self,
        service: &str,
        max_lifetime: Duration,
        allow_private: bool,
    ) -> AuthService {
        self.service = service.to_owned();
        self.workloads = Arc::new(workload::Workloads::new(max_lifetime, allow_private));
        self
    }

    /// Single sign-on (the providers, the sealer of their refresh tokens) and who may still sign
    /// in with a local password.
    pub fn with_sso(
        mut self,
        sso: Option<(oidc::Sso, Arc<keys::Sealer>)>,
        local_login: oidc::LocalLogin,
    ) -> AuthService {
        self.sso =
            sso.map(|(o, sealer)| Arc::new(sso::SsoService::new(self.iam.clone(), o, sealer)));
        self.local_login = local_login;
        self
    }

    pub fn sso(&self) -> Option<&sso::SsoService> {
        self.sso.as_deref()
    }

    /// Who may sign in with a local password.
    pub fn local_login(&self) -> oidc::LocalLogin {
        self.local_login
    }

    /// The login of a person an identity provider vouched for (`sso::SsoService::sign_in`):
    /// lineage `sso:<user>:<epoch>`, so whatever it opens or makes ends when the provider
    /// refuses the user. Blocking.
    pub fn sso_login(&self, who: &crate::iam::ProviderUser) -> Result<Login, AuthError> {
        let sso = self
            .sso
            .as_ref()
            .ok_or_else(|| AuthError::Internal("single sign-on is not configured".into()))?;
        let (user, key) = sso.sign_in(who)?;
        Ok(Login::new(Principal::user(user), Lineage(vec![key])))
    }

    /// Checks a trust's issuer URL against the operator's rules (`workload::check_issuer`).
    pub fn check_issuer(&self, url: &str) -> Result<(), String> {
        workload::check_issuer(url, self.workloads.allow_private)
    }

    pub fn iam(&self) -> &IamService {
        &self.iam
    }

    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// The key that failures of this user name and secret count under, besides the address:
    /// the credential id embedded in a typed secret, the robot token's accessId, or the user name.
    /// `None` where checking costs nothing (`iambearer`, a malformed secret).
    fn limit_subject(username: &str, secret: &str) -> Option<String> {
        match username {
            "iamapikey" | "iamrefresh" | "token" => {
                Secret::parse(secret).map(|s| format!("credential {}", s.id()))
            }
            "iambearer" => None,
            u if uuid::Uuid::try_parse(u).is_ok() => Some(format!("credential {u}")),
            u => Some(format!("user {u}")),
        }
    }

    /// Checks a user name and secret (Basic auth, the token endpoint, the login API). Blocking.
    pub fn login(
        &self,
        username: &str,
        secret: &str,
        client: &ClientInfo,
    ) -> Result<Login, AuthError> {
        let fp = self.verified.fingerprint(username, secret);
        let flight = self.verified.flight(fp);
        flight.run(|| self.login_once(fp, username, secret, client))
    }

    fn login_once(
        &self,
        fp: [u8; 32],
        username: &str,
        secret: &str,
        client: &ClientInfo,
    ) -> Result<Login, AuthError> {
        // A login verified moments ago is served at once, unless something it depends on was
        // revoked since. Refresh tokens are never cached: each use is checked for reuse.
        if username != "iamrefresh"
            && let Some((l, credential)) = self.verified.get(&fp)
            && !self
                .tokens
                .revoked()
                .any(&l.lineage.token_keys(&l.principal))
        {
            if let Some(id) = credential {
                self.record_use(&id, client);
            }
            return Ok(l);
        }
        let keys = limit::keys_for(Self::limit_subject(username, secret), client.addr);
        let shared = self.iam.meta().is_postgres();
        if shared {
            self.read_shared_failures(&keys)?;
        }
        let failure_keys: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let slot = match self.limiter.reserve(keys) {
            Ok(slot) => slot,
            Err(retry_after) => {
                self.audit_failure(username, client, "rate limited", None);
                return Err(AuthError::RateLimited { retry_after });
            }
        };
        let (checked, reason, org) = self.check(username, secret, client)?;
        match checked {
            Some((l, credential)) => {
                drop(slot);
                if username != "iamrefresh" {
                    self.verified.put(fp, l.clone(), credential);
                }
                Ok(l)
            }
            None => {
                slot.fail();
                if shared {
                    self.add_shared_failure(&failure_keys);
                }
                self.audit_failure(username, client, reason, org);
                Err(AuthError::Invalid)
            }
        }
    }

    /// Before an attempt on keys that have failed anywhere: the counts of all nodes.
    fn read_shared_failures(&self, keys: &[(String, u32)]) -> Result<(), AuthError> {
        let win = limit::minute();
        for (key, _) in keys {
            if self.limiter.suspect(key) {
                let n = self
                    .iam
                    .meta()
                    .read(|r| r.login_failures(key, win))
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                self.limiter.set_shared(key, n);
            }
        }
        Ok(())
    }

    /// Adds a failure to the counts of all nodes (not waiting for the disk: a lost count costs
    /// the attacker nothing more than the local limit allows).
    fn add_shared_failure(&self, keys: &[String]) {
        let win = limit::minute();
        let counted = self.iam.meta().write_relaxed(|w| {
            keys.iter()
                .map(|k| Ok((k, w.add_login_failure(k, win)?)))
                .collect::<Result<Vec<_>, crate::store::Error>>()
        });
        match counted {
            Ok(counts) => {
                for (k, n) in counts {
                    self.limiter.set_shared(k, n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting a failed login across nodes failed"),
        }
    }

    /// Learns which keys failed on other nodes this minute (every second, with PostgreSQL), and
    /// forgets old minutes. Blocking.
    pub fn refresh_shared_failures(&self) -> Result<(), AuthError> {
        if !self.iam.meta().is_postgres() {
            return Ok(());
        }
        let win = limit::minute();
        let meta = self.iam.meta();
        let keys = meta
            .read(|r| r.login_failure_keys(win, 10_000))
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        for (k, n) in keys {
            self.limiter.set_shared(&k, n);
        }
        if crate::store::now() % 60 == 0 {
            meta.write_relaxed(|w| w.prune_login_failures(win - 1))
                .map_err(|e| AuthError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// Counts a failed login in its address's window; `flush_usage` writes one row per window.
    /// `org`: the organization whose credential or robot it was (its owners read the row).
    fn audit_failure(
        &self,
        username: &str,
        client: &ClientInfo,
        why: &'static str,
        org: Option<String>,
    ) {
        // A secret pasted into the user-name field (swapped arguments) must not land in the
        // audit trail.
        let attempted = if Secret::parse(username).is_some() || username.starts_with("eyJ") {
            "[a secret given as user name]".to_owned()
        } else {
            crate::iam::escape_text(&username.chars().take(ATTEMPTED_LEN).collect::<String>())
        };
        let mut map = self
            .usage
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let w = map
            .entry((client.addr, why, org))
            .or_insert_with(FailureWindow::new);
        if w.start.elapsed() >= limit::WINDOW && w.pending == 0 {
            *w = FailureWindow::new();
        }
        w.pending += 1;
        if w.names.len() < ATTEMPTED_NAMES && !w.names.contains(&attempted) {
            w.names.push(attempted);
        }
    }

    /// Queues an audit event; `flush_usage` writes it within a second.
    pub fn audit(&self, event: AuditEvent) {
        self.usage
            .audit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// The login (and the credential used, if any) for valid credentials, `None` for wrong ones;
    /// for wrong ones, why, and the organization of what was tried when it is known.
    fn check(
        &self,
        username: &str,
        secret: &str,
        client: &ClientInfo,
    ) -> Result<(Checked, &'static str, Option<String>), AuthError> {
        let used = std::cell::RefCell::new(None);
        let owner = std::cell::Cell::new(None);
        // Why a check failed, for the audit trail only: the client's answer stays uniform.
        let reason = std::cell::Cell::new(match username {
            "iamapikey" | "iamrefresh" | "token" | "iambearer" => "unknown or wrong secret",
            u if u.contains('/') && workload::looks_like_jwt(secret) => "workload token refused",
            u if uuid::Uuid::try_parse(u).is_ok() => "unknown or wrong secret",
            _ => "wrong password or unknown user",
        });
        let verified = |kind: SecretKind| -> Result<Option<Credential>, AuthError> {
            let Some(s) = Secret::parse(secret).filter(|s| s.kind() == kind) else {
                if Secret::parse(secret).is_some() {
                    reason.set("wrong kind of secret for the user name");
                }
                return Ok(None);
            };
            let Some(row) = self.iam.lookup_secret(&s)? else {
                return Ok(None);
            };
            owner.set(match (row.org_id, row.robot_id) {
                (Some(o), _) => Some(OrgOf::Org(o)),
                (None, Some(r)) => Some(OrgOf::Robot(r)),
                (None, None) => None,
            });
            if row.revoked_at.is_some() {
                reason.set(if row.family.is_some() {
                    "refresh token used again"
                } else {
                    "revoked"
                });
                // A rotated refresh token presented again: it was stolen or replayed, so its
                // whole family ends (OAuth 2.0 Security BCP, refresh token rotation).
                if let Some(f) = &row.family {
                    self.iam.revoke_family(f)?;
                    self.audit(AuditEvent {
                        action: "session.reuse",
                        success: false,
                        target: Some(format!("session/{f}")),
                        client_addr: client.addr.map(|a| a.to_string()),
                        detail: Some(
                            "a rotated refresh token was used again; its family is revoked".into(),
                        ),
                        ..AuditEvent::default()
                    });
                }
                return Ok(None);
            }
            if row.expires_at.is_some_and(|e| e <= now()) {
                reason.set("expired");
                return Ok(None);
            }
            self.record_use(&row.id, client);
            *used.borrow_mut() = Some(row.id.clone());
            Ok(Some(row))
        };
        let login = self.check_kind(username, secret, verified)?;
        let org = match (&login, owner.get()) {
            (Some(_), _) => None,
            (None, Some(of)) => self
                .iam
                .meta()
                .read(|r| {
                    let org = match of {
                        OrgOf::Org(o) => Some(o),
                        OrgOf::Robot(id) => r.robot_by_id(id)?.map(|robot| robot.org_id),
                    };
                    org.map_or(Ok(None), |o| r.org_by_id(o))
                })
                .ok()
                .flatten()
                .map(|o| o.name),
            // A workload refused for a robot that exists: its organization's.
            (None, None) if reason.get() == "workload token refused" => username
                .split_once('/')
                .filter(|(o, n)| {
                    let meta = self.iam.meta();
                    meta.read(|r| match r.org_by_name(o)? {
                        Some(org) => r.robot(org.id, n).map(|r| r.is_some()),
                        None => Ok(false),
                    })
                    .unwrap_or(false)
                })
                .map(|(o, _)| o.to_owned()),
            (None, None) => None,
        };
        Ok((login.map(|l| (l, used.into_inner())), reason.get(), org))
    }

    fn check_kind(
        &self,
        username: &str,
        secret: &str,
        verified: impl Fn(SecretKind) -> Result<Option<Credential>, AuthError>,
    ) -> Result<Option<Login>, AuthError> {
        match username {
            "iamapikey" => self.credential_login(verified(SecretKind::ApiKey)?),
            "iamrefresh" => self.credential_login(verified(SecretKind::RefreshToken)?),
            "token" => self.credential_login(verified(SecretKind::RegistryToken)?),
            "iambearer" => match self.tokens.verify(secret, &self.api_audience) {
                Ok(claims) => self.login_from_claims(&claims),
                Err(_) => Ok(None),
            },
            // A robot's full name and a JWT: a workload presenting its platform's token.
            _ if username.contains('/') && workload::looks_like_jwt(secret) => {
                self.workload_login(username, secret)
            }
            _ if uuid::Uuid::try_parse(username).is_ok() => {
                // A robot token's accessId: the secret must be that very credential.
                let Some(s) = Secret::parse(secret).filter(|s| s.kind() == SecretKind::RobotToken)
                else {
                    return Ok(None);
                };
                if uuid::Uuid::try_parse(username).ok() != Some(s.id()) {
                    return Ok(None);
                }
                self.credential_login(verified(SecretKind::RobotToken)?)
            }
            _ => {
                // A user name with the user's API key, or the user's password.
                if Secret::parse(secret).is_some_and(|s| s.kind() == SecretKind::ApiKey) {
                    return Ok(self
                        .credential_login(verified(SecretKind::ApiKey)?)?
                        .filter(|l| {
                            matches!(&l.principal, Principal::User { name, .. } if name == username)
                        }));
                }
                // `--local-login`: passwords may be limited to server admins, or turned off.
                Ok(self
                    .iam
                    .check_password(username, secret)?
                    .filter(|u| match self.local_login {
                        oidc::LocalLogin::All => true,
                        oidc::LocalLogin::Admins => u.admin,
                        oidc::LocalLogin::Off => false,
                    })
                    .map(|u| {
                        let lineage = Lineage::password(&u);
                        Login::new(Principal::user(u), lineage)
                    }))
            }
        }
    }

    /// A workload acting as robot `org/name` with a token of an issuer one of the robot's trusts
    /// names. `None` when no trust accepts the token (the reason goes to the log, the token
    /// never does).
    fn workload_login(&self, robot: &str, jwt: &str) -> Result<Option<Login>, AuthError> {
        let Some((org, name)) = robot.split_once('/') else {
            return Ok(None);
        };
        let internal = |e: crate::store::Error| AuthError::Internal(e.to_string());
        let meta = self.iam.meta();
        let found = meta
            .read(|r| match r.org_by_name(org)? {
                Some(o) => r.robot(o.id, name),
                None => Ok(None),
            })
            .map_err(internal)?;
        let Some(r) = found else {
            self.exchanges.count("refused");
            return Ok(None);
        };
        let trusts = self
            .iam
            .trusts(r.id)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        self.exchange_login(jwt, &trusts)
    }

    /// The login of the robot whose trust (one of `trusts`) accepts `jwt`.
    pub fn exchange_login(
        &self,
        jwt: &str,
        trusts: &[crate::iam::Trust],
    ) -> Result<Option<Login>, AuthError> {
        match self.workloads.verify(jwt, trusts, &self.service) {
            Ok((t, ext)) => {
                self.exchanges.count("granted");
                self.usage
                    .trusts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(t.id, now());
                let mut login = Login::new(
                    Principal::Robot {
                        id: t.robot_id,
                        org: t.org.clone(),
                        name: t.robot.clone(),
                    },
                    Lineage(vec![format!("trust:{}", t.id)]),
                );
                login.workload = Some(WorkloadLogin {
                    trust: t.name,
                    issuer: ext.issuer,
                    subject: ext.subject,
                    expires: ext.expires,
                });
                Ok(Some(login))
            }
            Err(workload::WorkloadError::Refused(why)) => {
                self.exchanges.count("refused");
                tracing::info!(reason = %why, "workload token refused");
                Ok(None)
            }
            // The cause is for the operator's log only: the client learns nothing of what the
            // server reached or failed to reach (no port-scan oracle).
            Err(e @ workload::WorkloadError::Unavailable(_)) => {
                self.exchanges.count("unavailable");
                tracing::warn!(error = %e, "workload token not checked");
                Err(AuthError::Internal(format!(
                    "{}: the workload token's issuer could not be checked; try again later",
                    workload::UNAVAILABLE
                )))
            }
        }
    }

    /// A token exchange that names no robot: the one robot whose trust accepts `jwt`. `Ok(Err)`
    /// when several do (the caller must name one). Counted by the failure limits like a login,
    /// under the token's issuer and the client's address.
    ///
    /// When the request's scopes name repositories, only robots of the organizations that own
    /// them (`orgs`) are considered: another tenant trusting the same issuer cannot make this
    /// exchange ambiguous, and an error never names another organization's robots.
    pub fn exchange_any(
        &self,
        jwt: &str,
        client: &ClientInfo,
        orgs: Option<&[String]>,
    ) -> Result<Result<Login, String>, AuthError> {
        let iss = workload::unverified_claims(jwt)
            .and_then(|c| c.get("iss").and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let keys = limit::keys_for(Some(format!("issuer {iss}")), client.addr);
        let slot = self
            .limiter
            .reserve(keys)
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        let trusts = if iss.is_empty() {
            Vec::new()
        } else {
            self.iam
                .trusts_of_issuer(&iss)
                .map_err(|e| AuthError::Internal(e.to_string()))?
        };
        let mut by_robot: std::collections::BTreeMap<i64, Vec<crate::iam::Trust>> =
            std::collections::BTreeMap::new();
        for t in trusts
            .into_iter()
            .filter(|t| orgs.is_none_or(|o| o.contains(&t.org)))
        {
            by_robot.entry(t.robot_id).or_default().push(t);
        }
        let mut matched = Vec::new();
        // Bounded work for an unauthenticated request: the robots considered are capped.
        if by_robot.len() > MAX_EXCHANGE_ROBOTS {
            tracing::warn!(
                issuer = %iss,
                robots = by_robot.len(),
                "more robots trust this issuer than an exchange without client_id considers"
            );
        }
        for trusts in by_robot.values().take(MAX_EXCHANGE_ROBOTS) {
            if let Some(l) = self.exchange_login(jwt, trusts)? {
                matched.push(l);
            }
        }
        match matched.len() {
            0 => {
                slot.fail();
                self.audit_failure("(workload token)", client, "workload token refused", None);
                Err(AuthError::Invalid)
            }
            1 => Ok(Ok(matched.remove(0))),
            // The robots are named only when all are of the organizations the request's scope
            // names (the workload is trusted by each); otherwise they may be of several
            // tenants, and none is named.
            _ if orgs.is_some() => {
                let names: Vec<String> = matched
                    .iter()
                    .map(|l| match &l.principal {
                        Principal::Robot { org, name, .. } => format!("{org}/{name}"),
                        p => p.subject(),
                    })
                    .collect();
                Ok(Err(format!(
                    "several robots trust this token ({}); name one with client_id",
                    names.join(", ")
                )))
            }
            _ => Ok(Err(
                "several robots trust this token; name one with client_id (ORG/ROBOT)".into(),
            )),
        }
    }

    /// Forgets the logins this node verified with credential `id` (its secret was rotated with
    /// no overlap: the old one must stop now, not when the cache would let it go).
    pub fn forget_credential(&self, id: &str) {
        self.verified
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .retain(|_, (_, _, c)| c.as_deref() != Some(id));
    }

    /// Workload exchanges by outcome, for `/metrics`.
    pub fn exchange_counts(&self) -> Vec<(&'static str, u64)> {
        self.exchanges.snapshot()
    }

    /// The login of a verified credential: its owner, and its lineage (the credential itself, or
    /// for a refresh token its family and the family's source).
    fn credential_login(&self, row: Option<Credential>) -> Result<Option<Login>, AuthError> {
        let Some(row) = row else { return Ok(None) };
        let lineage = match (&row.family, row.kind.as_str()) {
            (Some(f), "refresh_token") => Lineage(
                std::iter::once(format!("fam:{f}"))
                    .chain(
                        row.source
                            .iter()
                            .flat_map(|s| s.split_whitespace())
                            .map(str::to_owned),
                    )
                    .collect(),
            ),
            // The credential, and the generation its secret belongs to: what a login makes
            // ends when that generation does (a rotation's overlap ending).
            _ => Lineage(vec![
                format!("cred:{}", row.id),
                crate::store::generation_key(&row.id, row.generation),
            ]),
        };
        Ok(self
            .owner_principal(&row)?
            .map(|principal| Login::new(principal, lineage)))
    }

    /// The principal a credential acts as: its user, its robot, or (registry tokens) its org.
    fn owner_principal(&self, row: &Credential) -> Result<Option<Principal>, AuthError> {
        let meta = self.iam.meta();
        let internal = |e: crate::store::Error| AuthError::Internal(e.to_string());
        if let Some(uid) = row.user_id {
            return Ok(meta
                .read(|r| r.user_by_id(uid))
                .map_err(internal)?
                .map(|u| Principal::user(u.into())));
        }
        if let Some(rid) = row.robot_id {
            return Ok(meta
                .read(|r| r.robot_by_id(rid))
                .map_err(internal)?
                .map(|r| Principal::Robot {
                    id: r.id,
                    org: r.org,
                    name: r.name,
                }));
        }
        if let Some(oid) = row.org_id {
            let org = meta.read(|r| r.org_by_id(oid)).map_err(internal)?;
            return Ok(org.map(|o| Principal::RegistryToken {
                id: row.id.clone(),
                org: o.name,
                readwrite: row.readwrite,
            }));
        }
        Ok(None)
    }

    /// The caller behind verified (and unrevoked) claims: its identity is looked up by the id in
    /// `src`, never by name, and must still carry the name in `sub`.
    pub fn login_from_claims(&self, claims: &Claims) -> Result<Option<Login>, AuthError> {
        let internal = |e: crate::store::Error| AuthError::Internal(e.to_string());
        let id_of = |prefix: &str| {
            claims
                .src
                .iter()
                .find_map(|k| k.strip_prefix(prefix).and_then(|v| v.parse::<i64>().ok()))
        };
        let principal = if let Some(uid) = id_of("user:") {
            self.iam
                .meta()
                .read(|r| r.user_by_id(uid))
                .map_err(internal)?
                .map(|u| Principal::user(u.into()))
        } else if let Some(rid) = id_of("robot:") {
            self.iam
                .meta()
                .read(|r| r.robot_by_id(rid))
                .map_err(internal)?
                .map(|r| Principal::Robot {
                    id: r.id,
                    org: r.org,
                    name: r.name,
                })
        } else if let Some(id) = claims.sub.strip_prefix("token:") {
            match self.iam.credential(id)? {
                Some(row)
                    if row.revoked_at.is_none() && row.expires_at.is_none_or(|e| e > now()) =>
                {
                    self.owner_principal(&row)?
                }
                _ => None,
            }
        } else {
            None
        };
        let Some(principal) = principal.filter(|p| p.subject() == claims.sub) else {
            return Ok(None);
        };
        let id_key = principal.id_key();
        let lineage = Lineage(
            claims
                .src
                .iter()
                .filter(|k| Some(*k) != id_key.as_ref())
                .cloned()
                .collect(),
        );
        Ok(Some(Login::new(principal, lineage)))
    }

    /// What the principal may do. Blocking (reads memberships and bindings).
    pub fn grants(&self, p: &Principal) -> Result<Grants, AuthError> {
        let key = format!("{p:?}");
        let stamp = self.policy_stamp();
        if let Some(g) = self.policy.get_grants(stamp, &key) {
            return Ok(g);
        }
        let g = self.grants_uncached(p)?;
        self.policy.put_grants(stamp, key, g.clone());
        Ok(g)
    }

    /// Namespace `name`'s row, cached like grants.
    pub fn namespace(&self, name: &str) -> Result<Option<crate::iam::Namespace>, AuthError> {
        let stamp = self.policy_stamp();
        if let Some(n) = self.policy.get_namespace(stamp, name) {
            return Ok(n);
        }
        let n = self.iam.namespace(name)?;
        self.policy.put_namespace(stamp, name.to_owned(), n.clone());
        Ok(n)
    }

    /// What cached policy is valid for: this process's committed writes and the revocation log
    /// as last read (every node's policy changes add to it; see `POLICY_CHANGED` in `store/iam.rs`).
    fn policy_stamp(&self) -> (u64, i64) {
        (self.iam.meta().writes(), self.tokens.revoked().seq())
    }

    fn grants_uncached(&self, p: &Principal) -> Result<Grants, AuthError> {
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

    /// Reads new revocations into this node's set. Blocking.
    pub fn refresh_revocations(&self) -> Result<usize, AuthError> {
        self.tokens
            .revoked()
            .refresh(self.iam.meta())
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Writes the pending audit events, the failure windows and "last used" records. Blocking.
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
        self.flush_failures()?;
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
        let trusts: Vec<(i64, i64)> = std::mem::take(
            &mut *self
                .usage
                .trusts
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_iter()
        .collect();
        if !trusts.is_empty() {
            self.iam
                .meta()
                .write_relaxed(|w| {
                    for (id, at) in &trusts {
                        w.touch_trust(*id, *at)?;
                    }
                    Ok::<_, crate::store::Error>(())
                })
                .map_err(|e| AuthError::Internal(e.to_string()))?;
        }
        Ok(pending.len())
    }

    /// One audit row per (address, reason, window): inserted at the first flush of the window,
    /// its count raised by later ones.
    fn flush_failures(&self) -> Result<(), AuthError> {
        type Work = (FailureKey, Option<i64>, i64, String);
        let work: Vec<Work> = {
            let mut map = self
                .usage
                .failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, w| w.pending > 0 || w.start.elapsed() < limit::WINDOW);
            map.iter_mut()
                .filter(|(_, w)| w.pending > 0)
                .map(|(k, w)| {
                    let n = std::mem::take(&mut w.pending);
                    (k.clone(), w.row, n, w.names.join(", "))
                })
                .collect()
        };
        if work.is_empty() {
            return Ok(());
        }
        let batch: Vec<crate::iam::FailedLogins> = work
            .iter()
            .map(
                |((addr, why, org), row, n, names)| crate::iam::FailedLogins {
                    row: *row,
                    client_addr: addr.map(|a| a.to_string()),
                    org: org.clone(),
                    reason: why,
                    attempted: names.clone(),
                    count: *n,
                },
            )
            .collect();
        let rows = self
            .iam
            .audit_failed_logins(&batch)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut map = self
            .usage
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for ((key, ..), id) in work.iter().zip(rows) {
            if let Some(w) = map.get_mut(key) {
                w.row = Some(id);
            }
        }
        Ok(())
    }
}
