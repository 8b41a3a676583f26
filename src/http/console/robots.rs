//! Robots, their tokens and API keys, the user's own API keys and the organization's registry
//! tokens: lists, create-once pages (token file, pull secret, Crossplane ImageConfig, robot
//! config, each with copy and download), rotation with overlap, revocation.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::html::seg;
use super::layout::{self, csrf, page, post_button, status, text, time};
use super::list::{self, Wanted};
use super::session::{Posted, Session};

/// What a robot's list row shows, gathered from the organization's credentials.
#[derive(Default)]
struct Summary {
    tokens: usize,
    last_used: Option<String>,
    nearest_expiry: Option<String>,
    trusts: usize,
}

const ROBOT_SORTS: [(&str, &str); 3] = [
    ("name", "name"),
    ("used", "last used"),
    ("created", "newest"),
];

pub(super) async fn list(
    s: Session,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let o = seg(&org);
    let w = Wanted::read(&query, &ROBOT_SORTS);
    let (robots, bindings, creds) = tokio::join!(
        s.api.get(format!("/orgs/{o}/robots")),
        s.api.get(format!("/orgs/{o}/bindings")),
        s.api.get(format!("/orgs/{o}/credentials")),
    );
    let robots = match robots {
        Ok(v) => v["robots"].as_array().cloned().unwrap_or_default(),
        Err(f) => return f.into_response(),
    };
    let (bindings, creds) = (bindings.ok(), creds.ok());
    let mut sums: BTreeMap<String, Summary> = BTreeMap::new();
    for c in creds
        .as_ref()
        .and_then(|c| c["credentials"].as_array())
        .into_iter()
        .flatten()
    {
        let Some(robot) = text(&c["owner"]).strip_prefix("robot/") else {
            continue;
        };
        let e = sums.entry(robot.to_owned()).or_default();
        match text(&c["kind"]) {
            "trust" => e.trusts += 1,
            "robot token" if !matches!(text(&c["status"]), "expired" | "revoked") => {
                e.tokens += 1;
                if let Some(x) = c["expires"].as_str()
                    && e.nearest_expiry.as_deref().is_none_or(|n| x < n)
                {
                    e.nearest_expiry = Some(x.to_owned());
                }
            }
            _ => {}
        }
        if let Some(u) = c["lastUsed"]["at"].as_str()
            && e.last_used.as_deref().is_none_or(|l| u > l)
        {
            e.last_used = Some(u.to_owned());
        }
    }
    let bound = |robot: &str| -> Vec<String> {
        bindings
            .as_ref()
            .and_then(|b| b["bindings"].as_array())
            .into_iter()
            .flatten()
            .filter(|b| text(&b["subject"]) == format!("robot/{robot}"))
            .map(binding_label)
            .collect()
    };
    let all = robots.len();
    let (robots, total, pages) = w.cut(
        robots,
        |r| format!("{} {}", text(&r["name"]), text(&r["description"])),
        |rows, sort| match sort {
            "used" => rows.sort_by_key(|r| {
                std::cmp::Reverse(sums.get(text(&r["name"])).and_then(|x| x.last_used.clone()))
            }),
            "created" => list::sort_by_field(rows, "created", true),
            _ => list::sort_by_field(rows, "name", false),
        },
    );
    let path = format!("/ui/orgs/{o}/robots");
    let body = html! {
        @if all > 0 { (list::controls(&path, &w, &ROBOT_SORTS, "robot")) }
        div.scroll { table {
            thead { tr { th { "Robot" } th { "Bindings" } th.num { "Tokens" } th { "Last used" } th { "Nearest expiry" } th.num { "Trusts" } } }
            tbody {
                @for r in &robots {
                    @let name = text(&r["name"]);
                    @let sum = sums.get(name);
                    tr {
                        td { a href=(format!("/ui/orgs/{o}/robots/{}", seg(name))) { (name) }
                             @if let Some(d) = r["description"].as_str() { br; span.muted.description { (d) } } }
                        td { @for b in bound(name) { span.chip { (b) } " " } }
                        td.num { (sum.map_or(0, |x| x.tokens)) }
                        td { (time(&json!(sum.and_then(|x| x.last_used.clone())))) }
                        td { @match sum.and_then(|x| x.nearest_expiry.clone()) { Some(e) => (time(&json!(e))), None => span.muted { "—" } } }
                        td.num { (sum.map_or(0, |x| x.trusts)) }
                    }
                }
            }
        } }
        @if all == 0 { p.muted { "No robots yet." } }
        @else if robots.is_empty() { p.muted { "No robot name or description holds " q { (w.q) } "." } }
        @else { (list::pager(&path, &w, pages, total)) }
        section aria-labelledby="new-robot" {
            h2 #new-robot { "New robot" }
            @let act = format!("/ui/orgs/{o}/robots");
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="robot-name" { "Name" }
                input #robot-name name="name" required pattern=(super::html::NAME_PATTERN) placeholder="ci-pusher" value=[s.typed(&act, "name")];
                label for="robot-description" { "Description" }
                input #robot-description name="description" placeholder="what it is for" value=[s.typed(&act, "description")];
                button type="submit" { "Create robot" }
            }
        }
    };
    page(&s, Some(&org), "robots", "Robots", body).await
}

fn binding_label(b: &Value) -> String {
    let scope = b["namespace"]
        .as_str()
        .map(|n| format!(" on {n}"))
        .or_else(|| b["repository"].as_str().map(|r| format!(" on {r}")))
        .unwrap_or_else(|| " org-wide".into());
    format!("{}{scope}", text(&b["role"]))
}

pub(super) async fn create(Path(org): Path<String>, p: Posted) -> Response {
    let name = p.field("name").unwrap_or("").to_owned();
    let body = json!({ "name": name, "description": p.field("description") });
    let o = seg(&org);
    p.form_on(format!("/ui/orgs/{o}/robots"))
        .act(
            Method::POST,
            &format!("/orgs/{o}/robots"),
            Some(body),
            None,
            &format!("/ui/orgs/{o}/robots/{}", seg(&name)),
            &format!("Created robot {name}. It holds nothing until you give it a binding."),
        )
        .await
}

pub(super) async fn show(s: Session, Path((org, robot)): Path<(String, String)>) -> Response {
    let (o, r) = (seg(&org), seg(&robot));
    let base = format!("/orgs/{o}/robots/{r}");
    let (info, tokens, keys, bindings, roles) = tokio::join!(
        s.api.get(base.clone()),
        s.api.get(format!("{base}/tokens")),
        s.api.get(format!("{base}/apikeys")),
        s.api.get(format!("/orgs/{o}/bindings")),
        s.api.get(format!("/orgs/{o}/roles")),
    );
    let info = match info {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let ui = format!("/ui/orgs/{o}/robots/{r}");
    let mine: Vec<Value> = bindings
        .as_ref()
        .ok()
        .and_then(|b| b["bindings"].as_array())
        .into_iter()
        .flatten()
        .filter(|b| text(&b["subject"]) == format!("robot/{robot}"))
        .cloned()
        .collect();
    let body = html! {
        @if let Some(d) = info["description"].as_str() { p.description { (d) } }
        p.muted { "Created " (time(&info["created"])) }
        section aria-labelledby="bindings" {
            h2 #bindings { "Bindings" }
            @if mine.is_empty() { p.muted { "None: the robot may do nothing yet." } }
            ul.plain {
                @for b in &mine {
                    li { span.chip { (binding_label(b)) } " " code { (text(&b["name"])) } " "
                         (post_button(&s, &format!("/ui/orgs/{o}/bindings/{}/delete", seg(text(&b["name"]))), "Remove", Some("Remove this binding?"))) }
                }
            }
            @let act = format!("/ui/orgs/{o}/bindings");
            details.form open[mine.is_empty() || refused(&s, &act)] {
            summary { "Add a binding" }
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                input type="hidden" name="subject" value=(format!("robot/{robot}"));
                input type="hidden" name="back" value=(ui);
                label for="b-role" { "Role" }
                select #b-role name="role" {
                    @for role in roles.as_ref().ok().and_then(|v| v["roles"].as_array()).into_iter().flatten() {
                        option value=(text(&role["name"])) selected[s.typed(&act, "role") == role["name"].as_str()] { (text(&role["name"])) }
                    }
                }
                label for="b-scope" { "Namespace or repository (empty: the whole organization)" }
                input #b-scope name="scope" placeholder=(format!("{org} or {org}/app*")) value=[s.typed(&act, "scope")];
                button type="submit" { "Add binding" }
            }
            }
        }
        section aria-labelledby="tokens" {
            h2 #tokens { "Tokens" }
            (credential_table(&s, listed(&tokens, "tokens"), "tokens", &format!("{ui}/tokens")))
            @let act = format!("{ui}/tokens");
            details.form open[refused(&s, &act)] {
            summary { "New token" }
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="t-name" { "Name" }
                input #t-name name="name" required placeholder="ci" value=[s.typed(&act, "name")];
                label for="t-expires" { "Expires in (empty: never)" }
                input #t-expires name="expiresIn" value=(s.typed(&act, "expiresIn").unwrap_or("90d"));
                label for="t-ns" { "Kubernetes namespace of the pull secret" }
                input #t-ns name="k8sNamespace" value=(s.typed(&act, "k8sNamespace").unwrap_or("default"));
                button type="submit" { "Create token" }
            }
            }
        }
        section aria-labelledby="keys" {
            h2 #keys { "API keys" }
            (credential_table(&s, listed(&keys, "apikeys"), "apikeys", &format!("{ui}/apikeys")))
            @let act = format!("{ui}/apikeys");
            details.form open[refused(&s, &act)] {
            summary { "New API key" }
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="k-name" { "Name" }
                input #k-name name="name" required value=[s.typed(&act, "name")];
                label for="k-expires" { "Expires in (empty: never)" }
                input #k-expires name="expiresIn" value=(s.typed(&act, "expiresIn").unwrap_or("90d"));
                button type="submit" { "Create API key" }
            }
            }
        }
        section aria-labelledby="trusts" {
            h2 #trusts { "Workload trusts" }
            @let trusts = info["trusts"].as_array().cloned().unwrap_or_default();
            @if trusts.is_empty() { p.muted { "None: no workload can act as this robot without a stored secret." } }
            @else {
                div.scroll { table {
                    thead { tr { th { "Name" } th { "Issuer" } th { "Subject" } th { "Audience" } th { "Claims" } th { "Last used" } th { "Actions" } } }
                    tbody { @for t in &trusts {
                        tr {
                            td { (text(&t["name"])) } td { (text(&t["issuer"])) } td { code { (text(&t["subject"])) } }
                            td { (text(&t["audience"])) }
                            td { @for (k, v) in t["claims"].as_object().into_iter().flatten() { code { (k) "=" (text(v)) } " " } }
                            td { (time(&t["lastUsed"])) }
                            td { (post_button(&s, &format!("{ui}/trusts/{}/delete", seg(text(&t["name"]))), "Delete", Some("Delete this trust? Registry tokens issued through it stop working."))) }
                        }
                    } }
                } }
            }
            @let act = format!("{ui}/trusts");
            details.form open[refused(&s, &act)] {
            summary { "New trust" }
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="tr-name" { "Name" }
                input #tr-name name="name" required placeholder="github-main" value=[s.typed(&act, "name")];
                label for="tr-issuer" { "Issuer (OpenID provider URL)" }
                input #tr-issuer name="issuer" required placeholder="https://token.actions.githubusercontent.com" value=[s.typed(&act, "issuer")];
                label for="tr-subject" { "Subject pattern (* matches any run of characters)" }
                input #tr-subject name="subject" required placeholder="repo:acme/app:ref:refs/heads/main" value=[s.typed(&act, "subject")];
                label for="tr-audience" { "Audience (empty: the registry's service name)" }
                input #tr-audience name="audience" value=[s.typed(&act, "audience")];
                label for="tr-claims" { "Claims that must match, one KEY=VALUE per line" }
                textarea #tr-claims name="claims" rows="3" placeholder="repository_owner=acme" { (s.typed(&act, "claims").unwrap_or("")) }
                button type="submit" { "Add trust" }
            }
            }
        }
        section aria-labelledby="danger" {
            h2 #danger { "Delete" }
            (post_button(&s, &format!("{ui}/delete"), "Delete robot", Some("Delete this robot, its tokens, keys, trusts and bindings?")))
        }
    };
    page(&s, Some(&org), "robots", &format!("Robot {robot}"), body).await
}

/// Whether the form posted to `action` was just refused (its disclosure opens).
fn refused(s: &Session, action: &str) -> bool {
    s.kept.as_ref().is_some_and(|k| k.action == action)
}

/// The list `key` of an API answer.
fn listed<'a>(
    v: &'a Result<Value, super::session::Failure>,
    key: &str,
) -> Result<&'a [Value], &'a super::session::Failure> {
    v.as_ref()
        .map(|v| v[key].as_array().map_or(&[][..], Vec::as_slice))
}

/// One page of a credential list as the filter and sort ask; with the count and pages.
fn cut_credentials(w: &Wanted, v: &Value, key: &str) -> (Vec<Value>, u64, u64) {
    w.cut(
        v[key].as_array().cloned().unwrap_or_default(),
        |c| {
            format!(
                "{} {} {}",
                text(&c["name"]),
                text(&c["description"]),
                text(&c["status"])
            )
        },
        |rows, sort| match sort {
            "name" => list::sort_by_field(rows, "name", false),
            "expires" => list::sort_by_field(rows, "expires", false),
            "used" => {
                rows.sort_by(|a, b| text(&b["lastUsed"]["at"]).cmp(text(&a["lastUsed"]["at"])))
            }
            _ => list::sort_by_field(rows, "created", true),
        },
    )
}

/// A table of credentials (from a list call) with rotate and revoke buttons.
fn credential_table(
    s: &Session,
    list: Result<&[Value], &super::session::Failure>,
    key: &str,
    actions: &str,
) -> Markup {
    let rows = match list {
        Ok(rows) => rows,
        Err(f) => return html! { p.muted { (f.message) } },
    };
    html! {
        @if rows.is_empty() { p.muted { "None." } }
        @else {
            div.scroll { table {
                thead { tr { th { "Name" } @if key == "tokens" && actions.ends_with("/registry-tokens") { th { "Access" } } th { "Created" } th { "Expires" } th { "Last used" } th { "Status" } th { "Actions" } } }
                tbody {
                    @for c in rows {
                        @let id = c["id"].as_str().map_or_else(|| c["id"].to_string(), str::to_owned);
                        tr {
                            td { (text(&c["name"])) @if let Some(d) = c["description"].as_str() { br; span.muted.description { (d) } } }
                            @if key == "tokens" && actions.ends_with("/registry-tokens") {
                                td { @if c["readwrite"] == json!(true) { "read-write (pull, push)" } @else { "read (pull)" } }
                            }
                            td { (time(&c["created"])) }
                            td { @if c["expires"].is_null() { span.muted { "never" } } @else { (time(&c["expires"])) } }
                            td { (time(&c["lastUsed"]["at"])) @if let Some(a) = c["lastUsed"]["address"].as_str() { br; span.muted { "from " (a) } } }
                            td { (status(&c["status"])) }
                            td.actions {
                                @if !matches!(text(&c["status"]), "revoked" | "expired") {
                                    form.inline method="post" action=(format!("{actions}/{}/rotate", seg(&id))) {
                                        (csrf(s))
                                        label { "Overlap " input.short name="overlap" value="24h" aria-label=(format!("overlap for {}", text(&c["name"]))); }
                                        " "
                                        // The pull secret of the new secret goes to a namespace:
                                        // a rotation keeps the one the user names.
                                        @if key != "apikeys" {
                                            label { "Namespace " input.short name="k8sNamespace" value="default" aria-label=(format!("Kubernetes namespace of the pull secret for {}", text(&c["name"]))); }
                                            " "
                                        }
                                        button type="submit" { "Rotate" }
                                    }
                                    " "
                                }
                                @if text(&c["status"]) != "revoked" {
                                    (post_button(s, &format!("{actions}/{}/revoke", seg(&id)), "Revoke", Some(&format!("Revoke {}? Whatever uses it stops working.", text(&c["name"])))))
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

/// How a secret logs in: the user name registry clients send with it.
enum Login {
    Robot { access_id: String },
    ApiKey,
    RegistryToken,
}

/// A secret just made: what it is, its value, how it logs in, and the name its files take.
struct NewSecret {
    what: String,
    secret: String,
    login: Login,
    name: String,
}

impl NewSecret {
    /// Reads the API's answer (a robot token has an `accessId`, an API key an `apikey`, a
    /// registry token a `token`); the files are named `file_name`, or after the credential.
    fn from_answer(v: &Value, what: String, file_name: Option<&str>) -> NewSecret {
        let (secret, login) = if let Some(id) = v["accessId"].as_str() {
            (
                &v["token"],
                Login::Robot {
                    access_id: id.to_owned(),
                },
            )
        } else if v["apikey"].is_string() {
            (&v["apikey"], Login::ApiKey)
        } else {
            (&v["token"], Login::RegistryToken)
        };
        NewSecret {
            what,
            secret: text(secret).to_owned(),
            login,
            name: file_name.unwrap_or(text(&v["name"])).to_owned(),
        }
    }
}

/// The page that shows a new secret, once: its token file and, ready to use, a Kubernetes pull
/// secret, a Crossplane ImageConfig and (robot tokens and API keys) a robot config.
fn secret_page(
    s: &Session,
    org: &str,
    new: &NewSecret,
    k8s_namespace: &str,
    note: Option<String>,
) -> Markup {
    let NewSecret {
        what,
        secret,
        login,
        name,
    } = new;
    let (user, file) = match login {
        Login::Robot { access_id } => (
            access_id.as_str(),
            json!({ "accessId": access_id, "token": secret }),
        ),
        Login::ApiKey => ("iamapikey", json!({ "name": name, "apikey": secret })),
        Login::RegistryToken => ("token", json!({ "token": secret })),
    };
    // A token named for its use (`cluster-pull`) is not made `cluster-pull-pull`.
    let secret_name = if name.ends_with("-pull") {
        name.clone()
    } else {
        format!("{name}-pull")
    };
    let yaml = |v: &Value| serde_norway::to_string(v).unwrap_or_default();
    let pull = yaml(&crate::kube::pull_secret(
        &secret_name,
        k8s_namespace,
        &s.host,
        user,
        secret,
        None,
    ));
    let image_config = yaml(&crate::kube::image_config(
        name,
        &[format!("{}/{org}", s.host)],
        &secret_name,
    ));
    let config =
        crate::kube::config::robot_config(&s.base_url, None, user, secret, Some(org.to_owned()))
            .ok()
            .and_then(|c| serde_norway::to_string(&c).ok());
    let file_text = serde_json::to_string_pretty(&file).unwrap_or_default();
    // A user's own API key: handing it to a cluster hands over the user.
    let personal = matches!(login, Login::ApiKey) && what.starts_with("your ");
    let block = |id: &str, title: &str, filename: &str, body: &str, hint: Markup| {
        html! {
            section.secret aria-labelledby=(format!("{id}-h")) {
                h2 #(format!("{id}-h")) { (title) }
                (hint)
                pre #(id) tabindex="0" { (body) }
                div.buttons {
                    button type="button" data-copy=(id) { "Copy" }
                    button type="button" data-download=(id) data-filename=(filename) { "Download " (filename) }
                }
            }
        }
    };
    html! {
        p.warning role="alert" { "Copy or download what you need now: the secret of " (what) " is shown only on this page, and never again." }
        @if let Some(n) = note { p { (n) } }
        (block("token-file", "Token file", &format!("{name}.json"), &file_text,
            html! {
                p.muted { "Saved as " code { (name) ".json" } ", it gives:" }
                ul.commands {
                    @for (what, command) in crate::kube::token_file_commands(&format!("{name}.json"), &s.host, &secret_name, k8s_namespace) {
                        li { (what) ": " code { (command) } }
                    }
                }
            }))
        (block("pull-secret", "Kubernetes pull secret", &format!("{secret_name}.yaml"), &pull,
            html! {
                @if personal {
                    p.warning role="note" { "This is your own key: a cluster given it pulls as you, with everything you may do, and stops when you leave. For a cluster, prefer a robot's token or a registry token." }
                }
                p.muted { code { "kubectl apply -f " (secret_name) ".yaml" } ", then name it in " code { "imagePullSecrets" } "." }
            }))
        (block("image-config", "Crossplane ImageConfig", &format!("{name}-imageconfig.yaml"), &image_config,
            html! { p.muted { "Makes Crossplane pull packages under " code { (s.host) "/" (org) } " with the pull secret." } }))
        @if let Some(c) = &config {
            (block("robot-config", "Robot config", "berth-config.yaml", c,
                html! { p.muted { "A self-contained " code { "berth" } " client config (" code { "BERTH_CONFIG=berth-config.yaml berth whoami" } ")." } }))
        }
    }
}

/// A secret to create or rotate from a form, and how its page reads.
struct Mint {
    api_path: String,
    body: Value,
    /// Registry tokens name their organization in a header.
    org_header: bool,
    /// What it is, before its name: "token", "API key", "your API key", "registry token".
    kind: &'static str,
    /// Whose it is, after its name (" of robot ci"), or "".
    owner: String,
    /// The name the files take (a robot's tokens: the robot's); else the credential's.
    file_name: Option<String>,
    back: String,
    title: String,
    /// A rotation says until when the old secret works.
    rotation: bool,
}

/// Creates or rotates a secret through the API and answers the page that shows it once (201).
async fn mint(p: &Posted, org: &str, m: Mint) -> Response {
    let s = &p.session;
    let answer = s
        .api
        .call(
            Method::POST,
            &m.api_path,
            Some(m.body),
            m.org_header.then_some(org),
        )
        .await;
    let v = match answer {
        Ok(v) => v,
        Err(f) => return p.refuse(f.status, &f.message, &m.back).await,
    };
    let note = m.rotation.then(|| match v["previousValidUntil"].as_str() {
        Some(t) => format!(
            "The old secret keeps working until {}; the id and name stay the same.",
            super::html::time_text(t)
        ),
        None => "The old secret stopped working at once; the id and name stay the same.".into(),
    });
    // POST → 303 → GET: the page that shows the secret is a GET, so a reload never mints
    // again; the secret reaches it sealed in a one-time cookie (`once`).
    let view = json!({
        "answer": {
            "accessId": v["accessId"], "token": v["token"], "apikey": v["apikey"], "name": v["name"],
        },
        "what": format!("{} {}{}", m.kind, text(&v["name"]), m.owner),
        "fileName": m.file_name,
        "namespace": p.field("k8sNamespace").unwrap_or("default"),
        "note": note,
        "back": m.back,
        "title": m.title,
        // Good for this organization's page and a few minutes: a copy of the cookie (a shared
        // HAR file, a proxy's log) opens nothing later, nor under another org's page.
        "org": org,
        "until": crate::store::now() + ONCE_SECONDS,
    });
    let mut r = super::session::see_other(&format!("/ui/orgs/{}/new-secret", seg(org)));
    match super::once::seal(s, &view) {
        Some(c) => {
            r.headers_mut().append(axum::http::header::SET_COOKIE, c);
            r
        }
        None => super::html::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The secret was made but could not be shown; delete it and make another.",
        ),
    }
}

/// How long the redirect to a new secret's page may take.
const ONCE_SECONDS: i64 = 120;

/// The one-time page of a secret just made (after `mint`'s redirect). A second look finds the
/// cookie gone and says that the secret was shown once: nothing is made again.
pub(super) async fn new_secret(
    Path(org): Path<String>,
    s: Session,
    headers: axum::http::HeaderMap,
) -> Response {
    let view = super::once::open(&s, &headers).filter(|v| {
        v["org"] == org.as_str()
            && v["until"]
                .as_i64()
                .is_some_and(|t| t >= crate::store::now())
    });
    let Some(view) = view else {
        let body = html! {
            p.warning role="alert" { "This secret was shown once and is no longer available: reloading does not make another. If you did not save it, rotate or create the credential again." }
            p { a href=(format!("/ui/orgs/{}/robots", seg(&org))) { "Robots" } " · " a href=(format!("/ui/orgs/{}/credentials", seg(&org))) { "API keys & tokens" } }
        };
        let mut r = page(&s, Some(&org), "robots", "Shown once", body).await;
        *r.status_mut() = StatusCode::GONE;
        return r;
    };
    let new = NewSecret::from_answer(
        &view["answer"],
        text(&view["what"]).to_owned(),
        view["fileName"].as_str(),
    );
    let body = html! {
        (secret_page(&s, &org, &new, text(&view["namespace"]), view["note"].as_str().map(str::to_owned)))
        p { a href=(text(&view["back"])) { "Back" } }
    };
    let mut r = page(&s, Some(&org), "robots", text(&view["title"]), body).await;
    r.headers_mut()
        .append(axum::http::header::SET_COOKIE, super::once::clear(&s));
    r
}

/// What a create form sends.
fn created_body(p: &Posted) -> Value {
    json!({
        "name": p.field("name"),
        "description": p.field("description"),
        "expiresIn": p.field("expiresIn"),
    })
}

/// What a rotate form sends.
fn overlap_body(p: &Posted) -> Value {
    json!({ "overlap": p.field("overlap").unwrap_or("24h") })
}

pub(super) async fn create_token(
    Path((org, robot)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let (o, r) = (seg(&org), seg(&robot));
    let m = Mint {
        api_path: format!("/orgs/{o}/robots/{r}/tokens"),
        body: created_body(&p),
        org_header: false,
        kind: "token",
        owner: format!(" of robot {robot}"),
        file_name: Some(robot.clone()),
        back: format!("/ui/orgs/{o}/robots/{r}"),
        title: format!("New token for {robot}"),
        rotation: false,
    };
    mint(&p, &org, m).await
}

pub(super) async fn rotate_token(
    Path((org, robot, id)): Path<(String, String, String)>,
    p: Posted,
) -> Response {
    let (o, r, i) = (seg(&org), seg(&robot), seg(&id));
    let m = Mint {
        api_path: format!("/orgs/{o}/robots/{r}/tokens/{i}/rotate"),
        body: overlap_body(&p),
        org_header: false,
        kind: "token",
        owner: format!(" of robot {robot}"),
        file_name: Some(robot.clone()),
        back: format!("/ui/orgs/{o}/robots/{r}"),
        title: format!("Rotated token of {robot}"),
        rotation: true,
    };
    mint(&p, &org, m).await
}

pub(super) async fn create_robot_key(
    Path((org, robot)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let (o, r) = (seg(&org), seg(&robot));
    let m = Mint {
        api_path: format!("/orgs/{o}/robots/{r}/apikeys"),
        body: created_body(&p),
        org_header: false,
        kind: "API key",
        owner: format!(" of robot {robot}"),
        file_name: None,
        back: format!("/ui/orgs/{o}/robots/{r}"),
        title: format!("New API key for {robot}"),
        rotation: false,
    };
    mint(&p, &org, m).await
}

pub(super) async fn rotate_robot_key(
    Path((org, robot, id)): Path<(String, String, String)>,
    p: Posted,
) -> Response {
    let (o, r, i) = (seg(&org), seg(&robot), seg(&id));
    let m = Mint {
        api_path: format!("/orgs/{o}/robots/{r}/apikeys/{i}/rotate"),
        body: overlap_body(&p),
        org_header: false,
        kind: "API key",
        owner: format!(" of robot {robot}"),
        file_name: None,
        back: format!("/ui/orgs/{o}/robots/{r}"),
        title: format!("Rotated API key of {robot}"),
        rotation: true,
    };
    mint(&p, &org, m).await
}

pub(super) async fn create_own_key(Path(org): Path<String>, p: Posted) -> Response {
    let m = Mint {
        api_path: "/apikeys".into(),
        body: created_body(&p),
        org_header: false,
        kind: "your API key",
        owner: String::new(),
        file_name: None,
        back: format!("/ui/orgs/{}/credentials", seg(&org)),
        title: "New API key".into(),
        rotation: false,
    };
    mint(&p, &org, m).await
}

pub(super) async fn rotate_own_key(Path((org, id)): Path<(String, String)>, p: Posted) -> Response {
    let m = Mint {
        api_path: format!("/apikeys/{}/rotate", seg(&id)),
        body: overlap_body(&p),
        org_header: false,
        kind: "your API key",
        owner: String::new(),
        file_name: None,
        back: format!("/ui/orgs/{}/credentials", seg(&org)),
        title: "Rotated API key".into(),
        rotation: true,
    };
    mint(&p, &org, m).await
}

pub(super) async fn create_registry_token(Path(org): Path<String>, p: Posted) -> Response {
    let body = json!({
        "name": p.field("name"),
        "description": p.field("description"),
        "readwrite": p.field("readwrite") == Some("true"),
    });
    let permanent = p.field("permanent") == Some("true");
    let m = Mint {
        api_path: if permanent {
            "/tokens?permanent=true"
        } else {
            "/tokens"
        }
        .into(),
        body,
        org_header: true,
        kind: "registry token",
        owner: String::new(),
        file_name: None,
        back: format!("/ui/orgs/{}/credentials", seg(&org)),
        title: "New registry token".into(),
        rotation: false,
    };
    mint(&p, &org, m).await
}

pub(super) async fn rotate_registry_token(
    Path((org, id)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let m = Mint {
        api_path: format!("/tokens/{}/rotate", seg(&id)),
        body: overlap_body(&p),
        org_header: true,
        kind: "registry token",
        owner: String::new(),
        file_name: None,
        back: format!("/ui/orgs/{}/credentials", seg(&org)),
        title: "Rotated registry token".into(),
        rotation: true,
    };
    mint(&p, &org, m).await
}

pub(super) async fn revoke_token(
    Path((org, robot, id)): Path<(String, String, String)>,
    p: Posted,
) -> Response {
    let (o, r, i) = (seg(&org), seg(&robot), seg(&id));
    let (path, back) = (
        format!("/orgs/{o}/robots/{r}/tokens/{i}"),
        format!("/ui/orgs/{o}/robots/{r}"),
    );
    p.act(
        Method::DELETE,
        &path,
        None,
        None,
        &back,
        "Revoked the token.",
    )
    .await
}

pub(super) async fn revoke_robot_key(
    Path((org, robot, id)): Path<(String, String, String)>,
    p: Posted,
) -> Response {
    let (o, r, i) = (seg(&org), seg(&robot), seg(&id));
    let (path, back) = (
        format!("/orgs/{o}/robots/{r}/apikeys/{i}"),
        format!("/ui/orgs/{o}/robots/{r}"),
    );
    p.act(
        Method::DELETE,
        &path,
        None,
        None,
        &back,
        "Revoked the API key.",
    )
    .await
}

pub(super) async fn revoke_own_key(Path((org, id)): Path<(String, String)>, p: Posted) -> Response {
    let (path, back) = (
        format!("/apikeys/{}", seg(&id)),
        format!("/ui/orgs/{}/credentials", seg(&org)),
    );
    p.act(
        Method::DELETE,
        &path,
        None,
        None,
        &back,
        "Revoked the API key.",
    )
    .await
}

pub(super) async fn revoke_registry_token(
    Path((org, id)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let (path, back) = (
        format!("/tokens/{}", seg(&id)),
        format!("/ui/orgs/{}/credentials", seg(&org)),
    );
    p.act(
        Method::DELETE,
        &path,
        None,
        Some(&org),
        &back,
        "Revoked the registry token.",
    )
    .await
}

pub(super) async fn delete(Path((org, robot)): Path<(String, String)>, p: Posted) -> Response {
    let (o, r) = (seg(&org), seg(&robot));
    let done = format!("Deleted robot {robot}.");
    p.act(
        Method::DELETE,
        &format!("/orgs/{o}/robots/{r}"),
        None,
        None,
        &format!("/ui/orgs/{o}/robots"),
        &done,
    )
    .await
}

/// `GET /ui/orgs/{org}/credentials`: the user's own API keys and the organization's registry
/// tokens.
const CREDENTIAL_SORTS: [(&str, &str); 4] = [
    ("created", "newest"),
    ("name", "name"),
    ("expires", "expiry"),
    ("used", "last used"),
];

pub(super) async fn credentials(
    s: Session,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let o = seg(&org);
    let w = Wanted::read(&query, &CREDENTIAL_SORTS);
    let (keys, tokens) = tokio::join!(
        s.api.get("/apikeys"),
        s.api.call(Method::GET, "/tokens", None, Some(&org)),
    );
    let path = format!("/ui/orgs/{o}/credentials");
    let (keys, tokens) = (
        keys.map(|v| cut_credentials(&w, &v, "apikeys")),
        tokens.map(|v| cut_credentials(&w, &v, "tokens")),
    );
    let body = html! {
        (list::controls(&path, &w, &CREDENTIAL_SORTS, "credential"))
        section aria-labelledby="own-keys" {
            h2 #own-keys { "Your API keys" }
            (credential_table(&s, keys.as_ref().map(|k| k.0.as_slice()), "apikeys", &format!("/ui/orgs/{o}/apikeys")))
            @if let Ok((_, total, pages)) = &keys { @if *total > 0 { (list::pager(&path, &w, *pages, *total)) } }
            @let act = format!("/ui/orgs/{o}/apikeys");
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="ok-name" { "Name" }
                input #ok-name name="name" required value=[s.typed(&act, "name")];
                label for="ok-expires" { "Expires in (empty: never)" }
                input #ok-expires name="expiresIn" value=(s.typed(&act, "expiresIn").unwrap_or("90d"));
                button type="submit" { "Create API key" }
            }
        }
        section aria-labelledby="reg-tokens" {
            h2 #reg-tokens { "Registry tokens of " (org) }
            p.muted { "Pull (or, read-write, push) anywhere in the organization, for registry clients only." }
            (credential_table(&s, tokens.as_ref().map(|t| t.0.as_slice()), "tokens", &format!("/ui/orgs/{o}/registry-tokens")))
            @if let Ok((_, total, pages)) = &tokens { @if *total > 0 { (list::pager(&path, &w, *pages, *total)) } }
            @let act = format!("/ui/orgs/{o}/registry-tokens");
            form.stack method="post" action=(act) {
                (layout::refusal(&s, &act))
                (csrf(&s))
                label for="rt-name" { "Name" }
                input #rt-name name="name" required value=[s.typed(&act, "name")];
                label.check { input type="checkbox" name="readwrite" value="true"; " Read-write (push too)" }
                label.check { input type="checkbox" name="permanent" value="true"; " Permanent (otherwise it expires with the server's registry-token lifetime)" }
                button type="submit" { "Create registry token" }
            }
        }
    };
    page(
        &s,
        Some(&org),
        "credentials",
        "API keys & registry tokens",
        body,
    )
    .await
}

/// `POST …/robots/{robot}/trusts`: trust a workload issuer's tokens to act as the robot.
pub(super) async fn create_trust(
    Path((org, robot)): Path<(String, String)>,
    p: Posted,
) -> Response {
    let mut claims = serde_json::Map::new();
    for line in p
        .field("claims")
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let Some((k, v)) = line.split_once('=') else {
            let page = format!("/ui/orgs/{}/robots/{}", seg(&org), seg(&robot));
            let why = format!("The claim line {line:?} is not KEY=VALUE.");
            return p.refuse(StatusCode::BAD_REQUEST, &why, &page).await;
        };
        claims.insert(k.trim().to_owned(), json!(v.trim()));
    }
    let name = p.field("name").unwrap_or("");
    let body = json!({
        "name": name,
        "issuer": p.field("issuer").unwrap_or(""),
        "subject": p.field("subject").unwrap_or(""),
        "audience": p.field("audience"),
        "claims": claims,
    });
    let (o, r) = (seg(&org), seg(&robot));
    let (path, back) = (
        format!("/orgs/{o}/robots/{r}/trusts"),
        format!("/ui/orgs/{o}/robots/{r}"),
    );
    p.act(
        Method::POST,
        &path,
        Some(body),
        None,
        &back,
        &format!("Added trust {name}."),
    )
    .await
}

pub(super) async fn delete_trust(
    Path((org, robot, name)): Path<(String, String, String)>,
    p: Posted,
) -> Response {
    let (o, r, n) = (seg(&org), seg(&robot), seg(&name));
    let (path, back) = (
        format!("/orgs/{o}/robots/{r}/trusts/{n}"),
        format!("/ui/orgs/{o}/robots/{r}"),
    );
    let done = format!("Deleted trust {name}; tokens issued through it stop working.");
    p.act(Method::DELETE, &path, None, None, &back, &done).await
}
