//! Repositories and their tags (digest, size, media type, platforms, push time, annotations,
//! referrers); deleting a tag goes through `/v2` like any registry client's.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::Value;

use super::html::{repo_path, seg};
use super::layout::{self, digest, page, text, time};
use super::list::{self, Wanted};
use super::session::{Posted, Session};

const REPO_SORTS: [(&str, &str); 3] = [("name", "name"), ("pushed", "last push"), ("size", "size")];
const TAG_SORTS: [(&str, &str); 2] = [("pushed", "push time, newest first"), ("name", "name")];

/// The page of a list the API pages itself: `total` and `pages` from its answer.
fn api_page(v: &Value) -> (u64, u64) {
    (
        v["total"].as_u64().unwrap_or(0),
        v["pages"].as_u64().unwrap_or(1),
    )
}

pub(super) async fn list(
    s: Session,
    Path(org): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let o = seg(&org);
    let w = Wanted::read(&query, &REPO_SORTS);
    let v = match s
        .api
        .get(format!(
            "/orgs/{o}/repositories{}&n={}",
            w.query(w.page),
            list::PAGE
        ))
        .await
    {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let repos = v["repositories"].as_array().cloned().unwrap_or_default();
    let (total, pages) = api_page(&v);
    let path = format!("/ui/orgs/{o}/repositories");
    let body = html! {
        (list::controls(&path, &w, &REPO_SORTS, "repository"))
        @if repos.is_empty() && w.q.is_empty() {
            p.muted { "No repositories you may pull here yet. Push one with "
                code { "skopeo copy … docker://" (s.host) "/" (org) "/app:1" } "." }
        } @else if repos.is_empty() {
            p.muted { "No repository name holds " q { (w.q) } "." }
        } @else {
            div.scroll { table {
                thead { tr { th { "Repository" } th.num { "Tags" } th.num { "Size" } th { "Last push" } } }
                tbody {
                    @for r in &repos {
                        tr {
                            td { a href=(format!("/ui/orgs/{o}/repositories/{}", repo_path(text(&r["name"])))) { (text(&r["name"])) } }
                            td.num { (r["tags"]) }
                            td.num { (super::html::size(&r["size"])) }
                            td { (time(&r["pushed"])) }
                        }
                    }
                }
            } }
            (list::pager(&path, &w, pages, total))
        }
    };
    page(&s, Some(&org), "repositories", "Repositories", body).await
}

pub(super) async fn show(
    s: Session,
    Path((org, repo)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let o = seg(&org);
    let w = Wanted::read(&query, &TAG_SORTS);
    let v = match s
        .api
        .get(format!(
            "/orgs/{o}/repositories/{}{}",
            repo_path(&repo),
            w.query(w.page)
        ))
        .await
    {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let may_delete = v["actions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "delete"));
    let tags = v["tags"].as_array().cloned().unwrap_or_default();
    let (total, pages) = api_page(&v);
    let path = format!("/ui/orgs/{o}/repositories/{}", repo_path(&repo));
    let body = html! {
        p { "Pull with " code { (s.host) "/" (repo) ":TAG" } }
        (list::controls(&path, &w, &TAG_SORTS, "tag"))
        @if tags.is_empty() { p.muted { @if w.q.is_empty() { "No tags." } @else { "No tag holds " q { (w.q) } "." } } }
        @else {
            div.scroll { table.tags {
                thead { tr { th { "Tag" } th { "Digest" } th.num { "Size" } th { "Pushed" } th { "Platforms" } th { "Details" } th { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for (i, t) in tags.iter().enumerate() {
                        @let tag = text(&t["tag"]);
                        tr aria-label=(format!("tag {tag}")) {
                            td { strong { (tag) } }
                            td { (digest(&t["digest"])) }
                            td.num { (super::html::size(&t["size"])) }
                            td { (time(&t["pushed"])) }
                            td {
                                @if let Some(p) = t["platforms"].as_array().filter(|p| !p.is_empty()) {
                                    ul.plain { @for x in p {
                                        li { (text(&x["platform"])) @if x["size"].is_u64() { " " span.muted { (super::html::size(&x["size"])) } } }
                                    } }
                                    @if t["morePlatforms"] == true { span.muted { "and more" } }
                                } @else { span.muted { "—" } }
                            }
                            td { details {
                                summary { "Details" @if let Some(n) = t["referrers"].as_array().map(Vec::len).filter(|n| *n > 0) { " · " (n) " referrer" @if n > 1 { "s" } } }
                                dl {
                                    dt { "Digest" } dd { code.wrap { (text(&t["digest"])) } }
                                    dt { "Media type" } dd { (text(&t["mediaType"])) }
                                    @if let Some(a) = t["artifactType"].as_str() { dt { "Artifact type" } dd { (a) } }
                                    dt { "Pull" } dd { code.wrap id=(format!("pull-{i}")) { "docker pull " (s.host) "/" (repo) ":" (tag) } }
                                    @if let Some(a) = t["annotations"].as_object().filter(|a| !a.is_empty()) {
                                        dt { "Annotations" }
                                        dd { ul.plain { @for (k, x) in a { li { code { (k) } " = " span.annotation { (x.as_str().map_or_else(|| x.to_string(), str::to_owned)) } } } } }
                                    }
                                    @if let Some(r) = t["referrers"].as_array().filter(|r| !r.is_empty()) {
                                        dt { "Referrers" }
                                        dd { ul.plain { @for x in r {
                                            li { (x["artifactType"].as_str().unwrap_or(text(&x["mediaType"]))) " " (digest(&x["digest"])) " " (super::html::size(&x["size"])) }
                                        } } }
                                    }
                                }
                            } }
                            td.actions {
                                button type="button" data-copy=(format!("pull-{i}")) title="Copy the pull command" { "Copy pull" }
                                @if may_delete {
                                    form.inline method="post" action=(format!("/ui/orgs/{o}/tags/delete")) {
                                        (layout::csrf(&s))
                                        input type="hidden" name="repository" value=(repo);
                                        input type="hidden" name="tag" value=(tag);
                                        button.danger type="submit" data-confirm=(format!("Delete tag {tag}?")) { "Delete tag" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
            (list::pager(&path, &w, pages, total))
        }
    };
    page(&s, Some(&org), "repositories", &repo, body).await
}

/// `POST /ui/orgs/{org}/tags/delete`: `DELETE /v2/<repository>/manifests/<tag>` as the user.
pub(super) async fn delete_tag(Path(org): Path<String>, p: Posted) -> Response {
    let (Some(repo), Some(tag)) = (p.field("repository"), p.field("tag")) else {
        return layout::error_page(
            axum::http::StatusCode::BAD_REQUEST,
            "Say which repository and tag.",
        );
    };
    let path = format!("/v2/{}/manifests/{}", repo_path(repo), seg(tag));
    let back = format!("/ui/orgs/{}/repositories/{}", seg(&org), repo_path(repo));
    let done = format!("Deleted tag {tag} of {repo}.");
    p.act(Method::DELETE, &path, None, None, &back, &done).await
}
