//! Listings: `tags/list`, `_catalog` (both sorted, `n`/`last` pagination with a `Link` header)
//! and `referrers/<digest>` (an OCI index, optionally filtered by `artifactType`).

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::OciError;
use super::headers::{Query, hv};
use crate::content::manifest::OCI_INDEX;
use crate::content::{ContentService, Digest, RepositoryName};
use crate::http::access::{Caller, NamespaceCache};
use crate::state::AppState;

/// Catalog page size when the client gives no `n`, and the largest it may ask for.
const CATALOG_DEFAULT: u64 = 1000;
const PAGE_MAX: u64 = 10_000;

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// `n` and `last` from the query. `n` absent means `default`.
fn page(q: &Query, default: u64) -> Result<(u64, Option<&str>), OciError> {
    let n = match q.get("n") {
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| OciError::Unsupported("n must be a non-negative integer".into()))?
            .min(PAGE_MAX),
        None => default,
    };
    Ok((n, q.get("last").map(String::as_str)))
}

/// JSON response with a `Link` to the next page when `items` had one more than `n`.
fn paged(
    mut items: Vec<String>,
    n: u64,
    base: &str,
    body: impl FnOnce(Vec<String>) -> serde_json::Value,
) -> Result<Response, OciError> {
    let more = items.len() as u64 > n;
    items.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    let link = match (more, items.last()) {
        (true, Some(last)) => Some(hv(&format!("<{base}?n={n}&last={last}>; rel=\"next\""))?),
        _ => None,
    };
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body(items).to_string(),
    )
        .into_response();
    if let Some(link) = link {
        resp.headers_mut().insert(header::LINK, link);
    }
    Ok(resp)
}

pub(super) fn tags(
    content: &ContentService,
    name: &RepositoryName,
    q: &Query,
) -> Result<Response, OciError> {
    // Without `n`, a page of the largest size (the spec lets a registry page with `Link`).
    let (n, last) = page(q, PAGE_MAX)?;
    let tags = content.tags(name, last, n.saturating_add(1))?;
    paged(
        tags,
        n,
        &format!("/v2/{name}/tags/list"),
        |tags| json!({ "name": name.as_str(), "tags": tags }),
    )
}

/// The catalog, listing only repositories the caller may pull.
pub(super) async fn catalog(
    state: &AppState,
    caller: &Caller,
    q: &Query,
) -> Result<Response, OciError> {
    let (n, last) = page(q, CATALOG_DEFAULT)?;
    let (st, last) = (state.clone(), last.map(str::to_owned));
    let (grants, sub) = match caller {
        Caller::Principal(_, g) => (Some(g.clone()), None),
        Caller::Token(c) => (None, Some(c.clone())),
    };
    let repos = tokio::task::spawn_blocking(move || -> Result<Vec<String>, OciError> {
        let internal = |e: crate::auth::AuthError| OciError::Internal(e.to_string());
        let grants = match (grants, sub) {
            (Some(g), _) => g,
            (None, Some(claims)) => match st.auth.login_from_claims(&claims).map_err(internal)? {
                Some(l) => st.auth.grants(&l.principal).map_err(internal)?,
                None => crate::policy::Grants::default(),
            },
            (None, None) => crate::policy::Grants::default(),
        };
        let mut cache = NamespaceCache::new(&st);
        let mut out = Vec::new();
        let mut cursor = last;
        loop {
            let batch = st.content.catalog(cursor.as_deref(), CATALOG_BATCH)?;
            for repo in &batch {
                if cache.may_pull(&grants, repo).map_err(internal)? {
                    out.push(repo.clone());
                }
            }
            if out.len() as u64 > n || (batch.len() as u64) < CATALOG_BATCH {
                return Ok(out);
            }
            cursor = batch.last().cloned();
        }
    })
    .await
    .map_err(|e| OciError::Internal(e.to_string()))??;
    paged(
        repos,
        n,
        "/v2/_catalog",
        |repos| json!({ "repositories": repos }),
    )
}

/// Repositories read per round while filtering the catalog.
const CATALOG_BATCH: u64 = 1000;

/// Referrers per page at most, and the annotation bytes a page carries before it ends (a page
/// always holds at least one referrer): what one answer costs does not depend on what was pushed.
const REFERRERS_PAGE: u64 = 100;
const REFERRERS_PAGE_BYTES: u64 = 1 << 20;

/// The referrers of `subject`, as an OCI index, a page at a time: a `Link` header names the
/// next page (`last=<digest>`), as the distribution spec allows.
pub(super) fn referrers(
    content: &ContentService,
    name: &RepositoryName,
    subject: &Digest,
    q: &Query,
) -> Result<Response, OciError> {
    let filter = q.get("artifactType").map(String::as_str);
    let after = q.get("last").map(String::as_str);
    let rows = content.referrers(name, subject, filter, after, REFERRERS_PAGE + 1)?;
    let mut manifests = Vec::new();
    let mut bytes = 0u64;
    let mut last = None;
    for r in rows.iter().take(REFERRERS_PAGE as usize) {
        if !manifests.is_empty() && bytes + r.annotations_len > REFERRERS_PAGE_BYTES {
            break;
        }
        bytes += r.annotations_len;
        let mut d = json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
        if let Some(t) = &r.artifact_type {
            d["artifactType"] = json!(t);
        }
        if r.annotations_len > 0
            && let Some(a) = content
                .annotations(name, &r.digest, r.annotations_len)?
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
        {
            d["annotations"] = a;
        }
        manifests.push(d);
        last = Some(r.digest.to_string());
    }
    let more = rows.len() > manifests.len();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OCI_INDEX)],
        body.to_string(),
    )
        .into_response();
    if filter.is_some() {
        resp.headers_mut()
            .insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    if more && let Some(last) = last {
        let filter_q = filter
            .map(|f| {
                format!(
                    "&artifactType={}",
                    percent_encoding::utf8_percent_encode(f, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .unwrap_or_default();
        resp.headers_mut().insert(
            header::LINK,
            hv(&format!(
                "</v2/{name}/referrers/{subject}?last={last}{filter_q}>; rel=\"next\""
            ))?,
        );
    }
    Ok(resp)
}
