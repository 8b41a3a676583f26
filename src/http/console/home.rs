//! Signing in and out, choosing an organization, and the overview: credentials that need
//! attention, failed logins and storage per namespace.

use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::html::seg;
use super::layout::{page, text, time};
use super::session::{FORM_MAX, SESSION_TTL, Session, see_other, session_cookie};
use crate::auth::{AuthError, Principal};
use crate::iam::AuditEvent;
use crate::state::AppState;

/// The sign-in page: a button per identity provider, and the password form unless local
/// passwords are turned off.
pub(super) fn login_page(
    st: &AppState,
    status: StatusCode,
    error: Option<&str>,
    user: &str,
) -> Response {
    let providers: Vec<(String, String)> = st
        .auth
        .sso()
        .map(|s| {
            s.oidc()
                .providers()
                .map(|p| (p.name.clone(), p.display_name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let passwords = st.auth.local_login() != crate::auth::oidc::LocalLogin::Off;
    let m = html! {
        (maud::DOCTYPE)
        html lang="en" {
            (super::html::head("Sign in"))
            body {
                main #main .signin {
                    h1 { "berth" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    @for (name, shown) in &providers {
                        p { a.button.sso href={ "/ui/login/sso/" (seg(name)) } { "Sign in with " (shown) } }
                    }
                    @if passwords {
                    @if !providers.is_empty() { p.muted { "or with a local password:" } }
                    form method="post" action="/ui/login" {
                        label for="username" { "User name" }
                        input #username name="username" autocomplete="username" required autofocus value=(user);
                        label for="password" { "Password" }
                        input #password name="password" type="password" autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                    }
                    }
                    p.muted { "Robots do not sign in here: they use their tokens with registry clients." }
                }
            }
        }
    };
    super::html::html_response(status, m)
}

pub(super) async fn login_form(State(st): State<AppState>) -> Response {
    login_page(&st, StatusCode::OK, None, "")
}

/// `POST /ui/login`: a user name and password open a console session (a refresh-token family,
/// 12 h) whose secret becomes the cookie. Failures count in the same limits as every login.
pub(super) async fn login(State(st): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let client = crate::http::access::client_info(&parts);
    let Ok(bytes) = axum::body::to_bytes(body, FORM_MAX).await else {
        return login_page(
            &st,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("The form is too large."),
            "",
        );
    };
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let user = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let state = st.clone();
    let u = user.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let login = state.auth.login(&u, &password, &client)?;
        let Principal::User { id, name, .. } = &login.principal else {
            return Err(AuthError::Invalid);
        };
        state.auth.audit(AuditEvent {
            actor: Some(format!("user:{name}")),
            action: "login",
            success: true,
            client_addr: client.addr.map(|a| a.to_string()),
            detail: Some("console".into()),
            ..AuditEvent::default()
        });
        crate::http::api::session::open_named_session(&state, *id, &login, "console", SESSION_TTL)
            .map_err(|_| AuthError::Internal("opening a session failed".into()))
    })
    .await;
    match opened {
        Ok(Ok(session)) => {
            let mut r = see_other("/ui/");
            r.headers_mut().append(
                header::SET_COOKIE,
                session_cookie(&st, Some(session.secret.expose())),
            );
            r
        }
        Ok(Err(AuthError::RateLimited { .. })) => login_page(
            &st,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed attempts from here; wait a minute and try again."),
            &user,
        ),
        Ok(Err(AuthError::Invalid)) => login_page(
            &st,
            StatusCode::UNAUTHORIZED,
            Some("The user name or password is wrong."),
            &user,
        ),
        _ => login_page(
            &st,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("The registry could not check the sign-in right now; try again."),
            &user,
        ),
    }
}

/// `POST /ui/logout`: ends the session's family (its access tokens too) and drops the cookie.
pub(super) async fn logout(p: super::session::Posted) -> Response {
    let s = &p.session;
    let _ = s
        .api
        .send(
            axum::http::Method::POST,
            "/auth/logout",
            Some(json!({ "refresh_token": s.refresh })),
        )
        .await;
    let mut r = see_other("/ui/login");
    r.headers_mut()
        .append(header::SET_COOKIE, session_cookie(s.state(), None));
    r
}

/// `GET /ui/`: the first organization's overview.
pub(super) async fn home(s: Session) -> Response {
    match s.orgs().await.first() {
        Some(o) => see_other(&format!("/ui/orgs/{}", seg(o))),
        None => {
            let body = html! {
                p { "You belong to no organization yet: create one (you become its owner), or ask an owner to add you." }
                (new_org_form(&s))
            };
            page(&s, None, "", "Welcome", body).await
        }
    }
}

pub(super) async fn switch(_s: Session, Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("org").filter(|o| !o.is_empty()) {
        Some(o) => see_other(&format!("/ui/orgs/{}", seg(o))),
        None => see_other("/ui/"),
    }
}

/// `GET /ui/orgs/{org}`: what needs attention, at a glance.
pub(super) async fn overview(s: Session, Path(org): Path<String>) -> Response {
    let o = seg(&org);
    // Storage needs membership: a stranger to the organization sees nothing else either.
    // Failed logins with this organization's credentials and robots: what its owners (and who
    // holds list on audit) read in its audit trail.
    let failed = s.api.get(format!(
        "/orgs/{o}/audit?action=login&outcome=failure&since=24h&limit=1000"
    ));
    let (storage, flagged, all, failed) = tokio::join!(
        s.api.get(format!("/orgs/{o}/storage")),
        s.api.get(format!(
            "/orgs/{o}/credentials?expiringWithin=14d&unusedFor=90d"
        )),
        s.api.get(format!("/orgs/{o}/credentials")),
        failed,
    );
    let storage = match storage {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let list = |r: &Result<Value, super::session::Failure>| -> Vec<Value> {
        r.as_ref()
            .ok()
            .and_then(|v| v["credentials"].as_array().cloned())
            .unwrap_or_default()
    };
    let has = |v: &Value, wanted: &[&str]| {
        v["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| wanted.contains(&x.as_str().unwrap_or(""))))
    };
    let expiring: Vec<Value> = list(&flagged)
        .into_iter()
        .filter(|v| has(v, &["expiring"]))
        .collect();
    // Expired but not revoked: not "expiring", and a reason to tidy up.
    let expired: Vec<Value> = list(&flagged)
        .into_iter()
        .filter(|v| has(v, &["expired"]))
        .collect();
    // Never used at all (however new), then used once but not for 90 days.
    let mut idle: Vec<Value> = list(&all)
        .into_iter()
        .filter(|v| v["lastUsed"].is_null())
        .collect();
    idle.extend(list(&flagged).into_iter().filter(|v| has(v, &["unused"])));
    let failures: Option<u64> = match &failed {
        Ok(v) => Some(
            v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["count"].as_u64().unwrap_or(1))
                .sum(),
        ),
        _ => None,
    };
    let refused = flagged.as_ref().err().map(|f| f.message.clone());
    let body = html! {
        div.cards {
            a.card href="#expiring" { span.big { (expiring.len()) } span { "credentials expiring within 14 days" } }
            a.card href="#idle" { span.big { (idle.len()) } span { "credentials never used, or unused for 90 days" } }
            @match failures {
                Some(n) => a.card href=(format!("/ui/orgs/{o}/audit?action=login&outcome=failure&since=24h")) {
                    span.big { (n) } span { "failed logins with " (org) "'s credentials in the last 24 h" } }
                None => div.card { span.big { "—" } span { "failed logins: the organization's owners see them" } }
            }
        }
        @if let Some(m) = refused { p.muted { (m) } }
        section aria-labelledby="expiring" {
            h2 #expiring { "Expiring within 14 days" }
            (credential_table(&expiring, "expires"))
        }
        @if !expired.is_empty() {
            section aria-labelledby="expired" {
                h2 #expired { "Expired, not yet deleted" }
                (credential_table(&expired, "expires"))
            }
        }
        section aria-labelledby="idle" {
            h2 #idle { "Never used, or unused for 90 days" }
            (credential_table(&idle, "lastUsed"))
        }
        section aria-labelledby="storage" {
            h2 #storage { "Storage per namespace" }
            div.scroll { table {
                thead { tr { th { "Namespace" } th.num { "Repositories" } th.num { "Size" } } }
                tbody {
                    @for n in storage["namespaces"].as_array().into_iter().flatten() {
                        tr { td { (text(&n["name"])) } td.num { (n["repositories"]) } td.num { (super::html::size(&n["size"])) } }
                    }
                }
            } }
        }
    };
    page(
        &s,
        Some(&org),
        "overview",
        &format!("Overview of {org}"),
        body,
    )
    .await
}

fn credential_table(rows: &[Value], when: &str) -> Markup {
    html! {
        @if rows.is_empty() { p.muted { "None." } }
        @else {
            div.scroll {
                table {
                    thead { tr { th { "Kind" } th { "Owner" } th { "Name" } th { @if when == "expires" { "Expires" } @else { "Last used" } } } }
                    tbody {
                        @for c in rows {
                            tr {
                                td { (text(&c["kind"])) }
                                td { (text(&c["owner"])) }
                                td { (text(&c["name"])) }
                                td { @if when == "expires" { (time(&c["expires"])) } @else { (time(&c["lastUsed"]["at"])) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn new_org_form(s: &Session) -> Markup {
    html! {
        form.stack method="post" action="/ui/orgs" {
            (super::layout::refusal(s, "/ui/orgs"))
            (super::layout::csrf(s))
            label for="org-name" { "New organization" }
            input #org-name name="name" required pattern=(super::html::NAME_PATTERN) placeholder="acme" value=[s.typed("/ui/orgs", "name")];
            button type="submit" { "Create organization" }
        }
    }
}

/// `GET /ui/orgs`: the user's organizations, and a new one.
pub(super) async fn orgs(s: Session) -> Response {
    let list = s.orgs().await;
    let body = html! {
        ul.plain { @for o in &list { li { a href=(format!("/ui/orgs/{}", seg(o))) { (o) } } } }
        @if list.is_empty() { p.muted { "None yet." } }
        (new_org_form(&s))
    };
    page(&s, None, "", "Organizations", body).await
}

pub(super) async fn create_org(p: super::session::Posted) -> Response {
    let name = p.field("name").unwrap_or("");
    let done =
        format!("Created organization {name}, with its namespace {name}; you are its owner.");
    let (body, back) = (json!({ "name": name }), format!("/ui/orgs/{}", seg(name)));
    p.form_on("/ui/orgs".into())
        .act(
            axum::http::Method::POST,
            "/orgs",
            Some(body),
            None,
            &back,
            &done,
        )
        .await
}

/// `GET /ui/users` (server admins): users, and a new one.
pub(super) async fn users(s: Session) -> Response {
    let users = match s.api.get("/users").await {
        Ok(v) => v["users"].as_array().cloned().unwrap_or_default(),
        Err(f) => return f.into_response(),
    };
    let body = html! {
        div.scroll { table {
            thead { tr { th { "User" } th { "Server admin" } th { "Created" } } }
            tbody { @for u in &users {
                tr { td { (text(&u["name"])) } td { @if u["admin"] == json!(true) { "yes" } } td { (time(&u["created"])) } }
            } }
        } }
        h2 { "New user" }
        form.stack method="post" action="/ui/users" {
            (super::layout::refusal(&s, "/ui/users"))
            (super::layout::csrf(&s))
            label for="u-name" { "User name" }
            input #u-name name="name" required autocomplete="off" value=[s.typed("/ui/users", "name")];
            label for="u-password" { "Password (at least " (crate::iam::password::MIN_LEN) " characters)" }
            input #u-password name="password" type="password" required autocomplete="new-password";
            button type="submit" { "Create user" }
        }
    };
    page(&s, None, "", "Users", body).await
}

pub(super) async fn create_user(p: super::session::Posted) -> Response {
    let name = p.field("name").unwrap_or("");
    let body = json!({ "name": name, "password": p.form.get("password") });
    let done = format!("Created user {name}.");
    p.act(
        axum::http::Method::POST,
        "/users",
        Some(body),
        None,
        "/ui/users",
        &done,
    )
    .await
}
