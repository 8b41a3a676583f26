//! Who is calling, and the one authorization decision in front of every `/v2` handler.
//!
//! Credentials come from the `Authorization` header: `Bearer <jwt>` (verified with the loaded
//! public keys only, no database read), `Basic` (any login the token service accepts, checked
//! against the metadata), or none (anonymous: public namespaces only). Denials follow the Docker
//! token protocol: `401` with `WWW-Authenticate: Bearer realm=…,service=…,scope=…` for anonymous
//! callers, `403` with the same challenge and `error="insufficient_scope"` for tokens that lack the
//! scope (RFC 6750 §3.1), `403 DENIED` for an authenticated Basic caller.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::auth::{AuthError, Claims, ClientInfo, Principal};
use crate::policy::{self, Action, Actions, Grants, NamespaceInfo};
use crate::state::AppState;

/// Credentials as presented.
pub(crate) enum Presented {
    None,
    Basic(String, String),
    Bearer(String),
    Malformed,
}

pub(crate) fn presented(headers: &HeaderMap) -> Presented {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Presented::None;
    };
    let Ok(v) = v.to_str() else {
        return Presented::Malformed;
    };
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Bearer(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Presented::Basic(u.to_owned(), p.to_owned());
        }
    }
    Presented::Malformed
}

pub(crate) fn client_info(parts: &axum::http::request::Parts) -> ClientInfo {
    ClientInfo {
        addr: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// An identified caller.
#[derive(Clone)]
pub(crate) enum Caller {
    /// A verified bearer token: exactly the access its claims list.
    Token(Claims),
    /// A principal identified from Basic credentials or none, with its grants.
    Principal(Principal, Grants),
}

impl Caller {
    pub(crate) fn is_anonymous(&self) -> bool {
        matches!(self, Caller::Principal(Principal::Anonymous, _))
    }

    /// The actions this caller may take on `repo`. Blocking for principals (reads the namespace).
    pub(crate) fn actions_on(&self, state: &AppState, repo: &str) -> Result<Actions, AuthError> {
        match self {
            Caller::Token(claims) => Ok(token_actions(claims, repo)),
            Caller::Principal(_, grants) => {
                let ns = namespace_info(state, policy::namespace_of(repo))?;
                Ok(policy::repository_actions(grants, repo, ns.as_ref()))
            }
        }
    }
}

pub(crate) fn token_actions(claims: &Claims, repo: &str) -> Actions {
    claims
        .access
        .iter()
        .filter(|a| a.kind == "repository" && a.name == repo)
        .flat_map(|a| a.actions.iter())
        .filter_map(|a| Action::parse(a))
        .fold(Actions::NONE, Actions::with)
}

pub(crate) fn namespace_info(
    state: &AppState,
    ns: &str,
) -> Result<Option<NamespaceInfo>, AuthError> {
    Ok(state.auth.namespace(ns)?.map(|n| NamespaceInfo {
        key: n.key(),
        public_key: n.public_key(),
        org: n.org,
        public: n.public,
    }))
}

/// Identifies the caller. Invalid credentials are an error answer (401 or 429), never anonymous.
pub(crate) async fn identify(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> Result<Caller, Denial> {
    match presented(&parts.headers) {
        Presented::Bearer(jwt) => match state.auth.tokens().verify(&jwt, &state.web.service) {
            Ok(claims) => Ok(Caller::Token(claims)),
            Err(_) => Err(Denial::BadCredentials),
        },
        Presented::Basic(user, pass) => {
            let (state, client) = (state.clone(), client_info(parts));
            tokio::task::spawn_blocking(move || {
                let p = state.auth.login(&user, &pass, &client)?.principal;
                let g = state.auth.grants(&p)?;
                Ok::<_, AuthError>(Caller::Principal(p, g))
            })
            .await
            .map_err(|e| Denial::Internal(e.to_string()))?
            .map_err(Denial::from)
        }
        Presented::None => Ok(Caller::Principal(Principal::Anonymous, Grants::default())),
        Presented::Malformed => Err(Denial::BadCredentials),
    }
}

/// Why a request is refused before its handler runs.
pub(crate) enum Denial {
    BadCredentials,
    RateLimited(std::time::Duration),
    /// Needs credentials (anonymous) or a token with more scope; carries the scope to ask for.
    Challenge {
        scope: Option<String>,
        insufficient: bool,
    },
    /// An authenticated caller without the right; says what was missing.
    Denied(String),
    NameUnknown,
    Internal(String),
}

impl From<AuthError> for Denial {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid => Denial::BadCredentials,
            AuthError::RateLimited { retry_after } => Denial::RateLimited(retry_after),
            AuthError::Internal(m) => Denial::Internal(m),
        }
    }
}

/// The base URL clients reach us at: configured, or from the request's Host header.
pub(crate) fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.web.public_url {
        return u.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if state.web.tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

fn quote(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

impl Denial {
    pub(crate) fn into_response(self, state: &AppState, headers: &HeaderMap) -> Response {
        let body = |code: &str, message: &str| {
            serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] })
                .to_string()
        };
        let challenge = |scope: Option<&str>, error: Option<&str>| {
            let mut v = format!(
                "Bearer realm=\"{}/token\",service=\"{}\"",
                quote(&public_base(state, headers)),
                quote(&state.web.service)
            );
            if let Some(s) = scope {
                v.push_str(&format!(",scope=\"{}\"", quote(s)));
            }
            if let Some(e) = error {
                v.push_str(&format!(",error=\"{e}\""));
            }
            HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Bearer"))
        };
        let json = [(header::CONTENT_TYPE, "application/json")];
        match self {
            Denial::BadCredentials => {
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    json,
                    body("UNAUTHORIZED", "authentication required"),
                )
                    .into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    challenge(None, Some("invalid_token")),
                );
                r
            }
            Denial::RateLimited(after) => {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    json,
                    body("TOOMANYREQUESTS", "too many failed attempts; retry later"),
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            Denial::Challenge {
                scope,
                insufficient: false,
            } => {
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    json,
                    body("UNAUTHORIZED", "authentication required"),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge(scope.as_deref(), None));
                r
            }
            // RFC 6750 §3.1: a token without the scope gets 403 with the challenge naming the
            // scope to ask for (clients such as oras fetch a new token on this answer).
            Denial::Challenge {
                scope,
                insufficient: true,
            } => {
                let mut r = (
                    StatusCode::FORBIDDEN,
                    json,
                    body("DENIED", "the token does not grant this access"),
                )
                    .into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    challenge(scope.as_deref(), Some("insufficient_scope")),
                );
                r
            }
            Denial::Denied(missing) => (
                StatusCode::FORBIDDEN,
                json,
                body(
                    "DENIED",
                    &format!("requested access to the resource is denied: {missing}"),
                ),
            )
                .into_response(),
            Denial::NameUnknown => (
                StatusCode::NOT_FOUND,
                json,
                body("NAME_UNKNOWN", "repository name not known to registry"),
            )
                .into_response(),
            Denial::Internal(cause) => {
                let c = crate::http::answer::Condition::of(&cause);
                let mut r = (c.status(), json, body(c.oci_code(), c.message())).into_response();
                r.extensions_mut()
                    .insert(crate::http::answer::InternalError(cause));
                r
            }
        }
    }
}

/// Caches namespace lookups while filtering a listing.
pub(crate) struct NamespaceCache<'a> {
    state: &'a AppState,
    seen: HashMap<String, Option<NamespaceInfo>>,
}

impl<'a> NamespaceCache<'a> {
    pub(crate) fn new(state: &'a AppState) -> Self {
        NamespaceCache {
            state,
            seen: HashMap::new(),
        }
    }

    pub(crate) fn may_pull(&mut self, grants: &Grants, repo: &str) -> Result<bool, AuthError> {
        let ns = policy::namespace_of(repo).to_owned();
        if !self.seen.contains_key(&ns) {
            let info = namespace_info(self.state, &ns)?;
            self.seen.insert(ns.clone(), info);
        }
        let info = self.seen.get(&ns).and_then(Option::as_ref);
        Ok(policy::repository_actions(grants, repo, info).contains(Action::Pull))
    }
}
