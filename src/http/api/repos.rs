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

use super::{ApiCaller, ApiError, ApiResult, blocking, json_response, time};
use crate::http::access::{NamespaceCache, namespace_info};
use crate::policy::{Action, namespace_of, repository_actions};
use crate::server::AppState;
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

pub(super) async fn get_repository(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, repository)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_member(&caller, &org)?;
    let name: RepositoryName = repository
        .parse()
        .map_err(|_| ApiError::Invalid(format!("{repository:?} is not a repository name")))?;
    blocking(&state, move |st| {
        let ns = namespace_info(st, namespace_of(name.as_str()))?;
        let allowed = repository_actions(&caller.grants, name.as_str(), ns.as_ref());
        let not_found = || ApiError::NotFound(format!("repository {name} not found"));
        if ns.as_ref().is_none_or(|n| n.org != org) || !allowed.contains(Action::Pull) {
            return Err(not_found());
        }
        let read = |e: crate::store::Error| ApiError::Internal(e.to_string());
        let tags = st
            .content
            .meta()
            .read(|r| r.tag_details(name.as_str(), LIST_MAX))
            .map_err(read)?;
        let mut list = Vec::with_capacity(tags.len());
        for t in &tags {
            let referrers = st
                .content
                .meta()
                .read(|r| r.referrers(name.as_str(), &t.digest, None))
                .map_err(read)?;
            let mut v = tag_json(t);
            v["referrers"] = referrers
                .iter()
                .map(|r| {
                    json!({
                        "digest": r.digest.to_string(), "mediaType": r.media_type, "size": r.size,
                        "artifactType": r.artifact_type, "annotations": annotations(r.annotations.as_deref()),
                    })
                })
                .collect();
            list.push(v);
        }
        let actions: Vec<&str> = [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(|a| allowed.contains(*a))
            .map(Action::as_str)
            .collect();
        Ok(json_response(
            StatusCode::OK,
            json!({ "name": name.as_str(), "org": org, "actions": actions, "tags": list }),
        ))
    })
    .await
}

fn annotations(text: Option<&str>) -> Value {
    text.and_then(|a| serde_json::from_str::<Value>(a).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// A tag's manifest as people read it. `size` is the manifest with everything it references
/// directly (an image's config and layers; an index's manifests); `platforms` are an index's.
fn tag_json(t: &TagDetail) -> Value {
    let doc: Value = serde_json::from_slice(&t.content).unwrap_or(Value::Null);
    let sizes = |key: &str| -> u64 {
        doc[key]
            .as_array()
            .map_or(0, |a| a.iter().filter_map(|d| d["size"].as_u64()).sum())
    };
    let size =
        t.size + doc["config"]["size"].as_u64().unwrap_or(0) + sizes("layers") + sizes("manifests");
    let platforms: Vec<String> = doc["manifests"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    let p = &m["platform"];
                    let (os, arch) = (p["os"].as_str()?, p["architecture"].as_str()?);
                    Some(match p["variant"].as_str() {
                        Some(v) => format!("{os}/{arch}/{v}"),
                        None => format!("{os}/{arch}"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "tag": t.tag, "digest": t.digest.to_string(), "mediaType": t.media_type,
        "artifactType": t.artifact_type, "size": size, "pushed": time(Some(t.pushed_at)),
        "platforms": platforms, "annotations": annotations(t.annotations.as_deref()),
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
        for ns in st.auth.iam().namespaces(&org)? {
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
