//! The Docker registry token service at `/token`: `GET` with Basic auth (docker, podman,
//! skopeo) and `POST` with the OAuth2 password or refresh-token grant. The grant is the
//! intersection of what was asked and what policy allows; asking for more is never an error.
//! Also the public halves of the signing keys: `/.well-known/jwks.json` and
//! `/api/v1/keys/ca.pem`.
//!
//! See the Docker token specification ("Requesting a Token", "Using the token") and its OAuth2
//! variant ("oauth").

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::access::{self, Denial, Presented};
use super::answer::RouteName;
use crate::auth::{AccessEntry, AuthError, ClientInfo, Login, Principal};
use crate::iam::AuditEvent;
use crate::policy::scope::Scope;
use crate::policy::{self, Grants};
use crate::state::AppState;

pub(crate) fn pairs(text: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(text).unwrap_or_default()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn named(resp: Response) -> Response {
    let mut resp = resp;
    resp.extensions_mut().insert(RouteName("token"));
    resp
}

/// What a caller gets for the scopes it asked: each repository scope cut down to what policy
/// allows (entries left empty are dropped), the catalog for any authenticated caller; and the
/// revocation keys of the namespaces granted in (a deleted namespace ends the token, so a
/// namespace re-created under the name is not reached by it).
fn grant(
    state: &AppState,
    principal: &Principal,
    grants: &Grants,
    scopes: &[Scope],
) -> Result<(Vec<AccessEntry>, Vec<String>), AuthError> {
    let mut out: Vec<AccessEntry> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for s in scopes {
        match s {
            Scope::Repository { name, actions } => {
                let ns = access::namespace_info(state, policy::namespace_of(name.as_str()))?;
                let allowed = policy::repository_actions(grants, name.as_str(), ns.as_ref())
                    .intersect(*actions);
                if allowed.is_empty() {
                    continue;
                }
                if let Some(ns) = &ns {
                    for k in policy::token_keys(grants, name.as_str(), ns, allowed) {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
                let actions: Vec<String> = allowed.iter().map(|a| a.as_str().to_owned()).collect();
                match out
                    .iter_mut()
                    .find(|e| e.kind == "repository" && e.name == name.as_str())
                {
                    Some(e) => {
                        for a in actions {
                            if !e.actions.contains(&a) {
                                e.actions.push(a);
                            }
                        }
                    }
                    None => out.push(AccessEntry {
                        kind: "repository".into(),
                        name: name.as_str().to_owned(),
                        actions,
                    }),
                }
            }
            Scope::Catalog if *principal != Principal::Anonymous => {
                if !out.iter().any(|e| e.kind == "registry") {
                    out.push(AccessEntry {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: vec!["*".into()],
                    });
                }
            }
            Scope::Catalog => {}
        }
    }
    Ok((out, keys))
}

pub(crate) fn scopes_of<'a>(values: impl Iterator<Item = &'a str>) -> Vec<Scope> {
    values
        .flat_map(|v| v.split(' '))
        .filter_map(Scope::parse)
        .collect()
}

/// The parts of a token request both forms share.
struct TokenRequest {
    service: Option<String>,
    scopes: Vec<Scope>,
    /// (user name, secret); `None` for an anonymous request.
    login: Option<(String, String)>,
    offline: bool,
    oauth: bool,
}

pub(super) async fn get(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let q = pairs(parts.uri.query().unwrap_or_default());
    let login = match access::presented(&parts.headers) {
        Presented::Basic(u, p) => Some((u, p)),
        Presented::None => None,
        Presented::Bearer(_) | Presented::Malformed => {
            return named(error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "use Basic authentication for /token",
            ));
        }
    };
    let request = TokenRequest {
        service: q
            .iter()
            .find(|(k, _)| k == "service")
            .map(|(_, v)| v.clone()),
        scopes: scopes_of(
            q.iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.as_str()),
        ),
        login,
        offline: q.iter().any(|(k, v)| k == "offline_token" && v == "true"),
        oauth: false,
    };
    named(respond(&state, request, access::client_info(&parts), &parts.headers).await)
}

pub(super) async fn post(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body): Result<Bytes, _> = axum::body::to_bytes(body, 64 * 1024).await else {
        return named(error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "the form body is too large or unreadable",
        ));
    };
    let form = pairs(std::str::from_utf8(&body).unwrap_or_default());
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if field("grant_type").as_deref() == Some(TOKEN_EXCHANGE) {
        let st = state.clone();
        return named(exchange(&st, &form, access::client_info(&parts)).await);
    }
    let login = match field("grant_type").as_deref() {
        Some("password") => match (field("username"), field("password")) {
            (Some(u), Some(p)) => Some((u, p)),
            _ => {
                return named(error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "grant_type=password needs username and password",
                ));
            }
        },
        Some("refresh_token") => match field("refresh_token") {
            Some(t) => Some(("iamrefresh".to_owned(), t)),
            None => {
                return named(error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "grant_type=refresh_token needs refresh_token",
                ));
            }
        },
        _ => {
            return named(error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "grant_type must be password, refresh_token or urn:ietf:params:oauth:grant-type:token-exchange",
            ));
        }
    };
    let request = TokenRequest {
        service: field("service"),
        scopes: scopes_of(
            form.iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.as_str()),
        ),
        login,
        offline: field("access_type").as_deref() == Some("offline")
            && field("grant_type").as_deref() == Some("password"),
        oauth: true,
    };
    named(respond(&state, request, access::client_info(&parts), &parts.headers).await)
}

/// RFC 8693's grant type, and the subject token types accepted (a JWT; an OpenID ID token is one).
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const SUBJECT_TYPES: [&str; 2] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];

/// An OAuth 2.0 error answer (RFC 6749 §5.2), as RFC 8693 uses.
fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({ "error": code, "error_description": description }).to_string(),
    )
        .into_response()
}

/// RFC 8693 token exchange: a workload's JWT for a registry token of the robot whose trust
/// accepts it (`client_id` names the robot when several could). The answer's `scope` is what
/// was granted: the intersection of what was asked and what the robot may do.
async fn exchange(state: &AppState, form: &[(String, String)], client: ClientInfo) -> Response {
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let Some(jwt) = field("subject_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token is required",
        );
    };
    match field("subject_token_type") {
        Some(t) if SUBJECT_TYPES.contains(&t.as_str()) => {}
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "subject_token_type must be urn:ietf:params:oauth:token-type:jwt or urn:ietf:params:oauth:token-type:id_token",
            );
        }
    }
    if let Some(service) = field("audience").or(field("service"))
        && service != state.web.service
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            &format!("unknown audience {service:?}"),
        );
    }
    let scopes = scopes_of(
        form.iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    let client_id = field("client_id");
    let st = state.clone();
    let result = tokio::task::spawn_blocking(
        move || -> Result<Result<serde_json::Value, String>, AuthError> {
            let login = match &client_id {
                Some(robot) if robot.contains('/') => st.auth.login(robot, &jwt, &client)?,
                Some(_) => return Ok(Err("client_id must name a robot as ORG/ROBOT".into())),
                None => match st.auth.exchange_any(
                    &jwt,
                    &client,
                    scope_orgs(&st, &scopes)?.as_deref(),
                )? {
                    Ok(l) => l,
                    Err(ambiguous) => return Ok(Err(ambiguous)),
                },
            };
            if login.workload.is_none() {
                return Err(AuthError::Invalid);
            }
            let (jwt, claims, access) = issue_for(&st, &login, &scopes, &client)?;
            Ok(Ok(json!({
                "access_token": jwt,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": claims.exp - claims.iat,
                "scope": scope_of(&access),
            })))
        },
    )
    .await;
    match result {
        Ok(Ok(Ok(body))) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body.to_string(),
        )
            .into_response(),
        Ok(Ok(Err(message))) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &message),
        Ok(Err(AuthError::Invalid)) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the subject token is not accepted by any trust (issuer, signature, audience, times, subject or claims)",
        ),
        Ok(Err(AuthError::RateLimited { retry_after })) => {
            let mut r = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                "too many failed attempts; try again later",
            );
            if let Ok(v) =
                axum::http::HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Ok(Err(AuthError::Internal(m))) => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &m,
        ),
        Err(e) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        ),
    }
}

/// The organizations owning the namespaces that `scopes` name; `None` when they name none.
fn scope_orgs(st: &AppState, scopes: &[Scope]) -> Result<Option<Vec<String>>, AuthError> {
    let mut orgs = Vec::new();
    let mut named = false;
    for s in scopes {
        if let Scope::Repository { name, .. } = s {
            named = true;
            let ns = crate::policy::namespace_of(name.as_str());
            if let Some(row) = st.auth.namespace(ns)?
                && !orgs.contains(&row.org)
            {
                orgs.push(row.org);
            }
        }
    }
    Ok(named.then_some(orgs))
}

/// The one organization owning the repositories of `access` (`None`: none, or several).
fn granted_org(st: &AppState, access: &[AccessEntry]) -> Result<Option<String>, AuthError> {
    let mut org: Option<String> = None;
    for a in access.iter().filter(|a| a.kind == "repository") {
        let ns = crate::policy::namespace_of(&a.name);
        match (st.auth.namespace(ns)?, &org) {
            (Some(row), None) => org = Some(row.org),
            (Some(row), Some(o)) if &row.org == o => {}
            _ => return Ok(None),
        }
    }
    Ok(org)
}

/// The longest audit detail of one token: what it granted, cut.
const AUDIT_DETAIL_MAX: usize = 2000;

/// What was granted, as space-separated Docker scope strings (`repository:acme/app:pull`).
fn scope_of(access: &[AccessEntry]) -> String {
    access
        .iter()
        .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Signs a registry token for `login` with what policy grants of `scopes`, and audits it (a
/// workload's exchange with its issuer, subject and trust, never its token).
fn issue_for(
    st: &AppState,
    login: &Login,
    scopes: &[Scope],
    client: &ClientInfo,
) -> Result<(String, crate::auth::Claims, Vec<AccessEntry>), AuthError> {
    let grants = st.auth.grants(&login.principal)?;
    let (access, namespace_keys) = grant(st, &login.principal, &grants, scopes)?;
    let (jwt, claims) = st
        .auth
        .tokens()
        .issue_until(
            &login.principal.subject(),
            &st.web.service,
            access.clone(),
            login
                .lineage
                .token_keys(&login.principal)
                .into_iter()
                .chain(namespace_keys)
                .chain(grants.epoch_key.clone())
                .collect(),
            login.not_after(),
        )
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    let granted = scope_of(&access);
    let (action, detail) = match &login.workload {
        Some(w) => (
            "workload.exchange",
            format!(
                "issuer {} subject {} trust {}; granted {}",
                w.issuer,
                w.subject,
                w.trust,
                if granted.is_empty() {
                    "nothing"
                } else {
                    granted.as_str()
                }
            ),
        ),
        None => (
            "token.issue",
            if granted.is_empty() {
                "granted nothing".to_owned()
            } else {
                format!("granted {granted}")
            },
        ),
    };
    // Bounded: a request may name many scopes.
    let detail: String = detail.chars().take(AUDIT_DETAIL_MAX).collect();
    // The organization whose owners read the row: the robot's or the registry token's own;
    // for a user, the one organization whose repositories it granted something in. Never
    // from what was asked alone (anyone may ask for anything: that would let an outsider
    // write into an organization's audit), nor for anonymous callers.
    let org = match &login.principal {
        crate::auth::Principal::Robot { org, .. }
        | crate::auth::Principal::RegistryToken { org, .. } => Some(org.clone()),
        crate::auth::Principal::User { .. } => granted_org(st, &access)?,
        crate::auth::Principal::Anonymous => None,
    };
    st.auth.audit(AuditEvent {
        org,
        actor: Some(login.principal.subject()),
        action,
        success: true,
        client_addr: client.addr.map(|a| a.to_string()),
        detail: Some(detail),
        ..AuditEvent::default()
    });
    Ok((jwt, claims, access))
}

/// Failures of the token endpoint's work: authentication, or the session API's refresh rotation
/// (whose failures all mean the refresh token is not valid any more).
enum ApiOrAuth {
    Auth(AuthError),
    Api,
}

impl From<AuthError> for ApiOrAuth {
    fn from(e: AuthError) -> Self {
        ApiOrAuth::Auth(e)
    }
}

impl From<crate::http::api::common::ApiError> for ApiOrAuth {
    fn from(e: crate::http::api::common::ApiError) -> Self {
        match e {
            crate::http::api::common::ApiError::RateLimited(d) => {
                ApiOrAuth::Auth(AuthError::RateLimited { retry_after: d })
            }
            crate::http::api::common::ApiError::Internal(m) => {
                ApiOrAuth::Auth(AuthError::Internal(m))
            }
            _ => ApiOrAuth::Api,
        }
    }
}

impl From<crate::iam::Error> for ApiOrAuth {
    fn from(e: crate::iam::Error) -> Self {
        ApiOrAuth::Auth(e.into())
    }
}

async fn respond(
    state: &AppState,
    request: TokenRequest,
    client: ClientInfo,
    headers: &HeaderMap,
) -> Response {
    if let Some(service) = &request.service
        && *service != state.web.service
    {
        return error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            &format!("unknown service {service:?}"),
        );
    }
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiOrAuth> {
        let mut refresh_token = None;
        let login = match &request.login {
            // A refresh token asked for offline use is rotated: the answer carries its successor.
            Some((u, p)) if u == "iamrefresh" && request.offline => {
                let (login, next) = crate::http::api::session::rotate(&st, p, &client)?;
                let login = crate::http::api::session::session_login(&login, &next.credential);
                refresh_token = Some(next.secret.expose().to_owned());
                login
            }
            Some((u, p)) => st.auth.login(u, p, &client)?,
            None => Login::anonymous(),
        };
        // A user's offline login opens a session; its tokens carry the session's family.
        let new_session = match &login.principal {
            Principal::User { id, .. } if request.offline && refresh_token.is_none() => Some(*id),
            _ => None,
        };
        let login = match new_session {
            Some(id) => {
                let refresh = crate::http::api::session::open_session(&st, id, &login)?;
                refresh_token = Some(refresh.secret.expose().to_owned());
                crate::http::api::session::session_login(&login, &refresh.credential)
            }
            None => login,
        };
        let (jwt, claims, access) = issue_for(&st, &login, &request.scopes, &client)?;
        let issued_at = crate::auth::token::rfc3339(claims.iat);
        let expires_in = claims.exp - claims.iat;
        let mut body = if request.oauth {
            json!({ "access_token": jwt, "expires_in": expires_in, "issued_at": issued_at, "scope": scope_of(&access) })
        } else {
            json!({ "token": jwt, "access_token": jwt, "expires_in": expires_in, "issued_at": issued_at })
        };
        if let Some(t) = refresh_token {
            body["refresh_token"] = json!(t);
        }
        Ok(body)
    })
    .await;
    match result {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Ok(Err(ApiOrAuth::Auth(e))) => Denial::from(e).into_response(state, headers),
        Ok(Err(ApiOrAuth::Api)) => Denial::BadCredentials.into_response(state, headers),
        Err(e) => Denial::Internal(e.to_string()).into_response(state, headers),
    }
}

pub(super) async fn jwks(State(state): State<AppState>) -> Response {
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        state.auth.tokens().keys().jwks().to_string(),
    )
        .into_response();
    r.extensions_mut().insert(RouteName("jwks"));
    r
}

pub(super) async fn ca_pem(State(state): State<AppState>) -> Response {
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.auth.tokens().keys().ca_pem(),
    )
        .into_response();
    r.extensions_mut().insert(RouteName("ca_pem"));
    r
}
