//! Repositories and their tags (digest, size, media type, platforms, push time, annotations,
//! referrers); deleting a tag goes through `/v2` like any registry client's.

use axum::extract::Path;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::html::{repo_path, seg};
use super::layout::{self, digest, page, text, time};
use super::session::{Posted, Session};

pub(super) async fn list(s: Session, Path(org): Path<String>) -> Response {
    let o = seg(&org);
    let v = match s.api.get(&format!("/orgs/{o}/repositories")).await {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let repos = v["repositories"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if repos.is_empty() {
            p.muted { "No repositories you may pull here yet. Push one with "
                code { "skopeo copy … docker://" (s.host) "/" (org) "/app:1" } "." }
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
        }
    };
    page(&s, Some(&org), "repositories", "Repositories", body).await
}

pub(super) async fn show(s: Session, Path((org, repo)): Path<(String, String)>) -> Response {
    let o = seg(&org);
    let v = match s
        .api
        .get(&format!("/orgs/{o}/repositories/{}", repo_path(&repo)))
        .await
    {
        Ok(v) => v,
        Err(f) => return f.into_response(),
    };
    let may_delete = v["actions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "delete"));
    let tags = v["tags"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p { "Pull with " code { (s.host) "/" (repo) ":TAG" } }
        @if tags.is_empty() { p.muted { "No tags." } }
        @for t in &tags {
            section.tag aria-label=(format!("tag {}", text(&t["tag"]))) {
                h2 { (text(&t["tag"])) }
                dl {
                    dt { "Digest" } dd { code.wrap { (text(&t["digest"])) } }
                    dt { "Media type" } dd { (text(&t["mediaType"])) }
                    @if let Some(a) = t["artifactType"].as_str() { dt { "Artifact type" } dd { (a) } }
                    dt { "Size" } dd { (super::html::size(&t["size"])) }
                    dt { "Pushed" } dd { (time(&t["pushed"])) }
                    @if let Some(p) = t["platforms"].as_array().filter(|p| !p.is_empty()) {
                        dt { "Platforms" } dd { @for (i, x) in p.iter().enumerate() { @if i > 0 { ", " } (text(x)) } }
                    }
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
                @if may_delete {
                    form.inline method="post" action=(format!("/ui/orgs/{o}/tags/delete")) {
                        (layout::csrf(&s))
                        input type="hidden" name="repository" value=(repo);
                        input type="hidden" name="tag" value=(text(&t["tag"]));
                        button.danger type="submit" data-confirm=(format!("Delete tag {}?", text(&t["tag"]))) { "Delete tag" }
                    }
                }
            }
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
