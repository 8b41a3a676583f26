//! `OciError`: every error `/v2` can answer, mapped to status, spec code and body in one place.
//!
//! The body is the distribution spec's `{"errors":[{"code","message","detail"}]}`. Internal
//! causes (store and filesystem errors) never reach the client: it gets `UNKNOWN` and the cause
//! is attached to the response for the logging middleware to record once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::route::RouteError;
use crate::content;
use crate::http::answer::{Condition, InternalError};

#[derive(Debug)]
pub(crate) enum OciError {
    BlobUnknown,
    BlobUploadUnknown,
    BlobUploadInvalid(String),
    /// 416 for a chunk that does not continue the upload; carries the upload's current length.
    RangeNotSatisfiable {
        upload_len: u64,
        location: String,
    },
    /// 416 for a blob `Range` outside the blob.
    BlobRangeNotSatisfiable {
        size: u64,
    },
    DigestInvalid(String),
    SizeInvalid(String),
    ManifestUnknown,
    ManifestInvalid(String),
    ManifestBlobUnknown(String),
    ManifestTooLarge,
    NameInvalid(String),
    NameUnknown,
    TagInvalid(String),
    Unsupported(String),
    MethodNotAllowed,
    NotFound,
    /// The node cannot take this now (its upload memory is taken): 429 with `Retry-After`.
    TooManyRequests(String),
    Internal(String),
}

impl OciError {
    /// Status, spec code and public message. One exhaustive match: adding a variant forces a choice.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use StatusCode as S;
        match self {
            OciError::BlobUnknown => (
                S::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry".into(),
            ),
            OciError::BlobUploadUnknown => (
                S::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry".into(),
            ),
            OciError::BlobUploadInvalid(m) => (S::BAD_REQUEST, "BLOB_UPLOAD_INVALID", m.clone()),
            OciError::RangeNotSatisfiable { upload_len, .. } => (
                S::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!(
                    "chunk must start at offset {upload_len}, the current length of the upload"
                ),
            ),
            OciError::BlobRangeNotSatisfiable { size } => (
                S::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("requested range is outside the blob ({size} bytes)"),
            ),
            OciError::DigestInvalid(m) => (S::BAD_REQUEST, "DIGEST_INVALID", m.clone()),
            OciError::SizeInvalid(m) => (S::BAD_REQUEST, "SIZE_INVALID", m.clone()),
            OciError::ManifestUnknown => (
                S::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown to registry".into(),
            ),
            OciError::ManifestInvalid(m) => (S::BAD_REQUEST, "MANIFEST_INVALID", m.clone()),
            OciError::ManifestBlobUnknown(m) => {
                (S::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", m.clone())
            }
            OciError::ManifestTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!(
                    "manifest is larger than {} bytes",
                    content::manifest::MAX_MANIFEST_BYTES
                ),
            ),
            OciError::NameInvalid(m) => (S::BAD_REQUEST, "NAME_INVALID", m.clone()),
            OciError::NameUnknown => (
                S::NOT_FOUND,
                "NAME_UNKNOWN",
                "repository name not known to registry".into(),
            ),
            // Not in the OCI spec's table; CNCF Distribution answers a malformed tag with this code.
            OciError::TagInvalid(m) => (S::BAD_REQUEST, "TAG_INVALID", m.clone()),
            OciError::Unsupported(m) => (S::BAD_REQUEST, "UNSUPPORTED", m.clone()),
            OciError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported for this endpoint".into(),
            ),
            OciError::NotFound => (S::NOT_FOUND, "UNSUPPORTED", "no such endpoint".into()),
            OciError::TooManyRequests(m) => (S::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", m.clone()),
            OciError::Internal(cause) => {
                let c = Condition::of(cause);
                (c.status(), c.oci_code(), c.message().into())
            }
        }
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body =
            serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        match self {
            OciError::RangeNotSatisfiable {
                upload_len,
                location,
            } => {
                let h = resp.headers_mut();
                h.insert(header::RANGE, range_header(upload_len));
                if let Ok(v) = HeaderValue::from_str(&location) {
                    h.insert(header::LOCATION, v);
                }
            }
            OciError::BlobRangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            OciError::Internal(cause) => {
                resp.extensions_mut().insert(InternalError(cause));
            }
            OciError::TooManyRequests(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}

/// The `Range` header of an upload of `len` bytes: `0-<last byte>`, and `0-0` when empty, as CNCF
/// Distribution answers.
pub(crate) fn range_header(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", len.saturating_sub(1)))
        .unwrap_or(HeaderValue::from_static("0-0"))
}

impl From<RouteError> for OciError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound => OciError::NotFound,
            RouteError::MethodNotAllowed => OciError::MethodNotAllowed,
            RouteError::Name(m) => OciError::NameInvalid(m),
            RouteError::Digest(m) => OciError::DigestInvalid(m),
            RouteError::Tag(m) => OciError::TagInvalid(m),
            RouteError::ManifestUnknown => OciError::ManifestUnknown,
            RouteError::UploadId => OciError::BlobUploadUnknown,
        }
    }
}

impl From<content::Error> for OciError {
    fn from(e: content::Error) -> Self {
        use content::Error as E;
        match e {
            E::BlobUnknown => OciError::BlobUnknown,
            E::UploadUnknown => OciError::BlobUploadUnknown,
            E::UploadInvalid(m) => OciError::BlobUploadInvalid(m),
            // The handler adds the Location; see `uploads::patch`.
            E::RangeMismatch { offset } => OciError::RangeNotSatisfiable {
                upload_len: offset,
                location: String::new(),
            },
            E::DigestInvalid(m) => OciError::DigestInvalid(m),
            E::SizeInvalid(m) => OciError::SizeInvalid(m),
            E::ManifestUnknown => OciError::ManifestUnknown,
            E::ManifestInvalid(m) => OciError::ManifestInvalid(m),
            e @ E::ManifestBlobUnknown(_) => OciError::ManifestBlobUnknown(e.to_string()),
            E::ManifestTooLarge => OciError::ManifestTooLarge,
            E::NameUnknown => OciError::NameUnknown,
            E::Body(m) => OciError::BlobUploadInvalid(m),
            E::Busy(m) => OciError::TooManyRequests(m),
            e @ (E::Store(_) | E::Blob(_) | E::Task(_)) => OciError::Internal(e.to_string()),
        }
    }
}
