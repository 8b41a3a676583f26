//! The OCI Distribution API under `/v2`: one wildcard route, a parser, then dispatch.
//!
//! `handle` parses every request into an `OciRoute` (see `route.rs`) before any handler runs; the
//! route knows its repository and the action it needs, so one authorization check can stand in
//! front of all handlers (added by the identity work). Handlers return `Result<Response, OciError>`.

mod blobs;
pub(crate) mod error;
mod listing;
mod manifests;
pub(crate) mod route;
mod uploads;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(crate) use error::OciError;
use route::OciRoute;

use crate::http::RouteName;
use crate::server::AppState;

type Query = HashMap<String, String>;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// Every `/v2` request comes through here.
pub(crate) async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/v2").unwrap_or_default();
    let mut resp = match OciRoute::parse(&parts.method, path) {
        Ok(route) => {
            let name = route.name();
            // The one place authorization will be decided for every /v2 route.
            tracing::trace!(route = name, repository = ?route.repository(), action = ?route.required_action(), "oci request");
            let query: Query = parts
                .uri
                .query()
                .and_then(|q| serde_urlencoded::from_str(q).ok())
                .unwrap_or_default();
            let mut resp = dispatch(&state, route, &query, &parts.headers, body)
                .await
                .unwrap_or_else(IntoResponse::into_response);
            resp.extensions_mut().insert(RouteName(name));
            resp
        }
        Err(e) => OciError::from(e).into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

async fn dispatch(
    state: &AppState,
    route: OciRoute,
    q: &Query,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OciError> {
    let content = &state.content;
    match route {
        OciRoute::Base => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        OciRoute::Catalog => listing::catalog(content, q),
        OciRoute::ListTags { name } => listing::tags(content, &name, q),
        OciRoute::Referrers { name, digest } => listing::referrers(content, &name, &digest, q),
        OciRoute::GetManifest {
            name,
            reference,
            head,
        } => manifests::get(content, &name, &reference, head, headers),
        OciRoute::PutManifest { name, reference } => {
            manifests::put(content, &name, &reference, headers, body).await
        }
        OciRoute::DeleteManifest { name, reference } => {
            manifests::delete(content, &name, &reference).await
        }
        OciRoute::GetBlob { name, digest, head } => {
            blobs::get(content, &name, &digest, head, headers).await
        }
        OciRoute::DeleteBlob { name, digest } => blobs::delete(content, &name, &digest).await,
        OciRoute::StartUpload { name } => uploads::start(content, &name, q, headers, body).await,
        OciRoute::UploadStatus { name, id } => uploads::status(content, &name, &id),
        OciRoute::PatchUpload { name, id } => {
            uploads::patch(content, &name, &id, headers, body).await
        }
        OciRoute::PutUpload { name, id } => {
            uploads::put(content, &name, &id, q, headers, body).await
        }
        OciRoute::CancelUpload { name, id } => uploads::cancel(content, &name, &id).await,
    }
}

/// A header value from a string we built ourselves (digests, paths of validated names).
fn hv(s: &str) -> Result<HeaderValue, OciError> {
    HeaderValue::from_str(s).map_err(|e| OciError::Internal(format!("header value {s:?}: {e}")))
}

/// `Content-Length` of the request, if given and valid.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, OciError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| OciError::SizeInvalid("invalid Content-Length".into()))
        })
        .transpose()
}
