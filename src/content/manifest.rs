//! Manifest validation: which media type a pushed manifest has, and what it references.
//!
//! Accepted: OCI image manifest and index, Docker schema 2 manifest and manifest list, and OCI
//! artifacts (image manifests with `artifactType` and/or `subject`). Docker schema 1 is refused.
//! See the OCI image spec (`manifest.md`, `image-index.md`) and distribution spec ("Pushing
//! manifests", "Listing referrers").

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::types::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Largest manifest accepted (the distribution spec suggests registries accept at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
    // Present only in Docker schema 1.
    fs_layers: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: Digest,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
    platform: Option<Platform>,
}

/// An index entry's platform: its strings are shown in lists, so they are bounded.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, rename = "os.version")]
    os_version: Option<String>,
    #[serde(default)]
    variant: Option<String>,
}

/// The longest string of a platform (`os`, `architecture`, `variant`, `os.version`).
pub const MAX_PLATFORM_FIELD: usize = 128;

/// What berth records about a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub media_type: String,
    /// `artifactType`, or for an image manifest without one, its config's media type (as the
    /// referrers API reports it).
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The `annotations` object re-serialized, if present.
    pub annotations: Option<String>,
    pub blob_refs: Vec<Digest>,
    pub manifest_refs: Vec<Digest>,
}

/// Layers that may live outside the registry when they carry `urls`; they need not be pushed.
fn is_foreign(d: &Descriptor) -> bool {
    !d.urls.is_empty()
        && (d.media_type == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            || d.media_type
                .starts_with("application/vnd.oci.image.layer.nondistributable."))
}

/// The media type part of a `Content-Type` header, without parameters.
fn essence(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Validates a manifest body pushed with `content_type`. The error text is for the client.
/// The longest `artifactType` (or config media type) accepted.
pub const MAX_MEDIA_TYPE: usize = 255;

pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Parsed, String> {
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let header = content_type.map(essence).filter(|c| !c.is_empty());
    let generic = |c: &str| c == "application/json" || c == "application/octet-stream";
    let schema1 = |c: &str| c == DOCKER_SCHEMA1 || c == DOCKER_SCHEMA1_SIGNED;
    if raw.schema_version == Some(1) || raw.fs_layers.is_some() || header.is_some_and(schema1) {
        return Err(
            "Docker schema 1 manifests are not supported; push the image as Docker schema 2 or OCI"
                .into(),
        );
    }
    if raw.schema_version != Some(2) {
        return Err("manifest schemaVersion must be 2".into());
    }
    let media_type = match (header.filter(|c| !generic(c)), raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(format!(
                "Content-Type {h} does not match the manifest's mediaType {b}"
            ));
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let mut blob_refs = Vec::new();
    let mut manifest_refs = Vec::new();
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw.config.as_ref().ok_or("image manifest has no config")?;
            let layers = raw
                .layers
                .as_ref()
                .ok_or("image manifest has no layers array")?;
            if raw.manifests.is_some() {
                return Err("image manifest must not have a manifests array".into());
            }
            for d in std::iter::once(config).chain(layers) {
                if d.size < 0 {
                    return Err(format!("descriptor {} has a negative size", d.digest));
                }
                if !is_foreign(d) {
                    blob_refs.push(d.digest.clone());
                }
            }
        }
        OCI_INDEX | DOCKER_LIST => {
            let manifests = raw
                .manifests
                .as_ref()
                .ok_or("index has no manifests array")?;
            if raw.layers.is_some() || raw.config.is_some() {
                return Err("index must not have config or layers".into());
            }
            for d in manifests {
                if d.size < 0 {
                    return Err(format!("descriptor {} has a negative size", d.digest));
                }
                if let Some(p) = &d.platform {
                    let fields = [
                        Some(&p.os),
                        Some(&p.architecture),
                        p.variant.as_ref(),
                        p.os_version.as_ref(),
                    ];
                    if fields
                        .into_iter()
                        .flatten()
                        .any(|f| f.len() > MAX_PLATFORM_FIELD)
                    {
                        return Err(format!(
                            "descriptor {}: a platform field is longer than {MAX_PLATFORM_FIELD} characters",
                            d.digest
                        ));
                    }
                }
                manifest_refs.push(d.digest.clone());
            }
        }
        other => return Err(format!("unsupported manifest media type {other:?}")),
    }
    if media_type.starts_with("application/vnd.docker.")
        && (raw.subject.is_some() || raw.artifact_type.is_some())
    {
        return Err("subject and artifactType are only allowed in OCI manifests".into());
    }
    blob_refs.sort();
    blob_refs.dedup();
    manifest_refs.sort();
    manifest_refs.dedup();
    let artifact_type = raw.artifact_type.clone().or_else(|| {
        (media_type == OCI_MANIFEST)
            .then(|| raw.config.as_ref().map(|c| c.media_type.clone()))
            .flatten()
    });
    // A media type is at most 127 + 1 + 127 characters (RFC 6838); a longer one is stored and
    // listed with every referrer, so it is refused here.
    if let Some(t) = &artifact_type
        && (t.len() > MAX_MEDIA_TYPE || t.chars().any(char::is_control))
    {
        return Err(format!(
            "artifactType (or the config's mediaType) must be a media type of at most {MAX_MEDIA_TYPE} characters"
        ));
    }
    let annotations = match &raw.annotations {
        Some(a) if !a.is_empty() => Some(serde_json::to_string(a).map_err(|e| e.to_string())?),
        _ => None,
    };
    Ok(Parsed {
        media_type,
        artifact_type,
        subject: raw.subject.map(|s| s.digest),
        annotations,
        blob_refs,
        manifest_refs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn check(ct: Option<&str>, body: &str, expect: &str) {
        let got = match parse(ct, body.as_bytes()) {
            Ok(p) => format!(
                "ok {} art={:?} subj={:?} blobs={} manifests={} ann={:?}",
                p.media_type,
                p.artifact_type,
                p.subject.map(|d| d.to_string()),
                p.blob_refs.len(),
                p.manifest_refs.len(),
                p.annotations
            ),
            Err(e) => format!("err {e}"),
        };
        assert_eq!(got, expect, "{body}");
    }

    #[test]
    fn manifest_table() {
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}}]}}"#
        );
        check(
            Some(OCI_MANIFEST),
            &image,
            "ok application/vnd.oci.image.manifest.v1+json art=Some(\"application/vnd.oci.image.config.v1+json\") subj=None blobs=2 manifests=0 ann=None",
        );
        check(
            None,
            &image,
            "ok application/vnd.oci.image.manifest.v1+json art=Some(\"application/vnd.oci.image.config.v1+json\") subj=None blobs=2 manifests=0 ann=None",
        );
        check(
            Some(DOCKER_MANIFEST),
            &image,
            "err Content-Type application/vnd.docker.distribution.manifest.v2+json does not match the manifest's mediaType application/vnd.oci.image.manifest.v1+json",
        );
        let artifact = format!(
            r#"{{"schemaVersion":2,"artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":9}},"annotations":{{"k":"v"}}}}"#
        );
        check(
            Some(OCI_MANIFEST),
            &artifact,
            &format!(
                "ok application/vnd.oci.image.manifest.v1+json art=Some(\"application/vnd.example.sig\") subj=Some(\"{D2}\") blobs=1 manifests=0 ann=Some(\"{{\\\"k\\\":\\\"v\\\"}}\")"
            ),
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}}]}}"#
        );
        check(
            Some(OCI_INDEX),
            &index,
            "ok application/vnd.oci.image.index.v1+json art=None subj=None blobs=0 manifests=1 ann=None",
        );
        check(
            None,
            &index,
            "ok application/vnd.oci.image.index.v1+json art=None subj=None blobs=0 manifests=1 ann=None",
        );
        check(
            Some(DOCKER_LIST),
            &index,
            "ok application/vnd.docker.distribution.manifest.list.v2+json art=None subj=None blobs=0 manifests=1 ann=None",
        );
        let foreign = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":3,"urls":["https://example.com/l"]}}]}}"#
        );
        check(
            Some(DOCKER_MANIFEST),
            &foreign,
            "ok application/vnd.docker.distribution.manifest.v2+json art=None subj=None blobs=1 manifests=0 ann=None",
        );
        check(
            None,
            r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#,
            "err Docker schema 1 manifests are not supported; push the image as Docker schema 2 or OCI",
        );
        check(
            Some(OCI_MANIFEST),
            "{",
            "err manifest is not valid JSON: EOF while parsing an object at line 1 column 1",
        );
        check(
            Some(OCI_MANIFEST),
            r#"{"schemaVersion":2}"#,
            "err image manifest has no config",
        );
        check(
            Some(OCI_MANIFEST),
            r#"{"schemaVersion":3}"#,
            "err manifest schemaVersion must be 2",
        );
        check(
            Some("text/plain"),
            r#"{"schemaVersion":2}"#,
            "err unsupported manifest media type \"text/plain\"",
        );
        check(
            Some(OCI_MANIFEST),
            &image.replace(D1, "sha256:zz"),
            "err manifest is not valid JSON: sha256 digest must be 64 lowercase hex characters at line 1 column 161",
        );
    }
}
