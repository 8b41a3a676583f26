//! Single sign-on on the service side: a verified person from a provider becomes a `Login` whose
//! lineage is `sso:<user id>:<epoch>` (so everything a sign-in opens or makes ends when the
//! provider refuses the user), the provider's refresh token is kept sealed beside the session,
//! and `refresh_sessions` reads every session's groups again at least every
//! `--sso-refresh-interval` (at most 15 minutes). When a session ends, its provider token moves
//! to the user's link, and a user who still holds API keys is read with it:
//!
//! - the provider answers: the groups (and admin) are stored; a change ends the user's registry
//!   tokens (policy epoch) and every node's cached grants;
//! - the provider refuses a session's token (`invalid_grant`: disabled, deleted, grant revoked
//!   or expired): that session ends; when nothing else of the user's is still honoured (no other
//!   session, no link token), or the link's token is refused, `sso:<id>:<epoch>` is revoked, so
//!   every session, access token and API key made through a sign-in ends, and the groups go;
//! - the provider cannot be reached or answers another error (a wrong client secret is the
//!   operator's, not the person's): tried again next round; groups (and an admin flag from the
//!   admin group) not confirmed for `GROUPS_BOUND` are dropped (fail closed), so the bound holds
//!   through an outage too;
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
    /// When sessions were last pruned and stale groups dropped (writes: not every second).
    last_prune: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often ended sessions are pruned and stale groups dropped: well inside the 15-minute
/// bound, without a write transaction every second on every node.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

const CLI_CODE_LABEL: &str = "berth sso cli code";
/// How long a CLI's loopback code may wait to be redeemed.
const CLI_CODE_SECS: i64 = 120;

/// A one-way name for a used sign-in state, device code or CLI code (`sso_used`: the value
/// itself is not stored).
pub fn used_id(kind: &str, value: &str) -> String {
    use sha2::Digest as _;
    format!(
        "{kind}:{}",
        hex::encode(sha2::Sha256::digest(value.as_bytes()))
    )
}

/// What a provider refresh token is sealed for: its user (a session's moves to the user's link
/// when the session ends).
fn seal_label(user_id: i64) -> String {
    format!("sso-refresh:{user_id}")
}

impl SsoService {
    pub fn new(iam: IamService, oidc: Sso, sealer: Arc<Sealer>) -> SsoService {
        SsoService {
            iam,
            oidc: Arc::new(oidc),
            sealer,
            last_prune: std::sync::Mutex::new(None),
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
                    .seal(&seal_label(user_id), t)
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
    /// readings were made.
    pub async fn refresh_sessions(&self) -> usize {
        let sso = self.oidc.clone();
        let every = i64::try_from(sso.refresh_every.as_secs()).unwrap_or(300);
        let bound = i64::try_from(GROUPS_BOUND.as_secs()).unwrap_or(900);
        let admin_providers: Vec<String> = sso
            .providers()
            .filter(|p| p.admin_group.is_some())
            .map(|p| p.name.clone())
            .collect();
        let prune = {
            let mut last = self
                .last_prune
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        let iam = self.iam.clone();
        let due = tokio::task::spawn_blocking(move || {
            if prune {
                iam.sso().prune_sessions()?;
                iam.sso()
                    .drop_stale_groups(now() - bound, &admin_providers)?;
            }
            let sessions = iam.sso().sessions_due(now() - every + 1)?;
            let links = iam.sso().links_due(now() - every + 1)?;
            Ok::<_, crate::iam::Error>((sessions, links))
        })
        .await;
        let (sessions, links) = match due {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "single sign-on: reading due sessions failed");
                return 0;
            }
            Err(_) => return 0,
        };
        let mut read = 0;
        // One node takes each reading: two uses of one refresh token would look like a replay
        // to the provider, which would end the grant.
        for s in sessions {
            let iam = self.iam.clone();
            let claim = s.clone();
            let won = tokio::task::spawn_blocking(move || iam.sso().claim_session(&claim)).await;
            if matches!(won, Ok(Ok(true))) {
                read += 1;
                let reading = Reading::Session(s.family.clone());
                self.reread(
                    &sso,
                    reading,
                    s.user_id,
                    &s.provider,
                    s.refresh_sealed.as_deref(),
                )
                .await;
            }
        }
        for l in links {
            let iam = self.iam.clone();
            let claim = l.clone();
            let won = tokio::task::spawn_blocking(move || {
                // A user who holds nothing but sessions (none left) needs no more asking.
                if !iam.sso().has_live_keys(claim.user_id)? {
                    iam.sso().set_link_refresh(claim.user_id, None)?;
                    return Ok(false);
                }
                iam.sso().claim_link(&claim)
            })
            .await;
            if matches!(won, Ok(Ok(true))) {
                read += 1;
                self.reread(
                    &sso,
                    Reading::Link,
                    l.user_id,
                    &l.provider,
                    Some(&l.refresh_sealed),
                )
                .await;
            }
        }
        read
    }

    /// Asks the provider about user `uid` with the refresh token of a session or of their link,
    /// and acts on the answer.
    async fn reread(
        &self,
        sso: &Sso,
        reading: Reading,
        uid: i64,
        provider: &str,
        sealed: Option<&[u8]>,
    ) {
        let opened = sealed.and_then(|s| self.sealer.open(&seal_label(uid), s).ok());
        let iam = self.iam.clone();
        let subject = tokio::task::spawn_blocking(move || iam.sso().subject(uid)).await;
        let Ok(Ok(Some(subject))) = subject else {
            return;
        };
        let outcome = match &opened {
            // Nothing to read the groups with: the session ends rather than outlive the bound.
            None => Err(SsoError::Refused("no refresh token".into())),
            Some(token) => match sso.refresh(provider, token).await {
                Ok(t) => sso
                    .reread(provider, &t, &subject)
                    .await
                    .map(|who| (who, t.refresh_token)),
                Err(e) => Err(e),
            },
        };
        let iam = self.iam.clone();
        let sealer = self.sealer.clone();
        let provider = provider.to_owned();
        let _ = tokio::task::spawn_blocking(move || match outcome {
            Ok((who, new_refresh)) => {
                if let Err(e) = iam.sso().update(uid, &who.groups, who.admin) {
                    tracing::error!(error = %e, "single sign-on: storing groups failed");
                }
                if let Some(t) = new_refresh
                    && let Ok(sealed) = sealer.seal(&seal_label(uid), &t)
                {
                    let kept = match &reading {
                        Reading::Session(family) => iam.sso().set_refresh(family, Some(&sealed)),
                        Reading::Link => iam.sso().set_link_refresh(uid, Some(&sealed)),
                    };
                    if let Err(e) = kept {
                        tracing::error!(error = %e, "single sign-on: keeping the new refresh token failed");
                    }
                }
            }
            Err(SsoError::Refused(why)) => {
                // This sign-in is over. The person is refused when nothing else of theirs is
                // still honoured by the provider: no other session, no link to ask with.
                let whole = match &reading {
                    Reading::Session(family) => {
                        if let Err(e) = iam.sso().end_session(family) {
                            tracing::error!(error = %e, "single sign-on: ending a refused session failed");
                        }
                        !iam.sso().still_asked(uid).unwrap_or(true)
                    }
                    Reading::Link => true,
                };
                tracing::info!(user = uid, reason = %why, whole, "single sign-on: the provider refused a sign-in");
                if whole && let Err(e) = iam.sso().refused(uid) {
                    tracing::error!(error = %e, "single sign-on: ending a refused user's sessions failed");
                }
                let _ = iam.audit(&AuditEvent {
                    actor: Some(format!("provider:{provider}")),
                    action: "sso.refused",
                    success: true,
                    target: Some(format!("user:{uid}")),
                    detail: Some(if whole {
                        format!("the provider answered {why}: every session and key made through a sign-in ends")
                    } else {
                        format!("the provider answered {why}: that session ends")
                    }),
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

/// What a reading asks the provider with: a session's refresh token, or the user's link's.
enum Reading {
    Session(String),
    Link,
}
