//! The management API under `/api/v1`: JSON in and out, every route authorized with the same
//! grants and `policy` functions as `/v2`.
//!
//! Callers authenticate with `Authorization: Bearer <access token>` (from `POST /auth/login`) or
//! with Basic credentials (any login the token service accepts: a password, an API key, a robot
//! token). Errors are `{"error": {"code", "message"}}` with the status from one match in
//! `ApiError`. Handlers run their blocking work (argon2, SQLite) through `blocking`.

mod access;
mod identity;
mod repos;
mod robots;
mod session;

pub(crate) use session::{
    access, open_named_session, open_session, rotate as rotate_refresh, session_login,
};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::RouteName;
use super::access::{Presented, client_info, presented};
use crate::auth::{AuthError, ClientInfo, Lineage, Login, Principal};
use crate::policy::Grants;
use crate::state::AppState;

/// The route table: each line is method, path, handler, summary, success status and the
/// top-level fields of the success body (`name?`: optional). It builds the router and the
/// OpenAPI document both, so neither can forget a route; a test compares the documented shapes
/// with real answers.
macro_rules! api_routes {
    ($( $method:ident $path:literal => $handler:path, $summary:literal, $status:literal, [$($field:literal),*]; )*) => {
        pub(crate) fn router() -> Router<AppState> {
            let r = Router::new();
            $( let r = r.route($path, axum::routing::$method($handler)); )*
            r.route("/openapi.json", axum::routing::get(openapi_json))
                .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
                .layer(axum::middleware::map_response(|mut r: Response| async move {
                    if r.extensions().get::<RouteName>().is_none() {
                        r.extensions_mut().insert(RouteName("api"));
                    }
                    r
                }))
        }

        /// (method, path, operation id, summary, success status, top-level fields of the
        /// success body) of every route.
        pub(crate) const ROUTES: &[(&str, &str, &str, &str, u16, &[&str])] = &[
            $( (stringify!($method), $path, stringify!($handler), $summary, $status, &[$($field),*]), )*
        ];
    };
}

api_routes! {
    post "/auth/login" => session::login, "Log in with a user name and password: an access token and a refresh token", 200, ["access_token", "refresh_token", "expires_in", "token_type"];
    post "/auth/refresh" => session::refresh, "Exchange a refresh token for new tokens (the old refresh token stops working)", 200, ["access_token", "refresh_token", "expires_in", "token_type"];
    post "/auth/logout" => session::logout, "Revoke a refresh token", 204, [];
    get "/auth/whoami" => session::whoami, "Who the caller is", 200, ["subject", "kind", "name", "admin", "orgs"];
    post "/auth/access-token" => session::access_token, "A short-lived access token for the calling user (login user name iambearer)", 200, ["access_token", "expires_in", "token_type"];
    get "/sessions" => session::list_sessions, "List the caller's sessions (refresh-token families) with where they came from", 200, ["sessions"];
    delete "/sessions" => session::revoke_all_sessions, "End all of the caller's sessions and their access tokens", 204, [];
    delete "/sessions/{id}" => session::revoke_session, "End one of the caller's sessions and its access tokens", 204, [];
    get "/users" => identity::list_users, "List users (server admins)", 200, ["users"];
    post "/users" => identity::create_user, "Create a user (server admins)", 201, ["name", "admin", "created"];
    get "/users/{user}" => identity::get_user, "Get a user (the user or a server admin)", 200, ["name", "admin", "created"];
    delete "/users/{user}" => identity::delete_user, "Delete a user (server admins)", 204, [];
    put "/users/{user}/password" => identity::set_password, "Set a user's password (the user or a server admin)", 204, [];
    get "/orgs" => identity::list_orgs, "List the organizations the caller belongs to", 200, ["orgs"];
    post "/orgs" => identity::create_org, "Create an organization and its namespace; the caller becomes owner", 201, ["name", "created"];
    get "/orgs/{org}" => identity::get_org, "Get an organization with its namespaces", 200, ["name", "created", "namespaces"];
    delete "/orgs/{org}" => identity::delete_org, "Delete an organization (owners)", 204, [];
    get "/orgs/{org}/members" => identity::list_members, "List members", 200, ["members"];
    put "/orgs/{org}/members/{user}" => identity::set_member, "Change a member's role (owners); a user who is not a member is invited (202, the same answer whether or not the user exists) and joins on accepting; a server admin adds directly", 200, ["user", "role", "status"];
    get "/invitations" => identity::list_invitations, "The caller's invitations: organizations it may join, with the role offered", 200, ["invitations"];
    post "/orgs/{org}/invitations/accept" => identity::accept_invitation, "Accept the caller's invitation to an organization: join it with the role offered", 200, ["user", "role", "status"];
    delete "/orgs/{org}/members/{user}" => identity::remove_member, "Remove a member (owners)", 204, [];
    get "/orgs/{org}/namespaces" => identity::list_namespaces, "List an organization's namespaces", 200, ["namespaces"];
    post "/orgs/{org}/namespaces" => identity::create_namespace, "Create a namespace (owners)", 201, ["name", "org", "public", "created"];
    get "/namespaces/{ns}" => identity::get_namespace, "Get a namespace", 200, ["name", "org", "public", "created"];
    patch "/namespaces/{ns}" => identity::patch_namespace, "Make a namespace public or private (owners)", 200, ["name", "org", "public", "created"];
    delete "/namespaces/{ns}" => identity::delete_namespace, "Delete a namespace (owners)", 204, [];
    get "/orgs/{org}/robots" => robots::list_robots, "List robots", 200, ["robots"];
    post "/orgs/{org}/robots" => robots::create_robot, "Create a robot (robots:create in the org: Manager, owner, admin); it holds nothing until bound", 201, ["org", "name", "description", "created"];
    get "/orgs/{org}/robots/{robot}" => robots::get_robot, "Get a robot with its workload trusts", 200, ["org", "name", "description", "created", "trusts"];
    get "/orgs/{org}/robots/{robot}/trusts" => robots::list_trusts, "List a robot's workload trusts (credentials:list)", 200, ["trusts"];
    post "/orgs/{org}/robots/{robot}/trusts" => robots::create_trust, "Trust workloads whose tokens of an OpenID issuer match (subject pattern, audience, claims) to act as the robot (credentials:create, and holding all the robot holds)", 201, ["name", "issuer", "subject", "audience", "claims", "jwks", "created", "lastUsed"];
    delete "/orgs/{org}/robots/{robot}/trusts/{name}" => robots::delete_trust, "Delete a workload trust; registry tokens issued through it stop working (credentials:delete, and holding all the robot holds)", 204, [];
    delete "/orgs/{org}/robots/{robot}" => robots::delete_robot, "Delete a robot with its credentials, the credentials it created and its bindings (robots:delete, and holding all the robot holds)", 204, [];
    get "/orgs/{org}/robots/{robot}/tokens" => robots::list_robot_tokens, "List a robot's tokens (no secrets; created, expires, last used)", 200, ["tokens"];
    post "/orgs/{org}/robots/{robot}/tokens" => robots::create_robot_token, "Create a robot token: {accessId, token}, shown once (credentials:create, and holding all the robot holds)", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "accessId", "token"];
    post "/orgs/{org}/robots/{robot}/tokens/{id}/rotate" => robots::rotate_robot_token, "Rotate a robot token: a new secret, the same accessId; the old secret works for the overlap ({\"overlap\": \"24h\"} by default, \"0\" ends it at once). Shown once (credentials:create, and holding all the robot holds)", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "accessId", "token", "previousValidUntil"];
    delete "/orgs/{org}/robots/{robot}/tokens/{id}" => robots::delete_robot_token, "Delete a robot token by id or name (credentials:delete, and holding all the robot holds)", 204, [];
    get "/orgs/{org}/robots/{robot}/apikeys" => robots::list_robot_keys, "List a robot's API keys", 200, ["apikeys"];
    post "/orgs/{org}/robots/{robot}/apikeys" => robots::create_robot_key, "Create an API key for a robot, shown once (credentials:create, and holding all the robot holds)", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey"];
    post "/orgs/{org}/robots/{robot}/apikeys/{id}/rotate" => robots::rotate_robot_key, "Rotate a robot's API key with an overlap (as for robot tokens)", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey", "previousValidUntil"];
    delete "/orgs/{org}/robots/{robot}/apikeys/{id}" => robots::delete_robot_key, "Delete a robot's API key by id or name (credentials:delete, and holding all the robot holds)", 204, [];
    get "/orgs/{org}/credentials" => robots::list_org_credentials, "Every robot token, robot API key, registry token and trust of an organization with expiry and last use; expiringWithin=14d and unusedFor=90d keep those that need attention (credentials:list)", 200, ["credentials"];
    get "/apikeys" => robots::list_own_keys, "List the caller's API keys", 200, ["apikeys"];
    post "/apikeys" => robots::create_own_key, "Create an API key for the calling user, shown once; made through another credential, it ends with that credential", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey"];
    post "/apikeys/{id}/rotate" => robots::rotate_own_key, "Rotate one of the caller's API keys with an overlap", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey", "previousValidUntil"];
    delete "/apikeys/{id}" => robots::delete_own_key, "Delete one of the caller's API keys (by id or name)", 204, [];
    get "/tokens" => robots::list_registry_tokens, "List registry tokens of the organization in the Organization header", 200, ["tokens"];
    post "/tokens" => robots::create_registry_token, "Create a registry token for the Organization header's org, permanent=true: no expiry (credentials:create there and org-wide pull, or push for readwrite)", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "token"];
    post "/tokens/{id}/rotate" => robots::rotate_registry_token, "Rotate a registry token of the Organization header's org with an overlap (what creating one needs)", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "token", "previousValidUntil"];
    delete "/tokens/{id}" => robots::delete_registry_token, "Delete a registry token by id or name (credentials:delete)", 204, [];
    get "/orgs/{org}/roles" => access::list_roles, "List roles (built-in and custom)", 200, ["roles"];
    get "/orgs/{org}/roles/{name}" => access::get_role, "Get a role", 200, ["kind", "org", "name", "rules", "builtin"];
    put "/orgs/{org}/roles/{name}" => access::put_role, "Create or replace a custom role (roles:update, and holding org-wide every rule it has and had)", 200, ["kind", "org", "name", "rules", "builtin"];
    delete "/orgs/{org}/roles/{name}" => access::delete_role, "Delete a custom role (roles:delete, and holding org-wide every rule it has)", 204, [];
    get "/orgs/{org}/bindings" => access::list_bindings, "List bindings", 200, ["bindings"];
    get "/orgs/{org}/bindings/{name}" => access::get_binding, "Get a binding", 200, ["kind", "org", "name", "role", "subject", "namespace?", "repository?"];
    put "/orgs/{org}/bindings/{name}" => access::put_binding, "Create or replace a binding (bindings:update, and holding what it grants and what the replaced one granted)", 200, ["kind", "org", "name", "role", "subject", "namespace?", "repository?"];
    delete "/orgs/{org}/bindings/{name}" => access::delete_binding, "Delete a binding (bindings:delete, and holding what it grants)", 204, [];
    post "/orgs/{org}/access-review" => access::review, "Whether a subject may do a verb on a resource", 200, ["allowed"];
    get "/audit" => access::audit, "List audit events, newest first (filters: actor, action, outcome, since and until as Unix seconds, RFC 3339 or a duration back from now; before: the next page's cursor; limit)", 200, ["events", "next"];
    get "/orgs/{org}/repositories" => repos::list_repositories, "List the organization's repositories the caller may pull, with tag count, size and last push (members)", 200, ["repositories"];
    get "/orgs/{org}/repositories/{*repository}" => repos::get_repository, "A page of a repository's tags (n ≤ 50, after last) with digest, media type, size, platforms, annotations (up to 16 KiB) and push time, the first 10 referrers of each, the caller's actions on it, and next: the last tag of the page when there are more (members who may pull it)", 200, ["name", "org", "actions", "tags", "next"];
    get "/orgs/{org}/storage" => repos::storage, "Storage per namespace of the organization: repositories and bytes (members)", 200, ["namespaces"];
}

/// The OpenAPI 3 document of this API, built from `ROUTES`.
pub(crate) fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, handler, summary, status, fields) in ROUTES {
        let params: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| name.trim_start_matches('*'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "operationId": handler.replace("::", "_"),
            "summary": summary,
            "parameters": params,
            "responses": {
                status.to_string(): success(fields),
                "400": { "description": "invalid request", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "401": { "description": "authentication required" },
                "403": { "description": "not allowed" },
                "404": { "description": "not found" },
            },
        });
        // A create-or-replace PUT answers 201 when it created, 200 when it replaced.
        if *method == "put" && *status == 200 && fields.contains(&"kind") {
            op["responses"]["201"] = success(fields);
        }
        // Adding a member who is not one yet is an invitation.
        if *path == "/orgs/{org}/members/{user}" {
            op["responses"]["202"] = success(fields);
        }
        if ["post", "put", "patch"].contains(method) {
            op["requestBody"] =
                json!({ "content": { "application/json": { "schema": { "type": "object" } } } });
        }
        if *path == "/auth/login" || *path == "/auth/refresh" || *path == "/auth/logout" {
            op["security"] = json!([]);
        }
        let entry = paths
            .entry(format!("/api/v1{}", path.replace("{*", "{")))
            .or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "berth management API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "security": [{ "bearer": [] }, { "basic": [] }],
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "basic": { "type": "http", "scheme": "basic" },
            },
            "schemas": {
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                    "code": { "type": "string" }, "message": { "type": "string" } } } } },
            },
        },
    })
}

/// The success answer of an operation: no body, or a JSON object with these fields.
fn success(fields: &[&str]) -> serde_json::Value {
    if fields.is_empty() {
        return json!({ "description": "success" });
    }
    // A field written `name?` is optional.
    let properties: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|f| (f.trim_end_matches('?').to_owned(), json!({})))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| !f.ends_with('?'))
        .collect();
    json!({
        "description": "success",
        "content": { "application/json": { "schema": {
            "type": "object", "properties": properties, "required": required,
        } } },
    })
}

async fn openapi_json() -> Response {
    json_response(StatusCode::OK, openapi())
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
            ApiError::Internal(cause) if crate::http::InternalError::unavailable(cause) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the registry's storage is unavailable; retry later".to_owned(),
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
