//! The headers and query of a `/v2` request and answer: the registry's own header names, header
//! values built from validated strings, `Content-Length`.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::error::OciError;

/// A request's query parameters.
pub(super) type Query = HashMap<String, String>;

pub(super) const API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub(super) const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub(super) const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// A header value from a string we built ourselves (digests, paths of validated names).
pub(super) fn hv(s: &str) -> Result<HeaderValue, OciError> {
    HeaderValue::from_str(s).map_err(|e| OciError::Internal(format!("header value {s:?}: {e}")))
}

/// `Content-Length` of the request, if given and valid.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, OciError> {
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
