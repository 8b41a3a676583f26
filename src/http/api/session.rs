//! Sessions: `POST /auth/login` (password → access token + refresh token), `POST /auth/refresh`
//! (rotates the refresh token), `POST /auth/logout` (revokes it), `GET /auth/whoami`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{ApiCaller, ApiError, ApiResult, blocking, json_response, parse_body};
use crate::auth::Principal;
use crate::http::token::REFRESH_TOKEN_TTL;
use crate::iam::{AuditEvent, Owner, Secret, SecretKind};
use crate::server::AppState;

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// Issues an access token and a new refresh token for a user.
/// A short-lived access token (audience: the management API) for user `name`, and its lifetime.
fn access(st: &AppState, name: &str) -> ApiResult<(String, i64)> {
    let (jwt, claims) = st
        .auth
        .tokens()
        .issue(&format!("user:{name}"), &st.auth.api_audience, Vec::new())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((jwt, claims.exp - claims.iat))
}

fn session(st: &AppState, user_id: i64, name: &str) -> ApiResult<serde_json::Value> {
    let (jwt, expires_in) = access(st, name)?;
    let refresh = st.auth.iam().create_credential(
        SecretKind::RefreshToken,
        Owner::User(user_id),
        Some("session"),
        Some(REFRESH_TOKEN_TTL),
        false,
        None,
    )?;
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
    let (parts, body) = req.into_parts();
    let client = crate::http::access::client_info(&parts);
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let body: LoginBody = parse_body(&body)?;
    blocking(&state, move |st| {
        let principal = st.auth.login(&body.username, &body.password, &client)?;
        let Principal::User { id, name, .. } = principal else {
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
        Ok(json_response(StatusCode::OK, session(st, id, &name)?))
    })
    .await
}

/// Checks a refresh token and returns its credential id and user.
fn check_refresh(st: &AppState, token: &str) -> ApiResult<(String, i64, String)> {
    let secret = Secret::parse(token)
        .filter(|s| s.kind() == SecretKind::RefreshToken)
        .ok_or(ApiError::Unauthorized)?;
    let row = st
        .auth
        .iam()
        .verify_secret(&secret)?
        .ok_or(ApiError::Unauthorized)?;
    let user_id = row.user_id.ok_or(ApiError::Unauthorized)?;
    let user = st
        .auth
        .iam()
        .meta()
        .read(|r| r.user_by_id(user_id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = user.ok_or(ApiError::Unauthorized)?;
    Ok((row.id, user.id, user.name))
}

pub(super) async fn refresh(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let body: RefreshBody = parse_body(&body)?;
    blocking(&state, move |st| {
        let (id, user_id, name) = check_refresh(st, &body.refresh_token)?;
        // Rotation: the old refresh token stops working as the new one is issued.
        st.auth.iam().delete_credential(&id)?;
        st.auth.audit(AuditEvent {
            actor: Some(format!("user:{name}")),
            action: "session.refresh",
            success: true,
            ..AuditEvent::default()
        });
        Ok(json_response(StatusCode::OK, session(st, user_id, &name)?))
    })
    .await
}

pub(super) async fn logout(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let body: RefreshBody = parse_body(&body)?;
    blocking(&state, move |st| {
        let (id, _, name) = check_refresh(st, &body.refresh_token)?;
        st.auth.iam().delete_credential(&id)?;
        st.auth.audit(AuditEvent {
            actor: Some(format!("user:{name}")),
            action: "logout",
            success: true,
            ..AuditEvent::default()
        });
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
    let Principal::User { name, .. } = &caller.principal else {
        return Err(ApiError::Forbidden(
            "access tokens are for users; robots use their tokens".into(),
        ));
    };
    let (jwt, expires_in) = access(&state, name)?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "access_token": jwt, "expires_in": expires_in, "token_type": "Bearer" }),
    ))
}
