//! Manifest endpoints, tags, catalog and referrers, with their errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn put_get_head_by_tag_and_digest() {
    let (s, c) = (Server::start(), client());
    let (d, body) = push_image(&c, &s, "acme/app", "v1", 1).await;
    for reference in ["v1", d.as_str()] {
        let r = c
            .get(s.url(&format!("/v2/acme/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert_eq!(
            r.text().await.unwrap(),
            body,
            "stored bytes come back unchanged"
        );
        let h = c
            .head(s.url(&format!("/v2/acme/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), StatusCode::OK);
        assert_eq!(
            h.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(h.headers()["docker-content-digest"], d.as_str());
    }
    // PUT by digest: the Location and digest headers name it.
    let r = put_manifest(&c, &s, "acme/app", &d, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/acme/app/manifests/{d}").as_str()
    );
    // Unknown references.
    let r = c
        .get(s.url("/v2/acme/app/manifests/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = c
        .head(s.url("/v2/acme/other/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn docker_schema2_media_types_round_trip() {
    let (s, c) = (Server::start(), client());
    let cfg = br#"{"architecture":"arm64","os":"linux"}"#;
    let cd = push_blob(&c, &s, "d", cfg).await;
    let ld = push_blob(&c, &s, "d", b"layer").await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": ld, "size": 5}]
    })
    .to_string();
    let r = put_manifest(
        &c,
        &s,
        "d",
        "arm",
        "application/vnd.docker.distribution.manifest.v2+json",
        &m,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let list = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": sha256(m.as_bytes()), "size": m.len(),
                       "platform": {"architecture": "arm64", "os": "linux"}}]
    })
    .to_string();
    let r = put_manifest(
        &c,
        &s,
        "d",
        "multi",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &list,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(s.url("/v2/d/manifests/multi")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(r.text().await.unwrap(), list);
}

#[tokio::test]
async fn manifest_push_errors() {
    let (s, c) = (Server::start(), client());
    let cd = push_blob(&c, &s, "m", b"{}").await;
    let missing = sha256(b"never pushed");
    // A layer the repository does not hold.
    let m = image_manifest((&cd, 2), &[(&missing, 12)]);
    let r = put_manifest(&c, &s, "m", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // ... nor may a blob of another repository be referenced.
    let other = push_blob(&c, &s, "elsewhere", b"layer of another repo").await;
    let m = image_manifest((&cd, 2), &[(&other, 21)]);
    let r = put_manifest(&c, &s, "m", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // Nothing was recorded by the refused pushes.
    assert_eq!(
        c.get(s.url("/v2/m/manifests/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // An index whose children are not in the repository.
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 1}]});
    let r = put_manifest(&c, &s, "m", "idx", OCI_INDEX, &idx.to_string()).await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // Digest reference that does not match the body.
    let good = image_manifest((&cd, 2), &[]);
    let r = put_manifest(&c, &s, "m", &sha256(b"other"), OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Malformed JSON, wrong schema, Content-Type disagreeing with mediaType.
    for (ct, body) in [
        (OCI_MANIFEST, "{not json".to_owned()),
        (
            OCI_MANIFEST,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_owned(),
        ),
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            good.clone(),
        ),
    ] {
        let r = put_manifest(&c, &s, "m", "bad", ct, &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    }
    // Docker schema 1 is refused with a message that says so.
    let v1 = r#"{"schemaVersion":1,"name":"m","tag":"old","architecture":"amd64","fsLayers":[],"history":[]}"#;
    let r = put_manifest(
        &c,
        &s,
        "m",
        "old",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        v1,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_INVALID");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("schema 1"),
        "{v}"
    );
    // Over 4 MiB.
    let big = format!(
        r#"{{"schemaVersion":2,"pad":"{}"}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    let r = put_manifest(&c, &s, "m", "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Invalid tag and name in the path.
    let r = put_manifest(&c, &s, "m", "-bad-tag", OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "TAG_INVALID");
    // A read of a reference that is neither a tag nor a digest (the conformance suite's
    // `.INVALID_MANIFEST_NAME`) is an unknown manifest.
    let r = c
        .get(s.url("/v2/m/manifests/.INVALID_MANIFEST_NAME"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = c
        .head(s.url("/v2/m/manifests/.INVALID_MANIFEST_NAME"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = put_manifest(&c, &s, "m//x", "v1", OCI_MANIFEST, &good).await;
    assert_eq!(error_code(r).await, "NAME_INVALID");
    // And finally a valid push works.
    let r = put_manifest(&c, &s, "m", "v1", OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag_and_by_digest_removes_all() {
    let (s, c) = (Server::start(), client());
    let (d, _) = push_image(&c, &s, "del", "v1", 2).await;
    let r = put_manifest(
        &c,
        &s,
        "del",
        "v2",
        OCI_MANIFEST,
        &c.get(s.url("/v2/del/manifests/v1"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .delete(s.url("/v2/del/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        c.get(s.url("/v2/del/manifests/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(s.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = c
        .delete(s.url(&format!("/v2/del/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        c.get(s.url(&format!("/v2/del/manifests/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(s.url("/v2/del/manifests/v2"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND,
        "its tags go with it"
    );
    let tags: Value = c
        .get(s.url("/v2/del/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!([]));
    let r = c
        .delete(s.url(&format!("/v2/del/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn tag_list_and_catalog_are_sorted_and_paginated() {
    let (s, c) = (Server::start(), client());
    let (_, body) = push_image(&c, &s, "p/app", "a", 3).await;
    for tag in ["e", "c", "b", "d", "A1", "z"] {
        assert_eq!(
            put_manifest(&c, &s, "p/app", tag, OCI_MANIFEST, &body)
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let all: Value = c
        .get(s.url("/v2/p/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        all,
        json!({"name": "p/app", "tags": ["A1", "a", "b", "c", "d", "e", "z"]})
    );
    let r = c
        .get(s.url("/v2/p/app/tags/list?n=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/p/app/tags/list?n=3&last=b>; rel=\"next\""
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["A1", "a", "b"])
    );
    let r = c
        .get(s.url("/v2/p/app/tags/list?n=3&last=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["c", "d", "e"])
    );
    let r = c
        .get(s.url("/v2/p/app/tags/list?n=3&last=e"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none(), "last page has no Link");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["z"]));
    let r = c
        .get(s.url("/v2/p/app/tags/list?n=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = c
        .get(s.url("/v2/p/app/tags/list?n=minus"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .get(s.url("/v2/p/nothing/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    for (i, repo) in ["q/b", "q/a", "q/c"].iter().enumerate() {
        push_image(&c, &s, repo, "v1", 10 + i as u64).await;
    }
    // A repository with only a blob is not in the catalog.
    push_blob(&c, &s, "q/blob-only", b"x").await;
    let all: Value = c
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all, json!({"repositories": ["p/app", "q/a", "q/b", "q/c"]}));
    let r = c.get(s.url("/v2/_catalog?n=2")).send().await.unwrap();
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?n=2&last=q/a>; rel=\"next\""
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["p/app", "q/a"])
    );
    let r = c
        .get(s.url("/v2/_catalog?n=2&last=q/a"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("link").is_none());
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["q/b", "q/c"])
    );
}

#[tokio::test]
async fn referrers_list_filter_and_subject_header() {
    let (s, c) = (Server::start(), client());
    let (subject, body) = push_image(&c, &s, "ref/app", "v1", 4).await;
    let empty = push_blob(&c, &s, "ref/app", b"{}").await;
    let mut pushed = Vec::new();
    for (i, art) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": art,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": body.len()},
            "annotations": {"n": i.to_string()}
        })
        .to_string();
        let r = put_manifest(&c, &s, "ref/app", &sha256(m.as_bytes()), OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["oci-subject"], subject.as_str());
        pushed.push((sha256(m.as_bytes()), m.len(), *art, i));
    }
    let r = c
        .get(s.url(&format!("/v2/ref/app/referrers/{subject}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let idx: Value = r.json().await.unwrap();
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["mediaType"], OCI_INDEX);
    let mut want: Vec<Value> = pushed
        .iter()
        .map(|(d, n, art, i)| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n, "artifactType": art, "annotations": {"n": i.to_string()}}))
        .collect();
    want.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    assert_eq!(idx["manifests"], Value::Array(want));
    let r = c
        .get(s.url(&format!(
            "/v2/ref/app/referrers/{subject}?artifactType=application/vnd.example.sig"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let idx: Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    assert!(
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["artifactType"] == "application/vnd.example.sig")
    );
    // A subject that does not exist: an empty index, not a 404.
    let r = c
        .get(s.url(&format!("/v2/ref/app/referrers/{}", sha256(b"none"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    let r = c
        .get(s.url("/v2/ref/app/referrers/sha256:short"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn unknown_endpoints() {
    let (s, c) = (Server::start(), client());
    let r = c.get(s.url("/v2/just/a/path")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = c.delete(s.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
