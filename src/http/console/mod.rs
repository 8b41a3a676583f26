//! The web console at `/` and `/ui/…`: server-rendered HTML (maud escapes every value), one
//! small script for copy, download and confirm buttons, and a stylesheet, all embedded.
//!
//! Every action is a call to the management API (or, deleting a tag, to `/v2`) made in-process
//! through the very router that serves `/api/v1`, with an access token of the signed-in user's
//! session. So the console has no authorization of its own: what the API refuses, the console
//! shows refused.
//!
//! Invariants:
//! - the session cookie holds a refresh token of a session family opened at sign-in (12 h),
//!   `HttpOnly`, `SameSite=Strict`, `Secure` under TLS; it is checked against the store on every
//!   request, so signing out, a password change or deleting the user ends it at once;
//! - every POST carries a CSRF token derived from the session secret (HMAC-like, SHA-256 of a
//!   domain string and the secret), compared in constant time, and must not come from another
//!   site (`Sec-Fetch-Site`, `Origin`);
//! - pages are `no-store`, framed by nobody, under a CSP that allows no inline script;
//! - a secret is shown once, on the GET a create or rotate form redirects to (`once`): a reload
//!   makes nothing and shows nothing; it never appears in a URL.

mod access;
mod home;
mod html;
mod layout;
mod list;
mod once;
mod repos;
mod robots;
mod session;
mod sso;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use super::answer::RouteName;
use crate::state::AppState;
use session::see_other;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn router() -> Router<AppState> {
    session::CONSOLE_BUILD.get_or_init(|| router);
    Router::new()
        .route("/", get(|| async { see_other("/ui/") }))
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/", get(home::home))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .route("/ui/assets/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .route("/ui/login", get(home::login_form).post(home::login))
        .route("/ui/login/sso/{provider}", get(sso::start))
        .route("/ui/login/sso/{provider}/callback", get(sso::callback))
        .route("/ui/login/sso/{provider}/continue", post(sso::proceed))
        .route("/ui/logout", post(home::logout))
        .route("/ui/switch", get(home::switch))
        .route("/ui/orgs", get(home::orgs).post(home::create_org))
        .route("/ui/users", get(home::users).post(home::create_user))
        .route("/ui/orgs/{org}", get(home::overview))
        .route("/ui/orgs/{org}/repositories", get(repos::list))
        .route("/ui/orgs/{org}/repositories/{*repo}", get(repos::show))
        .route("/ui/orgs/{org}/tags/delete", post(repos::delete_tag))
        .route(
            "/ui/orgs/{org}/robots",
            get(robots::list).post(robots::create),
        )
        .route("/ui/orgs/{org}/new-secret", get(robots::new_secret))
        .route("/ui/orgs/{org}/robots/{robot}", get(robots::show))
        .route("/ui/orgs/{org}/robots/{robot}/delete", post(robots::delete))
        .route(
            "/ui/orgs/{org}/robots/{robot}/tokens",
            post(robots::create_token),
        )
        .route(
            "/ui/orgs/{org}/robots/{robot}/tokens/{id}/rotate",
            post(robots::rotate_token),
        )
        .route(
            "/ui/orgs/{org}/robots/{robot}/tokens/{id}/revoke",
            post(robots::revoke_token),
        )
        .route(
            "/ui/orgs/{org}/robots/{robot}/apikeys",
            post(robots::create_robot_key),
        )
        .route(
            "/ui/orgs/{org}/robots/{robot}/apikeys/{id}/rotate",
            post(robots::rotate_robot_key),
        )
        .route(
            "/ui/orgs/{org}/robots/{robot}/apikeys/{id}/revoke",
            post(robots::revoke_robot_key),
        )
        .route(
            "/ui/orgs/{org}/robots/{robot}/trusts",
            post(robots::create_trust),
        )
        .route(
            "/ui/orgs/{org}/robots/{robot}/trusts/{name}/delete",
            post(robots::delete_trust),
        )
        .route("/ui/orgs/{org}/credentials", get(robots::credentials))
        .route("/ui/orgs/{org}/apikeys", post(robots::create_own_key))
        .route(
            "/ui/orgs/{org}/apikeys/{id}/rotate",
            post(robots::rotate_own_key),
        )
        .route(
            "/ui/orgs/{org}/apikeys/{id}/revoke",
            post(robots::revoke_own_key),
        )
        .route(
            "/ui/orgs/{org}/registry-tokens",
            post(robots::create_registry_token),
        )
        .route(
            "/ui/orgs/{org}/registry-tokens/{id}/rotate",
            post(robots::rotate_registry_token),
        )
        .route(
            "/ui/orgs/{org}/registry-tokens/{id}/revoke",
            post(robots::revoke_registry_token),
        )
        .route("/ui/orgs/{org}/access", get(access::show))
        .route("/ui/orgs/{org}/access.yaml", get(access::yaml))
        .route("/ui/orgs/{org}/bindings", post(access::create_binding))
        .route(
            "/ui/orgs/{org}/bindings/{name}/delete",
            post(access::delete_binding),
        )
        .route("/ui/orgs/{org}/roles", post(access::create_role))
        .route(
            "/ui/orgs/{org}/roles/{name}/delete",
            post(access::delete_role),
        )
        .route("/ui/orgs/{org}/access-check", post(access::check))
        .route("/ui/orgs/{org}/members", post(access::set_member))
        .route(
            "/ui/orgs/{org}/members/{user}/remove",
            post(access::remove_member),
        )
        .route("/ui/orgs/{org}/audit", get(access::audit))
        .route("/ui/{*rest}", any(not_found))
        .layer(axum::middleware::from_fn(guard))
}

/// Headers of every console answer, and the cross-site check of every POST.
async fn guard(req: Request, next: Next) -> Response {
    // Every form is refused from another site; the sign-in form (which has no CSRF token yet)
    // also needs a positive same-origin signal, so login CSRF cannot ride on a request that
    // carries neither header.
    let refused = req.method() == Method::POST
        && (cross_site(req.headers())
            || (req.uri().path() == "/ui/login" && !same_origin(req.headers())));
    let mut resp = if refused {
        layout::error_page(
            StatusCode::FORBIDDEN,
            "This form was sent from another site, so it was refused.",
        )
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CSP);
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    resp.extensions_mut().insert(RouteName("console"));
    resp
}

/// Whether a request says it comes from this site: `Sec-Fetch-Site: same-origin` (or `none`, a
/// typed URL), or an `Origin` whose host is this request's `Host`.
fn same_origin(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    matches!(
        (
            h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
            h.get(header::HOST).and_then(|v| v.to_str().ok()),
        ),
        (Some(origin), Some(host)) if origin.split("://").nth(1) == Some(host)
    )
}

/// Whether a request says it comes from another site: `Sec-Fetch-Site` (every current browser)
/// or, failing that, an `Origin` whose host is not this request's `Host`.
fn cross_site(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    match (
        h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        h.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.split("://").nth(1) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("assets/favicon.svg"))
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    layout::error_page(StatusCode::NOT_FOUND, "There is no such page.")
}
