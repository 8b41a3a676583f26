//! People from an OpenID provider: a user is linked to the provider's (issuer, subject) and to
//! nothing else — never to an existing user by e-mail or name. The first sign-in makes the user
//! (just in time) with the name the provider's claim gives; when that name is taken, the first
//! free of `NAME-2` … `NAME-99`. The groups the provider names are stored at every sign-in and
//! every reading of the session; a binding may name a group (`group/NAME`).

use super::check::{Error, Result, check_name, check_text};
use super::model::User;
use crate::store::{MetadataStore, SsoLinkRow, SsoSessionRow, now};

/// What a provider said about a person at a sign-in or a reading of their session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProviderUser {
    /// The provider's name in the configuration.
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// The user name the configured claim gives (made to fit berth's names).
    pub name: String,
    pub groups: Vec<String>,
    /// Whether the user is in the provider's admin group (`None`: the provider names none).
    pub admin: Option<bool>,
}

/// A session opened through a provider, with the provider's refresh token (sealed).
#[derive(Debug, Clone)]
pub struct SsoSession {
    pub family: String,
    pub user_id: i64,
    pub provider: String,
    pub refresh_sealed: Option<Vec<u8>>,
    pub read_at: i64,
}

impl From<SsoSessionRow> for SsoSession {
    fn from(r: SsoSessionRow) -> SsoSession {
        SsoSession {
            family: r.family,
            user_id: r.user_id,
            provider: r.provider,
            refresh_sealed: r.refresh_sealed,
            read_at: r.read_at,
        }
    }
}

/// A provider user with no session, read with the refresh token of their last one.
#[derive(Debug, Clone)]
pub struct SsoLink {
    pub user_id: i64,
    pub provider: String,
    pub refresh_sealed: Vec<u8>,
    pub read_at: i64,
}

/// Longest group name kept, and most groups kept for one user.
const MAX_GROUP_NAME: usize = 256;
const MAX_GROUPS: usize = 256;

/// Checks a group name: 1 to 256 characters, no control or invisible formatting characters.
pub fn check_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_GROUP_NAME {
        return Err(Error::Invalid(format!(
            "a group name has 1 to {MAX_GROUP_NAME} characters"
        )));
    }
    // No look-alikes: "dev " or "dev\u{a0}" must not pass for "dev".
    if name.starts_with(char::is_whitespace)
        || name.ends_with(char::is_whitespace)
        || name.chars().any(|c| c.is_whitespace() && c != ' ')
    {
        return Err(Error::Invalid(
            "a group name must not begin or end with a space, nor hold other spaces than ' '"
                .into(),
        ));
    }
    check_text("a group name", name)
}

/// A provider's user name made into a berth user name: lowercased, other characters become `-`,
/// cut to 56 characters (room for a suffix), edges trimmed to letters or digits.
pub fn fit_user_name(claim: &str) -> String {
    let local = claim.split('@').next().unwrap_or(claim);
    let mapped: String = local
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "user".into()
    } else {
        trimmed.to_owned()
    }
}

/// The users a provider made, their groups and their provider sessions (`IamService::sso`).
pub struct SsoUsers {
    pub(super) meta: MetadataStore,
}

impl SsoUsers {
    /// The user a provider's person is, made on the first sign-in, with their groups stored.
    /// Returns the user and the epoch of their sign-ins (`sso:<id>:<epoch>`).
    pub fn sign_in(&self, who: &ProviderUser) -> Result<(User, i64)> {
        let groups = fit_groups(&who.groups);
        let (user_id, epoch) = match self.meta.read(|r| r.sso_link(&who.issuer, &who.subject))? {
            Some(l) => (l.user_id, l.epoch),
            None => (self.new_user(who)?, 0),
        };
        self.meta
            .write(|w| w.set_user_groups(user_id, &groups, who.admin))?;
        let user = self
            .meta
            .read(|r| r.user_by_id(user_id))?
            .map(User::from)
            .ok_or_else(|| Error::NotFound("the user was deleted".into()))?;
        Ok((user, epoch))
    }

    fn new_user(&self, who: &ProviderUser) -> Result<i64> {
        let base = fit_user_name(&who.name);
        let candidates =
            std::iter::once(base.clone()).chain((2..100).map(|n| format!("{base}-{n}")));
        for name in candidates {
            if check_name("user", &name).is_err() {
                continue;
            }
            let made = self.meta.write(|w| {
                if w.reader().user_by_name(&name)?.is_some() {
                    return Ok::<_, crate::store::Error>(None);
                }
                // Another node may be making the same person at this moment: the link's
                // primary key lets one of them win.
                if let Some(l) = w.reader().sso_link(&who.issuer, &who.subject)? {
                    return Ok(Some(l.user_id));
                }
                let id = w.insert_user(&name, None, false)?;
                w.insert_sso_link(&SsoLinkRow {
                    issuer: who.issuer.clone(),
                    subject: who.subject.clone(),
                    provider: who.provider.clone(),
                    user_id: id,
                    epoch: 0,
                    groups_read_at: now(),
                })?;
                Ok(Some(id))
            })?;
            if let Some(id) = made {
                return Ok(id);
            }
        }
        Err(Error::Conflict(format!(
            "no free user name for {:?} (tried {base} to {base}-99)",
            who.name
        )))
    }

    /// Stores what a reading of a session said about its user; whether anything changed.
    pub fn update(&self, user_id: i64, groups: &[String], admin: Option<bool>) -> Result<bool> {
        let groups = fit_groups(groups);
        Ok(self
            .meta
            .write(|w| w.set_user_groups(user_id, &groups, admin))?)
    }

    /// The provider refused the user: every session and key made through a sign-in ends.
    pub fn refused(&self, user_id: i64) -> Result<()> {
        Ok(self.meta.write(|w| w.sso_refused(user_id))?)
    }

    /// Drops the groups of users whose provider has not confirmed them since `before`, and
    /// their admin flag when their provider (one of `admin_providers`) gives admins by group.
    pub fn drop_stale_groups(&self, before: i64, admin_providers: &[String]) -> Result<usize> {
        let stale = self.meta.read(|r| r.users_with_stale_groups(before))?;
        for (uid, provider) in &stale {
            let clear_admin = admin_providers.contains(provider);
            self.meta
                .write(|w| w.drop_stale_groups(*uid, clear_admin))?;
        }
        Ok(stale.len())
    }

    /// Marks a sign-in's state, a device code or a CLI code used until `expires_at`: whether
    /// this was its first use.
    pub fn use_once(&self, id: &str, expires_at: i64) -> Result<bool> {
        Ok(self.meta.write(|w| w.use_sso_once(id, expires_at))?)
    }

    /// Whether `id` was used already.
    pub fn used(&self, id: &str) -> Result<bool> {
        Ok(self.meta.read(|r| r.sso_used(id))?)
    }

    /// Links to read with their own refresh token (users without a provider session).
    pub fn links_due(&self, before: i64) -> Result<Vec<SsoLink>> {
        Ok(self
            .meta
            .read(|r| r.sso_links_due(before, 200))?
            .into_iter()
            .map(|(user_id, provider, refresh_sealed, read_at)| SsoLink {
                user_id,
                provider,
                refresh_sealed,
                read_at,
            })
            .collect())
    }

    pub fn claim_link(&self, l: &SsoLink) -> Result<bool> {
        Ok(self
            .meta
            .write(|w| w.claim_sso_link(l.user_id, l.read_at, now()))?)
    }

    pub fn set_link_refresh(&self, user_id: i64, sealed: Option<&[u8]>) -> Result<()> {
        Ok(self
            .meta
            .write(|w| w.set_sso_link_refresh(user_id, sealed))?)
    }

    /// Whether anything of the user's can still be read at the provider: a provider session,
    /// or a refresh token on their link.
    pub fn still_asked(&self, user_id: i64) -> Result<bool> {
        Ok(self.meta.read(|r| r.sso_still_asked(user_id))?)
    }

    /// Whether the user holds a live API key or token (a reason to keep asking the provider).
    pub fn has_live_keys(&self, user_id: i64) -> Result<bool> {
        Ok(self.meta.read(|r| r.has_live_keys(user_id))?)
    }

    /// The provider each user came from (user id → provider name).
    pub fn sources(&self) -> Result<std::collections::HashMap<i64, String>> {
        Ok(self
            .meta
            .read(|r| r.sso_links())?
            .into_iter()
            .map(|l| (l.user_id, l.provider))
            .collect())
    }

    pub fn add_session(&self, s: &SsoSession) -> Result<()> {
        let row = SsoSessionRow {
            family: s.family.clone(),
            user_id: s.user_id,
            provider: s.provider.clone(),
            refresh_sealed: s.refresh_sealed.clone(),
            read_at: s.read_at,
        };
        Ok(self.meta.write(|w| w.insert_sso_session(&row))?)
    }

    pub fn sessions_due(&self, before: i64) -> Result<Vec<SsoSession>> {
        Ok(self
            .meta
            .read(|r| r.sso_sessions_due(before, 200))?
            .into_iter()
            .map(SsoSession::from)
            .collect())
    }

    /// The provider's subject of a user made by a provider.
    pub fn subject(&self, user_id: i64) -> Result<Option<String>> {
        Ok(self
            .meta
            .read(|r| r.sso_link_of_user(user_id))?
            .map(|l| l.subject))
    }

    pub fn claim_session(&self, s: &SsoSession) -> Result<bool> {
        Ok(self
            .meta
            .write(|w| w.claim_sso_session(&s.family, s.read_at, now()))?)
    }

    pub fn set_refresh(&self, family: &str, sealed: Option<&[u8]>) -> Result<()> {
        Ok(self.meta.write(|w| w.set_sso_refresh(family, sealed))?)
    }

    pub fn end_session(&self, family: &str) -> Result<()> {
        Ok(self.meta.write(|w| {
            w.delete_sso_session(family)?;
            w.revoke_family(family)
        })?)
    }

    pub fn prune_sessions(&self) -> Result<u64> {
        Ok(self.meta.write(|w| w.prune_sso_sessions())?)
    }
}

/// The groups kept from a provider's list: valid names only, at most `MAX_GROUPS`.
fn fit_groups(groups: &[String]) -> Vec<String> {
    groups
        .iter()
        .filter(|g| check_group_name(g).is_ok())
        .take(MAX_GROUPS)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_fit_berth_names() {
        assert_eq!(fit_user_name("Alice.Smith@example.com"), "alice.smith");
        assert_eq!(fit_user_name("José García"), "jos--garc-a");
        assert_eq!(fit_user_name("--"), "user");
        assert_eq!(fit_user_name(&"x".repeat(100)).len(), 56);
        assert!(check_group_name("/platform/dev").is_ok());
        assert!(check_group_name("").is_err());
        assert!(check_group_name("a\nb").is_err());
        assert!(check_group_name(&"g".repeat(257)).is_err());
        for lookalike in ["dev ", " dev", "dev\u{a0}", "de\u{2003}v", "dev\t"] {
            assert!(check_group_name(lookalike).is_err(), "{lookalike:?}");
        }
        assert!(check_group_name("Platform Team").is_ok());
    }
}
