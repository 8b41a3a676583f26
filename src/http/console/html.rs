//! Rendering that needs no session: the document head, an HTML answer, the error page, and how
//! values read from the API are shown (times, sizes, digests, text); percent-encoding of path
//! segments.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// The `pattern` of name fields (the server's rule: lower-case letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit). Browsers compile it with the `v` flag, under which a `-`
/// in a class must be escaped: unescaped, the pattern does not compile and the browser's own
/// check is silently off.
pub(super) const NAME_PATTERN: &str = r"[a-z0-9][a-z0-9._\-]*";

/// The `head` of every console page: title, viewport, the stylesheet and the script.
pub(super) fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · berth" }
            link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml";
            link rel="stylesheet" href="/ui/assets/console.css";
            script src="/ui/assets/console.js" defer {}
        }
    }
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

/// An RFC 3339 time from the API as `2026-12-01 10:00 UTC`, with the exact time as a tooltip.
pub(super) fn time(v: &Value) -> Markup {
    match v.as_str() {
        Some(t) => html! { time datetime=(t) title=(t) { (time_text(t)) } },
        None => html! { span.muted { "never" } },
    }
}

/// An RFC 3339 time as the console writes every time: `2026-12-01 10:00 UTC`.
pub(super) fn time_text(t: &str) -> String {
    format!("{} UTC", t.get(..16).unwrap_or(t).replace('T', " "))
}

/// A size in bytes, readable.
pub(super) fn size(v: &Value) -> String {
    crate::types::readable_size(v.as_u64().unwrap_or(0))
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

/// A path segment or query value, percent-encoded (names come from forms and URLs).
pub(super) fn seg(s: &str) -> String {
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

/// A repository name in a path: its segments encoded, its slashes kept.
pub(super) fn repo_path(s: &str) -> String {
    s.split('/').map(seg).collect::<Vec<_>>().join("/")
}
