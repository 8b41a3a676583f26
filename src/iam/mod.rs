//! Identities and what they own: users, organizations, namespaces, memberships, robots, their
//! credentials, roles, bindings and the audit trail.
//!
//! `IamService` is synchronous (argon2 and SQLite writes block); the HTTP layer calls it from
//! `spawn_blocking`. It validates names and secrets; it does not decide who may call it (that is
//! `policy`, applied by the callers).

mod check;
pub mod model;
pub mod password;
pub mod secret;
use check::is_hazard;
mod sso;

use std::time::Duration;

use crate::policy::{self, BindingScope, Rule};
use crate::store::{self, AuditFilter, AuditRow, BindingRow, CredentialRow, MetadataStore, now};
pub use check::{Error, RESERVED_USERNAMES, Result, check_name, check_text};
pub use model::{AuditEntry, Binding, Credential, Namespace, Org, Robot, Subject, Trust, User};
pub use secret::{Secret, SecretKind};
pub use sso::{ProviderUser, SsoLink, SsoSession, SsoUsers, check_group_name, fit_user_name};

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    User(i64),
    Robot(i64),
    Org(i64),
}

/// What `set_member` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// The user is a member with the role now.
    Set,
    /// The user (if there is one of that name) was invited.
    Invited,
}

/// What an audit event says. Never a secret.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    /// The organization it happened in, if any (its owners read it).
    pub org: Option<String>,
    pub actor: Option<String>,
    pub action: &'static str,
    pub success: bool,
    pub target: Option<String>,
    pub client_addr: Option<String>,
    pub detail: Option<String>,
}

/// Failed logins from one address for one reason in one window (see `audit_failed_logins`).
pub struct FailedLogins {
    /// The event already recorded for this window, if any.
    pub row: Option<i64>,
    pub client_addr: Option<String>,
    /// The organization whose credential or robot was tried, when known (its owners read it).
    pub org: Option<String>,
    pub reason: &'static str,
    /// The user names typed, joined.
    pub attempted: String,
    pub count: i64,
}

#[derive(Clone, Debug)]
pub struct IamService {
    meta: MetadataStore,
}

/// Where a new credential comes from (lineage; see `store::CredentialRow`).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Shown as where it came from: the first key of `lineage`.
    pub source: Option<String>,
    pub family: Option<String>,
    pub creator: Option<String>,
    /// The revocation keys it depends on: revoking any of them ends it (and what it made).
    pub lineage: Vec<String>,
}

impl Origin {
    /// The origin of an object made by a caller whose provenance keys are `lineage`.
    pub fn of(lineage: Vec<String>) -> Origin {
        Origin {
            source: lineage.first().cloned(),
            creator: lineage.iter().find(|k| k.starts_with("robot:")).cloned(),
            family: None,
            lineage,
        }
    }
}

/// What a new credential is: its kind, owner, name, lifetime (`None`: no expiry), read-write
/// flag (registry tokens), description and lineage.
#[derive(Debug, Clone)]
pub struct CredentialSpec<'a> {
    pub kind: SecretKind,
    pub owner: Owner,
    pub name: Option<&'a str>,
    pub expires_in: Option<Duration>,
    pub readwrite: bool,
    pub description: Option<&'a str>,
    pub origin: Origin,
}

/// A credential just created, with its secret (shown once).
pub struct NewCredential {
    pub credential: Credential,
    pub secret: Secret,
}

/// When something created at `at` (Unix seconds) and living `ttl` expires.
fn expires(at: i64, ttl: Duration) -> i64 {
    at.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// The same words whether the organization does not exist or the caller may not see it.
pub fn org_not_found(name: &str) -> Error {
    Error::NotFound(format!(
        "organization {name:?} does not exist or you are not a member"
    ))
}

fn not_found(what: &str, name: &str) -> Error {
    Error::NotFound(format!("{what} {name:?} not found"))
}

impl IamService {
    pub fn new(meta: MetadataStore) -> IamService {
        IamService { meta }
    }

    pub fn meta(&self) -> &MetadataStore {
        &self.meta
    }

    /// On an empty store, creates the server admin `admin`. Returns the password if it was
    /// generated (the caller prints it once), `None` if one was given or users already exist.
    pub fn bootstrap_admin(&self, password: Option<&str>) -> Result<Option<String>> {
        if self.meta.read(|r| r.user_count())? > 0 {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) if !p.is_empty() => {
                password::check_policy(p)
                    .map_err(|e| Error::Invalid(format!("BERTH_ADMIN_PASSWORD: {e}")))?;
                (p.to_owned(), false)
            }
            _ => {
                let s = Secret::generate(SecretKind::ApiKey)
                    .map_err(|e| Error::Random(e.to_string()))?;
                (s.expose()[37..].to_owned(), true)
            }
        };
        let hash = password::hash(&password).map_err(Error::Invalid)?;
        let made = self.meta.write(|w| {
            w.insert_user("admin", Some(&hash), true)?;
            w.insert_audit(&audit_row(&AuditEvent {
                action: "user.bootstrap",
                success: true,
                target: Some("user/admin".into()),
                ..AuditEvent::default()
            }))
            .map(drop)
        });
        match made {
            Ok(()) => Ok(generated.then_some(password)),
            // Another node of the same database made it first (nodes started together): its
            // admin stands, and this node's password (never stored) is not shown.
            Err(store::Error::Conflict) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    // ----- users -----

    /// Creates a user; made through a credential (`lineage`), the user is deleted when that
    /// credential ends.
    pub fn create_user(
        &self,
        name: &str,
        password: Option<&str>,
        admin: bool,
        lineage: &[String],
    ) -> Result<User> {
        check_name("user", name)?;
        if let Some(p) = password {
            password::check_policy(p).map_err(Error::Invalid)?;
        }
        let hash = password
            .map(password::hash)
            .transpose()
            .map_err(Error::Invalid)?;
        let id = self
            .meta
            .write(|w| {
                let id = w.insert_user(name, hash.as_deref(), admin)?;
                w.record_lineage(&format!("user:{id}"), lineage)?;
                Ok(id)
            })
            .map_err(|e| match e {
                store::Error::Conflict => Error::Conflict(format!("user {name:?} already exists")),
                e => e.into(),
            })?;
        self.meta
            .read(|r| r.user_by_id(id))?
            .map(User::from)
            .ok_or_else(|| not_found("user", name))
    }

    pub fn user(&self, name: &str) -> Result<User> {
        self.meta
            .read(|r| r.user_by_name(name))?
            .map(User::from)
            .ok_or_else(|| not_found("user", name))
    }

    pub fn users(&self) -> Result<Vec<User>> {
        Ok(self
            .meta
            .read(|r| r.users())?
            .into_iter()
            .map(User::from)
            .collect())
    }

    /// Sets a password. Every session opened with the old one ends (its refresh tokens and
    /// bearer tokens are revoked).
    /// Set through a credential (`lineage`), the password is cleared again when that
    /// credential ends (the account waits for a password from an admin).
    pub fn set_password(&self, name: &str, password: &str, lineage: &[String]) -> Result<()> {
        password::check_policy(password).map_err(Error::Invalid)?;
        let user = self.user(name)?;
        let hash = password::hash(password).map_err(Error::Invalid)?;
        self.meta.write(|w| {
            w.set_password(user.id, &hash)?;
            w.record_lineage(
                &format!("password:{}:{}", user.id, user.password_epoch + 1),
                lineage,
            )?;
            w.revoke(&format!("pw:{}:{}", user.id, user.password_epoch))
        })?;
        Ok(())
    }

    pub fn delete_user(&self, name: &str) -> Result<()> {
        let user = self.user(name)?;
        if user.admin && self.users()?.iter().filter(|u| u.admin).count() == 1 {
            return Err(Error::Conflict(
                "the last server admin cannot be deleted".into(),
            ));
        }
        self.meta.write(|w| w.delete_user(user.id))?;
        Ok(())
    }

    /// The user if the password is right. Costs one argon2 verification whether or not the user
    /// exists.
    pub fn check_password(&self, name: &str, password: &str) -> Result<Option<User>> {
        let user = self.meta.read(|r| r.user_by_name(name))?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let ok = password::verify(password, stored.as_deref().unwrap_or(password::decoy()))?;
        Ok(user.filter(|_| ok && stored.is_some()).map(User::from))
    }

    // ----- organizations and namespaces -----

    /// Creates an organization, its namespace of the same name, and makes `owner` its owner.
    pub fn create_org(&self, name: &str, owner: Option<i64>) -> Result<Org> {
        check_name("organization", name)?;
        self.meta
            .write(|w| {
                if w.reader().namespace(name)?.is_some() {
                    return Err(store::Error::Conflict);
                }
                let id = w.insert_org(name)?;
                w.insert_namespace(name, id, false)?;
                if let Some(user) = owner {
                    w.set_membership(id, user, "owner")?;
                }
                Ok(())
            })
            .map_err(|e| match e {
                store::Error::Conflict => {
                    Error::Conflict(format!("organization or namespace {name:?} already exists"))
                }
                e => e.into(),
            })?;
        self.org(name)
    }

    pub fn org(&self, name: &str) -> Result<Org> {
        self.meta
            .read(|r| r.org_by_name(name))?
            .map(Org::from)
            .ok_or_else(|| org_not_found(name))
    }

    pub fn orgs(&self) -> Result<Vec<Org>> {
        Ok(self
            .meta
            .read(|r| r.orgs())?
            .into_iter()
            .map(Org::from)
            .collect())
    }

    pub fn delete_org(&self, name: &str) -> Result<()> {
        let org = self.org(name)?;
        self.meta.write(|w| w.delete_org(org.id))?;
        Ok(())
    }

    pub fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        Ok(self.meta.read(|r| r.namespace(name))?.map(Namespace::from))
    }

    pub fn namespaces(&self, org: &str) -> Result<Vec<Namespace>> {
        let org = self.org(org)?;
        Ok(self
            .meta
            .read(|r| r.namespaces_of_org(org.id))?
            .into_iter()
            .map(Namespace::from)
            .collect())
    }

    /// Creates a namespace; made public through a credential (`lineage`), it turns private when
    /// that credential ends.
    pub fn create_namespace(
        &self,
        org: &str,
        name: &str,
        public: bool,
        lineage: &[String],
    ) -> Result<Namespace> {
        check_name("namespace", name)?;
        let org = self.org(org)?;
        self.meta
            .write(|w| {
                w.insert_namespace(name, org.id, public)?;
                if public {
                    w.record_lineage(&format!("public:{name}"), lineage)?;
                }
                Ok(())
            })
            .map_err(|e| match e {
                store::Error::Conflict => {
                    Error::Conflict(format!("namespace {name:?} already exists"))
                }
                e => e.into(),
            })?;
        self.namespace(name)?
            .ok_or_else(|| not_found("namespace", name))
    }

    /// Makes a namespace public or private. Made public through a credential (`lineage`), it
    /// turns private again when that credential ends.
    pub fn set_namespace_public(&self, name: &str, public: bool, lineage: &[String]) -> Result<()> {
        if self.meta.write(|w| {
            let found = w.set_namespace_public(name, public)?;
            let object = format!("public:{name}");
            w.forget_lineage(&object)?;
            if public {
                w.record_lineage(&object, lineage)?;
            }
            Ok::<_, store::Error>(found)
        })? {
            Ok(())
        } else {
            Err(not_found("namespace", name))
        }
    }

    pub fn delete_namespace(&self, name: &str) -> Result<()> {
        if self.meta.write(|w| w.delete_namespace(name))? {
            Ok(())
        } else {
            Err(not_found("namespace", name))
        }
    }

    /// Adds a member or changes their role; done through a credential (`lineage`), the
    /// membership ends with that credential. Without `direct` (the caller is not a server admin)
    /// a user who is not a member yet is invited instead, and an unknown user gets the same
    /// answer (nothing is stored): nobody joins without consent, and the answer is no oracle.
    pub fn set_member(
        &self,
        org: &str,
        user: &str,
        role: &str,
        lineage: &[String],
        direct: bool,
    ) -> Result<MemberChange> {
        if !direct {
            check_name("user", user)
                .map_err(|_| Error::Invalid(format!("invalid user name {user:?}")))?;
            if role != "owner" && role != "member" {
                return Err(Error::Invalid(format!(
                    "member role must be owner or member, not {role:?}"
                )));
            }
            let org_row = self.org(org)?;
            let existing = self.meta.read(|r| r.user_by_name(user))?;
            let member = match &existing {
                Some(u) => self
                    .meta
                    .read(|r| r.memberships_of_user(u.id))?
                    .iter()
                    .any(|(o, _)| o.id == org_row.id),
                None => false,
            };
            if !member {
                if let Some(u) = existing {
                    self.meta.write(|w| {
                        w.invite(org_row.id, u.id, role)?;
                        let object = format!("invite:{}:{}", org_row.id, u.id);
                        w.forget_lineage(&object)?;
                        w.record_lineage(&object, lineage)
                    })?;
                }
                return Ok(MemberChange::Invited);
            }
        }
        if role != "owner" && role != "member" {
            return Err(Error::Invalid(format!(
                "member role must be owner or member, not {role:?}"
            )));
        }
        let (org, user) = (self.org(org)?, self.user(user)?);
        if role != "owner" {
            self.refuse_last_owner(&org, &user)?;
        }
        self.meta.write(|w| {
            w.set_membership(org.id, user.id, role)?;
            // Setting it again keeps what it came from: a membership a leaked key made cannot
            // be laundered by setting it once more.
            w.record_lineage(&store::member_key(org.id, user.id), lineage)
        })?;
        Ok(MemberChange::Set)
    }

    /// The user accepts an invitation to `org`: they join with the role offered (and what the
    /// invitation was made through, its lineage). `NotFound` when there is none.
    pub fn accept_invitation(&self, org: &str, user_id: i64) -> Result<String> {
        let org_row = self.org(org)?;
        let role = self.meta.write(|w| {
            let Some(role) = w.take_invitation(org_row.id, user_id)? else {
                return Ok(None);
            };
            let invite = format!("invite:{}:{}", org_row.id, user_id);
            let sources = w.reader().lineage_sources(&invite)?;
            w.forget_lineage(&invite)?;
            w.set_membership(org_row.id, user_id, &role)?;
            w.record_lineage(&store::member_key(org_row.id, user_id), &sources)?;
            Ok::<_, store::Error>(Some(role))
        })?;
        role.ok_or_else(|| Error::NotFound(format!("no invitation to {org:?}")))
    }

    /// The invitations user `user_id` may accept: (organization, role).
    pub fn invitations(&self, user_id: i64) -> Result<Vec<(String, String)>> {
        Ok(self.meta.read(|r| r.invitations_of_user(user_id))?)
    }

    pub fn remove_member(&self, org: &str, user: &str) -> Result<()> {
        // An unknown user and one who is not a member get the same answer.
        let not_member = || Error::NotFound(format!("user {user:?} is not a member of {org:?}"));
        let org_row = self.org(org)?;
        let user_row = self.user(user).map_err(|_| not_member())?;
        self.refuse_last_owner(&org_row, &user_row)?;
        if self
            .meta
            .write(|w| w.delete_membership(org_row.id, user_row.id))?
        {
            Ok(())
        } else {
            Err(not_member())
        }
    }

    /// An organization keeps at least one owner: removing or demoting the last is refused.
    fn refuse_last_owner(&self, org: &Org, user: &User) -> Result<()> {
        let members = self.meta.read(|r| r.members_of_org(org.id))?;
        let owners: Vec<&str> = members
            .iter()
            .filter(|(_, role)| role == "owner")
            .map(|(u, _)| u.name.as_str())
            .collect();
        if owners == [user.name.as_str()] {
            return Err(Error::Conflict(format!(
                "{:?} is the last owner of {:?}: make another member owner first, or delete the organization",
                user.name, org.name
            )));
        }
        Ok(())
    }

    pub fn members(&self, org: &str) -> Result<Vec<(User, String)>> {
        let org = self.org(org)?;
        Ok(self
            .meta
            .read(|r| r.members_of_org(org.id))?
            .into_iter()
            .map(|(u, role)| (User::from(u), role))
            .collect())
    }

    // ----- robots -----

    /// Creates a robot; it ends with any of `lineage` (what its creator came from).
    pub fn create_robot(
        &self,
        org: &str,
        name: &str,
        description: Option<&str>,
        lineage: &[String],
    ) -> Result<Robot> {
        check_name("robot", name)?;
        check_description(description)?;
        let org_row = self.org(org)?;
        self.meta
            .write(|w| {
                let id = w.insert_robot(org_row.id, name, description)?;
                w.record_lineage(&format!("robot:{id}"), lineage)
            })
            .map_err(|e| match e {
                store::Error::Conflict => {
                    Error::Conflict(format!("robot {name:?} already exists in {org:?}"))
                }
                e => e.into(),
            })?;
        self.robot(org, name)
    }

    pub fn robot(&self, org: &str, name: &str) -> Result<Robot> {
        let org_row = self.org(org)?;
        self.meta
            .read(|r| r.robot(org_row.id, name))?
            .map(Robot::from)
            .ok_or_else(|| {
                Error::NotFound(format!("robot {name:?} not found in organization {org:?}"))
            })
    }

    /// The organization's robot tokens, robot API keys and registry tokens, each with its
    /// robot's name (empty for the organization's own).
    pub fn org_credentials(&self, org_id: i64) -> Result<Vec<(Credential, String)>> {
        Ok(self
            .meta
            .read(|r| r.credentials_of_org(org_id))?
            .into_iter()
            .map(|(c, robot)| Ok((Credential::try_from(c)?, robot)))
            .collect::<Result<_, store::Error>>()?)
    }

    /// Unrevoked credentials with an expiry.
    pub fn credential_expiries(&self) -> Result<Vec<crate::store::CredentialExpiry>> {
        Ok(self.meta.read(|r| r.credential_expiries(10_000))?)
    }

    /// The trusts that name issuer `iss`, of every robot.
    pub fn trusts_of_issuer(&self, iss: &str) -> Result<Vec<Trust>> {
        Ok(self
            .meta
            .read(|r| r.trusts_of_issuer(iss))?
            .into_iter()
            .map(Trust::try_from)
            .collect::<Result<_, store::Error>>()?)
    }

    /// A robot's workload trusts.
    pub fn trusts(&self, robot_id: i64) -> Result<Vec<Trust>> {
        Ok(self
            .meta
            .read(|r| r.trusts_of_robot(robot_id))?
            .into_iter()
            .map(Trust::try_from)
            .collect::<Result<_, store::Error>>()?)
    }

    /// Adds a trust that ends with any of `lineage`; `false` if the robot has one of that name
    /// already.
    pub fn add_trust(&self, t: &Trust, lineage: &[String]) -> Result<bool> {
        let row = t.to_row();
        if self.trusts(t.robot_id)?.len() >= MAX_TRUSTS_PER_ROBOT {
            return Err(Error::Conflict(format!(
                "a robot has at most {MAX_TRUSTS_PER_ROBOT} trusts; delete one first"
            )));
        }
        Ok(self.meta.write(|w| {
            if !w.insert_trust(&row)? {
                return Ok(false);
            }
            if let Some(id) = w.trust_id(t.robot_id, &t.name)? {
                w.record_lineage(&format!("trust:{id}"), lineage)?;
            }
            Ok::<_, store::Error>(true)
        })?)
    }

    /// What user `user_id`'s membership in `org` was set through (empty: a person did it).
    pub fn membership_sources(&self, org: &str, user_id: i64) -> Result<Vec<String>> {
        let Some(org) = self.meta.read(|r| r.org_by_name(org))? else {
            return Ok(Vec::new());
        };
        Ok(self
            .meta
            .read(|r| r.lineage_sources(&store::member_key(org.id, user_id)))?)
    }

    /// Whether a caller whose lineage is `keys` came (transitively) from credential `id`:
    /// such a caller must not rotate it, or it could lock the credential's owner out.
    pub fn derives_from(&self, keys: &[String], id: &str) -> Result<bool> {
        let target = format!("cred:{id}");
        if keys.contains(&target) {
            return Ok(true);
        }
        Ok(self.meta.read(|r| r.ancestry(keys))?.contains(&target))
    }

    /// When the oldest session behind a caller with lineage `keys` was signed in to (the first
    /// refresh token of each family; a session opened through another carries that one's keys
    /// too); `None`: no session.
    pub fn signed_in_at(&self, keys: &[String]) -> Result<Option<i64>> {
        let mut oldest = None;
        for f in keys.iter().filter_map(|k| k.strip_prefix("fam:")) {
            let at = self
                .meta
                .read(|r| r.credential(f))?
                .map_or(0, |c| c.created_at);
            oldest = Some(oldest.map_or(at, |o: i64| o.min(at)));
        }
        Ok(oldest)
    }

    /// Ends the previous generation of credentials whose rotation overlap is over, and what
    /// expired credentials made. Blocking.
    pub fn end_overlaps(&self) -> Result<usize> {
        let at = now();
        if self.meta.read(|r| r.has_unended_expiries(at))? {
            self.meta.write(|w| w.end_expired(at, 1000))?;
        }
        if self.meta.read(|r| r.ended_overlaps(at))?.is_empty() {
            return Ok(0);
        }
        Ok(self.meta.write(|w| w.end_overlaps(at))?)
    }

    /// Deletes a trust and revokes what was issued through it; `false` if there was none.
    pub fn delete_trust(&self, robot_id: i64, name: &str) -> Result<bool> {
        Ok(self.meta.write(|w| w.delete_trust(robot_id, name))?)
    }

    pub fn robots(&self, org: &str) -> Result<Vec<Robot>> {
        let org = self.org(org)?;
        Ok(self
            .meta
            .read(|r| r.robots_of_org(org.id))?
            .into_iter()
            .map(Robot::from)
            .collect())
    }

    pub fn delete_robot(&self, org: &str, name: &str) -> Result<()> {
        let robot = self.robot(org, name)?;
        self.meta.write(|w| w.delete_robot(robot.id))?;
        Ok(())
    }

    // ----- credentials -----

    /// Creates a credential of `kind` for `owner`; the secret is in the result and nowhere else.
    /// A new secret for credential `id` (same id, name and access: a pull secret changes only
    /// its password). The old secret keeps working for `overlap`, then stops; zero ends it now.
    ///
    /// The new generation ends with any of `lineage` (what the rotating caller came from): a
    /// secret made through a leaked credential dies with it, and cannot rotate it back.
    pub fn rotate_credential(
        &self,
        id: &str,
        overlap: std::time::Duration,
        lineage: &[String],
    ) -> Result<NewCredential> {
        let row = self
            .meta
            .read(|r| r.credential(id))?
            .filter(|c| c.revoked_at.is_none())
            .ok_or_else(|| Error::NotFound(format!("credential {id:?} not found")))?;
        let kind = SecretKind::ALL
            .into_iter()
            .find(|k| k.as_str() == row.kind)
            .filter(|k| *k != SecretKind::RefreshToken)
            .ok_or_else(|| Error::Invalid(format!("a {} cannot be rotated", row.kind)))?;
        // A new secret under an expiry already past would be dead on arrival; the expiry is not
        // the rotation's to move.
        if row.expires_at.is_some_and(|e| e <= now()) {
            return Err(Error::Conflict(format!(
                "credential {id:?} has expired; create a new one"
            )));
        }
        let uuid = uuid::Uuid::try_parse(&row.id)
            .map_err(|_| Error::Invalid(format!("credential {id:?} has no rotatable id")))?;
        let secret = Secret::generate_for(kind, uuid).map_err(|e| Error::Random(e.to_string()))?;
        let until = (!overlap.is_zero()).then(|| expires(now(), overlap));
        if !self.meta.write(|w| {
            let rotated = w.rotate_credential(&row.id, &secret.hash(), until)?;
            if rotated {
                let object = store::generation_key(&row.id, row.generation + 1);
                w.record_lineage(&object, lineage)?;
            }
            Ok::<_, store::Error>(rotated)
        })? {
            return Err(Error::NotFound(format!("credential {id:?} not found")));
        }
        let row = self
            .meta
            .read(|r| r.credential(&row.id))?
            .ok_or_else(|| Error::NotFound(format!("credential {id:?} not found")))?;
        Ok(NewCredential {
            credential: row.try_into()?,
            secret,
        })
    }

    pub fn create_credential(&self, spec: &CredentialSpec<'_>) -> Result<NewCredential> {
        let CredentialSpec {
            kind,
            owner,
            name,
            expires_in,
            readwrite,
            description,
            ref origin,
        } = *spec;
        check_description(description)?;
        if let Some(n) = name {
            check_text("a credential's name", n)?;
            if n.chars().count() > 64 {
                return Err(Error::Invalid(
                    "a credential's name has at most 64 characters".into(),
                ));
            }
        }
        let secret = Secret::generate(kind).map_err(|e| Error::Random(e.to_string()))?;
        let created_at = now();
        let expires_at = expires_in.map(|d| expires(created_at, d));
        let (user_id, robot_id, org_id) = match owner {
            Owner::User(id) => (Some(id), None, None),
            Owner::Robot(id) => (None, Some(id), None),
            Owner::Org(id) => (None, None, Some(id)),
        };
        let row = CredentialRow {
            id: secret.id().to_string(),
            kind: kind.as_str().to_owned(),
            name: name.map(str::to_owned),
            user_id,
            robot_id,
            org_id,
            secret_hash: secret.hash(),
            readwrite,
            description: description.map(str::to_owned),
            created_at,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            last_used_addr: None,
            last_used_agent: None,
            source: origin.source.clone(),
            // The first refresh token of a login names its family.
            family: match (kind, &origin.family) {
                (SecretKind::RefreshToken, None) => Some(secret.id().to_string()),
                (_, f) => f.clone(),
            },
            creator: origin.creator.clone(),
            previous_hash: None,
            previous_until: None,
            generation: 0,
        };
        // A session family is the object of a refresh token; others are the credential.
        let object = match &row.family {
            Some(f) if kind == SecretKind::RefreshToken => format!("fam:{f}"),
            _ => format!("cred:{}", row.id),
        };
        self.meta
            .write(|w| {
                // A name is unique per owner and kind (it may be used instead of the id).
                let key = match owner {
                    Owner::User(id) => ("user", id),
                    Owner::Robot(id) => ("robot", id),
                    Owner::Org(id) => ("org", id),
                };
                if let Some(n) = name.filter(|_| kind != SecretKind::RefreshToken)
                    && w.reader()
                        .credentials_of(key, kind.as_str())?
                        .iter()
                        .any(|c| c.revoked_at.is_none() && c.name.as_deref() == Some(n))
                {
                    return Err(store::Error::Conflict);
                }
                w.insert_credential(&row)?;
                w.record_lineage(&object, &origin.lineage)
            })
            .map_err(|e| match e {
                store::Error::Conflict => Error::Conflict(format!(
                    "a {} named {:?} already exists",
                    match kind {
                        SecretKind::ApiKey => "key",
                        _ => "token",
                    },
                    name.unwrap_or_default()
                )),
                e => e.into(),
            })?;
        Ok(NewCredential {
            credential: row.try_into()?,
            secret,
        })
    }

    pub fn credentials(&self, owner: Owner, kind: SecretKind) -> Result<Vec<Credential>> {
        let key = match owner {
            Owner::User(id) => ("user", id),
            Owner::Robot(id) => ("robot", id),
            Owner::Org(id) => ("org", id),
        };
        Ok(credentials(
            self.meta.read(|r| r.credentials_of(key, kind.as_str()))?,
        )?)
    }

    pub fn credential(&self, id: &str) -> Result<Option<Credential>> {
        Ok(self
            .meta
            .read(|r| r.credential(id))?
            .map(Credential::try_from)
            .transpose()?)
    }

    /// Revokes a credential (see `store::Writer::revoke_credential`: its row stays as a trace).
    pub fn revoke_credential(&self, id: &str) -> Result<()> {
        if self.meta.write(|w| w.revoke_credential(id))? {
            Ok(())
        } else {
            Err(not_found("credential", id))
        }
    }

    pub fn delete_credential(&self, id: &str) -> Result<()> {
        if self.meta.write(|w| w.delete_credential(id))? {
            Ok(())
        } else {
            Err(not_found("credential", id))
        }
    }

    /// Rotation of a refresh token: its successor (same family, same source, a fresh lifetime)
    /// or `None` when `old` was already used (a concurrent refresh won).
    pub fn rotate_refresh(&self, old: &Credential, ttl: Duration) -> Result<Option<NewCredential>> {
        let secret =
            Secret::generate(SecretKind::RefreshToken).map_err(|e| Error::Random(e.to_string()))?;
        let created_at = now();
        // The successor: the same owner, family and source; a new secret and lifetime (refresh
        // tokens are never rotated with an overlap, so there is no previous secret).
        let row = CredentialRow {
            id: secret.id().to_string(),
            kind: old.kind.as_str().to_owned(),
            name: old.name.clone(),
            user_id: old.user_id,
            robot_id: old.robot_id,
            org_id: old.org_id,
            secret_hash: secret.hash(),
            readwrite: old.readwrite,
            description: old.description.clone(),
            created_at,
            expires_at: Some(expires(created_at, ttl)),
            revoked_at: None,
            last_used_at: None,
            last_used_addr: None,
            last_used_agent: None,
            source: old.source.clone(),
            family: old.family.clone(),
            creator: old.creator.clone(),
            previous_hash: None,
            previous_until: None,
            generation: old.generation,
        };
        let won = self.meta.write(|w| w.rotate_refresh(&old.id, &row))?;
        Ok(if won {
            Some(NewCredential {
                credential: row.try_into()?,
                secret,
            })
        } else {
            None
        })
    }

    /// Ends a refresh-token family and its bearer tokens.
    pub fn revoke_family(&self, family: &str) -> Result<()> {
        self.meta.write(|w| w.revoke_family(family))?;
        Ok(())
    }

    /// A user's live sessions (refresh tokens), newest first.
    pub fn sessions(&self, user_id: i64) -> Result<Vec<Credential>> {
        Ok(credentials(
            self.meta.read(|r| r.sessions_of_user(user_id))?,
        )?)
    }

    /// The stored credential behind a presented secret, even if revoked or expired (for reuse
    /// detection); `None` when the secret does not match.
    /// Its `generation` is the one the secret belongs to (the one before when the secret is the
    /// previous one, within a rotation's overlap).
    pub fn lookup_secret(&self, secret: &Secret) -> Result<Option<Credential>> {
        let row = self.meta.read(|r| r.credential(&secret.id().to_string()))?;
        Ok(row
            .filter(|c| c.kind == secret.kind().as_str())
            .and_then(|mut c| {
                c.generation = secret_generation(secret, &c)?;
                Some(c)
            })
            .map(Credential::try_from)
            .transpose()?)
    }

    /// The stored credential behind a presented secret, if the secret is right and the
    /// credential is neither revoked nor expired.
    pub fn verify_secret(&self, secret: &Secret) -> Result<Option<Credential>> {
        let row = self.meta.read(|r| r.credential(&secret.id().to_string()))?;
        Ok(row
            .filter(|c| {
                c.kind == secret.kind().as_str()
                    && secret_generation(secret, c).is_some()
                    && c.revoked_at.is_none()
                    && c.expires_at.is_none_or(|e| e > now())
            })
            .map(Credential::try_from)
            .transpose()?)
    }

    /// Records "last used" for credentials, in one transaction (called by a write-behind flusher).
    pub fn touch_credentials(
        &self,
        uses: &[(String, i64, Option<String>, Option<String>)],
    ) -> Result<()> {
        self.meta.write(|w| {
            for (id, at, addr, agent) in uses {
                w.touch_credential(id, *at, addr.as_deref(), agent.as_deref())?;
            }
            Ok::<_, store::Error>(())
        })?;
        Ok(())
    }

    // ----- roles and bindings -----

    /// The rules of a role: built-in, or custom in `org`.
    pub fn role_rules(&self, org_id: i64, role: &str) -> Result<Option<Vec<Rule>>> {
        if let Some(rules) = policy::builtin_role(role) {
            return Ok(Some(rules));
        }
        let Some(row) = self.meta.read(|r| r.role(org_id, role))? else {
            return Ok(None);
        };
        serde_json::from_str(&row.rules)
            .map(Some)
            .map_err(|e| Error::Store(store::Error::Corrupt(e.to_string())))
    }

    /// Creates or replaces a custom role. Built-in role names are refused. Written through a
    /// credential (`lineage`), the role (with its bindings) ends with that credential.
    pub fn put_role(
        &self,
        org: &str,
        name: &str,
        rules: &[Rule],
        lineage: &[String],
    ) -> Result<bool> {
        check_name("role", &name.to_ascii_lowercase())?;
        if policy::BUILTIN_ROLES.contains(&name) {
            return Err(Error::Conflict(format!("{name:?} is a built-in role")));
        }
        for r in rules {
            r.validate().map_err(Error::Invalid)?;
        }
        let org = self.org(org)?;
        let text = serde_json::to_string(rules).map_err(|e| Error::Invalid(e.to_string()))?;
        let existed = self.meta.read(|r| r.role(org.id, name))?.is_some();
        self.meta.write(|w| {
            w.put_role(org.id, name, &text)?;
            let object = store::role_key(org.id, name);
            w.forget_lineage(&object)?;
            w.record_lineage(&object, lineage)
        })?;
        Ok(existed)
    }

    pub fn roles(&self, org: &str) -> Result<Vec<(String, Vec<Rule>, bool)>> {
        let org = self.org(org)?;
        let mut out: Vec<(String, Vec<Rule>, bool)> = policy::BUILTIN_ROLES
            .iter()
            .filter_map(|n| policy::builtin_role(n).map(|r| ((*n).to_owned(), r, true)))
            .collect();
        for row in self.meta.read(|r| r.roles_of_org(org.id))? {
            let rules = serde_json::from_str(&row.rules)
                .map_err(|e| Error::Store(store::Error::Corrupt(e.to_string())))?;
            out.push((row.name, rules, false));
        }
        Ok(out)
    }

    pub fn delete_role(&self, org: &str, name: &str) -> Result<()> {
        // A built-in role has no row; deleting "it" would only delete every binding to it.
        if policy::BUILTIN_ROLES.contains(&name) {
            return Err(Error::Conflict(format!(
                "{name:?} is a built-in role: it cannot be deleted"
            )));
        }
        let org_row = self.org(org)?;
        if self.meta.write(|w| w.delete_role(org_row.id, name))? {
            Ok(())
        } else {
            Err(not_found("role", name))
        }
    }

    /// Creates or replaces a binding. The subject is `user/NAME` or `robot/NAME` (a robot of
    /// `org`); the role must exist; the scope's namespace must belong to `org`.
    ///
    /// A user subject must be a member of `org`: a binding never grants anything to someone
    /// outside it. The binding ends with any of `lineage` (what its creator came from).
    pub fn put_binding(
        &self,
        org: &str,
        name: &str,
        role: &str,
        subject: &str,
        scope: &BindingScope,
        lineage: &[String],
    ) -> Result<bool> {
        check_name("binding", name)?;
        let org_row = self.org(org)?;
        if self.role_rules(org_row.id, role)?.is_none() {
            return Err(Error::NotFound(format!(
                "role {role:?} not found in organization {org:?}"
            )));
        }
        let (subject_kind, subject_id) = match subject.split_once('/') {
            Some(("user", u)) => {
                // Unknown users and non-members get the same answer (no user enumeration).
                let member = self.meta.read(|r| match r.user_by_name(u)? {
                    Some(user) => Ok(r
                        .memberships_of_user(user.id)?
                        .iter()
                        .any(|(o, _)| o.id == org_row.id)
                        .then_some(user.id)),
                    None => Ok(None),
                })?;
                let id = member.ok_or_else(|| {
                    Error::NotFound(format!(
                        "user {u:?} is not a member of organization {org:?}: add them first with `berth member add`"
                    ))
                })?;
                ("user", id)
            }
            Some(("robot", r)) => ("robot", self.robot(org, r)?.id),
            // A group of an OpenID provider: its users are members of the organization through
            // this binding (membership from a group), and hold its role while the provider says
            // they are in the group.
            Some(("group", g)) => {
                check_group_name(g)?;
                ("group", self.meta.write(|w| w.group_id_or_new(g))?)
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "subject must be user/NAME, robot/NAME or group/NAME, not {subject:?}"
                )));
            }
        };
        let (scope_kind, scope_value) = match scope {
            BindingScope::Org => ("org", None),
            BindingScope::Namespace(ns) => {
                self.namespace_of_org(&org_row, ns)?;
                ("namespace", Some(ns.clone()))
            }
            BindingScope::Repository(glob) => {
                policy::check_glob(glob).map_err(Error::Invalid)?;
                let ns = policy::namespace_of(glob);
                if ns.contains('*') {
                    return Err(Error::Invalid(format!(
                        "repository glob {glob:?} must start with a namespace of organization {org:?}, without wildcards"
                    )));
                }
                self.namespace_of_org(&org_row, ns)?;
                ("repository", Some(glob.clone()))
            }
        };
        let existed = self.meta.read(|r| r.binding(org_row.id, name))?.is_some();
        self.meta.write(|w| {
            w.put_binding(
                &BindingRow {
                    org_id: org_row.id,
                    org: org_row.name.clone(),
                    name: name.to_owned(),
                    role: role.to_owned(),
                    subject_kind: subject_kind.to_owned(),
                    subject_id,
                    scope_kind: scope_kind.to_owned(),
                    scope: scope_value,
                },
                lineage,
            )
        })?;
        Ok(existed)
    }

    /// Checks that namespace `ns` exists and belongs to `org`, with an error that says what to do.
    fn namespace_of_org(&self, org: &Org, ns: &str) -> Result<()> {
        if let Some((first, _)) = ns.split_once('/') {
            return Err(Error::Invalid(format!(
                "{ns:?} is not a namespace: a namespace is one name without `/` (the first segment of its repositories' names); for repositories under {ns:?} use --repository '{ns}/*', for the whole namespace --namespace {first}"
            )));
        }
        match self.namespace(ns)? {
            Some(n) if n.org_id == org.id => Ok(()),
            Some(_) => Err(Error::Invalid(format!(
                "namespace {ns:?} does not belong to organization {:?}",
                org.name
            ))),
            None => Err(Error::NotFound(format!(
                "namespace {ns:?} not found in organization {:?}: create it with `berth namespace create {ns} --org {}`",
                org.name, org.name
            ))),
        }
    }

    /// One binding of an organization, if it exists.
    pub fn binding(&self, org_id: i64, name: &str) -> Result<Option<Binding>> {
        Ok(self
            .meta
            .read(|r| r.binding(org_id, name))?
            .map(Binding::from))
    }

    pub fn bindings(&self, org: &str) -> Result<Vec<Binding>> {
        let org = self.org(org)?;
        Ok(self
            .meta
            .read(|r| r.bindings_of_org(org.id))?
            .into_iter()
            .map(Binding::from)
            .collect())
    }

    /// `user/NAME` or `robot/NAME`: whom a binding names; `None` if they are gone.
    pub fn subject_name(&self, subject: Subject) -> Result<Option<String>> {
        Ok(match subject {
            Subject::Robot(id) => self
                .meta
                .read(|r| r.robot_by_id(id))?
                .map(|r| format!("robot/{}", r.name)),
            Subject::User(id) => self
                .meta
                .read(|r| r.user_by_id(id))?
                .map(|u| format!("user/{}", u.name)),
            Subject::Group(id) => self
                .meta
                .read(|r| r.group_name(id))?
                .map(|g| format!("group/{g}")),
        })
    }

    pub fn delete_binding(&self, org: &str, name: &str) -> Result<()> {
        let org_row = self.org(org)?;
        if self.meta.write(|w| w.delete_binding(org_row.id, name))? {
            Ok(())
        } else {
            Err(not_found("binding", name))
        }
    }

    /// The grants of a user or robot: ownerships, and every binding with its role's rules.
    pub fn grants(&self, subject: (&str, i64), admin: bool) -> Result<policy::Grants> {
        let mut g = policy::Grants {
            admin,
            ..policy::Grants::default()
        };
        let mut member_orgs = Vec::new();
        if subject.0 == "user" {
            for (org, role) in self.meta.read(|r| r.memberships_of_user(subject.1))? {
                member_orgs.push(org.id);
                if role == "owner" {
                    g.owner_of.push(org.name);
                } else {
                    g.member_of.push(org.name);
                }
            }
        }
        g.epoch_key = Some(format!(
            "pol:{}:{}:{}",
            subject.0,
            subject.1,
            self.meta
                .read(|r| r.policy_epoch(&format!("{}:{}", subject.0, subject.1)))?
        ));
        for b in self
            .meta
            .read(|r| r.bindings_for_subject(subject.0, subject.1))?
            .into_iter()
            .map(Binding::from)
        {
            // Membership gates every user grant: a binding in an org the user has left grants
            // nothing (removal also deletes them; this holds whatever the rows say).
            if subject.0 == "user" && !member_orgs.contains(&b.org_id) {
                continue;
            }
            let Some(rules) = self.role_rules(b.org_id, &b.role)? else {
                continue;
            };
            g.grants.push(policy::Grant {
                org: b.org,
                rules,
                scope: b.scope,
            });
        }
        // The bindings of the user's groups: each makes the user a member of its organization
        // (membership from a group) and grants its role there.
        if subject.0 == "user" {
            for (gid, _) in self.meta.read(|r| r.groups_of_user(subject.1))? {
                for b in self
                    .meta
                    .read(|r| r.bindings_for_subject("group", gid))?
                    .into_iter()
                    .map(Binding::from)
                {
                    let Some(rules) = self.role_rules(b.org_id, &b.role)? else {
                        continue;
                    };
                    if !g.owner_of.contains(&b.org) && !g.member_of.contains(&b.org) {
                        g.member_of.push(b.org.clone());
                    }
                    g.grants.push(policy::Grant {
                        org: b.org,
                        rules,
                        scope: b.scope,
                    });
                }
            }
        }
        Ok(g)
    }

    /// The users identity providers made, their groups and provider sessions.
    pub fn sso(&self) -> SsoUsers {
        SsoUsers {
            meta: self.meta.clone(),
        }
    }

    /// What a group's bindings grant (its users hold this besides their own): a member of each
    /// binding's organization, with the binding's role there.
    pub fn group_grants(&self, name: &str) -> Result<crate::policy::Grants> {
        let mut g = crate::policy::Grants::default();
        let Some(gid) = self.meta.read(|r| r.group_id(name))? else {
            return Ok(g);
        };
        for b in self
            .meta
            .read(|r| r.bindings_for_subject("group", gid))?
            .into_iter()
            .map(Binding::from)
        {
            let Some(rules) = self.role_rules(b.org_id, &b.role)? else {
                continue;
            };
            if !g.member_of.contains(&b.org) {
                g.member_of.push(b.org.clone());
            }
            g.grants.push(crate::policy::Grant {
                org: b.org,
                rules,
                scope: b.scope,
            });
        }
        Ok(g)
    }

    // ----- audit -----

    pub fn audit(&self, event: &AuditEvent) -> Result<()> {
        self.audit_all(std::slice::from_ref(event))
    }

    /// Writes several audit events in one transaction.
    pub fn audit_all(&self, events: &[AuditEvent]) -> Result<()> {
        self.meta.write(|w| {
            for e in events {
                w.insert_audit(&audit_row(e))?;
            }
            Ok::<_, store::Error>(())
        })?;
        Ok(())
    }

    /// Records failed logins of one window each: a new audit event for a batch without `row`,
    /// a raised count on the event `row` otherwise. The ids of the events, in order.
    pub fn audit_failed_logins(&self, batch: &[FailedLogins]) -> Result<Vec<i64>> {
        Ok(self.meta.write(|w| {
            let mut ids = Vec::new();
            for f in batch {
                match f.row {
                    Some(id) => {
                        w.add_audit_count(id, f.count, Some(&f.attempted))?;
                        ids.push(id);
                    }
                    None => ids.push(w.insert_audit(&AuditRow {
                        id: 0,
                        at: now(),
                        actor: None,
                        action: "login".into(),
                        outcome: "failure".into(),
                        target: None,
                        client_addr: f.client_addr.clone(),
                        detail: Some(f.reason.into()),
                        attempted: Some(f.attempted.clone()),
                        count: f.count,
                        org: f.org.clone(),
                    })?),
                }
            }
            Ok::<_, store::Error>(ids)
        })?)
    }

    pub fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        Ok(self
            .meta
            .read(|r| r.audit_events(filter))?
            .into_iter()
            .map(AuditEntry::from)
            .collect())
    }
}

/// Stored credentials as the rest of the server sees them.
fn credentials(rows: Vec<CredentialRow>) -> std::result::Result<Vec<Credential>, store::Error> {
    rows.into_iter().map(Credential::try_from).collect()
}

/// `text` with every control character written as a `\u{..}` escape: what came from outside
/// (a workload's subject, a typed name) cannot forge a row or drive a terminal.
pub fn escape_text(text: &str) -> String {
    if !text.chars().any(is_hazard) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if is_hazard(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn audit_row(e: &AuditEvent) -> AuditRow {
    let clean = |t: &Option<String>| t.as_deref().map(escape_text);
    AuditRow {
        id: 0,
        at: now(),
        actor: clean(&e.actor),
        action: e.action.to_owned(),
        outcome: if e.success { "success" } else { "failure" }.to_owned(),
        target: clean(&e.target),
        client_addr: e.client_addr.clone(),
        detail: clean(&e.detail),
        attempted: None,
        count: 1,
        org: e.org.clone(),
    }
}

/// The generation of credential `c` that `secret` is: its current secret, or the one before its
/// last rotation while the overlap lasts (both compared in constant time); `None`: neither.
fn secret_generation(secret: &Secret, c: &CredentialRow) -> Option<i64> {
    let current = secret.matches(&c.secret_hash);
    let previous = match (&c.previous_hash, c.previous_until) {
        (Some(h), Some(until)) => secret.matches(h) && until > now(),
        _ => false,
    };
    if current {
        Some(c.generation)
    } else if previous {
        Some(c.generation - 1)
    } else {
        None
    }
}

/// Trusts a robot may have: its page and list stay small.
pub const MAX_TRUSTS_PER_ROBOT: usize = 32;

/// The longest description of a robot or credential, in characters: lists of them stay small.
pub const MAX_DESCRIPTION: usize = 1024;

fn check_description(d: Option<&str>) -> Result<()> {
    check_text("a description", d.unwrap_or_default())?;
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(Error::Invalid(format!(
            "a description has at most {MAX_DESCRIPTION} characters"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["acme", "ci-bot", "a", "team.x", "a_b"] {
            assert!(check_name("robot", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "-x", "x-", "a/b", "a b", &"a".repeat(65)] {
            assert!(check_name("robot", bad).is_err(), "{bad}");
        }
        for reserved in [
            "iamapikey",
            "iambearer",
            "iamrefresh",
            "token",
            "3f1c0c8e-7a35-4b39-9d8e-0f5a1b2c3d4e",
        ] {
            assert!(check_name("user", reserved).is_err(), "{reserved}");
        }
        assert!(check_name("organization", "a..b").is_err());
    }
}
