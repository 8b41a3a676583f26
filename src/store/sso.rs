//! Single sign-on: users linked to an OpenID provider's (issuer, subject), the groups the
//! provider last said they are in, and the sessions opened through a provider with the provider's
//! refresh token (sealed by the caller). Written once for both engines (see `sql.rs`).

use super::error::Result;
use super::model::{SsoLinkRow, SsoSessionRow, now};
use super::sql::{Reader, Row, Writer, p};

fn link(r: &Row<'_>) -> Result<SsoLinkRow> {
    Ok(SsoLinkRow {
        issuer: r.get(0)?,
        subject: r.get(1)?,
        provider: r.get(2)?,
        user_id: r.get(3)?,
        epoch: r.get(4)?,
        groups_read_at: r.get(5)?,
    })
}
const LINK_COLS: &str = "issuer, subject, provider, user_id, epoch, groups_read_at";

fn session(r: &Row<'_>) -> Result<SsoSessionRow> {
    Ok(SsoSessionRow {
        family: r.get(0)?,
        user_id: r.get(1)?,
        provider: r.get(2)?,
        refresh_sealed: r.get(3)?,
        read_at: r.get(4)?,
    })
}
const SESSION_COLS: &str = "family, user_id, provider, refresh_sealed, read_at";

/// A link due for a reading: (user id, provider, sealed refresh token, read_at).
pub(crate) type DueLink = (i64, String, Vec<u8>, i64);

/// The revocation key of a user's sign-ins through a provider (`sso:<user_id>:<epoch>`).
pub fn sso_key(user_id: i64, epoch: i64) -> String {
    format!("sso:{user_id}:{epoch}")
}

impl Reader<'_> {
    pub fn sso_link(&self, issuer: &str, subject: &str) -> Result<Option<SsoLinkRow>> {
        self.conn.query_opt(
            &format!("SELECT {LINK_COLS} FROM sso_links WHERE issuer = ?1 AND subject = ?2"),
            p![issuer, subject],
            link,
        )
    }

    pub fn sso_link_of_user(&self, user_id: i64) -> Result<Option<SsoLinkRow>> {
        self.conn.query_opt(
            &format!("SELECT {LINK_COLS} FROM sso_links WHERE user_id = ?1"),
            p![user_id],
            link,
        )
    }

    pub fn sso_links(&self) -> Result<Vec<SsoLinkRow>> {
        self.conn.query(
            &format!("SELECT {LINK_COLS} FROM sso_links ORDER BY user_id"),
            p![],
            link,
        )
    }

    pub fn group_id(&self, name: &str) -> Result<Option<i64>> {
        self.conn
            .query_opt("SELECT id FROM idp_groups WHERE name = ?1", p![name], |r| {
                r.get(0)
            })
    }

    pub fn group_name(&self, id: i64) -> Result<Option<String>> {
        self.conn
            .query_opt("SELECT name FROM idp_groups WHERE id = ?1", p![id], |r| {
                r.get(0)
            })
    }

    /// The groups a user is in, as (id, name), by name.
    pub fn groups_of_user(&self, user_id: i64) -> Result<Vec<(i64, String)>> {
        self.conn.query(
            "SELECT g.id, g.name FROM user_groups ug JOIN idp_groups g ON g.id = ug.group_id
             WHERE ug.user_id = ?1 ORDER BY g.name",
            p![user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    pub fn users_of_group(&self, group_id: i64) -> Result<Vec<i64>> {
        self.conn.query(
            "SELECT user_id FROM user_groups WHERE group_id = ?1 ORDER BY user_id",
            p![group_id],
            |r| r.get(0),
        )
    }

    /// Sessions whose groups were last read before `before`, oldest first.
    pub fn sso_sessions_due(&self, before: i64, limit: i64) -> Result<Vec<SsoSessionRow>> {
        self.conn.query(
            &format!(
                "SELECT {SESSION_COLS} FROM sso_sessions WHERE read_at < ?1 ORDER BY read_at LIMIT ?2"
            ),
            p![before, limit],
            session,
        )
    }

    pub fn sso_session(&self, family: &str) -> Result<Option<SsoSessionRow>> {
        self.conn.query_opt(
            &format!("SELECT {SESSION_COLS} FROM sso_sessions WHERE family = ?1"),
            p![family],
            session,
        )
    }

    /// Users with groups (or the admin flag) whose provider has not confirmed them since
    /// `before`, with their provider.
    pub fn users_with_stale_groups(&self, before: i64) -> Result<Vec<(i64, String)>> {
        self.conn.query(
            "SELECT l.user_id, l.provider FROM sso_links l WHERE l.groups_read_at < ?1
             AND (EXISTS (SELECT 1 FROM user_groups ug WHERE ug.user_id = l.user_id)
                  OR EXISTS (SELECT 1 FROM users u WHERE u.id = l.user_id AND u.admin))
             ORDER BY l.user_id LIMIT 1000",
            p![before],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Links to read with their own refresh token: the user has no provider session, and the
    /// link was last read before `before`. (user id, provider, sealed token, read_at)
    pub fn sso_links_due(&self, before: i64, limit: i64) -> Result<Vec<DueLink>> {
        self.conn.query(
            "SELECT l.user_id, l.provider, l.refresh_sealed, l.read_at FROM sso_links l
             WHERE l.refresh_sealed IS NOT NULL AND l.read_at < ?1
             AND NOT EXISTS (SELECT 1 FROM sso_sessions s WHERE s.user_id = l.user_id)
             ORDER BY l.read_at LIMIT ?2",
            p![before, limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    }

    /// Whether a user holds a live credential other than a session (an API key, a registry
    /// token, a robot's token they made does not count: it is the robot's).
    pub fn has_live_keys(&self, user_id: i64) -> Result<bool> {
        self.conn.exists(
            "SELECT 1 FROM credentials WHERE user_id = ?1 AND kind <> 'refresh_token'
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
            p![user_id, now()],
        )
    }

    /// Whether a provider session of the user remains, or their link holds a refresh token.
    pub fn sso_still_asked(&self, user_id: i64) -> Result<bool> {
        self.conn.exists(
            "SELECT 1 FROM sso_links l WHERE l.user_id = ?1 AND (l.refresh_sealed IS NOT NULL
             OR EXISTS (SELECT 1 FROM sso_sessions s WHERE s.user_id = ?1))",
            p![user_id],
        )
    }

    /// Whether `id` (a sign-in's state, a device code, a CLI code) was used already.
    pub fn sso_used(&self, id: &str) -> Result<bool> {
        self.conn
            .exists("SELECT 1 FROM sso_used WHERE id = ?1", p![id])
    }
}

impl Writer<'_> {
    pub fn insert_sso_link(&self, l: &SsoLinkRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sso_links (issuer, subject, provider, user_id, epoch, groups_read_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            p![l.issuer, l.subject, l.provider, l.user_id, l.epoch, l.groups_read_at, now()],
        )?;
        Ok(())
    }

    /// The id of group `name`, made when no binding or user named it before.
    pub fn group_id_or_new(&self, name: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO idp_groups (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            p![name, now()],
        )?;
        self.conn
            .value("SELECT id FROM idp_groups WHERE name = ?1", p![name])
    }

    /// Replaces a provider user's groups (and, when the provider names an admin group, whether
    /// they are a server admin) with what the provider just said. When anything changed, the
    /// user's registry tokens end (policy epoch) and every node drops its cached grants.
    /// Returns whether anything changed.
    pub fn set_user_groups(
        &self,
        user_id: i64,
        groups: &[String],
        admin: Option<bool>,
    ) -> Result<bool> {
        let before: Vec<String> = self
            .reader()
            .groups_of_user(user_id)?
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        let mut after: Vec<String> = groups.to_vec();
        after.sort();
        after.dedup();
        let mut changed = before != after;
        if changed {
            self.conn
                .execute("DELETE FROM user_groups WHERE user_id = ?1", p![user_id])?;
            for g in &after {
                let id = self.group_id_or_new(g)?;
                self.conn.execute(
                    "INSERT INTO user_groups (user_id, group_id) VALUES (?1, ?2)",
                    p![user_id, id],
                )?;
            }
        }
        if let Some(admin) = admin {
            changed |= self.conn.execute(
                "UPDATE users SET admin = ?2 WHERE id = ?1 AND admin <> ?2",
                p![user_id, admin],
            )? > 0;
        }
        self.conn.execute(
            "UPDATE sso_links SET groups_read_at = ?2 WHERE user_id = ?1",
            p![user_id, now()],
        )?;
        if changed {
            self.policy_changed()?;
            self.bump_policy(&format!("user:{user_id}"))?;
        }
        Ok(changed)
    }

    /// Drops the groups of a user the provider has not confirmed within the bound, and the
    /// admin flag when the provider's admin group gave it (fail closed: what they granted ends
    /// until the provider is read again).
    pub fn drop_stale_groups(&self, user_id: i64, clear_admin: bool) -> Result<()> {
        let mut changed = self
            .conn
            .execute("DELETE FROM user_groups WHERE user_id = ?1", p![user_id])?
            > 0;
        if clear_admin {
            changed |= self.conn.execute(
                "UPDATE users SET admin = FALSE WHERE id = ?1 AND admin",
                p![user_id],
            )? > 0;
        }
        if changed {
            self.policy_changed()?;
            self.bump_policy(&format!("user:{user_id}"))?;
        }
        Ok(())
    }

    /// The provider refused the user (disabled, deleted, consent withdrawn): every session and
    /// key made through a sign-in ends (`sso:<id>:<epoch>` is revoked), and the groups go.
    pub fn sso_refused(&self, user_id: i64) -> Result<()> {
        let Some(l) = self.reader().sso_link_of_user(user_id)? else {
            return Ok(());
        };
        self.conn.execute(
            "UPDATE sso_links SET epoch = epoch + 1, refresh_sealed = NULL WHERE user_id = ?1",
            p![user_id],
        )?;
        self.conn
            .execute("DELETE FROM sso_sessions WHERE user_id = ?1", p![user_id])?;
        self.drop_stale_groups(user_id, true)?;
        self.revoke(&sso_key(user_id, l.epoch))
    }

    pub fn insert_sso_session(&self, s: &SsoSessionRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sso_sessions (family, user_id, provider, refresh_sealed, read_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            p![s.family, s.user_id, s.provider, s.refresh_sealed, s.read_at, now()],
        )?;
        Ok(())
    }

    /// Takes a due session for a reading (so two nodes never use one refresh token at once):
    /// whether this caller won it.
    pub fn claim_sso_session(&self, family: &str, read_at: i64, at: i64) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE sso_sessions SET read_at = ?3 WHERE family = ?1 AND read_at = ?2",
            p![family, read_at, at],
        )? > 0)
    }

    pub fn set_sso_refresh(&self, family: &str, sealed: Option<&[u8]>) -> Result<()> {
        self.conn.execute(
            "UPDATE sso_sessions SET refresh_sealed = ?2 WHERE family = ?1",
            p![family, sealed.map(<[u8]>::to_vec)],
        )?;
        Ok(())
    }

    pub fn delete_sso_session(&self, family: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sso_sessions WHERE family = ?1", p![family])?;
        Ok(())
    }

    /// Forgets the provider sessions whose berth session has ended (signed out, expired,
    /// revoked); the provider's refresh token of each goes to the user's link, so the provider
    /// is still asked about a user who keeps API keys. Also forgets used sign-in states that
    /// have expired and groups nothing names.
    pub fn prune_sso_sessions(&self) -> Result<u64> {
        let dead: Vec<(String, i64, Option<Vec<u8>>)> = self.conn.query(
            "SELECT family, user_id, refresh_sealed FROM sso_sessions WHERE NOT EXISTS
             (SELECT 1 FROM credentials c WHERE c.family = sso_sessions.family
              AND c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > ?1))
             ORDER BY created_at",
            p![now()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for (family, user_id, sealed) in &dead {
            if let Some(sealed) = sealed {
                self.conn.execute(
                    "UPDATE sso_links SET refresh_sealed = ?2, read_at = 0 WHERE user_id = ?1",
                    p![*user_id, sealed.clone()],
                )?;
            }
            self.delete_sso_session(family)?;
        }
        self.conn
            .execute("DELETE FROM sso_used WHERE expires_at < ?1", p![now()])?;
        self.conn.execute(
            "DELETE FROM idp_groups WHERE created_at < ?1
             AND NOT EXISTS (SELECT 1 FROM user_groups ug WHERE ug.group_id = idp_groups.id)
             AND NOT EXISTS (SELECT 1 FROM bindings b WHERE b.subject_kind = 'group' AND b.subject_id = idp_groups.id)",
            p![now() - 3600],
        )?;
        Ok(dead.len() as u64)
    }

    /// Marks `id` used until `expires_at`: whether this was its first use.
    pub fn use_sso_once(&self, id: &str, expires_at: i64) -> Result<bool> {
        Ok(self.conn.execute(
            "INSERT INTO sso_used (id, expires_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
            p![id, expires_at],
        )? > 0)
    }

    /// Takes a due link for a reading (one node at a time): whether this caller won it.
    pub fn claim_sso_link(&self, user_id: i64, read_at: i64, at: i64) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE sso_links SET read_at = ?3 WHERE user_id = ?1 AND read_at = ?2",
            p![user_id, read_at, at],
        )? > 0)
    }

    /// The link's provider refresh token (sealed), or none: the provider is no longer asked.
    pub fn set_sso_link_refresh(&self, user_id: i64, sealed: Option<&[u8]>) -> Result<()> {
        self.conn.execute(
            "UPDATE sso_links SET refresh_sealed = ?2 WHERE user_id = ?1",
            p![user_id, sealed.map(<[u8]>::to_vec)],
        )?;
        Ok(())
    }
}
