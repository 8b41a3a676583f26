//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with single byte-range reads.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::OciError;
use super::headers::hv;
use crate::content::{ContentService, Digest, RepositoryName};

pub(super) async fn get(
    content: &ContentService,
    name: &RepositoryName,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
    client: crate::content::Client,
) -> Result<Response, OciError> {
    let range = match headers.get(header::RANGE) {
        Some(v) => Some(parse_range(v.to_str().unwrap_or_default())?),
        None => None,
    };
    let digest_s = digest.to_string();
    if head && range.is_none() {
        let size = content.blob_size(name, digest)?;
        return blob_headers(StatusCode::OK, size, &digest_s)?
            .body(Body::empty())
            .map_err(internal);
    }
    let blob = content.open_blob(name, digest, client)?;
    let size = blob.size;
    let (status, start, len, content_range) = match range {
        None => (StatusCode::OK, 0, size, None),
        Some(r) => {
            let (start, end) = r
                .resolve(size)
                .ok_or(OciError::BlobRangeNotSatisfiable { size })?;
            (
                StatusCode::PARTIAL_CONTENT,
                start,
                end - start + 1,
                Some(format!("bytes {start}-{end}/{size}")),
            )
        }
    };
    let mut builder = blob_headers(status, len, &digest_s)?;
    if let Some(cr) = content_range {
        builder = builder.header(header::CONTENT_RANGE, hv(&cr)?);
    }
    if head {
        return builder.body(Body::empty()).map_err(internal);
    }
    let body = blob.stream(start, len).await?;
    builder.body(Body::from_stream(body)).map_err(internal)
}

fn blob_headers(
    status: StatusCode,
    len: u64,
    digest: &str,
) -> Result<axum::http::response::Builder, OciError> {
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, hv(&format!("\"{digest}\""))?)
        .header("docker-content-digest", hv(digest)?))
}

fn internal(e: axum::http::Error) -> OciError {
    OciError::Internal(e.to_string())
}

pub(super) async fn delete(
    content: &ContentService,
    name: &RepositoryName,
    digest: &Digest,
) -> Result<Response, OciError> {
    content.delete_blob(name, digest).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}

/// One byte range of RFC 9110 §14.1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `start-end` or `start-` (end `None`).
    From { start: u64, end: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// First and last byte offsets within a blob of `size` bytes, `None` if unsatisfiable.
    pub(crate) fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From { start, end } => {
                if start >= size {
                    return None;
                }
                Some((start, end.map_or(size - 1, |e| e.min(size - 1))))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => (size > 0).then(|| (size.saturating_sub(n), size - 1)),
        }
    }
}

/// Parses a `Range` header. Only one range is served; anything else is a 400 rather than a
/// silent full answer, so a client never mistakes a whole blob for the part it asked.
pub(crate) fn parse_range(v: &str) -> Result<ByteRange, OciError> {
    let bad = || {
        OciError::Unsupported(
            "Range must be one byte range: bytes=START-END, bytes=START- or bytes=-SUFFIX".into(),
        )
    };
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => Ok(ByteRange::Suffix(num(b)?)),
        (false, true) => Ok(ByteRange::From {
            start: num(a)?,
            end: None,
        }),
        (false, false) => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                return Err(bad());
            }
            Ok(ByteRange::From {
                start,
                end: Some(end),
            })
        }
        (true, true) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s: &str, size: u64| parse_range(s).ok().map(|r| r.resolve(size));
        assert_eq!(r("bytes=0-9", 100), Some(Some((0, 9))));
        assert_eq!(r("bytes=90-200", 100), Some(Some((90, 99))));
        assert_eq!(r("bytes=10-", 100), Some(Some((10, 99))));
        assert_eq!(r("bytes=-10", 100), Some(Some((90, 99))));
        assert_eq!(r("bytes=-500", 100), Some(Some((0, 99))));
        assert_eq!(r("bytes=100-", 100), Some(None));
        assert_eq!(r("bytes=-0", 100), Some(None));
        assert_eq!(r("bytes=0-0", 0), Some(None));
        assert_eq!(r("bytes=5-4", 100), None);
        assert_eq!(r("bytes=0-1,5-6", 100), None);
        assert_eq!(r("items=0-1", 100), None);
        assert_eq!(r("bytes=-", 100), None);
        assert_eq!(r("bytes=a-b", 100), None);
    }
}
