//! Repositories of an organization as people look at them (the console, `GET
//! /orgs/{org}/repositories`): tags with their manifests' media type, size, platforms,
//! annotations and referrers, and storage per namespace.
//!
//! Who may call: members of the organization; every repository shown is one the caller may pull
//! (`policy::repository_actions`), and a repository the caller may not pull answers the same 404
//! as one that does not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use super::common::{ApiCaller, ApiError, ApiResult, blocking, json_response, time};
use crate::http::access::{NamespaceCache, namespace_info};
use crate::policy::{Action, namespace_of, repository_actions};
use crate::state::AppState;
use crate::store::{TagDetail, TagOrder, TagQuery};
use crate::types::RepositoryName;

/// The most repositories per namespace and tags per repository one answer lists.
const LIST_MAX: u64 = 1000;

fn require_member(caller: &ApiCaller, org: &str) -> ApiResult<()> {
    if caller.in_org(org) {
        Ok(())
    } else {
        Err(ApiError::from(crate::iam::org_not_found(org)))
    }
}

/// A page of a list as the console asks for it: a case-insensitive substring filter, a sort
/// key, a 1-based page of `n` entries.
#[derive(serde::Deserialize, Default)]
pub(super) struct ListPage {
    n: Option<u64>,
    page: Option<u64>,
    q: Option<String>,
    sort: Option<String>,
}

impl ListPage {
    fn size(&self, max: u64) -> u64 {
        self.n.unwrap_or(max).clamp(1, max)
    }
    fn offset(&self, max: u64) -> u64 {
        (self.page.unwrap_or(1).max(1) - 1).saturating_mul(self.size(max))
    }
    fn filter(&self) -> String {
        self.q.as_deref().unwrap_or("").trim().to_lowercase()
    }

    /// Refuses a filter longer than `FILTER_MAX` characters (a name is shorter).
    fn check(&self) -> ApiResult<()> {
        match &self.q {
            Some(q) if q.chars().count() > FILTER_MAX => Err(ApiError::Invalid(format!(
                "q has at most {FILTER_MAX} characters"
            ))),
            _ => Ok(()),
        }
    }
}

/// The longest filter a list takes.
const FILTER_MAX: usize = 256;

/// The fields that say which page an answer holds: `total` entries, `page` of `pages`, and
/// `next`, the next page's number while there is one.
fn page_fields(total: u64, page: &ListPage, max: u64) -> Value {
    let n = page.size(max);
    let pages = total.div_ceil(n).max(1);
    let this = page.page.unwrap_or(1).max(1);
    json!({ "total": total, "page": this, "pages": pages, "next": (this < pages).then(|| this + 1) })
}

/// Repositories per page of the list.
const REPOS_PAGE: u64 = 100;

pub(super) async fn list_repositories(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
    axum::extract::Query(page): axum::extract::Query<ListPage>,
) -> ApiResult<Response> {
    require_member(&caller, &org)?;
    page.check()?;
    let sort = match page.sort.as_deref() {
        None | Some("name") => "name",
        Some("pushed") => "pushed",
        Some("size") => "size",
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "sort {other:?} is not one of name, pushed, size"
            )));
        }
    };
    blocking(&state, move |st| {
        let mut cache = NamespaceCache::new(st);
        let filter = page.filter();
        let mut found = Vec::new();
        for ns in st.auth.iam().namespaces(&org)? {
            let repos = st
                .content
                .meta()
                .read(|r| r.repositories_in(&ns.name, &filter, LIST_MAX))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            for repo in repos {
                if cache.may_pull(&caller.grants, &repo.name)? {
                    found.push((ns.name.clone(), repo));
                }
            }
        }
        match sort {
            "pushed" => found.sort_by_key(|r| std::cmp::Reverse(r.1.pushed_at)),
            "size" => found.sort_by_key(|r| std::cmp::Reverse(r.1.bytes)),
            _ => found.sort_by(|a, b| a.1.name.cmp(&b.1.name)),
        }
        let total = found.len() as u64;
        let out: Vec<Value> = found
            .into_iter()
            .skip(usize::try_from(page.offset(REPOS_PAGE)).unwrap_or(usize::MAX))
            .take(page.size(REPOS_PAGE) as usize)
            .map(|(ns, repo)| {
                json!({
                    "name": repo.name, "namespace": ns, "tags": repo.tags,
                    "size": repo.bytes, "pushed": time(repo.pushed_at),
                })
            })
            .collect();
        let mut body = page_fields(total, &page, REPOS_PAGE);
        body["repositories"] = json!(out);
        Ok(json_response(StatusCode::OK, body))
    })
    .await
}

/// Tags per page of the repository view, unless `n` asks for fewer; referrers shown per tag;
/// the annotations shown (bytes of their JSON text) and the length of each value shown. What
/// one answer costs is bounded by these, whatever was pushed.
const TAGS_PAGE: u64 = 50;
const REFERRERS_SHOWN: u64 = 10;
const ANNOTATIONS_SHOWN: u64 = 16 * 1024;
const ANNOTATION_VALUE_SHOWN: usize = 256;
/// Platforms shown per index (an index may list thousands).
const PLATFORMS_SHOWN: usize = 64;

pub(super) async fn get_repository(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, repository)): Path<(String, String)>,
    axum::extract::Query(page): axum::extract::Query<ListPage>,
) -> ApiResult<Response> {
    require_member(&caller, &org)?;
    page.check()?;
    let name: RepositoryName = repository
        .parse()
        .map_err(|_| ApiError::Invalid(format!("{repository:?} is not a repository name")))?;
    let order = match page.sort.as_deref() {
        None | Some("pushed") => TagOrder::PushedNewest,
        Some("name") => TagOrder::Name,
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "sort {other:?} is not one of pushed, name"
            )));
        }
    };
    blocking(&state, move |st| {
        let ns = namespace_info(st, namespace_of(name.as_str()))?;
        let allowed = repository_actions(&caller.grants, name.as_str(), ns.as_ref());
        let not_found = || ApiError::NotFound(format!("repository {name} not found"));
        if ns.as_ref().is_none_or(|n| n.org != org) || !allowed.contains(Action::Pull) {
            return Err(not_found());
        }
        let read = |e: crate::store::Error| ApiError::Internal(e.to_string());
        let content_err = |e: crate::content::Error| ApiError::Internal(e.to_string());
        let filter = page.filter();
        let q = TagQuery {
            filter: &filter,
            order,
            offset: page.offset(TAGS_PAGE),
            limit: page.size(TAGS_PAGE),
        };
        let Some((tags, total)) = st
            .content
            .meta()
            .read(|r| {
                if r.repo_id(name.as_str())?.is_none() {
                    return Ok(None);
                }
                let total = r.tag_count(name.as_str(), &filter)?;
                if q.offset >= total {
                    return Ok(Some((Vec::new(), total)));
                }
                Ok(Some((
                    r.tag_details(name.as_str(), &q, ANNOTATIONS_SHOWN)?,
                    total,
                )))
            })
            .map_err(read)?
        else {
            return Err(not_found());
        };
        let mut list = Vec::with_capacity(tags.len());
        for t in &tags {
            let mut v = tag_json(t);
            // An index's platforms, each with its image's size: its content is read one
            // manifest at a time.
            if t.media_type.contains("index") || t.media_type.contains("manifest.list") {
                let (content, sizes) = st
                    .content
                    .meta()
                    .read(|r| {
                        Ok((
                            r.manifest_content(name.as_str(), &t.digest)?,
                            r.index_children(name.as_str(), &t.digest)?,
                        ))
                    })
                    .map_err(read)?;
                let mut all = content.map(|c| platforms(&c)).unwrap_or_default();
                v["morePlatforms"] = json!(all.len() > PLATFORMS_SHOWN);
                all.truncate(PLATFORMS_SHOWN);
                let shown: Vec<Value> = all
                    .into_iter()
                    .map(|(mut p, digest)| {
                        if p.chars().count() > 3 * ANNOTATION_VALUE_SHOWN {
                            p = p.chars().take(3 * ANNOTATION_VALUE_SHOWN).collect();
                        }
                        let size = sizes
                            .iter()
                            .find(|(d, _)| d.to_string() == digest)
                            .map(|(_, s)| *s);
                        json!({ "platform": p, "digest": digest, "size": size })
                    })
                    .collect();
                v["platforms"] = json!(shown);
            }
            let mut referrers = st
                .content
                .referrers(&name, &t.digest, None, None, REFERRERS_SHOWN + 1)
                .map_err(content_err)?;
            v["moreReferrers"] = json!(referrers.len() as u64 > REFERRERS_SHOWN);
            referrers.truncate(REFERRERS_SHOWN as usize);
            let mut shown = Vec::with_capacity(referrers.len());
            for r in &referrers {
                let text = if r.annotations_len == 0 {
                    None
                } else {
                    st.content
                        .annotations(&name, &r.digest, ANNOTATIONS_SHOWN)
                        .map_err(content_err)?
                };
                shown.push(json!({
                    "digest": r.digest.to_string(), "mediaType": r.media_type, "size": r.size,
                    "artifactType": r.artifact_type,
                    "annotations": annotations(text.as_deref()),
                    "annotationsTruncated": r.annotations_len > ANNOTATIONS_SHOWN,
                }));
            }
            v["referrers"] = json!(shown);
            list.push(v);
        }
        let actions: Vec<&str> = [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(|a| allowed.contains(*a))
            .map(Action::as_str)
            .collect();
        let mut body = page_fields(total, &page, TAGS_PAGE);
        body["name"] = json!(name.as_str());
        body["org"] = json!(org);
        body["actions"] = json!(actions);
        body["tags"] = json!(list);
        Ok(json_response(StatusCode::OK, body))
    })
    .await
}

/// `DELETE /orgs/{org}/repositories/{repository}`: the repository with every tag and manifest
/// (its blobs go with the next GC unless another repository links them). Who may call: members
/// who may delete in it; who may not pull it gets the 404 of a repository that does not exist.
pub(super) async fn delete_repository(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, repository)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_member(&caller, &org)?;
    let name: RepositoryName = repository
        .parse()
        .map_err(|_| ApiError::Invalid(format!("{repository:?} is not a repository name")))?;
    let allowed = blocking(&state, {
        let (name, org, caller) = (name.clone(), org.clone(), caller.clone());
        move |st| {
            let ns = namespace_info(st, namespace_of(name.as_str()))?;
            let allowed = repository_actions(&caller.grants, name.as_str(), ns.as_ref());
            if ns.as_ref().is_none_or(|n| n.org != org) || !allowed.contains(Action::Pull) {
                return Err(ApiError::NotFound(format!("repository {name} not found")));
            }
            Ok(allowed)
        }
    })
    .await?;
    if !allowed.contains(Action::Delete) {
        return Err(ApiError::Forbidden(format!(
            "deleting {name} needs delete on it, which {} does not hold",
            caller.subject()
        )));
    }
    let tags = match state.content.delete_repository(&name).await {
        Ok(n) => n,
        Err(crate::content::Error::NameUnknown) => {
            return Err(ApiError::NotFound(format!("repository {name} not found")));
        }
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let st = state.clone();
    blocking(&state, move |_| {
        super::identity::audit_change_in(
            &st,
            &caller,
            Some(org),
            "repository.delete",
            format!("repository/{name} ({tags} tags)"),
        );
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// Annotations as shown: an object whose values are cut to `ANNOTATION_VALUE_SHOWN` characters.
fn annotations(text: Option<&str>) -> Value {
    let Some(Value::Object(map)) = text.and_then(|a| serde_json::from_str::<Value>(a).ok()) else {
        return json!({});
    };
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) if s.chars().count() > ANNOTATION_VALUE_SHOWN => {
                    let mut cut: String = s.chars().take(ANNOTATION_VALUE_SHOWN).collect();
                    cut.push('…');
                    Value::String(cut)
                }
                v => v,
            };
            (k, v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The platforms an index's content names (`os/arch[/variant]`), each with its manifest's
/// digest; only what is needed is parsed.
fn platforms(content: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        platform: Option<Platform>,
        #[serde(default)]
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Platform {
        os: String,
        architecture: String,
        variant: Option<String>,
    }
    serde_json::from_slice::<Index>(content)
        .map(|i| {
            i.manifests
                .into_iter()
                .filter_map(|m| Some((m.platform?, m.digest)))
                .map(|(p, digest)| {
                    let name = match p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    };
                    (name, digest)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A tag's manifest as people read it. `size` is the image: the manifest with its config and
/// layers; for an index, the index, its manifests and their blobs (each counted once), from
/// the stored references.
fn tag_json(t: &TagDetail) -> Value {
    json!({
        "tag": t.tag, "digest": t.digest.to_string(), "mediaType": t.media_type,
        "artifactType": t.artifact_type, "size": t.total_size, "pushed": time(Some(t.pushed_at)),
        "platforms": [], "annotations": annotations(t.annotations.as_deref()),
        "annotationsTruncated": t.annotations_len > ANNOTATIONS_SHOWN,
    })
}

pub(super) async fn storage(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    require_member(&caller, &org)?;
    blocking(&state, move |st| {
        let mut out = Vec::new();
        for ns in st
            .auth
            .iam()
            .namespaces(&org)?
            .into_iter()
            .filter(|n| crate::policy::sees_namespace(&caller.grants, &org, &n.name))
        {
            let (repositories, bytes) = st
                .content
                .meta()
                .read(|r| r.namespace_usage(&ns.name))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            out.push(json!({ "name": ns.name, "repositories": repositories, "size": bytes }));
        }
        Ok(json_response(StatusCode::OK, json!({ "namespaces": out })))
    })
    .await
}
