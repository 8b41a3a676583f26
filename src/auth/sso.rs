//! Single sign-on on the service side: a verified person from a provider becomes a `Login` whose
//! lineage is `sso:<user id>:<epoch>` (so everything a sign-in opens or makes ends when the
//! provider refuses the user), the provider's refresh token is kept sealed beside the session,
//! and `refresh_sso_sessions` reads every session's groups again at least every
//! `--sso-refresh-interval` (at most 15 minutes):
//!
//! - the provider answers: the groups (and admin) are stored; a change ends the user's registry
//!   tokens (policy epoch) and every node's cached grants;
//! - the provider refuses (disabled, deleted, grant revoked): `sso:<id>:<epoch>` is revoked, so
//!   every session, access token and API key made through a sign-in ends, and the groups go;
//! - the provider cannot be reached: tried again next round; groups not confirmed for
//!   `GROUPS_BOUND` are dropped (fail closed), so the bound holds through an outage too;
//! - a session without a provider refresh token cannot be read again: it ends at its first
//!   reading.

use std::sync::Arc;

use super::oidc::{GROUPS_BOUND, SsoError};
use super::{AuthError, AuthService, Lineage, Login, Principal};
use crate::iam::{AuditEvent, ProviderUser, SsoSession};
use crate::store::now;

fn seal_label(family: &str) -> String {
    format!("sso-refresh:{family}")
}

impl AuthService {
    pub fn sso(&self) -> Option<&super::oidc::Sso> {
        self.sso.as_deref()
    }

    /// The configured providers, the sealer of their refresh tokens, and who may still sign in
    /// with a local password.
    pub fn with_sso(
        mut self,
        sso: Option<super::oidc::Sso>,
        sealer: Option<Arc<super::keys::Sealer>>,
        local_login: super::oidc::LocalLogin,
    ) -> AuthService {
        self.sso = sso.map(Arc::new);
        self.sealer = sealer;
        self.local_login = local_login;
        self
    }

    /// Who may sign in with a local password.
    pub fn local_login(&self) -> super::oidc::LocalLogin {
        self.local_login
    }

    /// `plain` sealed for `label` (what it is), as base64url: the state of a sign-in kept by
    /// the browser or the CLI, readable by any node and by nobody else.
    pub fn seal_text(&self, label: &str, plain: &str) -> Option<String> {
        use base64::Engine as _;
        let sealed = self.sealer.as_ref()?.seal(label, plain).ok()?;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    /// What `seal_text` sealed for the same `label`.
    pub fn open_text(&self, label: &str, text: &str) -> Option<String> {
        use base64::Engine as _;
        if text.len() > 8192 {
            return None;
        }
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        self.sealer.as_ref()?.open(label, &sealed).ok()
    }

    /// The login of a person the provider vouched for: the user (made on the first sign-in),
    /// with the groups just read. Blocking.
    pub fn sso_login(&self, who: &ProviderUser) -> Result<Login, AuthError> {
        let (user, epoch) = self.iam.sso_sign_in(who)?;
        let key = crate::store::sso_key(user.id, epoch);
        Ok(Login::new(Principal::user(user), Lineage(vec![key])))
    }

    /// Keeps the provider's refresh token (sealed) beside the session `family` opened with it.
    /// Blocking.
    pub fn remember_sso_session(
        &self,
        family: &str,
        user_id: i64,
        provider: &str,
        refresh_token: Option<&str>,
    ) -> Result<(), AuthError> {
        let sealed = match (refresh_token, &self.sealer) {
            (Some(t), Some(s)) => Some(
                s.seal(&seal_label(family), t)
                    .map_err(|e| AuthError::Internal(e.to_string()))?,
            ),
            _ => None,
        };
        self.iam.add_sso_session(&SsoSession {
            family: family.to_owned(),
            user_id,
            provider: provider.to_owned(),
            refresh_sealed: sealed,
            read_at: now(),
        })?;
        Ok(())
    }

    /// One round of reading sessions' groups again (see the module comment). Returns how many
    /// sessions were read.
    pub async fn refresh_sso_sessions(&self) -> usize {
        let Some(sso) = self.sso.clone() else {
            return 0;
        };
        let every = i64::try_from(sso.refresh_every.as_secs()).unwrap_or(300);
        let bound = i64::try_from(GROUPS_BOUND.as_secs()).unwrap_or(900);
        let iam = self.iam.clone();
        let due = tokio::task::spawn_blocking(move || {
            iam.prune_sso_sessions()?;
            iam.drop_stale_groups(now() - bound)?;
            iam.sso_sessions_due(now() - every + 1)
        })
        .await;
        let due = match due {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "single sign-on: reading due sessions failed");
                return 0;
            }
            Err(_) => return 0,
        };
        let mut read = 0;
        for s in due {
            let iam = self.iam.clone();
            let claim = s.clone();
            // One node takes each reading: two uses of one refresh token would look like a
            // replay to the provider, which would end the grant.
            let won = tokio::task::spawn_blocking(move || iam.claim_sso_session(&claim)).await;
            if !matches!(won, Ok(Ok(true))) {
                continue;
            }
            read += 1;
            self.reread_session(&sso, &s).await;
        }
        read
    }

    async fn reread_session(&self, sso: &super::oidc::Sso, s: &SsoSession) {
        let opened = match (&s.refresh_sealed, &self.sealer) {
            (Some(sealed), Some(sealer)) => sealer.open(&seal_label(&s.family), sealed).ok(),
            _ => None,
        };
        let iam = self.iam.clone();
        let Some(refresh_token) = opened else {
            // Nothing to read the groups with: the session ends rather than outlive the bound.
            let family = s.family.clone();
            let _ = tokio::task::spawn_blocking(move || iam.end_sso_session(&family)).await;
            return;
        };
        let uid = s.user_id;
        let subject = tokio::task::spawn_blocking(move || iam.sso_subject(uid)).await;
        let Ok(Ok(Some(subject))) = subject else {
            return;
        };
        let outcome = match sso.refresh(&s.provider, &refresh_token).await {
            Ok(t) => sso
                .reread(&s.provider, &t, &subject)
                .await
                .map(|who| (who, t.refresh_token)),
            Err(e) => Err(e),
        };
        let iam = self.iam.clone();
        let family = s.family.clone();
        let sealer = self.sealer.clone();
        let this = self.clone();
        let provider = s.provider.clone();
        let _ = tokio::task::spawn_blocking(move || match outcome {
            Ok((who, new_refresh)) => {
                if let Err(e) = iam.sso_update(uid, &who.groups, who.admin) {
                    tracing::error!(error = %e, "single sign-on: storing groups failed");
                }
                if let (Some(t), Some(sealer)) = (new_refresh, sealer)
                    && let Ok(sealed) = sealer.seal(&seal_label(&family), &t)
                    && let Err(e) = iam.set_sso_refresh(&family, Some(&sealed))
                {
                    tracing::error!(error = %e, "single sign-on: keeping the new refresh token failed");
                }
            }
            Err(SsoError::Refused(why)) => {
                tracing::info!(user = uid, reason = %why, "single sign-on: the provider refused the user; their sessions end");
                if let Err(e) = iam.sso_refused(uid) {
                    tracing::error!(error = %e, "single sign-on: ending a refused user's sessions failed");
                }
                this.audit(AuditEvent {
                    actor: Some(format!("provider:{provider}")),
                    action: "sso.refused",
                    success: true,
                    target: Some(format!("user:{uid}")),
                    detail: Some(format!("the provider answered {why}: every session ends")),
                    ..AuditEvent::default()
                });
            }
            Err(e) => {
                tracing::warn!(user = uid, error = %e, "single sign-on: reading the groups failed; tried again next round");
            }
        })
        .await;
    }
}
