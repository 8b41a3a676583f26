//! The page shell (header, organization switch, navigation, one-time message) and the small
//! pieces every page uses: times, sizes, digests and POST buttons that carry the CSRF token.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::{FLASH, Session, seg};

/// The sections of an organization, as the navigation lists them.
const SECTIONS: [(&str, &str); 6] = [
    ("overview", "Overview"),
    ("repositories", "Repositories"),
    ("robots", "Robots"),
    ("credentials", "API keys & tokens"),
    ("access", "Roles & bindings"),
    ("audit", "Audit"),
];

/// The `head` of every console page: title, viewport, the stylesheet and the script.
pub(super) fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · berth" }
            link rel="stylesheet" href="/ui/assets/console.css";
            script src="/ui/assets/console.js" defer {}
        }
    }
}

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

pub(super) fn html_response(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// A page that needs no session: refusals and errors.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let m = html! {
        (DOCTYPE)
        html lang="en" {
        (head("Refused"))
        body {
            header.top { a.brand href="/ui/" { "berth" } }
            main #main {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.error role="alert" { (message) }
                p { a href="/ui/" { "Back to the console" } }
            }
        }
        }
    };
    html_response(status, m)
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

/// An RFC 3339 time from the API as `2026-12-01 10:00 UTC`, with the exact time as a tooltip.
pub(super) fn time(v: &Value) -> Markup {
    match v.as_str() {
        Some(t) => {
            let short = t.get(..16).unwrap_or(t).replace('T', " ");
            html! { time datetime=(t) title=(t) { (short) " UTC" } }
        }
        None => html! { span.muted { "never" } },
    }
}

/// A size in bytes, readable.
pub(super) fn size(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let f = b as f64;
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

/// A digest shortened for tables, whole in the tooltip.
pub(super) fn digest(v: &Value) -> Markup {
    let d = v.as_str().unwrap_or("");
    let short = d
        .split_once(':')
        .map_or(d, |(_, hex)| hex.get(..12).unwrap_or(hex));
    html! { code title=(d) { (short) } }
}

/// A string field of an API answer ("" when absent).
pub(super) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The status of a credential, as a badge.
pub(super) fn status(v: &Value) -> Markup {
    let s = v.as_str().unwrap_or("active");
    html! { span class={ "badge " (s) } { (s) } }
}
