//! The identities and grants as the rest of the server sees them. `store` keeps its row types
//! (the schema: columns, hashes, JSON text); `IamService` turns them into these, so the HTTP
//! layer and `auth` never hold a secret's hash and do not change when a column does.

use std::collections::BTreeMap;

use super::secret::SecretKind;
use crate::policy::BindingScope;
use crate::store::{
    self, AuditRow, BindingRow, CredentialRow, NamespaceRow, OrgRow, RobotRow, TrustRow, UserRow,
};

/// A person who signs in.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    pub created_at: i64,
    /// Bumped by every password change; sessions opened with an older epoch are revoked.
    pub password_epoch: i64,
    /// Whether the user has a password (a user created without one cannot sign in by password).
    pub has_password: bool,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> User {
        User {
            id: u.id,
            name: u.name,
            admin: u.admin,
            created_at: u.created_at,
            password_epoch: u.password_epoch,
            has_password: u.password_hash.is_some(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Org {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

impl From<OrgRow> for Org {
    fn from(o: OrgRow) -> Org {
        Org {
            id: o.id,
            name: o.name,
            created_at: o.created_at,
        }
    }
}

/// A namespace: the first path segment of a repository name, owned by one organization.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    pub org_id: i64,
    pub org: String,
    pub public: bool,
    pub created_at: i64,
    pub public_gen: i64,
}

impl Namespace {
    /// The revocation key of this generation of the namespace: bearer tokens that grant access
    /// in it name it, and deleting the namespace revokes it.
    pub fn key(&self) -> String {
        store::namespace_key(&self.name, self.org_id, self.created_at)
    }

    /// The revocation key of the current public period: bearer tokens whose pull comes only
    /// from publicness name it, and turning the namespace private revokes it.
    pub fn public_key(&self) -> String {
        store::public_key(&self.name, self.org_id, self.created_at, self.public_gen)
    }
}

impl From<NamespaceRow> for Namespace {
    fn from(n: NamespaceRow) -> Namespace {
        Namespace {
            name: n.name,
            org_id: n.org_id,
            org: n.org,
            public: n.public,
            created_at: n.created_at,
            public_gen: n.public_gen,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Robot {
    pub id: i64,
    pub org_id: i64,
    pub org: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
}

impl From<RobotRow> for Robot {
    fn from(r: RobotRow) -> Robot {
        Robot {
            id: r.id,
            org_id: r.org_id,
            org: r.org,
            name: r.name,
            description: r.description,
            created_at: r.created_at,
        }
    }
}

/// How soon before its expiry a credential shows as `expiring`.
const EXPIRING_WITHIN: i64 = 14 * 86_400;

/// A long-lived credential without its secret (robot token, API key, registry token or
/// refresh token).
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: String,
    pub kind: SecretKind,
    pub name: Option<String>,
    pub user_id: Option<i64>,
    pub robot_id: Option<i64>,
    pub org_id: Option<i64>,
    pub readwrite: bool,
    pub description: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_addr: Option<String>,
    pub last_used_agent: Option<String>,
    /// Where it came from, for display: the first revocation key of its creator.
    pub source: Option<String>,
    /// Refresh tokens of one login share a family.
    pub family: Option<String>,
    /// `robot:<id>` when a robot created it: it ends with the robot.
    pub creator: Option<String>,
    /// Until when the secret before the last rotation is still accepted.
    pub previous_until: Option<i64>,
    /// Rotations so far (see `Credential::generation_key`).
    pub generation: i64,
}

impl Credential {
    /// `active`, `expiring` (within 14 days), `expired` or `revoked`, at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        match (self.revoked_at, self.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(e)) if e <= now => "expired",
            (None, Some(e)) if e - now <= EXPIRING_WITHIN => "expiring",
            _ => "active",
        }
    }

    /// The revocation key of logins made with this generation of the secret.
    pub fn generation_key(&self) -> String {
        store::generation_key(&self.id, self.generation)
    }
}

impl TryFrom<CredentialRow> for Credential {
    type Error = store::Error;

    fn try_from(c: CredentialRow) -> Result<Credential, store::Error> {
        let kind = SecretKind::from_column(&c.kind)
            .ok_or_else(|| store::Error::Corrupt(format!("credential kind {:?}", c.kind)))?;
        Ok(Credential {
            id: c.id,
            kind,
            name: c.name,
            user_id: c.user_id,
            robot_id: c.robot_id,
            org_id: c.org_id,
            readwrite: c.readwrite,
            description: c.description,
            created_at: c.created_at,
            expires_at: c.expires_at,
            revoked_at: c.revoked_at,
            last_used_at: c.last_used_at,
            last_used_addr: c.last_used_addr,
            last_used_agent: c.last_used_agent,
            source: c.source,
            family: c.family,
            creator: c.creator,
            previous_until: c.previous_until,
            generation: c.generation,
        })
    }
}

/// A workload trust of a robot: who may act as it by presenting a token of an OpenID issuer.
#[derive(Debug, Clone)]
pub struct Trust {
    pub id: i64,
    pub robot_id: i64,
    /// The robot's organization and name.
    pub org: String,
    pub robot: String,
    pub name: String,
    pub issuer: String,
    /// `sub` exactly, or a pattern with `*` globs.
    pub subject: String,
    pub audience: Option<String>,
    /// Claim path (dots for nesting) → the exact string it must hold.
    pub claims: BTreeMap<String, String>,
    /// The issuer's JSON Web Key Set, when given at creation (else OpenID discovery).
    pub jwks: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl Trust {
    /// The row that stores it (`id` and `last_used_at` are the store's).
    pub(super) fn to_row(&self) -> TrustRow {
        TrustRow {
            id: self.id,
            robot_id: self.robot_id,
            org: self.org.clone(),
            robot: self.robot.clone(),
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            audience: self.audience.clone(),
            claims: serde_json::to_string(&self.claims).unwrap_or_else(|_| "{}".into()),
            jwks: self.jwks.clone(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
        }
    }
}

impl TryFrom<TrustRow> for Trust {
    type Error = store::Error;

    fn try_from(t: TrustRow) -> Result<Trust, store::Error> {
        let claims = serde_json::from_str(&t.claims)
            .map_err(|e| store::Error::Corrupt(format!("claims of trust {}: {e}", t.id)))?;
        Ok(Trust {
            id: t.id,
            robot_id: t.robot_id,
            org: t.org,
            robot: t.robot,
            name: t.name,
            issuer: t.issuer,
            subject: t.subject,
            audience: t.audience,
            claims,
            jwks: t.jwks,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
        })
    }
}

/// Who a binding grants its role to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    User(i64),
    Robot(i64),
    /// A group of an OpenID provider (`idp_groups`).
    Group(i64),
}

/// A role granted to a user or robot, in a scope of its organization.
#[derive(Debug, Clone)]
pub struct Binding {
    pub org_id: i64,
    pub org: String,
    pub name: String,
    pub role: String,
    pub subject: Subject,
    pub scope: BindingScope,
}

impl From<BindingRow> for Binding {
    fn from(b: BindingRow) -> Binding {
        let scope = match (b.scope_kind.as_str(), b.scope) {
            ("namespace", Some(ns)) => BindingScope::Namespace(ns),
            ("repository", Some(glob)) => BindingScope::Repository(glob),
            _ => BindingScope::Org,
        };
        let subject = match b.subject_kind.as_str() {
            "robot" => Subject::Robot(b.subject_id),
            "group" => Subject::Group(b.subject_id),
            _ => Subject::User(b.subject_id),
        };
        Binding {
            org_id: b.org_id,
            org: b.org,
            name: b.name,
            role: b.role,
            subject,
            scope,
        }
    }
}

/// One event of the audit trail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: Option<String>,
    pub action: String,
    pub outcome: String,
    pub target: Option<String>,
    pub client_addr: Option<String>,
    pub detail: Option<String>,
    /// The user name typed at a failed login (never an identity).
    pub attempted: Option<String>,
    /// How many events of one window this event stands for.
    pub count: i64,
    pub org: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(a: AuditRow) -> AuditEntry {
        AuditEntry {
            id: a.id,
            at: a.at,
            actor: a.actor,
            action: a.action,
            outcome: a.outcome,
            target: a.target,
            client_addr: a.client_addr,
            detail: a.detail,
            attempted: a.attempted,
            count: a.count,
            org: a.org,
        }
    }
}
