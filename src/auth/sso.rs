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

use super::keys::Sealer;
use super::oidc::{GROUPS_BOUND, Sso, SsoError};
use crate::iam::{AuditEvent, IamService, ProviderUser, SsoSession, User};
use crate::store::now;

/// The providers, the sealer of their refresh tokens, and the sessions opened through them.
pub struct SsoService {
    iam: IamService,
    oidc: Arc<Sso>,
    sealer: Arc<Sealer>,
}

const CLI_CODE_LABEL: &str = "berth sso cli code";
/// How long a CLI's loopback code may wait to be redeemed.
const CLI_CODE_SECS: i64 = 120;

fn seal_label(family: &str) -> String {
    format!("sso-refresh:{family}")
}

impl SsoService {
    pub fn new(iam: IamService, oidc: Sso, sealer: Arc<Sealer>) -> SsoService {
        SsoService {
            iam,
            oidc: Arc::new(oidc),
            sealer,
        }
    }

    /// The providers and what was fetched from them.
    pub fn oidc(&self) -> &Sso {
        &self.oidc
    }

    /// `plain` sealed for `label` (what it is), as base64url: the state of a sign-in kept by
    /// the browser or the CLI, readable by any node and by nobody else.
    pub fn seal_text(&self, label: &str, plain: &str) -> Option<String> {
        use base64::Engine as _;
        let sealed = self.sealer.seal(label, plain).ok()?;
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
        self.sealer.open(label, &sealed).ok()
    }

    /// A one-time code for the CLI's loopback sign-in (RFC 8252): the person the provider
    /// vouched for and the provider's refresh token, sealed with the CLI's PKCE challenge, for
    /// two minutes. Only the holder of the verifier (the CLI that started the sign-in) redeems it.
    pub fn seal_cli_code(
        &self,
        provider: &str,
        who: &ProviderUser,
        refresh_token: Option<&str>,
        challenge: &str,
    ) -> Option<String> {
        let v = serde_json::json!({
            "p": provider,
            "who": who,
            "rt": refresh_token,
            "c": challenge,
            "exp": now() + CLI_CODE_SECS,
        });
        self.seal_text(CLI_CODE_LABEL, &v.to_string())
    }

    /// The person and refresh token a CLI code carries, when `verifier` is its challenge's, it
    /// is for `provider` and it has not expired.
    pub fn open_cli_code(
        &self,
        provider: &str,
        code: &str,
        verifier: &str,
    ) -> Option<(ProviderUser, Option<String>)> {
        let v: serde_json::Value =
            serde_json::from_str(&self.open_text(CLI_CODE_LABEL, code)?).ok()?;
        let field = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
        };
        let challenge = super::oidc::challenge(verifier);
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(challenge.as_bytes(), field("c").as_bytes()).into();
        if !same
            || field("p") != provider
            || v.get("exp")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
                < now()
        {
            return None;
        }
        let who: ProviderUser = serde_json::from_value(v.get("who")?.clone()).ok()?;
        Some((
            who,
            v.get("rt")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        ))
    }

    /// The user a person the provider vouched for is (made on the first sign-in), with the
    /// groups just read, and the revocation key of their sign-ins. Blocking.
    pub fn sign_in(&self, who: &ProviderUser) -> crate::iam::Result<(User, String)> {
        let (user, epoch) = self.iam.sso().sign_in(who)?;
        let key = crate::store::sso_key(user.id, epoch);
        Ok((user, key))
    }

    /// Keeps the provider's refresh token (sealed) beside the session `family` opened with it.
    /// Blocking.
    pub fn remember_session(
        &self,
        family: &str,
        user_id: i64,
        provider: &str,
        refresh_token: Option<&str>,
    ) -> crate::iam::Result<()> {
        let sealed = match refresh_token {
            Some(t) => Some(
                self.sealer
                    .seal(&seal_label(family), t)
                    .map_err(|e| crate::iam::Error::Random(e.to_string()))?,
            ),
            None => None,
        };
        self.iam.sso().add_session(&SsoSession {
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
    pub async fn refresh_sessions(&self) -> usize {
        let sso = self.oidc.clone();
        let every = i64::try_from(sso.refresh_every.as_secs()).unwrap_or(300);
        let bound = i64::try_from(GROUPS_BOUND.as_secs()).unwrap_or(900);
        let iam = self.iam.clone();
        let due = tokio::task::spawn_blocking(move || {
            iam.sso().prune_sessions()?;
            iam.sso().drop_stale_groups(now() - bound)?;
            iam.sso().sessions_due(now() - every + 1)
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
            let won = tokio::task::spawn_blocking(move || iam.sso().claim_session(&claim)).await;
            if !matches!(won, Ok(Ok(true))) {
                continue;
            }
            read += 1;
            self.reread_session(&sso, &s).await;
        }
        read
    }

    async fn reread_session(&self, sso: &Sso, s: &SsoSession) {
        let opened = s
            .refresh_sealed
            .as_ref()
            .and_then(|sealed| self.sealer.open(&seal_label(&s.family), sealed).ok());
        let iam = self.iam.clone();
        let Some(refresh_token) = opened else {
            // Nothing to read the groups with: the session ends rather than outlive the bound.
            let family = s.family.clone();
            let _ = tokio::task::spawn_blocking(move || iam.sso().end_session(&family)).await;
            return;
        };
        let uid = s.user_id;
        let subject = tokio::task::spawn_blocking(move || iam.sso().subject(uid)).await;
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
        let provider = s.provider.clone();
        let _ = tokio::task::spawn_blocking(move || match outcome {
            Ok((who, new_refresh)) => {
                if let Err(e) = iam.sso().update(uid, &who.groups, who.admin) {
                    tracing::error!(error = %e, "single sign-on: storing groups failed");
                }
                if let Some(t) = new_refresh
                    && let Ok(sealed) = sealer.seal(&seal_label(&family), &t)
                    && let Err(e) = iam.sso().set_refresh(&family, Some(&sealed))
                {
                    tracing::error!(error = %e, "single sign-on: keeping the new refresh token failed");
                }
            }
            Err(SsoError::Refused(why)) => {
                tracing::info!(user = uid, reason = %why, "single sign-on: the provider refused the user; their sessions end");
                if let Err(e) = iam.sso().refused(uid) {
                    tracing::error!(error = %e, "single sign-on: ending a refused user's sessions failed");
                }
                let _ = iam.audit(&AuditEvent {
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
