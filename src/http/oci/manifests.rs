//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;

use super::error::OciError;
use super::headers::{CONTENT_DIGEST, content_length, hv};
use crate::content::manifest::MAX_MANIFEST_BYTES;
use crate::content::{ContentService, Reference, RepositoryName};

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");

pub(super) fn get(
    content: &ContentService,
    name: &RepositoryName,
    reference: &Reference,
    head: bool,
    _headers: &HeaderMap,
) -> Result<Response, OciError> {
    // The stored bytes go back with the stored media type whatever `Accept` says: converting
    // would change the digest (distribution spec, "Pulling manifests").
    let m = content.get_manifest(name, reference)?;
    let digest = m.digest.to_string();
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, hv(&m.media_type)?)
        .header(header::CONTENT_LENGTH, m.content.len())
        .header(header::ETAG, hv(&format!("\"{digest}\""))?)
        .header(CONTENT_DIGEST, hv(&digest)?);
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.content)
    };
    builder
        .body(body)
        .map_err(|e| OciError::Internal(e.to_string()))
}

pub(super) async fn put(
    content: &ContentService,
    name: &RepositoryName,
    reference: &Reference,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, OciError> {
    if content_length(headers)?.is_some_and(|l| l > MAX_MANIFEST_BYTES as u64) {
        drain(body).await;
        return Err(OciError::ManifestTooLarge);
    }
    let mut stream = body.into_data_stream();
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = stream.next().await {
        let frame =
            frame.map_err(|e| OciError::ManifestInvalid(format!("reading manifest: {e}")))?;
        bytes.extend_from_slice(&frame);
        if bytes.len() > MAX_MANIFEST_BYTES {
            drain(Body::from_stream(stream)).await;
            return Err(OciError::ManifestTooLarge);
        }
    }
    let bytes = bytes.freeze();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let pushed = content
        .put_manifest(name, reference, content_type, bytes)
        .await?;
    let digest = pushed.digest.to_string();
    let mut resp = (StatusCode::CREATED, [(header::CONTENT_LENGTH, "0")]).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!("/v2/{name}/manifests/{digest}"))?,
    );
    h.insert(CONTENT_DIGEST, hv(&digest)?);
    if let Some(subject) = pushed.subject {
        h.insert(OCI_SUBJECT, hv(&subject.to_string())?);
    }
    Ok(resp)
}

/// Reads and discards what is left of a refused body (up to a bound), so that the client, still
/// sending, reads the error instead of a reset connection.
async fn drain(body: Body) {
    const DRAIN_MAX: usize = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    while let Some(Ok(frame)) = stream.next().await {
        seen += frame.len();
        if seen > DRAIN_MAX {
            break;
        }
    }
}

pub(super) async fn delete(
    content: &ContentService,
    name: &RepositoryName,
    reference: &Reference,
) -> Result<Response, OciError> {
    content.delete_manifest(name, reference).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}
