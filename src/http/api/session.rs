//! Sessions: `POST /auth/login` (password → access token + refresh token), `POST /auth/refresh`
//! (rotates the refresh token), `POST /auth/logout` (ends its family), `GET /auth/whoami`, and
//! `GET/DELETE /sessions` (list and end the caller's sessions).
//!
//! Invariant: a session (refresh-token family) records what it came from (a password epoch or a
//! credential) and ends with it; rotation marks the used token, so one refresh wins a race and a
//! reused token ends its family.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::common::{ApiCaller, ApiError, ApiResult, blocking, json_response, parse_body, time};
use super::identity::audit_change;
use crate::auth::{ClientInfo, Lineage, Login, Principal};
use crate::iam::Credential;
use crate::iam::{AuditEvent, CredentialSpec, NewCredential, Origin, Owner, Secret, SecretKind};
use crate::state::AppState;

/// How long a refresh token from `access_type=offline` / `offline_token=true` lives.
pub(crate) const REFRESH_TOKEN_TTL: std::time::Duration =
    std::time::Duration::from_secs(14 * 86_400);

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// A short-lived access token (audience: the management API) for `login`, and its lifetime. It
/// names the login's lineage, so it ends with whatever the login came from.
pub(crate) fn access(st: &AppState, login: &Login) -> ApiResult<(String, i64)> {
    let (jwt, claims) = st
        .auth
        .tokens()
        .issue(
            &login.principal.subject(),
            &st.auth.api_audience,
            Vec::new(),
            login.lineage.token_keys(&login.principal),
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((jwt, claims.exp - claims.iat))
}

/// Opens a session for a user's login: a new refresh-token family whose source is what the
/// login came from, and an access token of that family.
pub(crate) fn open_session(st: &AppState, user_id: i64, login: &Login) -> ApiResult<NewCredential> {
    open_named_session(st, user_id, login, "session", REFRESH_TOKEN_TTL)
}

/// `open_session` with the name `/sessions` lists it under and its lifetime (the console's are
/// shorter than the CLI's).
pub(crate) fn open_named_session(
    st: &AppState,
    user_id: i64,
    login: &Login,
    name: &str,
    ttl: std::time::Duration,
) -> ApiResult<NewCredential> {
    Ok(st.auth.iam().create_credential(&CredentialSpec {
        kind: SecretKind::RefreshToken,
        owner: Owner::User(user_id),
        name: Some(name),
        expires_in: Some(ttl),
        readwrite: false,
        description: None,
        // The family ends with everything its login came from, the session of an access
        // token used to open it included (`Lineage::session_provenance`).
        origin: Origin {
            source: Some(login.lineage.session_provenance().join(" ")).filter(|s| !s.is_empty()),
            lineage: login.lineage.session_provenance(),
            ..Origin::default()
        },
    })?)
}

/// The login a session's tokens carry: the family, then the keys of what it came from.
pub(crate) fn session_login(login: &Login, refresh: &Credential) -> Login {
    let family = refresh.family.clone().unwrap_or_else(|| refresh.id.clone());
    Login::new(
        login.principal.clone(),
        Lineage(
            std::iter::once(format!("fam:{family}"))
                .chain(
                    refresh
                        .source
                        .iter()
                        .flat_map(|s| s.split_whitespace())
                        .filter(|k| *k != format!("fam:{family}"))
                        .map(str::to_owned),
                )
                .collect(),
        ),
    )
}

pub(crate) fn session_json(
    st: &AppState,
    login: &Login,
    refresh: &NewCredential,
) -> ApiResult<serde_json::Value> {
    let (jwt, expires_in) = access(st, &session_login(login, &refresh.credential))?;
    Ok(json!({
        "access_token": jwt,
        "refresh_token": refresh.secret.expose(),
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
}

pub(super) async fn login(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let (client, body): (_, LoginBody) = client_and_body(req).await?;
    blocking(&state, move |st| {
        let login = st.auth.login(&body.username, &body.password, &client)?;
        let Principal::User { id, name, .. } = &login.principal else {
            return Err(ApiError::Invalid(
                "log in with a user name and password; robots use their tokens directly".into(),
            ));
        };
        st.auth.audit(AuditEvent {
            actor: Some(format!("user:{name}")),
            action: "login",
            success: true,
            client_addr: client.addr.map(|a| a.to_string()),
            ..AuditEvent::default()
        });
        let refresh = open_session(st, *id, &login)?;
        Ok(json_response(
            StatusCode::OK,
            session_json(st, &login, &refresh)?,
        ))
    })
    .await
}

/// Rotates a refresh token presented by a caller: checks it (limits, reuse detection), marks it
/// used and returns the login with its successor. A token already used is refused (401), and
/// presenting it again ends the family.
pub(crate) fn rotate(
    st: &AppState,
    token: &str,
    client: &ClientInfo,
) -> ApiResult<(Login, NewCredential)> {
    let login = st.auth.login("iamrefresh", token, client)?;
    let secret = Secret::parse(token).ok_or(ApiError::Unauthorized)?;
    let row = st
        .auth
        .iam()
        .credential(&secret.id().to_string())?
        .ok_or(ApiError::Unauthorized)?;
    let next = st
        .auth
        .iam()
        .rotate_refresh(&row, REFRESH_TOKEN_TTL)?
        .ok_or(ApiError::Unauthorized)?;
    Ok((login, next))
}

/// The caller's address and agent, and the JSON body (at most 64 KiB) of a session request.
async fn client_and_body<T: serde::de::DeserializeOwned>(
    req: axum::extract::Request,
) -> ApiResult<(ClientInfo, T)> {
    let (parts, body) = req.into_parts();
    let client = crate::http::access::client_info(&parts);
    let body = super::common::body_bytes(body, 64 * 1024).await?;
    Ok((client, parse_body(&body)?))
}

pub(super) async fn refresh(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let (client, body): (_, RefreshBody) = client_and_body(req).await?;
    blocking(&state, move |st| {
        let (login, next) = rotate(st, &body.refresh_token, &client)?;
        st.auth.audit(AuditEvent {
            actor: Some(login.principal.subject()),
            action: "session.refresh",
            success: true,
            client_addr: client.addr.map(|a| a.to_string()),
            ..AuditEvent::default()
        });
        Ok(json_response(
            StatusCode::OK,
            session_json(st, &login, &next)?,
        ))
    })
    .await
}

pub(super) async fn logout(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let (client, body): (_, RefreshBody) = client_and_body(req).await?;
    blocking(&state, move |st| {
        let login = st.auth.login("iamrefresh", &body.refresh_token, &client)?;
        if let Some(family) = login.lineage.0.iter().find_map(|k| k.strip_prefix("fam:")) {
            st.auth.iam().revoke_family(family)?;
        }
        st.auth.audit(AuditEvent {
            actor: Some(login.principal.subject()),
            action: "logout",
            success: true,
            client_addr: client.addr.map(|a| a.to_string()),
            ..AuditEvent::default()
        });
        Ok(axum::response::IntoResponse::into_response(
            StatusCode::NO_CONTENT,
        ))
    })
    .await
}

fn own_user_id(caller: &ApiCaller) -> ApiResult<i64> {
    match &caller.principal {
        Principal::User { id, .. } => Ok(*id),
        _ => Err(ApiError::Forbidden("only users have sessions".into())),
    }
}

/// The caller's live sessions, one entry per refresh-token family.
pub(super) async fn list_sessions(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Response> {
    let uid = own_user_id(&caller)?;
    blocking(&state, move |st| {
        let current = caller
            .lineage
            .0
            .iter()
            .find_map(|k| k.strip_prefix("fam:"))
            .map(str::to_owned);
        let list: Vec<_> = st
            .auth
            .iam()
            .sessions(uid)?
            .iter()
            .map(|c| {
                let family = c.family.clone().unwrap_or_else(|| c.id.clone());
                let keys: Vec<&str> = c.source.as_deref().unwrap_or_default().split_whitespace().collect();
                let source = if let Some(id) = keys.iter().find_map(|k| k.strip_prefix("cred:")) {
                    json!({ "kind": "credential", "id": id })
                } else if keys.iter().any(|k| k.starts_with("pw:")) {
                    json!({ "kind": "password" })
                } else if keys.iter().any(|k| k.starts_with("sso:")) {
                    json!({ "kind": "sso" })
                } else {
                    json!({ "kind": "unknown" })
                };
                json!({
                    "id": family,
                    "name": c.name,
                    "source": source,
                    "refreshed": time(Some(c.created_at)),
                    "expires": time(c.expires_at),
                    "lastUsed": c.last_used_at.map(|at| json!({
                        "at": time(Some(at)), "address": c.last_used_addr, "userAgent": c.last_used_agent,
                    })),
                    "current": current.as_deref() == Some(family.as_str()),
                })
            })
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "sessions": list })))
    })
    .await
}

pub(super) async fn revoke_session(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let uid = own_user_id(&caller)?;
    blocking(&state, move |st| {
        let mine = st
            .auth
            .iam()
            .sessions(uid)?
            .iter()
            .any(|c| c.family.as_deref() == Some(id.as_str()));
        if !mine {
            return Err(ApiError::NotFound(format!("session {id:?} not found")));
        }
        st.auth.iam().revoke_family(&id)?;
        audit_change(st, &caller, "session.revoke", format!("session/{id}"));
        Ok(axum::response::IntoResponse::into_response(
            StatusCode::NO_CONTENT,
        ))
    })
    .await
}

pub(super) async fn revoke_all_sessions(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Response> {
    let uid = own_user_id(&caller)?;
    blocking(&state, move |st| {
        let families: std::collections::BTreeSet<String> = st
            .auth
            .iam()
            .sessions(uid)?
            .into_iter()
            .filter_map(|c| c.family)
            .collect();
        for f in &families {
            st.auth.iam().revoke_family(f)?;
        }
        audit_change(
            st,
            &caller,
            "session.revoke",
            format!("{}/sessions", caller.subject()),
        );
        Ok(axum::response::IntoResponse::into_response(
            StatusCode::NO_CONTENT,
        ))
    })
    .await
}

pub(super) async fn whoami(caller: ApiCaller) -> ApiResult<Response> {
    let (kind, name) = match &caller.principal {
        Principal::User { name, .. } => ("user", name.clone()),
        Principal::Robot { org, name, .. } => ("robot", format!("{org}/{name}")),
        Principal::RegistryToken { id, org, .. } => ("registry_token", format!("{org}/{id}")),
        Principal::Anonymous => ("anonymous", String::new()),
    };
    let mut orgs: Vec<serde_json::Value> = caller
        .grants
        .owner_of
        .iter()
        .map(|o| json!({ "name": o, "role": "owner" }))
        .collect();
    orgs.extend(
        caller
            .grants
            .member_of
            .iter()
            .map(|o| json!({ "name": o, "role": "member" })),
    );
    Ok(json_response(
        StatusCode::OK,
        json!({ "subject": caller.subject(), "kind": kind, "name": name, "admin": caller.grants.admin, "orgs": orgs }),
    ))
}

/// `POST /auth/access-token`: a short-lived access token for the calling user (used as
/// `iambearer`), without touching the refresh token. The docker credential helper asks for one
/// so that docker never holds the refresh token.
pub(super) async fn access_token(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Response> {
    if !matches!(&caller.principal, Principal::User { .. }) {
        return Err(ApiError::Forbidden(
            "access tokens are for users; robots use their tokens".into(),
        ));
    }
    let (jwt, expires_in) = access(
        &state,
        &Login::new(caller.principal.clone(), caller.lineage.clone()),
    )?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "access_token": jwt, "expires_in": expires_in, "token_type": "Bearer" }),
    ))
}
