//! The management API under `/api/v1`: JSON in and out, every route authorized with the same
//! grants and `policy` functions as `/v2`.
//!
//! Callers authenticate with `Authorization: Bearer <access token>` (from `POST /auth/login`) or
//! with Basic credentials (any login the token service accepts: a password, an API key, a robot
//! token). Errors are `{"error": {"code", "message"}}` with the status from one match in
//! `ApiError`. Handlers run their blocking work (argon2, SQLite) through `blocking`.

mod access;
mod identity;
mod robots;
mod session;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use super::RouteName;
use super::access::{Presented, client_info, presented};
use crate::auth::{AuthError, ClientInfo, Principal};
use crate::policy::Grants;
use crate::server::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(session::login))
        .route("/auth/refresh", post(session::refresh))
        .route("/auth/logout", post(session::logout))
        .route("/auth/whoami", get(session::whoami))
        .route(
            "/users",
            get(identity::list_users).post(identity::create_user),
        )
        .route(
            "/users/{user}",
            get(identity::get_user).delete(identity::delete_user),
        )
        .route("/users/{user}/password", put(identity::set_password))
        .route("/orgs", get(identity::list_orgs).post(identity::create_org))
        .route(
            "/orgs/{org}",
            get(identity::get_org).delete(identity::delete_org),
        )
        .route("/orgs/{org}/members", get(identity::list_members))
        .route(
            "/orgs/{org}/members/{user}",
            put(identity::set_member).delete(identity::remove_member),
        )
        .route(
            "/orgs/{org}/namespaces",
            get(identity::list_namespaces).post(identity::create_namespace),
        )
        .route(
            "/namespaces/{ns}",
            get(identity::get_namespace)
                .patch(identity::patch_namespace)
                .delete(identity::delete_namespace),
        )
        .route(
            "/orgs/{org}/robots",
            get(robots::list_robots).post(robots::create_robot),
        )
        .route(
            "/orgs/{org}/robots/{robot}",
            get(robots::get_robot).delete(robots::delete_robot),
        )
        .route(
            "/orgs/{org}/robots/{robot}/tokens",
            get(robots::list_robot_tokens).post(robots::create_robot_token),
        )
        .route(
            "/orgs/{org}/robots/{robot}/tokens/{id}",
            axum::routing::delete(robots::delete_robot_token),
        )
        .route(
            "/orgs/{org}/robots/{robot}/apikeys",
            get(robots::list_robot_keys).post(robots::create_robot_key),
        )
        .route(
            "/orgs/{org}/robots/{robot}/apikeys/{id}",
            axum::routing::delete(robots::delete_robot_key),
        )
        .route(
            "/apikeys",
            get(robots::list_own_keys).post(robots::create_own_key),
        )
        .route(
            "/apikeys/{id}",
            axum::routing::delete(robots::delete_own_key),
        )
        .route(
            "/tokens",
            get(robots::list_registry_tokens).post(robots::create_registry_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(robots::delete_registry_token),
        )
        .route("/orgs/{org}/roles", get(access::list_roles))
        .route(
            "/orgs/{org}/roles/{name}",
            get(access::get_role)
                .put(access::put_role)
                .delete(access::delete_role),
        )
        .route("/orgs/{org}/bindings", get(access::list_bindings))
        .route(
            "/orgs/{org}/bindings/{name}",
            get(access::get_binding)
                .put(access::put_binding)
                .delete(access::delete_binding),
        )
        .route("/orgs/{org}/access-review", post(access::review))
        .route("/audit", get(access::audit))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                if r.extensions().get::<RouteName>().is_none() {
                    r.extensions_mut().insert(RouteName("api"));
                }
                r
            },
        ))
}

/// Every error the management API answers.
#[derive(Debug)]
pub(crate) enum ApiError {
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Invalid(String),
    RateLimited(std::time::Duration),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authentication required".to_owned(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            ApiError::Invalid(m) => (StatusCode::BAD_REQUEST, "invalid", m.clone()),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed attempts".to_owned(),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".to_owned(),
            ),
        };
        let body = json!({ "error": { "code": code, "message": message } });
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        match self {
            ApiError::Unauthorized => {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"berth\""),
                );
            }
            ApiError::RateLimited(after) => {
                if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::Internal(cause) => {
                r.extensions_mut().insert(crate::http::InternalError(cause));
            }
            _ => {}
        }
        r
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid => ApiError::Unauthorized,
            AuthError::RateLimited { retry_after } => ApiError::RateLimited(retry_after),
            AuthError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::iam::Error> for ApiError {
    fn from(e: crate::iam::Error) -> Self {
        use crate::iam::Error as E;
        match e {
            E::NotFound(m) => ApiError::NotFound(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Invalid(m) => ApiError::Invalid(m),
            e @ (E::Store(_) | E::Random(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// An authenticated caller of the management API.
#[derive(Clone)]
pub(crate) struct ApiCaller {
    pub(crate) principal: Principal,
    pub(crate) grants: Grants,
    pub(crate) client: ClientInfo,
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let client = client_info(parts);
        let creds = presented(&parts.headers);
        let st = state.clone();
        let c = client.clone();
        let (principal, grants) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let principal = match creds {
                Presented::Bearer(jwt) => {
                    let claims = st
                        .auth
                        .tokens()
                        .verify(&jwt, &st.auth.api_audience)
                        .map_err(|_| ApiError::Unauthorized)?;
                    st.auth
                        .principal_from_subject(&claims.sub)?
                        .ok_or(ApiError::Unauthorized)?
                }
                Presented::Basic(u, p) => st.auth.login(&u, &p, &c)?,
                Presented::None | Presented::Malformed => return Err(ApiError::Unauthorized),
            };
            let grants = st.auth.grants(&principal)?;
            Ok((principal, grants))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(ApiCaller {
            principal,
            grants,
            client,
        })
    }
}

impl ApiCaller {
    pub(crate) fn subject(&self) -> String {
        self.principal.subject()
    }

    pub(crate) fn require_admin(&self) -> ApiResult<()> {
        if self.grants.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only a server admin may do this".into(),
            ))
        }
    }

    /// Owner of `org` or server admin.
    pub(crate) fn require_owner(&self, org: &str) -> ApiResult<()> {
        if self.grants.admin || self.grants.owner_of.iter().any(|o| o == org) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "only an owner of {org:?} may do this"
            )))
        }
    }

    /// May `verb` the `resource` named `name` in `org` (owners, admins, Managers in scope).
    pub(crate) fn require_manage(
        &self,
        org: &str,
        resource: &str,
        verb: &str,
        name: &str,
    ) -> ApiResult<()> {
        if crate::policy::may_manage(&self.grants, org, resource, verb, name) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "not allowed to {verb} {resource} in {org:?}"
            )))
        }
    }

    pub(crate) fn in_org(&self, org: &str) -> bool {
        self.grants.admin
            || self.grants.owner_of.iter().any(|o| o == org)
            || self.grants.member_of.iter().any(|o| o == org)
            || self.grants.grants.iter().any(|g| g.org == org)
            || matches!(&self.principal, Principal::Robot { org: o, .. } if o == org)
    }
}

/// Runs blocking work (SQLite, argon2) off the executor.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&AppState) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Parses a JSON request body into `T`, with a readable error.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::Invalid(format!("invalid JSON body: {e}")))
}

/// Unix seconds as RFC 3339, `null` when absent.
pub(crate) fn time(t: Option<i64>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| {
        json!(crate::auth::token::rfc3339(t))
    })
}
