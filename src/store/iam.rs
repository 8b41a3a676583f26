//! Identity queries: users, organizations, namespaces, memberships, robots, credentials, roles,
//! bindings and audit events. Written once for both engines (see `sql.rs`).

use super::error::Result;
use super::model::{
    AuditFilter, AuditRow, BindingRow, CredentialExpiry, CredentialRow, NamespaceRow, OrgRow,
    RobotRow, RoleRow, TrustRow, UserRow, namespace_key, now, public_key,
};
use super::sql::{Reader, Writer, to_i64};
use super::sql::{Row, p};

/// The revocation-log key of a policy change (no token names it).
pub(super) const POLICY_CHANGED: &str = "policy";

/// The revocation key of one generation of a credential.
pub fn generation_key(id: &str, generation: i64) -> String {
    format!("gen:{id}:{generation}")
}

/// The lineage key of a membership.
pub fn member_key(org_id: i64, user_id: i64) -> String {
    format!("member:{org_id}:{user_id}")
}

/// The lineage key of a custom role.
pub fn role_key(org_id: i64, name: &str) -> String {
    format!("role:{org_id}/{name}")
}

/// The lineage key of a binding.
pub fn binding_key(org_id: i64, name: &str) -> String {
    format!("binding:{org_id}/{name}")
}

/// A signing key as stored: (created, kid, certificate PEM, sealed private key).
pub(crate) type SealedKey = (i64, String, String, Vec<u8>);

fn user(r: &Row<'_>) -> Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        name: r.get(1)?,
        password_hash: r.get(2)?,
        admin: r.get(3)?,
        created_at: r.get(4)?,
        password_epoch: r.get(5)?,
    })
}
const USER_COLS: &str = "id, name, password_hash, admin, created_at, password_epoch";

fn org(r: &Row<'_>) -> Result<OrgRow> {
    Ok(OrgRow {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
    })
}

fn robot(r: &Row<'_>) -> Result<RobotRow> {
    Ok(RobotRow {
        id: r.get(0)?,
        org_id: r.get(1)?,
        org: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        created_at: r.get(5)?,
    })
}
const ROBOT_SELECT: &str = "SELECT rb.id, rb.org_id, o.name, rb.name, rb.description, rb.created_at FROM robots rb JOIN orgs o ON o.id = rb.org_id";

fn credential(r: &Row<'_>) -> Result<CredentialRow> {
    Ok(CredentialRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        user_id: r.get(3)?,
        robot_id: r.get(4)?,
        org_id: r.get(5)?,
        secret_hash: r.get(6)?,
        readwrite: r.get(7)?,
        description: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
        revoked_at: r.get(11)?,
        last_used_at: r.get(12)?,
        last_used_addr: r.get(13)?,
        last_used_agent: r.get(14)?,
        source: r.get(15)?,
        family: r.get(16)?,
        creator: r.get(17)?,
        previous_hash: r.get(18)?,
        previous_until: r.get(19)?,
        generation: r.get(20)?,
    })
}
fn trust(r: &Row<'_>) -> Result<TrustRow> {
    Ok(TrustRow {
        id: r.get(0)?,
        robot_id: r.get(1)?,
        org: r.get(2)?,
        robot: r.get(3)?,
        name: r.get(4)?,
        issuer: r.get(5)?,
        subject: r.get(6)?,
        audience: r.get(7)?,
        claims: r.get(8)?,
        jwks: r.get(9)?,
        created_at: r.get(10)?,
        last_used_at: r.get(11)?,
    })
}
const TRUST_SELECT: &str = "SELECT t.id, t.robot_id, o.name, rb.name, t.name, t.issuer, t.subject, t.audience, \
     t.claims, t.jwks, t.created_at, t.last_used_at FROM robot_trusts t \
     JOIN robots rb ON rb.id = t.robot_id JOIN orgs o ON o.id = rb.org_id";

const CREDENTIAL_COLS: &str = "id, kind, name, user_id, robot_id, org_id, secret_hash, readwrite, description, \
     created_at, expires_at, revoked_at, last_used_at, last_used_addr, last_used_agent, source, family, creator, \
     previous_hash, previous_until, generation";

fn binding(r: &Row<'_>) -> Result<BindingRow> {
    Ok(BindingRow {
        org_id: r.get(0)?,
        org: r.get(1)?,
        name: r.get(2)?,
        role: r.get(3)?,
        subject_kind: r.get(4)?,
        subject_id: r.get(5)?,
        scope_kind: r.get(6)?,
        scope: r.get(7)?,
    })
}
const BINDING_SELECT: &str = "SELECT b.org_id, o.name, b.name, b.role, b.subject_kind, b.subject_id, b.scope_kind, b.scope \
     FROM bindings b JOIN orgs o ON o.id = b.org_id";

fn namespace(r: &Row<'_>) -> Result<NamespaceRow> {
    Ok(NamespaceRow {
        name: r.get(0)?,
        org_id: r.get(1)?,
        org: r.get(2)?,
        public: r.get(3)?,
        created_at: r.get(4)?,
        public_gen: r.get(5)?,
    })
}
const NAMESPACE_SELECT: &str = "SELECT n.name, n.org_id, o.name, n.public, n.created_at, n.public_gen FROM namespaces n JOIN orgs o ON o.id = n.org_id";

fn role(r: &Row<'_>) -> Result<RoleRow> {
    Ok(RoleRow {
        org_id: r.get(0)?,
        name: r.get(1)?,
        rules: r.get(2)?,
    })
}

fn audit(r: &Row<'_>) -> Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        outcome: r.get(4)?,
        target: r.get(5)?,
        client_addr: r.get(6)?,
        detail: r.get(7)?,
        attempted: r.get(8)?,
        count: r.get(9)?,
        org: r.get(10)?,
    })
}

impl Reader<'_> {
    pub fn user_count(&self) -> Result<u64> {
        let n: i64 = self.conn.value("SELECT COUNT(*) FROM users", p![])?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        self.conn.query_opt(
            &format!("SELECT {USER_COLS} FROM users WHERE name = ?1"),
            p![name],
            user,
        )
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<UserRow>> {
        self.conn.query_opt(
            &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
            p![id],
            user,
        )
    }

    pub fn users(&self) -> Result<Vec<UserRow>> {
        self.conn.query(
            &format!("SELECT {USER_COLS} FROM users ORDER BY name"),
            p![],
            user,
        )
    }

    pub fn org_by_name(&self, name: &str) -> Result<Option<OrgRow>> {
        self.conn.query_opt(
            "SELECT id, name, created_at FROM orgs WHERE name = ?1",
            p![name],
            org,
        )
    }

    pub fn org_by_id(&self, id: i64) -> Result<Option<OrgRow>> {
        self.conn.query_opt(
            "SELECT id, name, created_at FROM orgs WHERE id = ?1",
            p![id],
            org,
        )
    }

    pub fn orgs(&self) -> Result<Vec<OrgRow>> {
        self.conn.query(
            "SELECT id, name, created_at FROM orgs ORDER BY name",
            p![],
            org,
        )
    }

    pub fn namespace(&self, name: &str) -> Result<Option<NamespaceRow>> {
        self.conn.query_opt(
            &format!("{NAMESPACE_SELECT} WHERE n.name = ?1"),
            p![name],
            namespace,
        )
    }

    pub fn namespaces_of_org(&self, org_id: i64) -> Result<Vec<NamespaceRow>> {
        self.conn.query(
            &format!("{NAMESPACE_SELECT} WHERE n.org_id = ?1 ORDER BY n.name"),
            p![org_id],
            namespace,
        )
    }

    /// Organizations the user belongs to, with the role (`owner` or `member`).
    pub fn memberships_of_user(&self, user_id: i64) -> Result<Vec<(OrgRow, String)>> {
        self.conn.query(
            "SELECT o.id, o.name, o.created_at, m.role FROM memberships m JOIN orgs o ON o.id = m.org_id
             WHERE m.user_id = ?1 ORDER BY o.name",
            p![user_id],
            |r| Ok((org(r)?, r.get(3)?)),
        )
    }

    /// Members of an organization: (user, role).
    pub fn members_of_org(&self, org_id: i64) -> Result<Vec<(UserRow, String)>> {
        self.conn.query(
            "SELECT u.id, u.name, u.password_hash, u.admin, u.created_at, u.password_epoch, m.role FROM memberships m
             JOIN users u ON u.id = m.user_id WHERE m.org_id = ?1 ORDER BY u.name",
            p![org_id],
            |r| Ok((user(r)?, r.get(6)?)),
        )
    }

    pub fn robot(&self, org_id: i64, name: &str) -> Result<Option<RobotRow>> {
        self.conn.query_opt(
            &format!("{ROBOT_SELECT} WHERE rb.org_id = ?1 AND rb.name = ?2"),
            p![org_id, name],
            robot,
        )
    }

    pub fn robot_by_id(&self, id: i64) -> Result<Option<RobotRow>> {
        self.conn
            .query_opt(&format!("{ROBOT_SELECT} WHERE rb.id = ?1"), p![id], robot)
    }

    pub fn robots_of_org(&self, org_id: i64) -> Result<Vec<RobotRow>> {
        self.conn.query(
            &format!("{ROBOT_SELECT} WHERE rb.org_id = ?1 ORDER BY rb.name"),
            p![org_id],
            robot,
        )
    }

    /// The trusts of one robot, by name.
    pub fn trusts_of_robot(&self, robot_id: i64) -> Result<Vec<TrustRow>> {
        self.conn.query(
            &format!("{TRUST_SELECT} WHERE t.robot_id = ?1 ORDER BY t.name"),
            p![robot_id],
            trust,
        )
    }

    /// Every trust of an issuer (a token exchange that names no robot).
    pub fn trusts_of_issuer(&self, issuer: &str) -> Result<Vec<TrustRow>> {
        self.conn.query(
            &format!("{TRUST_SELECT} WHERE t.issuer = ?1 ORDER BY t.id LIMIT 1000"),
            p![issuer],
            trust,
        )
    }

    /// Every trust of an organization's robots.
    pub fn trusts_of_org(&self, org_id: i64) -> Result<Vec<TrustRow>> {
        self.conn.query(
            &format!("{TRUST_SELECT} WHERE rb.org_id = ?1 ORDER BY rb.name, t.name"),
            p![org_id],
            trust,
        )
    }

    /// The long-lived credentials of an organization: its robots' tokens and API keys and its
    /// registry tokens (not revoked), each with its robot's name (empty for the org's own).
    pub fn credentials_of_org(&self, org_id: i64) -> Result<Vec<(CredentialRow, String)>> {
        let cols: Vec<String> = CREDENTIAL_COLS
            .split(',')
            .map(|c| format!("c.{}", c.trim()))
            .collect();
        self.conn.query(
            &format!(
                "SELECT {}, COALESCE(rb.name, '') FROM credentials c LEFT JOIN robots rb ON rb.id = c.robot_id \
                 WHERE (rb.org_id = ?1 OR c.org_id = ?1) AND c.kind <> 'refresh_token' AND c.revoked_at IS NULL \
                 ORDER BY c.expires_at, c.created_at",
                cols.join(", ")
            ),
            p![org_id],
            |r| Ok((credential(r)?, r.get(21)?)),
        )
    }

    /// Every unrevoked credential with an expiry, for `/metrics`: (org, kind, owner, name,
    /// expires at). A user's own API keys have no organization (empty).
    pub fn credential_expiries(&self, limit: i64) -> Result<Vec<CredentialExpiry>> {
        self.conn.query(
            "SELECT COALESCE(o1.name, o2.name, ''), c.kind, COALESCE(rb.name, u.name, ''), \
             COALESCE(c.name, c.id), c.expires_at FROM credentials c \
             LEFT JOIN robots rb ON rb.id = c.robot_id LEFT JOIN orgs o1 ON o1.id = rb.org_id \
             LEFT JOIN orgs o2 ON o2.id = c.org_id LEFT JOIN users u ON u.id = c.user_id \
             WHERE c.expires_at > ?2 AND c.revoked_at IS NULL AND c.kind <> 'refresh_token' \
             ORDER BY c.expires_at LIMIT ?1",
            p![limit, now()],
            |r| {
                Ok(CredentialExpiry {
                    org: r.get(0)?,
                    kind: r.get(1)?,
                    owner: r.get(2)?,
                    name: r.get(3)?,
                    expires_at: r.get(4)?,
                })
            },
        )
    }

    pub fn credential(&self, id: &str) -> Result<Option<CredentialRow>> {
        self.conn.query_opt(
            &format!("SELECT {CREDENTIAL_COLS} FROM credentials WHERE id = ?1"),
            p![id],
            credential,
        )
    }

    /// Credentials of one owner and kind, newest first. `owner` is `("robot" | "user" | "org", id)`.
    pub fn credentials_of(&self, owner: (&str, i64), kind: &str) -> Result<Vec<CredentialRow>> {
        let column = match owner.0 {
            "robot" => "robot_id",
            "user" => "user_id",
            _ => "org_id",
        };
        self.conn.query(
            &format!(
                "SELECT {CREDENTIAL_COLS} FROM credentials WHERE {column} = ?1 AND kind = ?2 ORDER BY created_at DESC, id"
            ),
            p![owner.1, kind],
            credential,
        )
    }

    pub fn bindings_for_subject(&self, kind: &str, id: i64) -> Result<Vec<BindingRow>> {
        self.conn.query(
            &format!("{BINDING_SELECT} WHERE b.subject_kind = ?1 AND b.subject_id = ?2"),
            p![kind, id],
            binding,
        )
    }

    pub fn bindings_of_org(&self, org_id: i64) -> Result<Vec<BindingRow>> {
        self.conn.query(
            &format!("{BINDING_SELECT} WHERE b.org_id = ?1 ORDER BY b.name"),
            p![org_id],
            binding,
        )
    }

    pub fn binding(&self, org_id: i64, name: &str) -> Result<Option<BindingRow>> {
        self.conn.query_opt(
            &format!("{BINDING_SELECT} WHERE b.org_id = ?1 AND b.name = ?2"),
            p![org_id, name],
            binding,
        )
    }

    pub fn role(&self, org_id: i64, name: &str) -> Result<Option<RoleRow>> {
        self.conn.query_opt(
            "SELECT org_id, name, rules FROM roles WHERE org_id = ?1 AND name = ?2",
            p![org_id, name],
            role,
        )
    }

    pub fn roles_of_org(&self, org_id: i64) -> Result<Vec<RoleRow>> {
        self.conn.query(
            "SELECT org_id, name, rules FROM roles WHERE org_id = ?1 ORDER BY name",
            p![org_id],
            role,
        )
    }

    /// The policy epoch of a subject (`user:<id>`, `robot:<id>`): its registry tokens name
    /// `pol:<subject>:<epoch>`, revoked when a change takes access away from it.
    pub fn policy_epoch(&self, subject: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_opt(
                "SELECT epoch FROM policy_epochs WHERE subject = ?1",
                p![subject],
                |r| r.get(0),
            )?
            .unwrap_or(0))
    }

    /// Every revocation key `object` depends on, transitively (its sources, their sources, ...),
    /// with `object` itself.
    pub fn ancestry(&self, objects: &[String]) -> Result<Vec<String>> {
        let mut seen: Vec<String> = objects.to_vec();
        let mut next = objects.to_vec();
        // Lineage is acyclic (an object's sources exist before it); the bound is a safety net.
        for _ in 0..64 {
            let mut found = Vec::new();
            for o in &next {
                let sources: Vec<String> = self.conn.query(
                    "SELECT source FROM lineage WHERE object = ?1",
                    p![o.as_str()],
                    |r| r.get(0),
                )?;
                for src in sources {
                    // A generation key stands for its credential.
                    let up = match src.strip_prefix("gen:").and_then(|g| g.rsplit_once(':')) {
                        Some((id, _)) => format!("cred:{id}"),
                        None => src.clone(),
                    };
                    for k in [src, up] {
                        if !seen.contains(&k) {
                            seen.push(k.clone());
                            found.push(k);
                        }
                    }
                }
            }
            if found.is_empty() {
                break;
            }
            next = found;
        }
        Ok(seen)
    }

    /// The organizations (name) that invited user `user_id`, with the role offered.
    pub fn invitations_of_user(&self, user_id: i64) -> Result<Vec<(String, String)>> {
        self.conn.query(
            "SELECT o.name, i.role FROM invitations i JOIN orgs o ON o.id = i.org_id
             WHERE i.user_id = ?1 ORDER BY o.name",
            p![user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// The revocation keys `object` was made through.
    pub fn lineage_sources(&self, object: &str) -> Result<Vec<String>> {
        self.conn.query(
            "SELECT source FROM lineage WHERE object = ?1 ORDER BY source",
            p![object],
            |r| r.get(0),
        )
    }

    /// Whether some credential expired by `at` and what it made was not ended yet.
    pub fn has_unended_expiries(&self, at: i64) -> Result<bool> {
        self.conn.exists(
            "SELECT 1 FROM credentials WHERE expires_at IS NOT NULL AND ended_at IS NULL AND expires_at <= ?1",
            p![at],
        )
    }

    /// Credentials whose rotation overlap ended by `at`: (id, generation).
    pub fn ended_overlaps(&self, at: i64) -> Result<Vec<(String, i64)>> {
        self.conn.query(
            "SELECT id, generation FROM credentials WHERE previous_until IS NOT NULL AND previous_until <= ?1",
            p![at],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Revocation keys added after `seq`: (sequence number, key, when).
    pub fn revocations_since(&self, seq: i64) -> Result<Vec<(i64, String, i64)>> {
        self.conn.query(
            "SELECT seq, key, at FROM revocations WHERE seq > ?1 ORDER BY seq",
            p![seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// Refresh tokens of a user that are still live, newest first.
    pub fn sessions_of_user(&self, user_id: i64) -> Result<Vec<CredentialRow>> {
        self.conn.query(
            &format!(
                "SELECT {CREDENTIAL_COLS} FROM credentials WHERE user_id = ?1 AND kind = 'refresh_token'
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2) ORDER BY created_at DESC, id"
            ),
            p![user_id, now()],
            credential,
        )
    }

    /// A token key: (created, certificate PEM, sealed private key).
    pub fn token_key(&self, kid: &str) -> Result<Option<(i64, String, Vec<u8>)>> {
        self.conn.query_opt(
            "SELECT created, cert_pem, sealed_key FROM token_keys WHERE kid = ?1",
            p![kid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// The signing keys, oldest first: (created, kid, certificate PEM, sealed private key).
    pub fn signing_keys(&self) -> Result<Vec<SealedKey>> {
        self.conn.query(
            "SELECT created, kid, cert_pem, sealed_key FROM token_keys WHERE kind = 'signing' ORDER BY created, kid",
            p![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    }

    /// Failures counted for `key` in minute `win` by every node.
    pub fn login_failures(&self, key: &str, win: i64) -> Result<i64> {
        Ok(self
            .conn
            .query_opt(
                "SELECT count FROM login_failures WHERE key = ?1 AND win = ?2",
                p![key, win],
                |r| r.get(0),
            )?
            .unwrap_or(0))
    }

    /// Keys with failures in minute `win` (at most `limit`, the most failed first).
    pub fn login_failure_keys(&self, win: i64, limit: i64) -> Result<Vec<(String, i64)>> {
        self.conn.query(
            "SELECT key, count FROM login_failures WHERE win = ?1 ORDER BY count DESC LIMIT ?2",
            p![win, limit],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    pub fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        self.conn.query(
            "SELECT id, at, actor, action, outcome, target, client_addr, detail, attempted, count, org FROM audit_events
             WHERE (CAST(?1 AS TEXT) IS NULL OR actor = ?1) AND (CAST(?2 AS TEXT) IS NULL OR action = ?2)
             AND (CAST(?8 AS TEXT) IS NULL OR org = ?8)
             AND (CAST(?3 AS TEXT) IS NULL OR outcome = ?3)
             AND (CAST(?4 AS BIGINT) IS NULL OR at >= ?4) AND (CAST(?5 AS BIGINT) IS NULL OR id < ?5)
             AND (CAST(?7 AS BIGINT) IS NULL OR at < ?7)
             ORDER BY id DESC LIMIT ?6",
            p![
                f.actor,
                f.action,
                f.outcome,
                f.since,
                f.before_id,
                to_i64(f.limit),
                f.until,
                f.org
            ],
            audit,
        )
    }
}

impl Writer<'_> {
    pub fn insert_user(&self, name: &str, password_hash: Option<&str>, admin: bool) -> Result<i64> {
        self.conn.value(
            "INSERT INTO users (name, password_hash, admin, created_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            p![name, password_hash, admin, now()],
        )
    }

    pub fn set_password(&self, user_id: i64, password_hash: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE users SET password_hash = ?2, password_epoch = password_epoch + 1 WHERE id = ?1",
            p![user_id, password_hash],
        )? > 0)
    }

    /// Deletes a user with its memberships, bindings and credentials (and everything derived
    /// from them); the user's id is revoked for bearer tokens.
    pub fn delete_user(&self, user_id: i64) -> Result<bool> {
        self.forget_object(&format!("user:{user_id}"))?;
        self.conn
            .execute("DELETE FROM invitations WHERE user_id = ?1", p![user_id])?;
        self.conn
            .execute("DELETE FROM memberships WHERE user_id = ?1", p![user_id])?;
        self.delete_bindings_where("subject_kind = 'user' AND subject_id = ?1", p![user_id])?;
        self.delete_credentials_where("user_id = ?1", p![user_id])?;
        self.conn
            .execute("DELETE FROM user_groups WHERE user_id = ?1", p![user_id])?;
        self.conn
            .execute("DELETE FROM sso_sessions WHERE user_id = ?1", p![user_id])?;
        self.conn
            .execute("DELETE FROM sso_links WHERE user_id = ?1", p![user_id])?;
        self.revoke(&format!("user:{user_id}"))?;
        Ok(self
            .conn
            .execute("DELETE FROM users WHERE id = ?1", p![user_id])?
            > 0)
    }

    pub fn insert_org(&self, name: &str) -> Result<i64> {
        self.conn.value(
            "INSERT INTO orgs (name, created_at) VALUES (?1, ?2) RETURNING id",
            p![name, now()],
        )
    }

    /// Deletes an organization and everything it owns: robots (with their credentials), the
    /// registry tokens, memberships, roles, bindings, and its namespaces with their repositories
    /// (whose blobs GC then collects). A re-created name starts empty.
    pub fn delete_org(&self, org_id: i64) -> Result<bool> {
        for robot in self.reader().robots_of_org(org_id)? {
            self.delete_robot(robot.id)?;
        }
        self.delete_credentials_where("org_id = ?1", p![org_id])?;
        for ns in self.reader().namespaces_of_org(org_id)? {
            self.delete_namespace(&ns.name)?;
        }
        for table in ["memberships", "roles", "bindings", "invitations"] {
            self.conn.execute(
                &format!("DELETE FROM {table} WHERE org_id = ?1"),
                p![org_id],
            )?;
        }
        Ok(self
            .conn
            .execute("DELETE FROM orgs WHERE id = ?1", p![org_id])?
            > 0)
    }

    /// A namespace deleted and created again within a second would get the revoked key of the
    /// one before (`namespace_key` names the creation second) and be born revoked: its creation
    /// time moves on to a second whose key is free.
    pub fn insert_namespace(&self, name: &str, org_id: i64, public: bool) -> Result<()> {
        self.policy_changed()?;
        let mut created = now();
        while self
            .conn
            .query_opt(
                "SELECT seq FROM revocations WHERE key = ?1",
                p![namespace_key(name, org_id, created)],
                |r| r.get::<i64>(0),
            )?
            .is_some()
        {
            created += 1;
        }
        self.conn.execute(
            "INSERT INTO namespaces (name, org_id, public, created_at) VALUES (?1, ?2, ?3, ?4)",
            p![name, org_id, public, created],
        )?;
        Ok(())
    }

    /// Turning private revokes the public period's key, so that bearer tokens whose pull came
    /// only from publicness stop at once; turning public starts a new period with a new key.
    pub fn set_namespace_public(&self, name: &str, public: bool) -> Result<bool> {
        let Some(ns) = self.reader().namespace(name)? else {
            return Ok(false);
        };
        self.policy_changed()?;
        if ns.public && !public {
            self.revoke(&public_key(name, ns.org_id, ns.created_at, ns.public_gen))?;
        }
        let generation = if !ns.public && public {
            ns.public_gen + 1
        } else {
            ns.public_gen
        };
        self.conn.execute(
            "UPDATE namespaces SET public = ?2, public_gen = ?3 WHERE name = ?1",
            p![name, public, generation],
        )?;
        Ok(true)
    }

    /// Deletes a namespace with its repositories (content goes to GC) and the bindings scoped to
    /// it, so that a namespace or organization created later under the name starts empty.
    pub fn delete_namespace(&self, name: &str) -> Result<bool> {
        self.forget_object(&format!("public:{name}"))?;
        self.policy_changed()?;
        let prefix = format!("{name}/");
        let found: Option<(i64, i64)> = self.conn.query_opt(
            "SELECT org_id, created_at FROM namespaces WHERE name = ?1",
            p![name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let Some((org_id, created_at)) = found else {
            return Ok(false);
        };
        self.revoke(&namespace_key(name, org_id, created_at))?;
        self.delete_repositories_in(name)?;
        self.delete_bindings_where(
            "org_id = ?1 AND ((scope_kind = 'namespace' AND scope = ?2)
             OR (scope_kind = 'repository' AND substr(scope, 1, length(?3)) = ?3))",
            p![org_id, name, prefix.as_str()],
        )?;
        Ok(self
            .conn
            .execute("DELETE FROM namespaces WHERE name = ?1", p![name])?
            > 0)
    }

    pub fn set_membership(&self, org_id: i64, user_id: i64, role: &str) -> Result<()> {
        self.policy_changed()?;
        let before: Option<String> = self.conn.query_opt(
            "SELECT role FROM memberships WHERE org_id = ?1 AND user_id = ?2",
            p![org_id, user_id],
            |r| r.get(0),
        )?;
        if before.as_deref() == Some("owner") && role != "owner" {
            self.bump_policy(&format!("user:{user_id}"))?;
        }
        self.conn.execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES (?1, ?2, ?3)
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role",
            p![org_id, user_id, role],
        )?;
        Ok(())
    }

    /// Invites user `user_id` to `org_id` with `role` (replacing an earlier invitation).
    pub fn invite(&self, org_id: i64, user_id: i64, role: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO invitations (org_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role, created_at = excluded.created_at",
            p![org_id, user_id, role, now()],
        )?;
        Ok(())
    }

    /// Takes user `user_id`'s invitation to `org_id` away: the role it offered, if there was one.
    pub fn take_invitation(&self, org_id: i64, user_id: i64) -> Result<Option<String>> {
        let role: Option<String> = self.conn.query_opt(
            "SELECT role FROM invitations WHERE org_id = ?1 AND user_id = ?2",
            p![org_id, user_id],
            |r| r.get(0),
        )?;
        self.conn.execute(
            "DELETE FROM invitations WHERE org_id = ?1 AND user_id = ?2",
            p![org_id, user_id],
        )?;
        Ok(role)
    }

    /// Removes a member with their bindings in the organization; their registry tokens end.
    pub fn delete_membership(&self, org_id: i64, user_id: i64) -> Result<bool> {
        self.policy_changed()?;
        let removed = self.conn.execute(
            "DELETE FROM memberships WHERE org_id = ?1 AND user_id = ?2",
            p![org_id, user_id],
        )? > 0;
        self.forget_object(&member_key(org_id, user_id))?;
        self.delete_bindings_where(
            "org_id = ?1 AND subject_kind = 'user' AND subject_id = ?2",
            p![org_id, user_id],
        )?;
        self.bump_policy(&format!("user:{user_id}"))?;
        Ok(removed)
    }

    fn subjects_of_role(&self, org_id: i64, role: &str) -> Result<Vec<(String, i64)>> {
        self.conn.query(
            "SELECT DISTINCT subject_kind, subject_id FROM bindings WHERE org_id = ?1 AND role = ?2",
            p![org_id, role],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Adds a trust (its row's id and creation time are set here); `false` if the robot already
    /// has one of that name.
    pub fn insert_trust(&self, t: &TrustRow) -> Result<bool> {
        Ok(self.conn.execute(
            "INSERT INTO robot_trusts (robot_id, name, issuer, subject, audience, claims, jwks, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            p![t.robot_id, t.name.as_str(), t.issuer.as_str(), t.subject.as_str(), t.audience.as_deref(), t.claims.as_str(), t.jwks.as_deref(), now()],
        )? > 0)
    }

    /// Deletes a trust; the tokens issued through it are revoked with it.
    pub fn delete_trust(&self, robot_id: i64, name: &str) -> Result<bool> {
        let id: Option<i64> = self.conn.query_opt(
            "SELECT id FROM robot_trusts WHERE robot_id = ?1 AND name = ?2",
            p![robot_id, name],
            |r| r.get(0),
        )?;
        let Some(id) = id else { return Ok(false) };
        self.delete_trust_by_id(id)
    }

    fn delete_trust_by_id(&self, id: i64) -> Result<bool> {
        let deleted = self
            .conn
            .execute("DELETE FROM robot_trusts WHERE id = ?1", p![id])?
            > 0;
        self.forget_object(&format!("trust:{id}"))?;
        self.revoke(&format!("trust:{id}"))?;
        Ok(deleted)
    }

    /// The id of the trust just inserted for `robot_id` under `name`.
    pub fn trust_id(&self, robot_id: i64, name: &str) -> Result<Option<i64>> {
        self.conn.query_opt(
            "SELECT id FROM robot_trusts WHERE robot_id = ?1 AND name = ?2",
            p![robot_id, name],
            |r| r.get(0),
        )
    }

    pub fn touch_trust(&self, id: i64, at: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE robot_trusts SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            p![id, at],
        )?;
        Ok(())
    }

    pub fn insert_robot(&self, org_id: i64, name: &str, description: Option<&str>) -> Result<i64> {
        self.conn.value(
            "INSERT INTO robots (org_id, name, description, created_at) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            p![org_id, name, description, now()],
        )
    }

    /// Deletes a robot with its credentials, the credentials it created, and its bindings; its
    /// id is revoked for bearer tokens.
    pub fn delete_robot(&self, robot_id: i64) -> Result<bool> {
        let deleted = self
            .conn
            .execute("DELETE FROM robots WHERE id = ?1", p![robot_id])?
            > 0;
        self.delete_credentials_where("robot_id = ?1", p![robot_id])?;
        self.delete_credentials_where("creator = ?1", p![format!("robot:{robot_id}")])?;
        self.delete_bindings_where("subject_kind = 'robot' AND subject_id = ?1", p![robot_id])?;
        let trusts: Vec<i64> = self.conn.query(
            "SELECT id FROM robot_trusts WHERE robot_id = ?1",
            p![robot_id],
            |r| r.get(0),
        )?;
        for t in trusts {
            self.delete_trust_by_id(t)?;
        }
        self.forget_object(&format!("robot:{robot_id}"))?;
        // Everything the robot made (credentials, trusts, robots, bindings) ends with it.
        self.revoke(&format!("robot:{robot_id}"))?;
        Ok(deleted)
    }

    /// Deletes the bindings matching `condition` (on `?1`, `?2`, ...), moving their subjects'
    /// policy epochs (their registry tokens end) and forgetting the bindings' lineage.
    fn delete_bindings_where(
        &self,
        condition: &str,
        args: &[&dyn super::sql::Param],
    ) -> Result<u64> {
        let gone: Vec<(i64, String, String, i64)> = self.conn.query(
            &format!(
                "SELECT org_id, name, subject_kind, subject_id FROM bindings WHERE {condition}"
            ),
            args,
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        if gone.is_empty() {
            return Ok(0);
        }
        self.policy_changed()?;
        for (org_id, name, kind, id) in &gone {
            self.conn.execute(
                "DELETE FROM bindings WHERE org_id = ?1 AND name = ?2",
                p![*org_id, name.as_str()],
            )?;
            self.forget_object(&binding_key(*org_id, name))?;
            self.bump_policy(&format!("{kind}:{id}"))?;
        }
        Ok(gone.len() as u64)
    }

    /// Ends the registry tokens issued to `subject` under its current policy epoch.
    pub fn bump_policy(&self, subject: &str) -> Result<()> {
        // A group's tokens are its users': each of them loses what the group gave.
        if let Some(gid) = subject.strip_prefix("group:") {
            for uid in self.reader().users_of_group(gid.parse().unwrap_or(-1))? {
                self.bump_policy(&format!("user:{uid}"))?;
            }
            return Ok(());
        }
        let epoch = self.reader().policy_epoch(subject)?;
        self.conn.execute(
            "INSERT INTO policy_epochs (subject, epoch) VALUES (?1, ?2)
             ON CONFLICT (subject) DO UPDATE SET epoch = excluded.epoch",
            p![subject, epoch + 1],
        )?;
        self.revoke(&format!("pol:{subject}:{epoch}"))
    }

    /// Records that `object` (a revocation key: `cred:`, `fam:`, `trust:`, `robot:`,
    /// `binding:`) exists because of each of `sources`: revoking any of them ends it.
    ///
    /// Every source must still be alive, checked in this transaction: a request through a
    /// credential that was deleted or rotated a moment ago (and that a node still remembers)
    /// makes nothing (`Error::SourceEnded`).
    pub fn record_lineage(&self, object: &str, sources: &[String]) -> Result<()> {
        for src in sources {
            if !self.source_alive(src)? {
                return Err(super::error::Error::SourceEnded);
            }
        }
        for src in sources.iter().filter(|s| s.as_str() != object) {
            self.conn.execute(
                "INSERT INTO lineage (source, object) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                p![src.as_str(), object],
            )?;
        }
        Ok(())
    }

    /// Whether the thing a revocation key names still stands: the credential (not revoked, not
    /// expired), its generation (current, or the previous one while an overlap lasts), the
    /// session (a live refresh token), the trust, the robot, the password epoch.
    fn source_alive(&self, key: &str) -> Result<bool> {
        let now = now();
        let Some((kind, rest)) = key.split_once(':') else {
            return Ok(true);
        };
        match kind {
            "cred" => self.conn.exists(
                "SELECT 1 FROM credentials WHERE id = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                p![rest, now],
            ),
            "gen" => {
                let Some((id, n)) = rest.rsplit_once(':') else {
                    return Ok(false);
                };
                let n: i64 = n.parse().unwrap_or(-1);
                self.conn.exists(
                    "SELECT 1 FROM credentials WHERE id = ?1 AND revoked_at IS NULL
                     AND (generation = ?2 OR (generation = ?2 + 1 AND previous_until > ?3))",
                    p![id, n, now],
                )
            }
            "fam" => self.conn.exists(
                "SELECT 1 FROM credentials WHERE family = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                p![rest, now],
            ),
            "trust" => self.conn.exists(
                "SELECT 1 FROM robot_trusts WHERE id = ?1",
                p![rest.parse::<i64>().unwrap_or(-1)],
            ),
            "robot" => self.conn.exists(
                "SELECT 1 FROM robots WHERE id = ?1",
                p![rest.parse::<i64>().unwrap_or(-1)],
            ),
            "sso" => {
                let Some((uid, epoch)) = rest.split_once(':') else {
                    return Ok(false);
                };
                self.conn.exists(
                    "SELECT 1 FROM sso_links WHERE user_id = ?1 AND epoch = ?2",
                    p![uid.parse::<i64>().unwrap_or(-1), epoch.parse::<i64>().unwrap_or(-1)],
                )
            }
            "pw" => {
                let Some((uid, epoch)) = rest.split_once(':') else {
                    return Ok(false);
                };
                self.conn.exists(
                    "SELECT 1 FROM users WHERE id = ?1 AND password_epoch = ?2",
                    p![uid.parse::<i64>().unwrap_or(-1), epoch.parse::<i64>().unwrap_or(-1)],
                )
            }
            _ => Ok(true),
        }
    }

    /// Drops the lineage of an object that is gone or was rewritten (what it depended on).
    pub fn forget_lineage(&self, object: &str) -> Result<()> {
        self.forget_object(object)
    }

    /// Drops the lineage of an object that is gone (what it depended on).
    fn forget_object(&self, object: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM lineage WHERE object = ?1", p![object])?;
        Ok(())
    }

    /// Ends every object derived from `key`, transitively: each one's own deletion revokes its
    /// key, which ends what was derived from it in turn.
    fn end_derived(&self, key: &str) -> Result<()> {
        let objects: Vec<String> = self.conn.query(
            "SELECT object FROM lineage WHERE source = ?1",
            p![key],
            |r| r.get(0),
        )?;
        if objects.is_empty() {
            return Ok(());
        }
        self.conn
            .execute("DELETE FROM lineage WHERE source = ?1", p![key])?;
        for o in objects {
            self.end_object(&o)?;
        }
        Ok(())
    }

    fn end_object(&self, object: &str) -> Result<()> {
        match object.split_once(':') {
            Some(("cred", id)) => self.delete_credential(id).map(drop),
            Some(("fam", f)) => self.revoke_family(f),
            Some(("trust", id)) => match id.parse() {
                Ok(id) => self.delete_trust_by_id(id).map(drop),
                Err(_) => Ok(()),
            },
            Some(("robot", id)) => match id.parse() {
                Ok(id) => self.delete_robot(id).map(drop),
                Err(_) => Ok(()),
            },
            // A generation made through a credential: the secret dies (the credential is
            // deleted when it is its current one; an overlap's previous one just stops).
            Some(("gen", rest)) => {
                let Some((id, n)) = rest.rsplit_once(':') else {
                    return Ok(());
                };
                let Ok(n) = n.parse::<i64>() else {
                    return Ok(());
                };
                let current: Option<i64> = self.conn.query_opt(
                    "SELECT generation FROM credentials WHERE id = ?1",
                    p![id],
                    |r| r.get(0),
                )?;
                match current {
                    Some(g) if g == n => self.delete_credential(id).map(drop),
                    Some(g) if g == n + 1 => {
                        self.conn.execute(
                            "UPDATE credentials SET previous_hash = NULL, previous_until = NULL WHERE id = ?1",
                            p![id],
                        )?;
                        self.revoke(object)
                    }
                    _ => Ok(()),
                }
            }
            Some(("member", rest)) => match rest.split_once(':') {
                Some((org, user)) => match (org.parse::<i64>(), user.parse::<i64>()) {
                    (Ok(org), Ok(user)) => self.delete_membership(org, user).map(drop),
                    _ => Ok(()),
                },
                None => Ok(()),
            },
            Some(("role", rest)) => match rest.split_once('/') {
                Some((org, name)) => match org.parse::<i64>() {
                    Ok(org) => self.delete_role(org, name).map(drop),
                    Err(_) => Ok(()),
                },
                None => Ok(()),
            },
            Some(("public", ns)) => self.set_namespace_public(ns, false).map(drop),
            Some(("user", id)) => match id.parse() {
                Ok(id) => self.delete_user(id).map(drop),
                Err(_) => Ok(()),
            },
            // A password set through a credential: cleared, and the sessions opened with it end.
            Some(("password", rest)) => {
                let Some((uid, epoch)) = rest.split_once(':') else {
                    return Ok(());
                };
                let (Ok(uid), Ok(epoch)) = (uid.parse::<i64>(), epoch.parse::<i64>()) else {
                    return Ok(());
                };
                let cleared = self.conn.execute(
                    "UPDATE users SET password_hash = NULL, password_epoch = password_epoch + 1
                     WHERE id = ?1 AND password_epoch = ?2",
                    p![uid, epoch],
                )? > 0;
                if cleared {
                    self.revoke(&format!("pw:{uid}:{epoch}"))?;
                }
                Ok(())
            }
            Some(("binding", rest)) => match rest.split_once('/') {
                Some((org, name)) => match org.parse::<i64>() {
                    Ok(org) => self
                        .delete_bindings_where("org_id = ?1 AND name = ?2", p![org, name])
                        .map(drop),
                    Err(_) => Ok(()),
                },
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Deletes every credential matching `condition` (on `?1`) with its descendants.
    fn delete_credentials_where(
        &self,
        condition: &str,
        arg: &[&dyn super::sql::Param],
    ) -> Result<()> {
        let ids: Vec<String> = self.conn.query(
            &format!("SELECT id FROM credentials WHERE {condition}"),
            arg,
            |r| r.get(0),
        )?;
        for id in ids {
            self.delete_credential(&id)?;
        }
        Ok(())
    }

    /// Marks a change of who may do what (roles, bindings, memberships, namespaces) in the
    /// revocation log, whose sequence every node follows: nodes drop the grants they cached.
    pub(super) fn policy_changed(&self) -> Result<()> {
        self.revoke(POLICY_CHANGED)
    }

    /// Adds a key to the revocation log and ends everything derived from it (`lineage`).
    pub fn revoke(&self, key: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO revocations (key, at) VALUES (?1, ?2)",
            p![key, now()],
        )?;
        if key != POLICY_CHANGED {
            self.end_derived(key)?;
        }
        Ok(())
    }

    /// Ends a refresh-token family: every member is marked revoked (kept, so that a reuse is
    /// recognised until it expires) and the family's bearer tokens are revoked.
    pub fn revoke_family(&self, family: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE credentials SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
            p![family, now()],
        )?;
        let key = format!("fam:{family}");
        self.forget_object(&key)?;
        self.revoke(&key)
    }

    /// Rotation: marks the refresh token `old` used and stores its successor, only if `old` was
    /// still unused (two concurrent refreshes: exactly one wins).
    pub fn rotate_refresh(&self, old: &str, new: &CredentialRow) -> Result<bool> {
        let won = self.conn.execute(
            "UPDATE credentials SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            p![old, now()],
        )? > 0;
        if won {
            self.insert_credential(new)?;
        }
        Ok(won)
    }

    /// Removes revocation keys and spent refresh tokens older than `before`.
    pub fn prune_revocations(&self, before: i64) -> Result<()> {
        // Content changes matter for seconds (see `cache`).
        self.conn.execute(
            "DELETE FROM revocations WHERE at < ?1 OR (substr(key, 1, 8) = 'content:' AND at < ?2)",
            p![before, now() - super::cache::KEEP_CONTENT_KEYS],
        )?;
        self.conn.execute(
            "DELETE FROM credentials WHERE kind = 'refresh_token' AND expires_at IS NOT NULL AND expires_at < ?1",
            p![before],
        )?;
        // The traces of revoked credentials.
        self.conn.execute(
            "DELETE FROM credentials WHERE kind <> 'refresh_token' AND revoked_at IS NOT NULL AND revoked_at < ?1",
            p![before],
        )?;
        Ok(())
    }

    pub fn insert_credential(&self, c: &CredentialRow) -> Result<()> {
        self.conn.execute(
            &format!(
                "INSERT INTO credentials ({CREDENTIAL_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
            ),
            p![
                c.id,
                c.kind,
                c.name,
                c.user_id,
                c.robot_id,
                c.org_id,
                c.secret_hash,
                c.readwrite,
                c.description,
                c.created_at,
                c.expires_at,
                c.revoked_at,
                c.last_used_at,
                c.last_used_addr,
                c.last_used_agent,
                c.source,
                c.family,
                c.creator,
                c.previous_hash,
                c.previous_until,
                c.generation
            ],
        )?;
        Ok(())
    }

    /// Deletes a credential and everything that came from it (sessions, refresh-token families
    /// and credentials created through it, recursively), and revokes their bearer tokens.
    /// Gives credential `id` a new secret; the old one is accepted until `previous_until`
    /// (`None`: not at all).
    ///
    /// The credential moves to a new generation. What the generation before the last ended
    /// with (an overlap still running) ends now; the last one ends now when there is no overlap,
    /// else when the overlap does (`end_overlaps`).
    pub fn rotate_credential(
        &self,
        id: &str,
        new_hash: &[u8],
        previous_until: Option<i64>,
    ) -> Result<bool> {
        let found: Option<(i64, Option<i64>)> = self.conn.query_opt(
            "SELECT generation, previous_until FROM credentials WHERE id = ?1 AND revoked_at IS NULL",
            p![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let Some((generation, running)) = found else {
            return Ok(false);
        };
        if running.is_some() && generation > 0 {
            self.revoke(&generation_key(id, generation - 1))?;
        }
        match previous_until {
            Some(until) => self.conn.execute(
                "UPDATE credentials SET previous_hash = secret_hash, previous_until = ?3, secret_hash = ?2, \
                 generation = generation + 1 WHERE id = ?1",
                p![id, new_hash, until],
            )?,
            None => {
                self.revoke(&generation_key(id, generation))?;
                self.conn.execute(
                    "UPDATE credentials SET previous_hash = NULL, previous_until = NULL, secret_hash = ?2, \
                     generation = generation + 1 WHERE id = ?1",
                    p![id, new_hash],
                )?
            }
        };
        Ok(true)
    }

    /// Ends what was made through credentials that expired by `at` (nothing outlives its
    /// source, expiry included): each expired credential's key is revoked, which ends its
    /// derived sessions, keys, robots, trusts and bindings; an expired session ends its family.
    /// At most `limit` per call. The number handled.
    pub fn end_expired(&self, at: i64, limit: i64) -> Result<usize> {
        let expired: Vec<(String, String, Option<String>, i64)> = self.conn.query(
            "SELECT id, kind, family, generation FROM credentials
             WHERE expires_at IS NOT NULL AND ended_at IS NULL AND expires_at <= ?1 LIMIT ?2",
            p![at, limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        for (id, kind, family, generation) in &expired {
            self.conn.execute(
                "UPDATE credentials SET ended_at = ?2 WHERE id = ?1",
                p![id.as_str(), at],
            )?;
            match (kind.as_str(), family) {
                // A refresh token that expired unused was its family's live one: the session
                // is over (a rotated one was already spent).
                ("refresh_token", Some(f)) => {
                    let live: bool = self.conn.exists(
                        "SELECT 1 FROM credentials WHERE family = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                        p![f.as_str(), at],
                    )?;
                    if !live {
                        self.revoke_family(f)?;
                    }
                }
                ("refresh_token", None) => {}
                _ => {
                    for g in 0..=*generation {
                        self.end_derived(&generation_key(id, g))?;
                    }
                    self.revoke(&format!("cred:{id}"))?;
                }
            }
        }
        Ok(expired.len())
    }

    /// Ends the previous generation of every credential whose rotation overlap has ended:
    /// its secret stops and what it made ends. The number ended.
    pub fn end_overlaps(&self, at: i64) -> Result<usize> {
        let ended = self.reader().ended_overlaps(at)?;
        for (id, generation) in &ended {
            self.conn.execute(
                "UPDATE credentials SET previous_hash = NULL, previous_until = NULL WHERE id = ?1",
                p![id.as_str()],
            )?;
            self.revoke(&generation_key(id, generation - 1))?;
        }
        Ok(ended.len())
    }

    /// Deletes a credential (its source ended, or its owner went) and ends what was made
    /// through it; `false` when there is no such credential.
    pub fn delete_credential(&self, id: &str) -> Result<bool> {
        self.end_credential(id, false)
    }

    /// Revokes a credential: it stops working at once and what was made through it ends, but
    /// its row stays, marked revoked, as a trace in its owner's lists until
    /// `prune_revocations`; `false` when there is no such live credential.
    pub fn revoke_credential(&self, id: &str) -> Result<bool> {
        self.end_credential(id, true)
    }

    fn end_credential(&self, id: &str, keep_trace: bool) -> Result<bool> {
        let found: Option<(Option<String>, i64)> = self.conn.query_opt(
            if keep_trace {
                "SELECT family, generation FROM credentials WHERE id = ?1 AND revoked_at IS NULL"
            } else {
                "SELECT family, generation FROM credentials WHERE id = ?1"
            },
            p![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let Some((family, generation)) = found else {
            return Ok(false);
        };
        if keep_trace {
            self.conn.execute(
                "UPDATE credentials SET revoked_at = ?2, previous_until = NULL WHERE id = ?1",
                p![id, now()],
            )?;
        } else {
            self.conn
                .execute("DELETE FROM credentials WHERE id = ?1", p![id])?;
        }
        let key = format!("cred:{id}");
        self.forget_object(&key)?;
        self.conn.execute(
            "DELETE FROM lineage WHERE object >= ?1 AND object < ?2",
            p![format!("gen:{id}:"), format!("gen:{id};")],
        )?;
        // What was made through any generation of it ends with it.
        for g in 0..=generation {
            self.end_derived(&generation_key(id, g))?;
        }
        self.revoke(&key)?;
        if let Some(f) = family {
            self.revoke_family(&f)?;
        }
        Ok(true)
    }

    /// Ends every session opened with a password (`pw:<uid>:<epoch>`) or derived from a
    /// credential (`cred:<id>`), and everything else made through it.
    pub fn revoke_source(&self, key: &str) -> Result<()> {
        self.revoke(key)
    }

    /// Records when and from where a credential was last used (flushed in batches).
    pub fn touch_credential(
        &self,
        id: &str,
        at: i64,
        addr: Option<&str>,
        agent: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE credentials SET last_used_at = ?2, last_used_addr = ?3, last_used_agent = ?4
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2)",
            p![id, at, addr, agent],
        )?;
        Ok(())
    }

    /// Creates or replaces a custom role; the subjects bound to a replaced one lose their
    /// registry tokens (the rules may have shrunk).
    pub fn put_role(&self, org_id: i64, name: &str, rules: &str) -> Result<()> {
        self.policy_changed()?;
        for (kind, id) in self.subjects_of_role(org_id, name)? {
            self.bump_policy(&format!("{kind}:{id}"))?;
        }
        self.conn.execute(
            "INSERT INTO roles (org_id, name, rules, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (org_id, name) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
            p![org_id, name, rules, now()],
        )?;
        Ok(())
    }

    /// Deletes a custom role with its bindings, so that a role created later under the name
    /// grants nothing to anyone.
    pub fn delete_role(&self, org_id: i64, name: &str) -> Result<bool> {
        // Only a role that exists takes its bindings with it.
        if self.reader().role(org_id, name)?.is_none() {
            return Ok(false);
        }
        self.policy_changed()?;
        self.delete_bindings_where("org_id = ?1 AND role = ?2", p![org_id, name])?;
        self.forget_object(&role_key(org_id, name))?;
        Ok(self.conn.execute(
            "DELETE FROM roles WHERE org_id = ?1 AND name = ?2",
            p![org_id, name],
        )? > 0)
    }

    /// Creates or replaces a binding; a replaced one's subject loses its registry tokens, and
    /// the binding's lineage becomes `sources` (what its creator came from).
    pub fn put_binding(&self, b: &BindingRow, sources: &[String]) -> Result<()> {
        self.policy_changed()?;
        if let Some(old) = self.reader().binding(b.org_id, &b.name)? {
            self.bump_policy(&format!("{}:{}", old.subject_kind, old.subject_id))?;
        }
        let key = binding_key(b.org_id, &b.name);
        self.forget_object(&key)?;
        self.record_lineage(&key, sources)?;
        self.conn.execute(
            "INSERT INTO bindings (org_id, name, role, subject_kind, subject_id, scope_kind, scope, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
             ON CONFLICT (org_id, name) DO UPDATE SET role = excluded.role, subject_kind = excluded.subject_kind,
             subject_id = excluded.subject_id, scope_kind = excluded.scope_kind, scope = excluded.scope,
             updated_at = excluded.updated_at",
            p![b.org_id, b.name, b.role, b.subject_kind, b.subject_id, b.scope_kind, b.scope, now()],
        )?;
        Ok(())
    }

    pub fn delete_binding(&self, org_id: i64, name: &str) -> Result<bool> {
        Ok(self.delete_bindings_where("org_id = ?1 AND name = ?2", p![org_id, name])? > 0)
    }

    pub fn insert_audit(&self, e: &AuditRow) -> Result<i64> {
        self.conn.value(
            "INSERT INTO audit_events (at, actor, action, outcome, target, client_addr, detail, attempted, count, org)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
            p![
                e.at,
                e.actor,
                e.action,
                e.outcome,
                e.target,
                e.client_addr,
                e.detail,
                e.attempted,
                e.count,
                e.org
            ],
        )
    }

    /// Stores a token key unless one with this kid exists (nodes starting together).
    pub fn insert_token_key(
        &self,
        kid: &str,
        kind: &str,
        created: i64,
        cert_pem: &str,
        sealed_key: &[u8],
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO token_keys (kid, kind, created, cert_pem, sealed_key) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            p![kid, kind, created, cert_pem, sealed_key],
        )?;
        Ok(())
    }

    pub fn delete_token_key(&self, kid: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM token_keys WHERE kid = ?1", p![kid])?
            > 0)
    }

    /// Adds a failure to `key` in minute `win`; the count every node has added so far.
    pub fn add_login_failure(&self, key: &str, win: i64) -> Result<i64> {
        self.conn.value(
            "INSERT INTO login_failures (key, win, count) VALUES (?1, ?2, 1)
             ON CONFLICT (key, win) DO UPDATE SET count = login_failures.count + 1
             RETURNING count",
            p![key, win],
        )
    }

    /// Forgets failures of minutes before `win`.
    pub fn prune_login_failures(&self, win: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_failures WHERE win < ?1", p![win])?;
        Ok(())
    }

    /// Adds to the count of an aggregated audit row.
    pub fn add_audit_count(&self, id: i64, add: i64, attempted: Option<&str>) -> Result<()> {
        self.conn.execute(
            "UPDATE audit_events SET count = count + ?2, attempted = COALESCE(?3, attempted) WHERE id = ?1",
            p![id, add, attempted],
        )?;
        Ok(())
    }
}
