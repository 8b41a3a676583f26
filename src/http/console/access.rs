//! Roles and bindings (view, create, delete, and the YAML `berth apply -f` takes), the access
//! check (the access review API) and the audit trail with filters and pages.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::html::seg;
use super::layout::{self, csrf, page, post_button, text, time};
use super::list::{self, Wanted};
use super::session::{Failure, Posted, Session};

/// The organization's custom roles and its bindings as `berth apply -f` takes them: one YAML
/// document each, as `berth role get -o yaml` / `berth binding get -o yaml` print them.
async fn apply_yaml(s: &Session, org: &str) -> Result<String, Failure> {
    let o = seg(org);
    let (roles, bindings) = tokio::join!(
        s.api.get(format!("/orgs/{o}/roles")),
        s.api.get(format!("/orgs/{o}/bindings")),
    );
    Ok(yaml_of(&roles?, &bindings?))
}

fn yaml_of(roles: &Value, bindings: &Value) -> String {
    let docs: Vec<Value> = roles["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["builtin"] != json!(true))
        .chain(bindings["bindings"].as_array().into_iter().flatten())
        .map(crate::kube::rbac_manifest)
        .collect();
    docs.iter()
        .map(|d| serde_norway::to_string(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n")
}

pub(super) async fn show(
    s: Session,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let w = Wanted::read(&query, &BINDING_SORTS);
    render(s, org, None, w).await
}

const BINDING_SORTS: [(&str, &str); 3] =
    [("name", "name"), ("subject", "subject"), ("role", "role")];

/// The access page; `check` is the outcome of an access check just asked.
async fn render(
    s: Session,
    org: String,
    check: Option<(String, Result<bool, Failure>)>,
    w: Wanted,
) -> Response {
    let o = seg(&org);
    let (roles_v, bindings, members) = tokio::join!(
        s.api.get(format!("/orgs/{o}/roles")),
        s.api.get(format!("/orgs/{o}/bindings")),
        s.api.get(format!("/orgs/{o}/members")),
    );
    let roles_v = match roles_v {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let roles = roles_v["roles"].as_array().cloned().unwrap_or_default();
    let path = format!("/ui/orgs/{o}/access");
    let yaml = bindings
        .as_ref()
        .map(|b| yaml_of(&roles_v, b))
        .map_err(Clone::clone);
    let body = html! {
        section aria-labelledby="check" {
            h2 #check { "Access check" }
            @if let Some((question, answer)) = &check {
                @match answer {
                    Ok(true) => p.allowed role="status" { "Allowed: " (question) },
                    Ok(false) => p.refused role="status" { "Not allowed: " (question) },
                    Err(f) => p.error role="alert" { (f.message) },
                }
            }
            form.stack method="post" action=(format!("/ui/orgs/{o}/access-check")) {
                (csrf(&s))
                label for="ac-subject" { "Who (robot/NAME, user/NAME or group/NAME; empty: you)" }
                input #ac-subject name="subject" placeholder="robot/ci-pusher";
                label for="ac-verb" { "May" }
                select #ac-verb name="verb" {
                    @for v in ["pull", "push", "delete", "create", "get", "list", "update"] { option { (v) } }
                }
                label for="ac-resource" { "Resource" }
                select #ac-resource name="resource" {
                    @for r in crate::policy::RESOURCES { option { (r) } }
                }
                label for="ac-name" { "Name" }
                input #ac-name name="name" placeholder=(format!("{org}/app"));
                button type="submit" { "Check" }
            }
        }
        section aria-labelledby="bindings" {
            h2 #bindings { "Bindings" }
            @match &bindings {
                Err(f) => p.muted { (f.message) },
                Ok(b) if b["bindings"].as_array().is_none_or(Vec::is_empty) => p.muted { "None yet." },
                Ok(b) => {
                    @let (rows, total, pages) = w.cut(
                        b["bindings"].as_array().cloned().unwrap_or_default(),
                        |b| format!("{} {} {} {} {}", text(&b["name"]), text(&b["role"]), text(&b["subject"]), text(&b["namespace"]), text(&b["repository"])),
                        |rows, sort| list::sort_by_field(rows, if matches!(sort, "subject" | "role") { sort } else { "name" }, false),
                    );
                    (list::controls(&path, &w, &BINDING_SORTS, "binding"))
                    @if rows.is_empty() { p.muted { "No binding holds " q { (w.q) } "." } }
                    @else {
                        div.scroll { table {
                            thead { tr { th { "Name" } th { "Role" } th { "Subject" } th { "Scope" } th { "Actions" } } }
                            tbody { @for b in &rows {
                                tr {
                                    td { (text(&b["name"])) } td { (text(&b["role"])) } td { (text(&b["subject"])) }
                                    td { (b["namespace"].as_str().or(b["repository"].as_str()).unwrap_or("whole organization")) }
                                    td { (post_button(&s, &format!("/ui/orgs/{o}/bindings/{}/delete", seg(text(&b["name"]))), "Delete", Some("Delete this binding?"))) }
                                }
                            } }
                        } }
                        (list::pager(&path, &w, pages, total))
                    }
                }
            }
            h3 { "New binding" }
            @let act = format!("/ui/orgs/{o}/bindings");
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="nb-name" { "Name (empty: made from role and subject)" }
                input #nb-name name="name" value=[s.typed(&act, "name")];
                label for="nb-role" { "Role" }
                select #nb-role name="role" { @for r in &roles { option selected[s.typed(&act, "role") == r["name"].as_str()] { (text(&r["name"])) } } }
                label for="nb-subject" { "Subject (robot/NAME, user/NAME or group/NAME)" }
                input #nb-subject name="subject" required placeholder="robot/ci-pusher" value=[s.typed(&act, "subject")];
                label for="nb-scope" { "Namespace or repository (empty: the whole organization)" }
                input #nb-scope name="scope" placeholder=(format!("{org} or {org}/app*")) value=[s.typed(&act, "scope")];
                button type="submit" { "Create binding" }
            }
        }
        section aria-labelledby="members" {
            h2 #members { "Members" }
            @match &members {
                Err(f) => p.muted { (f.message) },
                Ok(m) => {
                    div.scroll { table {
                        thead { tr { th { "User" } th { "Membership" } th { "Actions" } } }
                        tbody { @for m in m["members"].as_array().into_iter().flatten() {
                            tr {
                                td { (text(&m["user"])) } td { (text(&m["role"])) }
                                td { (post_button(&s, &format!("/ui/orgs/{o}/members/{}/remove", seg(text(&m["user"]))), "Remove", Some("Remove this member? Their bindings in the organization stop granting anything."))) }
                            }
                        } }
                    } }
                }
            }
            @let act = format!("/ui/orgs/{o}/members");
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="m-user" { "User" }
                input #m-user name="user" required value=[s.typed(&act, "user")];
                label for="m-role" { "Membership (owners manage everything; members hold what bindings give them)" }
                select #m-role name="role" { @for m in ["member", "owner"] { option selected[s.typed(&act, "role") == Some(m)] { (m) } } }
                button type="submit" { "Add or change member" }
            }
        }
        section aria-labelledby="roles" {
            h2 #roles { "Roles" }
            div.scroll { table {
                thead { tr { th { "Name" } th { "Rules" } th { "Actions" } } }
                tbody { @for r in &roles {
                    tr {
                        td { (text(&r["name"])) @if r["builtin"] == json!(true) { " " span.chip { "built-in" } } }
                        td { ul.plain { @for rule in r["rules"].as_array().into_iter().flatten() { li { (rule_text(rule)) } } } }
                        td { @if r["builtin"] != json!(true) {
                            (post_button(&s, &format!("/ui/orgs/{o}/roles/{}/delete", seg(text(&r["name"]))), "Delete", Some("Delete this role?")))
                        } }
                    }
                } }
            } }
            h3 { "New role" }
            @let act = format!("/ui/orgs/{o}/roles");
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="nr-name" { "Name" }
                input #nr-name name="name" required value=[s.typed(&act, "name")];
                label for="nr-rules" { "Rules (YAML, as under rules: in berth apply -f)" }
                textarea #nr-rules name="rules" rows="5" required placeholder="- resources: [repositories]\n  verbs: [pull]" { (s.typed(&act, "rules").unwrap_or("")) }
                button type="submit" { "Create role" }
            }
        }
        section aria-labelledby="yaml" {
            h2 #yaml { "As YAML for berth apply -f" }
            @match &yaml {
                Ok(y) if y.is_empty() => p.muted { "No custom roles or bindings yet." },
                Ok(y) => {
                    pre #apply-yaml tabindex="0" { (y) }
                    div.buttons {
                        button type="button" data-copy="apply-yaml" { "Copy" }
                        a.button href=(format!("/ui/orgs/{o}/access.yaml")) download=(format!("{org}-access.yaml")) { "Download " (org) "-access.yaml" }
                    }
                }
                Err(f) => p.muted { (f.message) },
            }
        }
    };
    page(&s, Some(&org), "access", "Roles & bindings", body).await
}

fn rule_text(rule: &Value) -> String {
    let list = |k: &str| {
        rule[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| text(x).to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let names = list("names");
    format!(
        "{} on {}{}",
        list("verbs"),
        list("resources"),
        if names.is_empty() {
            String::new()
        } else {
            format!(" named {names}")
        }
    )
}

/// `GET /ui/orgs/{org}/access.yaml`: the same YAML, as a file.
pub(super) async fn yaml(s: Session, Path(org): Path<String>) -> Response {
    match apply_yaml(&s, &org).await {
        Ok(y) => (
            [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
            y,
        )
            .into_response(),
        Err(f) => f.into_response(),
    }
}

pub(super) async fn create_binding(Path(org): Path<String>, p: Posted) -> Response {
    let o = seg(&org);
    let back = p
        .field("back")
        .filter(|b| b.starts_with("/ui/orgs/") && !b.contains("//"))
        .map_or_else(|| format!("/ui/orgs/{o}/access"), str::to_owned);
    let (Some(role), Some(subject)) = (p.field("role"), p.field("subject")) else {
        let why = "Give a role and a subject.";
        return p.refuse(StatusCode::BAD_REQUEST, why, &back).await;
    };
    let mut body = json!({ "role": role, "subject": subject });
    if let Some(scope) = p.field("scope") {
        // A name with a slash or a wildcard is a repository pattern; else a namespace.
        body[if scope.contains('/') || scope.contains('*') {
            "repository"
        } else {
            "namespace"
        }] = json!(scope);
    }
    let name = match p.field("name") {
        Some(n) => n.to_owned(),
        None => format!("{}-{}", subject.replace('/', "-"), role.to_lowercase()),
    };
    let path = format!("/orgs/{o}/bindings/{}", seg(&name));
    let done = format!("Bound {subject} to {role} ({name}).");
    p.act(Method::PUT, &path, Some(body), None, &back, &done)
        .await
}

pub(super) async fn delete_binding(
    Path((org, name)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let o = seg(&org);
    let (path, back) = (
        format!("/orgs/{o}/bindings/{}", seg(&name)),
        format!("/ui/orgs/{o}/access"),
    );
    p.act(
        Method::DELETE,
        &path,
        None,
        None,
        &back,
        &format!("Deleted binding {name}."),
    )
    .await
}

pub(super) async fn create_role(Path(org): Path<String>, p: Posted) -> Response {
    let o = seg(&org);
    let form_page = format!("/ui/orgs/{o}/access");
    let (Some(name), Some(rules)) = (p.field("name"), p.field("rules")) else {
        let why = "Give a name and rules.";
        return p.refuse(StatusCode::BAD_REQUEST, why, &form_page).await;
    };
    let rules: Value = match serde_norway::from_str(rules) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("The rules are not YAML: {e}");
            return p.refuse(StatusCode::BAD_REQUEST, &why, &form_page).await;
        }
    };
    let (path, back) = (
        format!("/orgs/{o}/roles/{}", seg(name)),
        format!("/ui/orgs/{o}/access"),
    );
    let body = Some(json!({ "rules": rules }));
    p.act(
        Method::PUT,
        &path,
        body,
        None,
        &back,
        &format!("Saved role {name}."),
    )
    .await
}

pub(super) async fn delete_role(Path((org, name)): Path<(String, String)>, p: Posted) -> Response {
    let o = seg(&org);
    let (path, back) = (
        format!("/orgs/{o}/roles/{}", seg(&name)),
        format!("/ui/orgs/{o}/access"),
    );
    p.act(
        Method::DELETE,
        &path,
        None,
        None,
        &back,
        &format!("Deleted role {name}."),
    )
    .await
}

/// `POST /ui/orgs/{org}/access-check`: asks the access review API and shows the answer.
pub(super) async fn check(Path(org): Path<String>, p: Posted) -> Response {
    let verb = p.field("verb").unwrap_or("pull").to_owned();
    let resource = p.field("resource").unwrap_or("repositories").to_owned();
    let name = p.field("name").unwrap_or("").to_owned();
    let subject = p.field("subject").map(str::to_owned);
    let mut body = json!({ "verb": verb, "resource": resource, "name": name });
    if let Some(sub) = &subject {
        body["subject"] = json!(sub);
    }
    let answer = p
        .session
        .api
        .send(
            Method::POST,
            &format!("/orgs/{}/access-review", seg(&org)),
            Some(body),
        )
        .await
        .map(|v| v["allowed"] == json!(true));
    let question = format!(
        "{} may {verb} {resource} {name}",
        subject.as_deref().unwrap_or("you")
    );
    render(
        p.session,
        org,
        Some((question, answer)),
        Wanted::read(&HashMap::new(), &BINDING_SORTS),
    )
    .await
}

/// Events per audit page.
const AUDIT_PAGE: u32 = 50;

/// `GET /ui/orgs/{org}/audit`: events newest first, filtered by actor, action, outcome and time
/// range, `AUDIT_PAGE` at a time: everything that happened in the organization for its owners
/// (and roles that grant list on audit), else the caller's own events (the API's rules).
pub(super) async fn audit(
    s: Session,
    Path(org): Path<String>,
    Query(f): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let filters: String = ["actor", "action", "outcome", "since", "until"]
        .into_iter()
        .filter_map(|k| get(k).map(|v| format!("&{k}={}", seg(v))))
        .collect();
    let before = get("before").map_or_else(String::new, |b| format!("&before={}", seg(b)));
    let o = seg(&org);
    let in_org = s
        .api
        .get(format!(
            "/orgs/{o}/audit?limit={AUDIT_PAGE}{filters}{before}"
        ))
        .await;
    let whole_org = in_org.is_ok();
    let events = match in_org {
        Ok(v) => Ok(v),
        Err(_) => {
            s.api
                .get(format!("/audit?limit={AUDIT_PAGE}{filters}{before}"))
                .await
        }
    };
    let field = |id: &str, label: &str, kind: &str, hint: &str| -> Markup {
        html! {
            div.field {
                label for=(format!("f-{id}")) { (label) }
                input id=(format!("f-{id}")) name=(id) type=(kind) value=(get(id).unwrap_or("")) placeholder=(hint);
            }
        }
    };
    let body = html! {
        form.filters method="get" action=(format!("/ui/orgs/{o}/audit")) {
            (field("actor", "Actor", "text", "robot:acme/ci or user:alice"))
            (field("action", "Action", "text", "robot_token.create"))
            div.field {
                label for="f-outcome" { "Outcome" }
                select #f-outcome name="outcome" {
                    option value="" { "any" }
                    @for v in ["success", "failure"] { option value=(v) selected[get("outcome") == Some(v)] { (v) } }
                }
            }
            (field("since", "From (UTC)", "datetime-local", ""))
            (field("until", "Until (UTC)", "datetime-local", ""))
            button type="submit" { "Filter" }
        }
        @if whole_org { p.muted { "Everything that happened in " (org) ", by anyone." } }
        @else { p.muted { "You see your own events; an organization's owners see all of its events." } }
        @match &events {
            Err(e) => p.error role="alert" { (e.message) },
            Ok(v) => {
                @let list = v["events"].as_array().cloned().unwrap_or_default();
                @if list.is_empty() { p.muted { "No events." } }
                @else {
                    div.scroll { table.audit {
                        thead { tr { th { "Time" } th { "Actor" } th { "Action" } th { "Outcome" } th { "Target" } th { "From" } th { "Detail" } } }
                        tbody { @for e in &list {
                            tr {
                                td { (time(&e["time"])) }
                                td { @match e["actor"].as_str() { Some(a) => (a), None => span.muted { "tried: " (e["attempted"].as_array().map(|a| a.iter().map(|x| text(x).to_owned()).collect::<Vec<_>>().join(", ")).unwrap_or_else(|| text(&e["attempted"]).to_owned())) } } }
                                td { (text(&e["action"])) }
                                td { span class={ "badge " (text(&e["outcome"])) } { (text(&e["outcome"])) } @if e["count"].as_u64().is_some_and(|c| c > 1) { " ×" (e["count"]) } }
                                td { (text(&e["target"])) }
                                td { (text(&e["clientAddress"])) }
                                td { (text(&e["detail"])) }
                            }
                        } }
                    } }
                }
                @if let Some(next) = v["next"].as_i64() {
                    p { a href=(format!("/ui/orgs/{o}/audit?before={next}{filters}")) rel="next" { "Older events" } }
                }
            }
        }
    };
    page(&s, Some(&org), "audit", "Audit trail", body).await
}

pub(super) async fn set_member(Path(org): Path<String>, p: Posted) -> Response {
    let (Some(user), Some(role)) = (p.field("user"), p.field("role")) else {
        let page = format!("/ui/orgs/{}/access", seg(&org));
        let why = "Give a user and a membership.";
        return p.refuse(StatusCode::BAD_REQUEST, why, &page).await;
    };
    let o = seg(&org);
    let (path, back) = (
        format!("/orgs/{o}/members/{}", seg(user)),
        format!("/ui/orgs/{o}/access"),
    );
    let done = format!("{user} is now {role} of {org}.");
    p.act(
        Method::PUT,
        &path,
        Some(json!({ "role": role })),
        None,
        &back,
        &done,
    )
    .await
}

pub(super) async fn remove_member(
    Path((org, user)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let o = seg(&org);
    let (path, back) = (
        format!("/orgs/{o}/members/{}", seg(&user)),
        format!("/ui/orgs/{o}/access"),
    );
    p.act(
        Method::DELETE,
        &path,
        None,
        None,
        &back,
        &format!("Removed {user} from {org}."),
    )
    .await
}
