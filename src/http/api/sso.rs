//! Single sign-on for the CLI (`berth login --sso`): `GET /auth/sso` lists the providers;
//! `POST /auth/sso/{provider}/device` starts the provider's device authorization (RFC 8628) and
//! answers the code the person types at the provider, with a `handle` — the provider's device
//! code sealed with the server's key, so any node can take it up and the CLI never holds a
//! provider credential; `POST /auth/sso/{provider}/token` with that handle polls the provider
//! once and, when the person has approved, verifies the ID token and answers berth's own session
//! (as `/auth/login` does). The provider's refresh token stays on the server, sealed, to read the
//! person's groups again.
//!
//! Who may call: anyone (like `/auth/login`); what they get is only what the provider vouches
//! for. Calls that reach the provider are limited per node.
//!
//! Where the provider offers no device grant, `berth login --sso` signs in through the browser
//! and a loopback redirect (RFC 8252): the console's start route takes the CLI's loopback address,
//! PKCE challenge and state (`cli_redirect`, `cli_challenge`, `cli_state`), its callback sends
//! the browser to that address with a one-time code (sealed, two minutes), and
//! `POST /auth/sso/{provider}/code` with the CLI's verifier gives berth's session.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::common::{ApiError, ApiResult, blocking, json_response, parse_body};
use super::session::session_json;
use crate::auth::oidc::SsoError;
use crate::iam::AuditEvent;
use crate::state::AppState;

const HANDLE_LABEL: &str = "berth sso device handle";
/// Calls to providers this node makes for device sign-ins, per minute at most.
const CALLS_PER_MINUTE: u32 = 600;

/// Calls to providers one client address may cause per minute (device starts, polls and codes
/// alike), besides the node's whole budget.
const CALLS_PER_ADDRESS: u32 = 30;

/// Budgets of calls to providers, per node and per client address: one client cannot make berth
/// flood a provider, nor spend the node's budget for everyone else.
pub(crate) fn within_budget(addr: Option<std::net::IpAddr>) -> bool {
    // An IPv6 client counts by its /56: one network cannot pass for many clients.
    let addr = addr.map(crate::types::ClientAddress::from);
    type Windows = Option<(
        Instant,
        u32,
        std::collections::HashMap<crate::types::ClientAddress, u32>,
    )>;
    static WINDOW: Mutex<Windows> = Mutex::new(None);
    let mut w = WINDOW
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    let fresh =
        !matches!(&*w, Some((start, ..)) if now.duration_since(*start) < Duration::from_secs(60));
    if fresh {
        *w = Some((now, 0, std::collections::HashMap::new()));
    }
    let Some((_, total, per)) = &mut *w else {
        return false;
    };
    if let Some(a) = addr {
        if per.len() >= 100_000 && !per.contains_key(&a) {
            return false;
        }
        let n = per.entry(a).or_insert(0);
        if *n >= CALLS_PER_ADDRESS {
            return false;
        }
        *n += 1;
    }
    if *total >= CALLS_PER_MINUTE {
        return false;
    }
    *total += 1;
    true
}

/// 429 with `Retry-After`, saying what was limited.
fn too_many() -> Response {
    let mut r = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        json!({ "error": {
            "code": "rate_limited",
            "message": "too many single sign-on requests from here; wait a minute",
        } }),
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("60"),
    );
    r
}

/// 503 naming the provider: it could not be reached, or answered an error of its own.
fn provider_unavailable(provider: &str) -> Response {
    let mut r = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": {
            "code": "unavailable",
            "message": format!("the identity provider {provider:?} cannot be reached or refused berth's client; retry later (the server's log says why)"),
        } }),
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    r
}

/// `GET /auth/sso`: the providers people may sign in with.
pub(super) async fn providers(State(st): State<AppState>) -> ApiResult<Response> {
    let list: Vec<Value> = st
        .auth
        .sso()
        .map(|s| {
            s.oidc()
                .providers()
                .map(|p| json!({ "name": p.name, "displayName": p.display_name, "issuer": p.issuer }))
                .collect()
        })
        .unwrap_or_default();
    Ok(json_response(StatusCode::OK, json!({ "providers": list })))
}

/// `POST /auth/sso/{provider}/device`: a device authorization at the provider.
pub(super) async fn device(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let client = crate::http::access::client_info(&req.into_parts().0);
    let sso = st
        .auth
        .sso()
        .map(|s| s.oidc())
        .filter(|s| s.provider(&provider).is_some())
        .ok_or_else(|| ApiError::NotFound(format!("no identity provider {provider:?}")))?;
    if !within_budget(client.addr) {
        return Ok(too_many());
    }
    let start = match sso.device_start(&provider).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(ApiError::Invalid(format!(
                "identity provider {provider:?} offers no device authorization; sign in to the console in a browser and create an API key there"
            )));
        }
        Err(e) => {
            tracing::warn!(provider, error = %e, "single sign-on: device authorization failed");
            return Ok(provider_unavailable(&provider));
        }
    };
    let sealed = json!({
        "p": provider,
        "d": start.device_code,
        "exp": crate::store::now() + start.expires_in.clamp(1, 1800),
    });
    let handle = st
        .auth
        .sso()
        .and_then(|s| s.seal_text(HANDLE_LABEL, &sealed.to_string()))
        .ok_or_else(|| ApiError::Internal("sealing the device handle failed".into()))?;
    let mut v = serde_json::to_value(&start).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["handle"] = handle.into();
    Ok(json_response(StatusCode::OK, v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollBody {
    handle: String,
}

/// `POST /auth/sso/{provider}/token`: one poll of a device authorization; berth's session once
/// the person approved. Pending: 400 `{"error": "authorization_pending"}` (or `slow_down`), as
/// RFC 8628 §3.5 answers.
pub(super) async fn token(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let client = crate::http::access::client_info(&parts);
    let body = super::common::body_bytes(body, 16 * 1024).await?;
    let body: PollBody = parse_body(&body)?;
    let sso = st
        .auth
        .sso()
        .map(|s| s.oidc())
        .filter(|s| s.provider(&provider).is_some())
        .ok_or_else(|| ApiError::NotFound(format!("no identity provider {provider:?}")))?;
    let kept: Value = st
        .auth
        .sso()
        .and_then(|s| s.open_text(HANDLE_LABEL, &body.handle))
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| ApiError::Invalid("the handle is not one this registry gave".into()))?;
    if kept.get("p").and_then(Value::as_str) != Some(provider.as_str()) {
        return Err(ApiError::Invalid(
            "the handle belongs to another identity provider".into(),
        ));
    }
    if kept.get("exp").and_then(Value::as_i64).unwrap_or(0) < crate::store::now() {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "expired_token"));
    }
    if !within_budget(client.addr) {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "slow_down"));
    }
    let device_code = kept
        .get("d")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // A handle works until it gave a session: polling the provider again with a spent device
    // code would make it revoke the person's grant.
    let once = crate::auth::sso::used_id("device", &device_code);
    let exp = kept.get("exp").and_then(Value::as_i64).unwrap_or(0);
    let (state, probe) = (st.clone(), once.clone());
    if blocking(&st, move |_| Ok(state.auth.iam().sso().used(&probe)?)).await? {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "expired_token"));
    }
    // One poll of a handle reaches the provider per 5-second slot: concurrent polls would
    // present the device code twice the moment it is approved, which the provider takes for a
    // replay (and revokes the grant).
    let slot = crate::store::now() / 5;
    let lease = format!("{once}:{slot}");
    let state = st.clone();
    if !blocking(&st, move |_| {
        Ok(state
            .auth
            .iam()
            .sso()
            .use_once(&lease, crate::store::now() + 10)?)
    })
    .await?
    {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "slow_down"));
    }
    let tokens = match sso.device_poll(&provider, &device_code).await {
        Ok(t) => t,
        Err(SsoError::Pending { slow_down }) => {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                if slow_down {
                    "slow_down"
                } else {
                    "authorization_pending"
                },
            ));
        }
        Err(SsoError::Refused(why)) => {
            let code = if why == "expired_token" {
                "expired_token"
            } else {
                "access_denied"
            };
            return Ok(oauth_error(StatusCode::UNAUTHORIZED, code));
        }
        Err(SsoError::Invalid(why)) => {
            tracing::warn!(
                provider,
                why,
                "single sign-on: a device sign-in was refused"
            );
            return Err(ApiError::Unauthorized);
        }
        Err(e @ SsoError::Unavailable(_)) => {
            tracing::warn!(provider, error = %e, "single sign-on: polling failed");
            return Ok(provider_unavailable(&provider));
        }
    };
    let (state, mark) = (st.clone(), once);
    if !blocking(&st, move |_| {
        Ok(state.auth.iam().sso().use_once(&mark, exp)?)
    })
    .await?
    {
        return Ok(oauth_error(StatusCode::BAD_REQUEST, "expired_token"));
    }
    let who = match sso.person(&provider, &tokens, None).await {
        Ok(w) => w,
        Err(SsoError::Unavailable(e)) => {
            tracing::warn!(provider, error = %e, "single sign-on: reading the person failed");
            return Ok(provider_unavailable(&provider));
        }
        Err(e) => {
            tracing::warn!(provider, error = %e, "single sign-on: the ID token was refused");
            return Err(ApiError::Unauthorized);
        }
    };
    let refresh = tokens.refresh_token;
    blocking(&st, move |st| {
        let session = sso_session(st, &who, refresh.as_deref(), &client, "device")?;
        Ok(json_response(StatusCode::OK, session))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
    code_verifier: String,
}

/// `POST /auth/sso/{provider}/code`: the CLI's loopback sign-in (RFC 8252) ends here: the
/// one-time code the console's callback sent to the CLI's loopback address, with the CLI's
/// PKCE verifier, becomes berth's session.
pub(super) async fn code(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let client = crate::http::access::client_info(&parts);
    let body = super::common::body_bytes(body, 64 * 1024).await?;
    let body: CodeBody = parse_body(&body)?;
    let sso = st
        .auth
        .sso()
        .filter(|s| s.oidc().provider(&provider).is_some())
        .ok_or_else(|| ApiError::NotFound(format!("no identity provider {provider:?}")))?;
    if !within_budget(client.addr) {
        return Ok(too_many());
    }
    let (who, refresh) = sso
        .open_cli_code(&provider, &body.code, &body.code_verifier)
        .ok_or(ApiError::Unauthorized)?;
    // A code gives one session.
    let once = crate::auth::sso::used_id("cli", &body.code);
    let state = st.clone();
    let exp = crate::store::now() + 600;
    if !blocking(&st, move |_| {
        Ok(state.auth.iam().sso().use_once(&once, exp)?)
    })
    .await?
    {
        return Err(ApiError::Unauthorized);
    }
    blocking(&st, move |st| {
        let session = sso_session(st, &who, refresh.as_deref(), &client, "loopback")?;
        Ok(json_response(StatusCode::OK, session))
    })
    .await
}

/// Signs in a person the provider vouched for and opens a CLI session: berth's tokens.
fn sso_session(
    st: &AppState,
    who: &crate::iam::ProviderUser,
    refresh: Option<&str>,
    client: &crate::auth::ClientInfo,
    how: &str,
) -> ApiResult<Value> {
    let detail = format!("single sign-on ({}), {how}", who.provider);
    let (login, session) = open_sso_session(
        st,
        who,
        refresh,
        client,
        &detail,
        "session",
        super::session::REFRESH_TOKEN_TTL,
    )?;
    session_json(st, &login, &session)
}

/// Signs in a person the provider vouched for (audited with `detail`) and opens a session
/// named `name` (the console's or the CLI's), keeping the provider's refresh token beside it.
/// Blocking.
pub(crate) fn open_sso_session(
    st: &AppState,
    who: &crate::iam::ProviderUser,
    refresh: Option<&str>,
    client: &crate::auth::ClientInfo,
    detail: &str,
    name: &str,
    ttl: std::time::Duration,
) -> ApiResult<(crate::auth::Login, crate::iam::NewCredential)> {
    let login = st.auth.sso_login(who)?;
    let crate::auth::Principal::User { id, name: user, .. } = &login.principal else {
        return Err(ApiError::Unauthorized);
    };
    st.auth.audit(AuditEvent {
        actor: Some(format!("user:{user}")),
        action: "login",
        success: true,
        client_addr: client.addr.map(|a| a.to_string()),
        detail: Some(detail.to_owned()),
        ..AuditEvent::default()
    });
    let session = super::session::open_named_session(st, *id, &login, name, ttl)?;
    let family = session
        .credential
        .family
        .clone()
        .unwrap_or_else(|| session.credential.id.clone());
    st.auth
        .sso()
        .ok_or(ApiError::Unauthorized)?
        .remember_session(&family, *id, &who.provider, refresh)?;
    Ok((login, session))
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    json_response(
        status,
        json!({ "error": code, "code": code, "message": code }),
    )
}
