//! Repositories of an organization as people look at them (the console, `GET
//! /orgs/{org}/repositories`): tags with their manifests' media type, size, platforms,
//! annotations and referrers, and storage per namespace.
//!
//! Who may call: members of the organization; every repository shown is one the caller may pull
//! (`policy::repository_actions`), and a repository the caller may not pull answers the same 404
//! as one that does not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::common::{ApiCaller, ApiError, ApiResult, blocking, json_response, time};
use crate::http::access::{NamespaceCache, namespace_info};
use crate::policy::{Action, namespace_of, repository_actions};
use crate::state::AppState;
use crate::store::TagDetail;
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

pub(super) async fn list_repositories(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    require_member(&caller, &org)?;
    blocking(&state, move |st| {
        let mut cache = NamespaceCache::new(st);
        let mut out = Vec::new();
        for ns in st.auth.iam().namespaces(&org)? {
            let repos = st
                .content
                .meta()
                .read(|r| r.repositories_in(&ns.name, LIST_MAX))
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            for repo in repos {
                if cache.may_pull(&caller.grants, &repo.name)? {
                    out.push(json!({
                        "name": repo.name, "namespace": ns.name, "tags": repo.tags,
                        "size": repo.bytes, "pushed": time(repo.pushed_at),
                    }));
                }
            }
        }
        Ok(json_response(
            StatusCode::OK,
            json!({ "repositories": out }),
        ))
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

#[derive(serde::Deserialize)]
pub(super) struct TagPage {
    n: Option<u64>,
    last: Option<String>,
}

pub(super) async fn get_repository(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, repository)): Path<(String, String)>,
    axum::extract::Query(page): axum::extract::Query<TagPage>,
) -> ApiResult<Response> {
    require_member(&caller, &org)?;
    let name: RepositoryName = repository
        .parse()
        .map_err(|_| ApiError::Invalid(format!("{repository:?} is not a repository name")))?;
    let n = page.n.unwrap_or(TAGS_PAGE).clamp(1, TAGS_PAGE);
    blocking(&state, move |st| {
        let ns = namespace_info(st, namespace_of(name.as_str()))?;
        let allowed = repository_actions(&caller.grants, name.as_str(), ns.as_ref());
        let not_found = || ApiError::NotFound(format!("repository {name} not found"));
        if ns.as_ref().is_none_or(|n| n.org != org) || !allowed.contains(Action::Pull) {
            return Err(not_found());
        }
        let read = |e: crate::store::Error| ApiError::Internal(e.to_string());
        let content_err = |e: crate::content::Error| ApiError::Internal(e.to_string());
        let mut tags = st
            .content
            .meta()
            .read(|r| r.tag_details(name.as_str(), page.last.as_deref(), n + 1, ANNOTATIONS_SHOWN))
            .map_err(read)?;
        let next = (tags.len() as u64 > n).then(|| {
            tags.truncate(n as usize);
            tags.last().map(|t| t.tag.clone())
        }).flatten();
        let mut list = Vec::with_capacity(tags.len());
        for t in &tags {
            let mut v = tag_json(t);
            // An index's platforms: its content is read one manifest at a time.
            if t.media_type.contains("index") || t.media_type.contains("manifest.list") {
                let content = st
                    .content
                    .meta()
                    .read(|r| r.manifest_content(name.as_str(), &t.digest))
                    .map_err(read)?;
                let mut all = content.map(|c| platforms(&c)).unwrap_or_default();
                v["morePlatforms"] = json!(all.len() > PLATFORMS_SHOWN);
                all.truncate(PLATFORMS_SHOWN);
                for p in &mut all {
                    if p.chars().count() > 3 * ANNOTATION_VALUE_SHOWN {
                        *p = p.chars().take(3 * ANNOTATION_VALUE_SHOWN).collect();
                    }
                }
                v["platforms"] = json!(all);
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
        Ok(json_response(
            StatusCode::OK,
            json!({ "name": name.as_str(), "org": org, "actions": actions, "tags": list, "next": next }),
        ))
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

/// The platforms an index's content names (`os/arch[/variant]`); only what is needed is parsed.
fn platforms(content: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        platform: Option<Platform>,
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
                .filter_map(|m| m.platform)
                .map(|p| match p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A tag's manifest as people read it. `size` is the manifest with everything it references
/// directly (an image's config and layers; an index's manifests), from the stored references.
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
