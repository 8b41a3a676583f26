//! What every handler of the management API shares: the caller (`ApiCaller`, authenticated and
//! with its grants), the error answer (`ApiError`), blocking work off the runtime, JSON in and out.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{AuthError, ClientInfo, Lineage, Login, Principal};
use crate::http::access::{Presented, client_info, presented};
use crate::http::answer::{Condition, InternalError};
use crate::policy::Grants;
use crate::state::AppState;

/// Every error the management API answers.
#[derive(Debug)]
pub(crate) enum ApiError {
    Unauthorized,
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Invalid(String),
    /// A request body over the route's limit: 413.
    TooLarge(String),
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
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m.clone()),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed attempts".to_owned(),
            ),
            ApiError::Internal(cause) => {
                let c = Condition::of(cause);
                let code = match c {
                    Condition::Unavailable | Condition::ReadOnly => "unavailable",
                    Condition::Full => "storage_full",
                    Condition::Internal => "internal",
                };
                (c.status(), code, c.message().to_owned())
            }
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
                r.extensions_mut().insert(InternalError(cause));
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
            E::Busy(_) => ApiError::RateLimited(std::time::Duration::from_secs(1)),
            E::Ended => ApiError::Unauthorized,
            e @ (E::Store(_) | E::Random(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// An authenticated caller of the management API.
#[derive(Clone)]
pub(crate) struct ApiCaller {
    pub(crate) principal: Principal,
    /// What the caller's authority came from (a password, a credential, a session family).
    pub(crate) lineage: Lineage,
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
        let (login, grants) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let login: Login = match creds {
                Presented::Bearer(jwt) => {
                    let claims = st
                        .auth
                        .tokens()
                        .verify(&jwt, &st.auth.api_audience)
                        .map_err(|_| ApiError::Unauthorized)?;
                    st.auth
                        .login_from_claims(&claims)?
                        .ok_or(ApiError::Unauthorized)?
                }
                Presented::Basic(u, p) => st.auth.login(&u, &p, &c)?,
                Presented::None | Presented::Malformed => return Err(ApiError::Unauthorized),
            };
            let grants = st.auth.grants(&login.principal)?;
            Ok((login, grants))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        // A workload's login is ephemeral: it may read, never create or change anything here
        // (what it made would outlive its token and the trust).
        if login.workload.is_some() && parts.method != axum::http::Method::GET {
            return Err(ApiError::Forbidden(
                "a workload's token may read the management API but not change it; use a robot token or a user's session".into(),
            ));
        }
        Ok(ApiCaller {
            principal: login.principal,
            lineage: login.lineage,
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
                "not allowed to {verb} {resource} in {org:?} (the organization does not exist, or you hold no such right in it)"
            )))
        }
    }

    /// **No escalation**: the caller may create or replace an object that grants `rules` within
    /// `scope` of `org` only if it already holds all of it there (`policy::may_grant`).
    pub(crate) fn require_holds(
        &self,
        org: &str,
        scope: &crate::policy::BindingScope,
        rules: &[crate::policy::Rule],
    ) -> ApiResult<()> {
        if crate::policy::may_grant(&self.grants, org, scope, rules) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "not allowed to grant access you do not hold yourself in {org:?}"
            )))
        }
    }

    /// The lineage recorded on a long-lived object this caller creates: it ends with the
    /// credential (and generation) the caller came from, and with the robot that made it.
    pub(crate) fn origin(&self) -> crate::iam::Origin {
        crate::iam::Origin::of(self.provenance())
    }

    /// The revocation keys an object this caller makes depends on (`Lineage::provenance`).
    pub(crate) fn provenance(&self) -> Vec<String> {
        self.lineage.provenance(&self.principal)
    }

    /// `provenance`, for an object of organization `org`: a user whose membership there was set
    /// through a credential acts, in that org, through that credential too (a member promoted
    /// by a leaked key cannot launder what they then make with their own password).
    pub(crate) fn provenance_in(&self, st: &AppState, org: &str) -> ApiResult<Vec<String>> {
        let mut keys = self.provenance();
        if let Principal::User { id, .. } = &self.principal {
            for k in st.auth.iam().membership_sources(org, *id)? {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        Ok(keys)
    }

    /// `origin`, for a credential of organization `org` (see `provenance_in`).
    pub(crate) fn origin_in(&self, st: &AppState, org: &str) -> ApiResult<crate::iam::Origin> {
        Ok(crate::iam::Origin::of(self.provenance_in(st, org)?))
    }

    /// **Long-lived credentials need a fresh proof**: a caller acting through a session (an
    /// access token, the console) creates or rotates a credential that never expires (or lives
    /// longer than `LONG_LIVED`) only within `--fresh-sign-in` of signing in, or with the current
    /// password in the request (`password`). The sign-in is the oldest of the sessions the
    /// caller's came from: a session opened with an access token is no fresher than its parent.
    /// A stolen session cannot plant a permanent key.
    pub(crate) fn require_fresh_proof(
        &self,
        st: &AppState,
        expires: Option<std::time::Duration>,
        password: Option<&str>,
    ) -> ApiResult<()> {
        if !self.lineage.0.iter().any(|k| k.starts_with("fam:")) {
            return Ok(());
        }
        if expires.is_some_and(|d| d <= LONG_LIVED) {
            return Ok(());
        }
        if let (Some(p), Principal::User { name, .. }) = (password, &self.principal)
            && st.auth.iam().check_password(name, p)?.is_some()
        {
            return Ok(());
        }
        let signed_in = st.auth.iam().signed_in_at(&self.lineage.0)?;
        let fresh = i64::try_from(st.web.fresh_sign_in.as_secs()).unwrap_or(i64::MAX);
        if signed_in.is_some_and(|at| crate::store::now().saturating_sub(at) <= fresh) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "a credential that never expires (or lives over a year) needs a recent sign-in (within {fresh} s) or your current password (\"password\"); log in again, or give it a shorter expiry"
        )))
    }

    /// Refuses to rotate credential `id` through itself or anything made from it: a leaked
    /// secret must not be able to take the only valid one from its owner.
    pub(crate) fn require_not_derived_from(&self, st: &AppState, id: &str) -> ApiResult<()> {
        if st.auth.iam().derives_from(&self.lineage.0, id)? {
            return Err(ApiError::Forbidden(
                "a credential cannot be rotated through itself or a session or credential made from it; use another credential or a password".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn in_org(&self, org: &str) -> bool {
        self.grants.admin
            || self.grants.owner_of.iter().any(|o| o == org)
            || self.grants.member_of.iter().any(|o| o == org)
            || self.grants.grants.iter().any(|g| g.org == org)
            || matches!(&self.principal, Principal::Robot { org: o, .. } if o == org)
    }
}

/// Longest lifetime a session may give a new credential without a fresh proof.
pub(crate) const LONG_LIVED: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

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

/// Parses a JSON request body into `T`, with a readable error. Every body is a JSON object:
/// an array would otherwise fill a struct's fields by position.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::Invalid("the body must be a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::Invalid(format!("invalid JSON body: {e}")))
}

/// A request body of at most `limit` bytes: over it, 413.
pub(crate) async fn body_bytes(body: axum::body::Body, limit: usize) -> ApiResult<bytes::Bytes> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge(format!("the request body is over {} KiB", limit / 1024)))
}

/// An error answer the API's router made without a handler (a query or path that does not
/// parse, a body over axum's limit, a wrong method): the same JSON error body as every other.
pub(crate) async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid",
    };
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let body = json!({ "error": { "code": code, "message": message } }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Unix seconds as RFC 3339, `null` when absent.
pub(crate) fn time(t: Option<i64>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| {
        json!(crate::auth::token::rfc3339(t))
    })
}
