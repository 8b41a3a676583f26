//! The page shell (header, organization switch, navigation, one-time message) and the small
//! pieces every page uses: times, sizes, digests and POST buttons that carry the CSRF token.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use maud::{DOCTYPE, Markup, html};

pub(super) use super::html::{digest, error_page, status, text, time};
use super::html::{head, html_response, seg};
use super::session::{FLASH, Session};

/// The sections of an organization, as the navigation lists them.
const SECTIONS: [(&str, &str); 6] = [
    ("overview", "Overview"),
    ("repositories", "Repositories"),
    ("robots", "Robots"),
    ("credentials", "API keys & tokens"),
    ("access", "Roles & bindings"),
    ("audit", "Audit"),
];

/// A whole page of the signed-in user: `org` is the organization shown (`None`: none chosen).
pub(super) async fn page(
    s: &Session,
    org: Option<&str>,
    section: &str,
    title: &str,
    body: Markup,
) -> Response {
    let orgs = s.orgs().await;
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
        (head(title))
        body {
            a.skip href="#main" { "Skip to content" }
            header.top {
                a.brand href="/ui/" { "berth" }
                form.switch method="get" action="/ui/switch" {
                    label for="org-switch" { "Organization" }
                    select #org-switch name="org" {
                        @if org.is_none() { option value="" selected { "—" } }
                        @for o in &orgs {
                            option value=(o) selected[Some(o.as_str()) == org] { (o) }
                        }
                    }
                    button type="submit" { "Switch" }
                }
                div.who {
                    a.light href="/ui/orgs" { "Organizations" }
                    @if s.admin { a.light href="/ui/users" { "Users" } }
                    span.user title="signed in as" { (s.user) @if s.admin { " (admin)" } }
                    form method="post" action="/ui/logout" {
                        input type="hidden" name="_csrf" value=(s.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
            }
            @if let Some(o) = org {
                nav aria-label="sections" {
                    @for (key, label) in SECTIONS {
                        @let href = if key == "overview" { format!("/ui/orgs/{}", seg(o)) } else { format!("/ui/orgs/{}/{key}", seg(o)) };
                        a href=(href) aria-current=[(key == section).then_some("page")] { (label) }
                    }
                }
            }
            main #main {
                @if let Some(f) = &s.flash { p.flash role="status" { (f) } }
                // A refusal no form of this page showed beside itself (a button's action).
                @if let Some(k) = s.kept.as_ref().filter(|k| !k.was_shown()) { p.error role="alert" { (k.message) } }
                h1 { (title) }
                (body)
            }
        }
        }
    };
    let mut r = html_response(StatusCode::OK, markup);
    if s.flash.is_some()
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{FLASH}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The refusal of the form posted to `action`, beside the form, when it was the one refused.
pub(super) fn refusal(s: &Session, action: &str) -> Markup {
    html! { @if let Some(m) = s.refusal(action) { p.form-error role="alert" tabindex="-1" autofocus { (m) } } }
}

/// A hidden CSRF field.
pub(super) fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="_csrf" value=(s.csrf); }
}

/// A one-button form that POSTs to `action`; `confirm` asks first (with the script).
pub(super) fn post_button(s: &Session, action: &str, label: &str, confirm: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(s))
            button.danger[confirm.is_some()] type="submit" data-confirm=[confirm] { (label) }
        }
    }
}
