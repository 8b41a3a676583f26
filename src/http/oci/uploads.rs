//! Blob uploads: `POST` (session, monolithic `?digest=`, or `?mount=&from=`), `PATCH` chunks,
//! `GET` status, `PUT ?digest=` to close, `DELETE` to cancel. See the distribution spec,
//! "Pushing blobs" and "Mounting a blob from another repository".

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::OciError;
use super::error::range_header;
use super::headers::{CONTENT_DIGEST, Query, UPLOAD_UUID, content_length, hv};
use crate::content::{ContentService, Digest, RepositoryName};
use crate::http::body::Bounded;

fn upload_location(name: &RepositoryName, id: &uuid::Uuid) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// 202 with where the upload stands.
fn upload_response(
    status: StatusCode,
    name: &RepositoryName,
    id: &uuid::Uuid,
    len: u64,
) -> Result<Response, OciError> {
    let mut resp = (status, [(header::CONTENT_LENGTH, "0")]).into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&upload_location(name, id))?);
    h.insert(header::RANGE, range_header(len));
    h.insert(UPLOAD_UUID, hv(&id.to_string())?);
    Ok(resp)
}

/// 201 for a committed blob.
fn created(name: &RepositoryName, digest: &Digest) -> Result<Response, OciError> {
    let mut resp = (StatusCode::CREATED, [(header::CONTENT_LENGTH, "0")]).into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/blobs/{digest}"))?);
    h.insert(CONTENT_DIGEST, hv(&digest.to_string())?);
    Ok(resp)
}

fn digest_param(q: &Query, key: &str) -> Result<Option<Digest>, OciError> {
    q.get(key)
        .map(|s| {
            s.parse()
                .map_err(|e: crate::content::DigestError| OciError::DigestInvalid(e.to_string()))
        })
        .transpose()
}

/// `may_pull_from` says whether the caller may pull from a mount's source repository.
pub(super) async fn start<F, Fut>(
    content: &ContentService,
    name: &RepositoryName,
    q: &Query,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    body: Body,
    may_pull_from: F,
) -> Result<Response, OciError>
where
    F: FnOnce(RepositoryName) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if let Some(digest) = digest_param(q, "mount")? {
        // Without `from` there is no mount: guessing a source would reveal blobs of repositories
        // the caller may not read. It becomes an ordinary upload, as does a mount from a
        // repository the caller may not pull.
        if let Some(from) = q.get("from") {
            let from: RepositoryName = from
                .parse()
                .map_err(|e: crate::content::NameError| OciError::NameInvalid(e.to_string()))?;
            if may_pull_from(from.clone()).await && content.mount(name, &from, &digest).await? {
                return created(name, &digest);
            }
        }
    } else if let Some(digest) = digest_param(q, "digest")? {
        let len = content_length(headers)?;
        let body = content.metered(Bounded::new(body, len), len, peer);
        content
            .push_blob(name, &digest, body)
            .await
            .map_err(|e| size_error(e, len))?;
        return created(name, &digest);
    }
    let id = content.start_upload(name).await?;
    upload_response(StatusCode::ACCEPTED, name, &id, 0)
}

/// A body cut short is reported as a size problem when the client announced a length.
fn size_error(e: crate::content::Error, len: Option<u64>) -> OciError {
    match (e, len) {
        (crate::content::Error::Body(m), Some(l)) => {
            OciError::SizeInvalid(format!("expected {l} bytes: {m}"))
        }
        (e, _) => e.into(),
    }
}

pub(super) fn status(
    content: &ContentService,
    name: &RepositoryName,
    id: &uuid::Uuid,
) -> Result<Response, OciError> {
    let len = content.upload_offset(name, id)?;
    upload_response(StatusCode::NO_CONTENT, name, id, len)
}

/// Parses `Content-Range: <start>-<end>` (inclusive; a `bytes ` or `bytes=` prefix is tolerated).
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, OciError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| content_range_error())?;
    parse_content_range(v).map(Some)
}

fn content_range_error() -> OciError {
    OciError::BlobUploadInvalid("Content-Range must be <start>-<end>".into())
}

/// One `Content-Range` value: the first and last byte offsets, inclusive.
pub(crate) fn parse_content_range(v: &str) -> Result<(u64, u64), OciError> {
    let bad = content_range_error;
    let s = v.trim();
    let s = s
        .strip_prefix("bytes")
        .map_or(s, |r| r.trim_start_matches([' ', '=']));
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (start, end): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    // The range's length, end - start + 1, must exist (0-18446744073709551615 has none).
    if end < start || end - start == u64::MAX {
        return Err(bad());
    }
    Ok((start, end))
}

pub(super) async fn patch(
    content: &ContentService,
    name: &RepositoryName,
    id: &uuid::Uuid,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    body: Body,
) -> Result<Response, OciError> {
    let range = content_range(headers)?;
    let mut len = content_length(headers)?;
    if let Some((start, end)) = range {
        let range_len = end - start + 1;
        if len.is_some_and(|l| l != range_len) {
            return Err(OciError::SizeInvalid(format!(
                "Content-Length does not match Content-Range {start}-{end}"
            )));
        }
        len = Some(range_len);
    }
    let body = content.metered(Bounded::new(body, len), len, peer);
    match content
        .append(name, id, range.map(|r| r.0), len, body)
        .await
    {
        Ok(new_len) => upload_response(StatusCode::ACCEPTED, name, id, new_len),
        Err(crate::content::Error::RangeMismatch { offset }) => {
            Err(OciError::RangeNotSatisfiable {
                upload_len: offset,
                location: upload_location(name, id),
            })
        }
        Err(e) => Err(size_error(e, len)),
    }
}

pub(super) async fn put(
    content: &ContentService,
    name: &RepositoryName,
    id: &uuid::Uuid,
    q: &Query,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    body: Body,
) -> Result<Response, OciError> {
    let digest = digest_param(q, "digest")?.ok_or_else(|| {
        OciError::DigestInvalid(
            "the digest query parameter is required to complete an upload".into(),
        )
    })?;
    let len = content_length(headers)?;
    let has_body = len.map_or_else(
        || headers.contains_key(header::TRANSFER_ENCODING),
        |l| l > 0,
    );
    let last = has_body.then(|| content.metered(Bounded::new(body, len), len, peer));
    content
        .finish(name, id, &digest, last)
        .await
        .map_err(|e| size_error(e, len))?;
    created(name, &digest)
}

pub(super) async fn cancel(
    content: &ContentService,
    name: &RepositoryName,
    id: &uuid::Uuid,
) -> Result<Response, OciError> {
    content.cancel_upload(name, id).await?;
    Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
}
