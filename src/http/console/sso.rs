//! Signing in through an OpenID provider: `GET /ui/login/sso/{provider}` sends the browser to the
//! provider with a fresh `state`, `nonce` and PKCE challenge; the provider sends it back to
//! `GET /ui/login/sso/{provider}/callback`, where the code is exchanged and the ID token checked
//! (`auth::oidc`), the person becomes a user (`iam::sso`) and a console session opens.
//!
//! Invariants:
//! - the sign-in's state lives in the browser, in a cookie sealed with the server's key
//!   (`berth_sso`, `__Host-berth_sso` under TLS: `HttpOnly`, `SameSite=Lax` so the provider's
//!   redirect carries it, limited to `/ui/login/sso` without TLS, 10 minutes); a callback
//!   without it, with another `state`, for another provider, or late is refused; each state is
//!   used once (`sso_used`), before the code goes to the provider, and the cookie is cleared by
//!   every callback;
//! - the redirect URI is `--public-url`'s, never a request's `Host`: a sign-in started or
//!   finished on another host is refused;
//! - an `iss` parameter in the callback (RFC 9207) must be the provider's issuer (mix-up).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::home::login_page;
use super::session::{SESSION_TTL, cookie, see_other, session_cookie};
use crate::auth::oidc::{SsoError, random_token};
use crate::state::AppState;

const COOKIE: &str = "berth_sso";
/// Its name under TLS: `__Host-` keeps a sibling subdomain from planting one.
const TLS_COOKIE: &str = "__Host-berth_sso";
const STATE_LABEL: &str = "berth sso sign-in state";
/// How long a sign-in may take at the provider.
const SIGN_IN_SECS: i64 = 600;

fn cookie_name(st: &AppState) -> &'static str {
    if st.web.tls { TLS_COOKIE } else { COOKIE }
}

fn state_cookie(st: &AppState, value: Option<&str>) -> axum::http::HeaderValue {
    // Under TLS `__Host-` needs `Path=/`; without it, only the sign-in's paths carry it.
    let attrs = if st.web.tls {
        "Path=/; HttpOnly; SameSite=Lax; Secure"
    } else {
        "Path=/ui/login/sso; HttpOnly; SameSite=Lax"
    };
    let name = cookie_name(st);
    let v = match value {
        Some(v) => format!("{name}={v}; {attrs}; Max-Age={SIGN_IN_SECS}"),
        None => format!("{name}=; {attrs}; Max-Age=0"),
    };
    axum::http::HeaderValue::from_str(&v)
        .unwrap_or_else(|_| axum::http::HeaderValue::from_static(""))
}

/// Whether the request came to the host of `--public-url` (where the state cookie lives).
fn on_public_host(public_url: &str, headers: &HeaderMap) -> bool {
    let want = public_url.split("://").nth(1).unwrap_or(public_url);
    let want = want.split('/').next().unwrap_or(want);
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(want))
}

fn refused(st: &AppState, status: StatusCode, message: &str) -> Response {
    let mut r = login_page(st, status, Some(message), "");
    r.headers_mut()
        .append(header::SET_COOKIE, state_cookie(st, None));
    r
}

/// The CLI's loopback sign-in (RFC 8252 §7.3), when `berth login --sso` started this one:
/// where to send the browser back (`http://127.0.0.1:PORT/…` or `http://[::1]:PORT/…`), the
/// CLI's PKCE challenge and its state.
fn cli_request(q: &HashMap<String, String>) -> Result<Option<Value>, &'static str> {
    let Some(redirect) = q.get("cli_redirect") else {
        return Ok(None);
    };
    let bad = "This sign-in was started by a command line with a return address that is not on this computer's loopback.";
    let u = reqwest::Url::parse(redirect).map_err(|_| bad)?;
    // Exactly `127.0.0.1` or `[::1]` (RFC 8252 §7.3), written as the parser writes it back: a
    // name (`localhost`) could resolve elsewhere, other 127/8 addresses may go through a proxy,
    // and any spelling the parser rewrites is refused rather than reinterpreted.
    let host = u.host_str().unwrap_or_default();
    let loopback = host == "127.0.0.1" || host == "[::1]";
    if u.as_str() != redirect
        || u.scheme() != "http"
        || !loopback
        || u.port().is_none_or(|p| p == 0)
        || u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
        || u.password().is_some()
    {
        return Err(bad);
    }
    let b64url = |v: &str, min: usize, max: usize| {
        (min..=max).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let challenge = q
        .get("cli_challenge")
        .map(String::as_str)
        .unwrap_or_default();
    let state = q.get("cli_state").map(String::as_str).unwrap_or_default();
    if !b64url(challenge, 43, 43) || !b64url(state, 16, 128) {
        return Err(
            "This sign-in was started by a command line without a valid PKCE challenge and state.",
        );
    }
    Ok(Some(json!({ "r": redirect, "c": challenge, "s": state })))
}

/// `GET /ui/login/sso/{provider}`: to the provider, with this sign-in's state sealed in a cookie.
pub(super) async fn start(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(sso) = st.auth.sso().map(|s| s.oidc()) else {
        return refused(
            &st,
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured.",
        );
    };
    if sso.provider(&provider).is_none() {
        return refused(
            &st,
            StatusCode::NOT_FOUND,
            "There is no such identity provider.",
        );
    }
    if !on_public_host(sso.public_url(), &headers) {
        // Start where the provider will send the browser back, so the cookie is there.
        let query = raw.map(|r| format!("?{r}")).unwrap_or_default();
        return see_other(&format!(
            "{}/ui/login/sso/{provider}{query}",
            sso.public_url()
        ));
    }
    let cli = match cli_request(&q) {
        Ok(c) => c,
        Err(why) => return refused(&st, StatusCode::BAD_REQUEST, why),
    };
    let (Some(state), Some(nonce), Some(verifier)) =
        (random_token(), random_token(), random_token())
    else {
        return refused(
            &st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "The registry has no randomness to sign you in with.",
        );
    };
    let url = match sso
        // A command line's sign-in asks the person to sign in at the provider now: a code for a
        // loopback port is never handed out silently on the strength of an old provider session.
        .authorization_url(
            &provider,
            &state,
            &nonce,
            &verifier,
            cli.is_some().then_some("login"),
        )
        .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(provider, error = %e, "single sign-on: the provider cannot be reached");
            return refused(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity provider cannot be reached right now; try again.",
            );
        }
    };
    let sealed = json!({
        "p": provider,
        "s": state,
        "n": nonce,
        "v": verifier,
        "exp": crate::store::now() + SIGN_IN_SECS,
        "cli": cli,
    });
    let mut sealed = sealed;
    if cli.is_some() {
        // A command line's sign-in is confirmed on berth's own page first (a form posted from
        // this origin: another site can link here, never past here).
        sealed["go"] = url.clone().into();
    }
    let Some(sealed) = st
        .auth
        .sso()
        .and_then(|s| s.seal_text(STATE_LABEL, &sealed.to_string()))
    else {
        return refused(
            &st,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sealing the sign-in failed.",
        );
    };
    let mut r = match &cli {
        Some(c) => confirm_page(&st, &provider, c),
        None => see_other(&url),
    };
    r.headers_mut()
        .append(header::SET_COOKIE, state_cookie(&st, Some(&sealed)));
    r
}

/// The page that asks the person to confirm a command line's sign-in.
fn confirm_page(st: &AppState, provider: &str, cli: &Value) -> Response {
    let shown = st
        .auth
        .sso()
        .and_then(|s| s.oidc().provider(provider).map(|p| p.display_name.clone()))
        .unwrap_or_default();
    let to = cli.get("r").and_then(Value::as_str).unwrap_or_default();
    let m = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            (super::html::head("Sign in a command line"))
            body {
                main #main .signin {
                    h1 { "berth" }
                    p { "A command line on this computer asks to sign in to berth as you, through " (shown) "." }
                    p.muted { "It waits at " code { (to) } ". Continue only if you just ran " code { "berth login --sso" } " yourself." }
                    form method="post" action={ "/ui/login/sso/" (super::html::seg(provider)) "/continue" } {
                        button type="submit" { "Continue to " (shown) }
                    }
                    p { a href="/ui/login" { "Cancel" } }
                }
            }
        }
    };
    super::html::html_response(StatusCode::OK, m)
}

/// `POST /ui/login/sso/{provider}/continue`: the person confirmed a command line's sign-in: on
/// to the provider. Only from this origin, with the sign-in's cookie (`SameSite=Lax` keeps it
/// out of another site's POST).
pub(super) async fn proceed(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(sso) = st.auth.sso().map(|s| s.oidc()) else {
        return refused(
            &st,
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured.",
        );
    };
    let same_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || {
                headers
                    .get(header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|o| o == sso.public_url())
            },
            |v| v == "same-origin",
        );
    if !same_site {
        return refused(
            &st,
            StatusCode::FORBIDDEN,
            "This confirmation did not come from the registry's own page.",
        );
    }
    let kept: Option<Value> = cookie(&headers, cookie_name(&st))
        .and_then(|c| st.auth.sso().and_then(|s| s.open_text(STATE_LABEL, c)))
        .and_then(|t| serde_json::from_str(&t).ok());
    let go = kept.as_ref().filter(|k| {
        k.get("p").and_then(Value::as_str) == Some(provider.as_str())
            && k.get("exp").and_then(Value::as_i64).unwrap_or(0) >= crate::store::now()
    });
    match go.and_then(|k| k.get("go")).and_then(Value::as_str) {
        Some(url) => see_other(url),
        None => refused(
            &st,
            StatusCode::BAD_REQUEST,
            "This sign-in has no state here (it expired, or began in another browser); run berth login --sso again.",
        ),
    }
}

/// `GET /ui/login/sso/{provider}/callback`: the provider's answer.
pub(super) async fn callback(
    State(st): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: axum::extract::Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let headers = &parts.headers;
    let bad = |m: &str| refused(&st, StatusCode::BAD_REQUEST, m);
    let Some(sso) = st.auth.sso().map(|s| s.oidc()) else {
        return refused(
            &st,
            StatusCode::NOT_FOUND,
            "Single sign-on is not configured.",
        );
    };
    let Some(cfg) = sso.provider(&provider).cloned() else {
        return refused(
            &st,
            StatusCode::NOT_FOUND,
            "There is no such identity provider.",
        );
    };
    if !on_public_host(sso.public_url(), headers) {
        return bad(
            "This sign-in came back to another address than the registry's; start again from the sign-in page.",
        );
    }
    if let Some(e) = q.get("error") {
        let what = q.get("error_description").unwrap_or(e);
        return refused(
            &st,
            StatusCode::UNAUTHORIZED,
            &format!("The identity provider did not sign you in: {what}"),
        );
    }
    let kept: Option<Value> = cookie(headers, cookie_name(&st))
        .and_then(|c| st.auth.sso().and_then(|s| s.open_text(STATE_LABEL, c)))
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(kept) = kept else {
        return bad(
            "This sign-in has no state here (it expired, or began in another browser); start again.",
        );
    };
    let field = |k: &str| kept.get(k).and_then(Value::as_str).unwrap_or_default();
    let given = q.get("state").map(String::as_str).unwrap_or_default();
    let same_state: bool =
        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), field("s").as_bytes()).into();
    if field("p") != provider || given.is_empty() || !same_state {
        return bad("This sign-in's state does not match; start again.");
    }
    let exp = kept.get("exp").and_then(Value::as_i64).unwrap_or(0);
    if exp < crate::store::now() {
        return bad("This sign-in took too long; start again.");
    }
    if q.get("iss").is_some_and(|iss| *iss != cfg.issuer) {
        return bad(
            "The answer names another identity provider than the one this sign-in went to.",
        );
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return bad("The identity provider's answer has no code.");
    };
    if !crate::http::api::sso_budget(crate::http::access::client_info(&parts).addr) {
        return refused(
            &st,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ins from here; wait a minute and try again.",
        );
    }
    // Each answer works once: a replayed callback never reaches the provider (which would
    // revoke the person's grant on seeing its code again).
    let once = crate::auth::sso::used_id("state", given);
    let state = st.clone();
    let first =
        tokio::task::spawn_blocking(move || state.auth.iam().sso().use_once(&once, exp)).await;
    match first {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return bad("This sign-in's answer was used already; start again."),
        _ => {
            return refused(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "The registry could not finish the sign-in right now; try again.",
            );
        }
    }
    let tokens = match sso.exchange_code(&provider, code, field("v")).await {
        Ok(t) => t,
        Err(e) => return provider_failure(&st, &e),
    };
    let who = match sso.person(&provider, &tokens, Some(field("n"))).await {
        Ok(w) => w,
        Err(e) => return provider_failure(&st, &e),
    };
    // A command line's sign-in: back to its loopback address with a one-time code that only
    // its PKCE verifier redeems (`POST /api/v1/auth/sso/{provider}/code`).
    if let Some(cli) = kept.get("cli").filter(|c| c.is_object()) {
        let text = |k: &str| cli.get(k).and_then(Value::as_str).unwrap_or_default();
        let Some(code) = st.auth.sso().and_then(|s| {
            s.seal_cli_code(&provider, &who, tokens.refresh_token.as_deref(), text("c"))
        }) else {
            return refused(
                &st,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sealing the sign-in failed.",
            );
        };
        let Ok(mut back) = reqwest::Url::parse(text("r")) else {
            return bad("This sign-in's return address is not valid.");
        };
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", text("s"));
        let mut r = see_other(back.as_str());
        r.headers_mut()
            .append(header::SET_COOKIE, state_cookie(&st, None));
        return r;
    }
    let client = crate::http::access::client_info(&parts);
    let state = st.clone();
    let refresh = tokens.refresh_token.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let detail = format!("console, single sign-on ({})", who.provider);
        crate::http::api::open_sso_session(
            &state,
            &who,
            refresh.as_deref(),
            &client,
            &detail,
            "console",
            SESSION_TTL,
        )
        .map(|(_, session)| session)
        .map_err(|e| format!("opening a session failed: {e:?}"))
    })
    .await;
    match opened {
        Ok(Ok(session)) => {
            let mut r = see_other("/ui/");
            r.headers_mut().append(
                header::SET_COOKIE,
                session_cookie(&st, Some(session.secret.expose())),
            );
            r.headers_mut()
                .append(header::SET_COOKIE, state_cookie(&st, None));
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "single sign-on: opening the session failed");
            refused(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "The registry could not finish the sign-in right now; try again.",
            )
        }
        Err(_) => refused(
            &st,
            StatusCode::SERVICE_UNAVAILABLE,
            "The registry could not finish the sign-in right now; try again.",
        ),
    }
}

fn provider_failure(st: &AppState, e: &SsoError) -> Response {
    tracing::warn!(error = %e, "single sign-on refused");
    match e {
        SsoError::Refused(_) => refused(
            st,
            StatusCode::UNAUTHORIZED,
            "The identity provider refused this sign-in (the code was used already or has expired); start again.",
        ),
        SsoError::Invalid(why) => refused(
            st,
            StatusCode::UNAUTHORIZED,
            &format!("The identity provider's answer is not acceptable: {why}."),
        ),
        SsoError::Unavailable(_) | SsoError::Pending { .. } => refused(
            st,
            StatusCode::SERVICE_UNAVAILABLE,
            "The identity provider cannot be reached right now; try again.",
        ),
    }
}
