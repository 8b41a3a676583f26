//! `/v2` request parsing: method + path → `OciRoute`, before any handler runs.
//!
//! Repository names contain `/`, so the path is read from its end, where the endpoint keywords
//! (`manifests`, `blobs`, `blobs/uploads`, `tags/list`, `referrers`) stand. Every value in a route
//! is already validated; handlers never see a raw string.

use axum::http::Method;

use crate::content::{Digest, Reference, RepositoryName};

/// What a request asks of the registry. See the endpoint table of the OCI distribution spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OciRoute {
    Base,
    Catalog,
    ListTags {
        name: RepositoryName,
    },
    GetManifest {
        name: RepositoryName,
        reference: Reference,
        head: bool,
    },
    PutManifest {
        name: RepositoryName,
        reference: Reference,
    },
    DeleteManifest {
        name: RepositoryName,
        reference: Reference,
    },
    GetBlob {
        name: RepositoryName,
        digest: Digest,
        head: bool,
    },
    DeleteBlob {
        name: RepositoryName,
        digest: Digest,
    },
    StartUpload {
        name: RepositoryName,
    },
    UploadStatus {
        name: RepositoryName,
        id: uuid::Uuid,
    },
    PatchUpload {
        name: RepositoryName,
        id: uuid::Uuid,
    },
    PutUpload {
        name: RepositoryName,
        id: uuid::Uuid,
    },
    CancelUpload {
        name: RepositoryName,
        id: uuid::Uuid,
    },
    Referrers {
        name: RepositoryName,
        digest: Digest,
    },
}

/// What access a route needs; authorization (a later issue) checks this one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `GET /v2/`, which only proves the caller may talk to the registry.
    None,
    Pull,
    Push,
    Delete,
    Catalog,
}

/// Why a path is not a valid `/v2` route. Mapped to the wire in `error.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteError {
    NotFound,
    MethodNotAllowed,
    Name(String),
    Digest(String),
    Tag(String),
    ManifestUnknown,
    UploadId,
}

impl OciRoute {
    /// A stable name for logs and metrics (never the raw path).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OciRoute::Base => "base",
            OciRoute::Catalog => "catalog",
            OciRoute::ListTags { .. } => "tags_list",
            OciRoute::GetManifest { head: false, .. } => "manifest_get",
            OciRoute::GetManifest { head: true, .. } => "manifest_head",
            OciRoute::PutManifest { .. } => "manifest_put",
            OciRoute::DeleteManifest { .. } => "manifest_delete",
            OciRoute::GetBlob { head: false, .. } => "blob_get",
            OciRoute::GetBlob { head: true, .. } => "blob_head",
            OciRoute::DeleteBlob { .. } => "blob_delete",
            OciRoute::StartUpload { .. } => "upload_start",
            OciRoute::UploadStatus { .. } => "upload_status",
            OciRoute::PatchUpload { .. } => "upload_patch",
            OciRoute::PutUpload { .. } => "upload_put",
            OciRoute::CancelUpload { .. } => "upload_cancel",
            OciRoute::Referrers { .. } => "referrers",
        }
    }

    pub(crate) fn required_action(&self) -> Action {
        match self {
            OciRoute::Base => Action::None,
            OciRoute::Catalog => Action::Catalog,
            OciRoute::ListTags { .. }
            | OciRoute::GetManifest { .. }
            | OciRoute::GetBlob { .. }
            | OciRoute::Referrers { .. } => Action::Pull,
            OciRoute::PutManifest { .. }
            | OciRoute::StartUpload { .. }
            | OciRoute::UploadStatus { .. }
            | OciRoute::PatchUpload { .. }
            | OciRoute::PutUpload { .. }
            | OciRoute::CancelUpload { .. } => Action::Push,
            OciRoute::DeleteManifest { .. } | OciRoute::DeleteBlob { .. } => Action::Delete,
        }
    }

    /// The repository the route acts on, if any.
    pub(crate) fn repository(&self) -> Option<&RepositoryName> {
        match self {
            OciRoute::Base | OciRoute::Catalog => None,
            OciRoute::ListTags { name }
            | OciRoute::GetManifest { name, .. }
            | OciRoute::PutManifest { name, .. }
            | OciRoute::DeleteManifest { name, .. }
            | OciRoute::GetBlob { name, .. }
            | OciRoute::DeleteBlob { name, .. }
            | OciRoute::StartUpload { name }
            | OciRoute::UploadStatus { name, .. }
            | OciRoute::PatchUpload { name, .. }
            | OciRoute::PutUpload { name, .. }
            | OciRoute::CancelUpload { name, .. }
            | OciRoute::Referrers { name, .. } => Some(name),
        }
    }

    /// Parses `path`, the part of the request path after `/v2`.
    pub(crate) fn parse(method: &Method, path: &str) -> Result<OciRoute, RouteError> {
        let get_or_head = || {
            if method == Method::GET {
                Ok(false)
            } else if method == Method::HEAD {
                Ok(true)
            } else {
                Err(RouteError::MethodNotAllowed)
            }
        };
        if path.is_empty() || path == "/" {
            get_or_head()?;
            return Ok(OciRoute::Base);
        }
        let path = path.strip_prefix('/').ok_or(RouteError::NotFound)?;
        if path == "_catalog" {
            get_or_head()?;
            return Ok(OciRoute::Catalog);
        }
        let segs: Vec<String> = path
            .split('/')
            .map(percent_decode)
            .collect::<Result<_, _>>()?;
        let n = segs.len();
        let seg = |i: usize| segs[i].as_str();
        let name_of = |end: usize| -> Result<RepositoryName, RouteError> {
            if end == 0 {
                return Err(RouteError::NotFound);
            }
            if segs[..end].iter().any(|s| s.contains('/')) {
                // An escaped `/` must not become a path separator of the name.
                return Err(RouteError::Name(
                    crate::content::NameError::Invalid.to_string(),
                ));
            }
            segs[..end]
                .join("/")
                .parse()
                .map_err(|e: crate::content::NameError| RouteError::Name(e.to_string()))
        };
        let digest_of = |s: &str| -> Result<Digest, RouteError> {
            s.parse()
                .map_err(|e: crate::content::DigestError| RouteError::Digest(e.to_string()))
        };
        let upload_id = |s: &str| uuid::Uuid::parse_str(s).map_err(|_| RouteError::UploadId);

        if n >= 3 && seg(n - 2) == "blobs" && seg(n - 1) == "uploads" {
            // `/blobs/uploads` without the trailing slash: start an upload.
            return Self::start_upload(method, name_of(n - 2)?);
        }
        if n >= 4 && seg(n - 3) == "blobs" && seg(n - 2) == "uploads" {
            let name = name_of(n - 3)?;
            if seg(n - 1).is_empty() {
                return Self::start_upload(method, name);
            }
            let id = upload_id(seg(n - 1))?;
            return match *method {
                Method::GET => Ok(OciRoute::UploadStatus { name, id }),
                Method::PATCH => Ok(OciRoute::PatchUpload { name, id }),
                Method::PUT => Ok(OciRoute::PutUpload { name, id }),
                Method::DELETE => Ok(OciRoute::CancelUpload { name, id }),
                _ => Err(RouteError::MethodNotAllowed),
            };
        }
        if n >= 3 && seg(n - 2) == "tags" && seg(n - 1) == "list" {
            get_or_head()?;
            return Ok(OciRoute::ListTags {
                name: name_of(n - 2)?,
            });
        }
        if n < 3 {
            return Err(RouteError::NotFound);
        }
        let last = seg(n - 1);
        match seg(n - 2) {
            "manifests" => {
                let name = name_of(n - 2)?;
                let reading = *method == Method::GET || *method == Method::HEAD;
                let reference: Reference = last.parse().map_err(|e| match e {
                    // A reference that is neither a tag nor a digest names no manifest: reads
                    // answer 404 MANIFEST_UNKNOWN (as Distribution, and as the conformance suite
                    // expects); writes and deletes say what is wrong with it.
                    _ if reading => RouteError::ManifestUnknown,
                    crate::content::ReferenceError::Tag(t) => RouteError::Tag(t.to_string()),
                    crate::content::ReferenceError::Digest(d) => RouteError::Digest(d.to_string()),
                })?;
                match *method {
                    Method::GET | Method::HEAD => Ok(OciRoute::GetManifest {
                        name,
                        reference,
                        head: method == Method::HEAD,
                    }),
                    Method::PUT => Ok(OciRoute::PutManifest { name, reference }),
                    Method::DELETE => Ok(OciRoute::DeleteManifest { name, reference }),
                    _ => Err(RouteError::MethodNotAllowed),
                }
            }
            "blobs" => {
                let name = name_of(n - 2)?;
                let digest = digest_of(last)?;
                match *method {
                    Method::GET | Method::HEAD => Ok(OciRoute::GetBlob {
                        name,
                        digest,
                        head: method == Method::HEAD,
                    }),
                    Method::DELETE => Ok(OciRoute::DeleteBlob { name, digest }),
                    _ => Err(RouteError::MethodNotAllowed),
                }
            }
            "referrers" => {
                let name = name_of(n - 2)?;
                let digest = digest_of(last)?;
                get_or_head()?;
                Ok(OciRoute::Referrers { name, digest })
            }
            _ => Err(RouteError::NotFound),
        }
    }

    fn start_upload(method: &Method, name: RepositoryName) -> Result<OciRoute, RouteError> {
        if method == Method::POST {
            Ok(OciRoute::StartUpload { name })
        } else {
            Err(RouteError::MethodNotAllowed)
        }
    }
}

/// Decodes `%XX` escapes in one path segment (some clients escape the `:` of a digest). A decoded
/// `/` stays inside its segment, where the name and reference grammars reject it.
fn percent_decode(seg: &str) -> Result<String, RouteError> {
    if !seg.contains('%') {
        return Ok(seg.to_owned());
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(RouteError::NotFound)?;
            let s = std::str::from_utf8(hex).map_err(|_| RouteError::NotFound)?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| RouteError::NotFound)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| RouteError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, expect: &str) {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let got = match OciRoute::parse(&m, path) {
            Ok(r) => format!(
                "{} {:?} {:?}",
                r.name(),
                r.repository().map(|n| n.as_str()),
                r.required_action()
            ),
            Err(e) => format!("{e:?}"),
        };
        assert_eq!(got, expect, "{method} {path}");
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn route_table() {
        check("GET", "/", "base None None");
        check("GET", "", "base None None");
        check("POST", "/", "MethodNotAllowed");
        check("GET", "/_catalog", "catalog None Catalog");
        check(
            "GET",
            "/acme/app/tags/list",
            "tags_list Some(\"acme/app\") Pull",
        );
        check(
            "GET",
            "/acme/app/manifests/latest",
            "manifest_get Some(\"acme/app\") Pull",
        );
        check(
            "HEAD",
            "/acme/app/manifests/latest",
            "manifest_head Some(\"acme/app\") Pull",
        );
        check(
            "PUT",
            &format!("/a/manifests/{D}"),
            "manifest_put Some(\"a\") Push",
        );
        check(
            "DELETE",
            "/a/manifests/v1",
            "manifest_delete Some(\"a\") Delete",
        );
        check("PATCH", "/a/manifests/v1", "MethodNotAllowed");
        check(
            "GET",
            &format!("/a/b/c/blobs/{D}"),
            "blob_get Some(\"a/b/c\") Pull",
        );
        check(
            "GET",
            &format!("/a/blobs/{}", D.replace(':', "%3A")),
            "blob_get Some(\"a\") Pull",
        );
        check(
            "DELETE",
            &format!("/a/blobs/{D}"),
            "blob_delete Some(\"a\") Delete",
        );
        check("POST", "/a/blobs/uploads/", "upload_start Some(\"a\") Push");
        check("POST", "/a/blobs/uploads", "upload_start Some(\"a\") Push");
        // Deeper names, and last segments that only look like a route's.
        check(
            "GET",
            "/acme/team/app/tags/list",
            "tags_list Some(\"acme/team/app\") Pull",
        );
        check(
            "GET",
            "/acme/team/app/manifests/latest",
            "manifest_get Some(\"acme/team/app\") Pull",
        );
        check("GET", "/a/manifests/list", "manifest_get Some(\"a\") Pull");
        check(
            "GET",
            &format!("/acme/team/app/referrers/{D}"),
            "referrers Some(\"acme/team/app\") Pull",
        );
        check("GET", "/a/b/c/uploads/x", "NotFound");
        check("GET", "/a/b/blobs/c/x", "NotFound");
        // Names of several components, with and without the trailing slash.
        check(
            "POST",
            "/acme/team/app/blobs/uploads",
            "upload_start Some(\"acme/team/app\") Push",
        );
        check(
            "POST",
            "/acme/team/app/blobs/uploads/",
            "upload_start Some(\"acme/team/app\") Push",
        );
        check("GET", "/a/blobs/uploads/", "MethodNotAllowed");
        let u = "3f1c0c8e-7a35-4b39-9d8e-0f5a1b2c3d4e";
        check(
            "PATCH",
            &format!("/a/blobs/uploads/{u}"),
            "upload_patch Some(\"a\") Push",
        );
        check(
            "GET",
            &format!("/a/blobs/uploads/{u}"),
            "upload_status Some(\"a\") Push",
        );
        check(
            "PUT",
            &format!("/a/blobs/uploads/{u}"),
            "upload_put Some(\"a\") Push",
        );
        check(
            "DELETE",
            &format!("/a/blobs/uploads/{u}"),
            "upload_cancel Some(\"a\") Push",
        );
        check("PATCH", "/a/blobs/uploads/not-a-uuid", "UploadId");
        check(
            "GET",
            &format!("/a/referrers/{D}"),
            "referrers Some(\"a\") Pull",
        );
        // Keywords inside a repository name are read from the end.
        check(
            "GET",
            "/x/manifests/manifests/latest",
            "manifest_get Some(\"x/manifests\") Pull",
        );
        check(
            "GET",
            &format!("/blobs/blobs/{D}"),
            "blob_get Some(\"blobs\") Pull",
        );
        check(
            "POST",
            "/x/blobs/uploads/blobs/uploads/",
            "upload_start Some(\"x/blobs/uploads\") Push",
        );
        // Malformed parts.
        check(
            "GET",
            "/Acme/manifests/latest",
            "Name(\"invalid repository name: each path component must match [a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*\")",
        );
        check(
            "GET",
            "/a/../b/manifests/latest",
            "Name(\"invalid repository name: each path component must match [a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*\")",
        );
        check(
            "GET",
            "/a%2Fb/manifests/latest",
            "Name(\"invalid repository name: each path component must match [a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*\")",
        );
        check("GET", "/a/manifests/-bad", "ManifestUnknown");
        check(
            "HEAD",
            "/a/manifests/.INVALID_MANIFEST_NAME",
            "ManifestUnknown",
        );
        check("GET", "/a/manifests/sha256:abc", "ManifestUnknown");
        check(
            "PUT",
            "/a/manifests/-bad",
            "Tag(\"invalid tag: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\")",
        );
        check(
            "GET",
            "/a/blobs/sha256:abc",
            "Digest(\"sha256 digest must be 64 lowercase hex characters\")",
        );
        check(
            "GET",
            "/a/blobs/md5:abc",
            "Digest(\"unsupported digest algorithm \\\"md5\\\" (sha256 and sha512 are supported)\")",
        );
        check("GET", "/manifests/latest", "NotFound");
        check("GET", "/a/b", "NotFound");
        check("GET", "/a/b/c", "NotFound");
        check("GET", "/a/blobs/%zz", "NotFound");
    }
}
