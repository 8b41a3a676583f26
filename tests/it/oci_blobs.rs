//! Blob endpoints: uploads in every style, digests, ranges, mounts, deletes, and their errors.

use reqwest::StatusCode;

use crate::support::*;

fn loc(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

async fn start_upload(c: &reqwest::Client, s: &Server, repo: &str) -> String {
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-0");
    assert!(r.headers().contains_key("docker-upload-uuid"));
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    loc(&r)
}

async fn get_blob(c: &reqwest::Client, s: &Server, repo: &str, d: &str) -> (StatusCode, Vec<u8>) {
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let s = Server::start();
    let r = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test]
async fn monolithic_post_then_get_head_and_isolation() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(70_000, 1);
    let d = push_blob(&c, &s, "acme/app", &bytes).await;
    assert_eq!(
        get_blob(&c, &s, "acme/app", &d).await,
        (StatusCode::OK, bytes.clone())
    );
    let h = c
        .head(s.url(&format!("/v2/acme/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), StatusCode::OK);
    assert_eq!(h.headers()["content-length"], "70000");
    assert_eq!(h.headers()["docker-content-digest"], d.as_str());
    // Another repository does not see it until it is pushed or mounted there.
    let r = c
        .get(s.url(&format!("/v2/acme/other/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let h = c
        .head(s.url(&format!("/v2/acme/other/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn post_then_put_with_body() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(5000, 2);
    let d = sha256(&bytes);
    let l = start_upload(&c, &s, "a").await;
    let r = c
        .put(s.url(&format!("{l}?digest={d}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(loc(&r), format!("/v2/a/blobs/{d}"));
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(get_blob(&c, &s, "a", &d).await.1, bytes);
    // The session is gone once closed.
    let r = c.get(s.url(&l)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_patch_with_status_out_of_order_and_final_put() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(3 * 100_000 + 17, 3);
    let d = sha256(&bytes);
    let l = start_upload(&c, &s, "acme/chunked").await;
    let chunks: Vec<&[u8]> = bytes.chunks(100_000).collect();
    let mut offset = 0usize;
    for (i, chunk) in chunks.iter().enumerate().take(3) {
        let end = offset + chunk.len() - 1;
        let r = c
            .patch(s.url(&l))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk {i}");
        assert_eq!(r.headers()["range"], format!("0-{end}").as_str());
        offset = end + 1;
        // Repeating the chunk just sent is out of order now.
        let r = c
            .patch(s.url(&l))
            .header("content-range", format!("{}-{end}", offset - chunk.len()))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()["range"], format!("0-{end}").as_str());
        assert!(loc(&r).ends_with(l.rsplit('/').next().unwrap()));
    }
    let st = c.get(s.url(&l)).send().await.unwrap();
    assert_eq!(st.status(), StatusCode::NO_CONTENT);
    assert_eq!(st.headers()["range"], format!("0-{}", offset - 1).as_str());
    // A chunk that skips ahead is refused too.
    let r = c
        .patch(s.url(&l))
        .header("content-range", format!("{}-{}", offset + 5, offset + 5))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // The last bytes ride on the closing PUT, which names their range as the conformance suite does.
    let r = c
        .put(s.url(&format!("{l}?digest={d}")))
        .header("content-range", format!("{offset}-{}", bytes.len() - 1))
        .body(chunks[3].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(get_blob(&c, &s, "acme/chunked", &d).await.1, bytes);
}

#[tokio::test]
async fn streamed_patch_without_content_range() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(2_000_000, 4);
    let d = sha256(&bytes);
    let l = start_upload(&c, &s, "stream").await;
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(parts));
    let r = c.patch(s.url(&l)).body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-1999999");
    let r = c
        .put(s.url(&format!("{l}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(get_blob(&c, &s, "stream", &d).await.1, bytes);
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let (s, c) = (Server::start(), client());
    let bytes = b"real content".to_vec();
    let wrong = sha256(b"other content");
    let r = c
        .post(s.url(&format!("/v2/a/blobs/uploads/?digest={wrong}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    for d in [&wrong, &sha256(&bytes)] {
        assert_eq!(get_blob(&c, &s, "a", d).await.0, StatusCode::NOT_FOUND);
    }
    // Through a session as well; the session is then gone.
    let l = start_upload(&c, &s, "a").await;
    let r = c
        .put(s.url(&format!("{l}?digest={wrong}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        c.get(s.url(&l)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // No upload bytes are left behind.
    assert_eq!(s.storage().upload_count(), 0);
}

#[tokio::test]
async fn sha512_digests() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(10_000, 5);
    let d = format!(
        "sha512:{}",
        hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&bytes))
    );
    let r = c
        .post(s.url(&format!("/v2/a/blobs/uploads/?digest={d}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        get_blob(&c, &s, "a", &d).await,
        (StatusCode::OK, bytes.clone())
    );
    let l = start_upload(&c, &s, "b").await;
    c.patch(s.url(&l))
        .body(bytes[..4000].to_vec())
        .send()
        .await
        .unwrap();
    let r = c
        .put(s.url(&format!("{l}?digest={d}")))
        .body(bytes[4000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(get_blob(&c, &s, "b", &d).await.1, bytes);
}

#[tokio::test]
async fn range_reads() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(1000, 6);
    let d = push_blob(&c, &s, "r", &bytes).await;
    let url = s.url(&format!("/v2/r/blobs/{d}"));
    let get = |range: &'static str| c.get(&url).header("range", range).send();
    let r = get("bytes=10-19").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes[10..20].to_vec());
    let r = get("bytes=990-").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes[990..].to_vec());
    let r = get("bytes=-5").await.unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes[995..].to_vec());
    let r = get("bytes=1000-").await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */1000");
    let r = get("bytes=5-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

#[tokio::test]
async fn cross_repository_mount() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(4096, 7);
    let d = push_blob(&c, &s, "src/app", &bytes).await;
    let r = c
        .post(s.url(&format!(
            "/v2/dst/app/blobs/uploads/?mount={d}&from=src/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(loc(&r), format!("/v2/dst/app/blobs/{d}"));
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(get_blob(&c, &s, "dst/app", &d).await.1, bytes);
    // From a repository that does not hold it: an ordinary upload session.
    let r = c
        .post(s.url(&format!("/v2/third/blobs/uploads/?mount={d}&from=nothere")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Without `from`: no guessing, an ordinary upload session.
    let r = c
        .post(s.url(&format!("/v2/third/blobs/uploads/?mount={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(get_blob(&c, &s, "third", &d).await.0, StatusCode::NOT_FOUND);
    // Malformed mount parameters.
    let r = c
        .post(s.url("/v2/third/blobs/uploads/?mount=sha256:nope&from=src/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c
        .post(s.url(&format!("/v2/third/blobs/uploads/?mount={d}&from=Bad/Name")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "NAME_INVALID");
}

#[tokio::test]
async fn delete_blob_and_cancel_upload() {
    let (s, c) = (Server::start(), client());
    let d = push_blob(&c, &s, "a", b"to delete").await;
    push_blob(&c, &s, "b", b"to delete").await;
    let r = c
        .delete(s.url(&format!("/v2/a/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(get_blob(&c, &s, "a", &d).await.0, StatusCode::NOT_FOUND);
    // Stored once, linked twice: the other repository still has it.
    assert_eq!(get_blob(&c, &s, "b", &d).await.0, StatusCode::OK);
    let r = c
        .delete(s.url(&format!("/v2/a/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");

    let l = start_upload(&c, &s, "a").await;
    c.patch(s.url(&l)).body("partial").send().await.unwrap();
    let r = c.delete(s.url(&l)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = c.patch(s.url(&l)).body("more").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // An upload id is bound to its repository.
    let l = start_upload(&c, &s, "a").await;
    let other = l.replace("/v2/a/", "/v2/b/");
    let r = c.get(s.url(&other)).send().await.unwrap();
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn stored_once_however_many_repositories() {
    let (s, c) = (Server::start(), client());
    let bytes = random_bytes(50_000, 8);
    for repo in ["x/one", "x/two", "x/three"] {
        push_blob(&c, &s, repo, &bytes).await;
    }
    let d = sha256(&bytes);
    let stored: Vec<_> = s
        .storage()
        .blobs()
        .into_iter()
        .filter(|(name, _)| *name == d)
        .collect();
    assert_eq!(stored.len(), 1);
}

#[tokio::test]
async fn upload_errors() {
    let (s, c) = (Server::start(), client());
    let l = start_upload(&c, &s, "e").await;
    // PUT without a digest.
    let r = c.put(s.url(&l)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // Malformed Content-Range.
    let r = c
        .patch(s.url(&l))
        .header("content-range", "zero-ten")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    // Content-Range and Content-Length disagree.
    let r = c
        .patch(s.url(&l))
        .header("content-range", "0-9")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    // Nothing was appended by the refused requests.
    let st = c.get(s.url(&l)).send().await.unwrap();
    assert_eq!(st.headers()["range"], "0-0");
    // Unknown and malformed upload ids.
    let r = c
        .get(s.url("/v2/e/blobs/uploads/00000000-0000-4000-8000-000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = c
        .patch(s.url("/v2/e/blobs/uploads/..%2F..%2Fetc"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // Malformed names and digests in the path.
    let r = c
        .get(s.url("/v2/UPPER/blobs/sha256:abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = c.get(s.url("/v2/e/blobs/sha256:abc")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c
        .post(s.url("/v2/e/blobs/uploads/?digest=md5:abc"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // A method the endpoint does not have.
    let r = c
        .post(s.url(&format!("/v2/e/blobs/{}", sha256(b"x"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
}

/// Server memory does not grow with blob size: a 256 MiB blob streamed in one PATCH and pulled
/// back leaves the server's peak RSS under a fixed ceiling, and the bytes are intact.
#[tokio::test]
async fn memory_stays_bounded_while_streaming_a_large_blob() {
    let s = Server::start();
    let c = client();
    let before = peak_rss_kib(s.pid());
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 256;
    let r = c
        .post(s.url("/v2/big/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let (tx, body) = channel_body();
    let req = tokio::spawn(c.patch(s.url(&loc)).body(body).send());
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for i in 0..CHUNKS {
        let chunk = random_bytes(CHUNK, i as u64);
        sha2::Digest::update(&mut hasher, &chunk);
        tx.send(Ok(chunk)).await.unwrap();
    }
    drop(tx);
    let r = req.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let digest = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
    let r = c
        .put(s.url(&format!("{loc}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut r = c
        .get(s.url(&format!("/v2/big/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut pulled = <sha2::Sha256 as sha2::Digest>::new();
    let mut n = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        n += chunk.len();
        sha2::Digest::update(&mut pulled, &chunk);
    }
    assert_eq!(n, CHUNK * CHUNKS);
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Digest::finalize(pulled))),
        digest
    );
    let peak = peak_rss_kib(s.pid());
    eprintln!(
        "peak RSS {} MiB (before {} MiB)",
        peak / 1024,
        before / 1024
    );
    // Buffers are bounded (8 × 256 KiB in flight each way); the argon2 hash of the admin
    // password (19 MiB) is the largest single allocation. 256 MiB of blob must not show.
    assert!(
        peak < 128 * 1024,
        "peak RSS {} MiB while streaming 256 MiB",
        peak / 1024
    );
}

/// Several clients pushing the same bytes at once, into one repository and into others: all
/// succeed, one file holds the bytes, and every repository serves them.
#[tokio::test]
async fn concurrent_pushes_of_the_same_digest() {
    let s = Server::start();
    let bytes = random_bytes(2 << 20, 99);
    let digest = sha256(&bytes);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (base, bytes, digest) = (s.base.clone(), bytes.clone(), digest.clone());
            tokio::spawn(async move {
                let c = client();
                let repo = format!("same/r{}", i % 3);
                let r = c
                    .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
                    .header("content-type", "application/octet-stream")
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                (repo, r.status())
            })
        })
        .collect();
    let mut repos = Vec::new();
    for t in tasks {
        let (repo, status) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{repo}");
        repos.push(repo);
    }
    let stored: Vec<_> = s
        .storage()
        .blobs()
        .into_iter()
        .filter(|(name, _)| name[..name.len() - 62] == digest[..digest.len() - 62])
        .collect();
    assert_eq!(
        stored.len(),
        1,
        "one blob for the digest and its neighbours"
    );
    assert_eq!(stored[0].0, digest);
    assert_eq!(stored[0].1, bytes);
    repos.sort();
    repos.dedup();
    for repo in repos {
        let r = client()
            .get(s.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
    // No upload bytes are left behind.
    assert_eq!(s.storage().upload_count(), 0);
}

/// On S3 a blob of at most 16 KiB is kept in its row, never in the bucket (on files every blob
/// is a file); wherever it lives it is served whole and by range, mounted, pushed again, and
/// collected like any other. A small blob that came through an upload of several requests is in
/// the bucket, and is served from there.
#[tokio::test]
async fn small_blobs_on_s3_are_kept_in_their_rows_and_served_like_any_other() {
    let (s, c) = (Server::start(), client());
    let on_s3 = matches!(s.storage(), storage::Storage::S3 { .. });
    let small = random_bytes(16 * 1024, 1201);
    let large = random_bytes(16 * 1024 + 1, 1202);
    let (small_d, large_d) = (
        push_blob(&c, &s, "kept/app", &small).await,
        push_blob(&c, &s, "kept/app", &large).await,
    );
    let empty_d = push_blob(&c, &s, "kept/app", b"").await;
    // Two PATCHes, then the PUT: bytes the bucket took before the digest was known.
    let chunked = random_bytes(3000, 1203);
    let chunked_d = sha256(&chunked);
    let at = start_upload(&c, &s, "kept/app").await;
    let r = c
        .patch(s.url(&at))
        .header("content-range", "0-1999")
        .body(chunked[..2000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(s.url(&format!("{}?digest={chunked_d}", loc(&r))))
        .body(chunked[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );

    let objects: Vec<String> = s.storage().objects().into_iter().map(|(d, _)| d).collect();
    let everywhere = s.storage().blobs();
    for (d, bytes) in [
        (&small_d, &small[..]),
        (&large_d, &large[..]),
        (&empty_d, &b""[..]),
        (&chunked_d, &chunked[..]),
    ] {
        let held: Vec<_> = everywhere.iter().filter(|(n, _)| n == d).collect();
        assert_eq!(held.len(), 1, "{d} is stored once");
        assert!(held[0].1 == bytes, "{d}: the bytes stored");
        let in_bucket = objects.contains(d);
        let kept = on_s3 && (d == &small_d || d == &empty_d);
        assert_eq!(
            in_bucket, !kept,
            "{d}: on S3 {on_s3}, in the blob store {in_bucket}"
        );
        let r = c
            .get(s.url(&format!("/v2/kept/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{d}");
        assert_eq!(
            r.headers()["content-length"],
            bytes.len().to_string().as_str()
        );
        assert!(r.bytes().await.unwrap() == bytes, "{d}: the bytes served");
    }
    let r = c
        .get(s.url(&format!("/v2/kept/app/blobs/{small_d}")))
        .header("range", "bytes=100-16383")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 100-16383/16384");
    assert!(r.bytes().await.unwrap() == small[100..], "the range served");

    // Another repository has it only once mounted; pushed again there, it is still one.
    push_blob(&c, &s, "kept/other", &random_bytes(10, 1204)).await;
    let other = get_blob(&c, &s, "kept/other", &small_d).await;
    assert_eq!(other.0, StatusCode::NOT_FOUND);
    let r = c
        .post(s.url(&format!(
            "/v2/kept/other/blobs/uploads/?mount={small_d}&from=kept/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let other = get_blob(&c, &s, "kept/other", &small_d).await;
    assert!(other == (StatusCode::OK, small.clone()), "mounted");
    push_blob(&c, &s, "kept/third", &small).await;
    let copies = s
        .storage()
        .blobs()
        .into_iter()
        .filter(|(n, _)| *n == small_d)
        .count();
    assert_eq!(copies, 1);

    // Unlinked everywhere, it goes with the next collection like the others (no manifest
    // references any of them), and is counted.
    for repo in ["kept/app", "kept/other", "kept/third"] {
        let r = c
            .delete(s.url(&format!("/v2/{repo}/blobs/{small_d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{repo}");
    }
    // Links younger than a second are within even a zero grace period (timestamps are seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report: serde_json::Value = serde_json::from_str(&run(s
        .server_command(&["gc"])
        .args(["--grace", "0s", "--json"])))
    .unwrap();
    let removed = report["removed_blob_digests"].as_array().unwrap();
    for d in [&small_d, &large_d, &empty_d, &chunked_d] {
        assert!(removed.iter().any(|r| r == d.as_str()), "{d}: {report}");
        assert!(!s.storage().blobs().iter().any(|(n, _)| n == d), "{d}");
    }
    let gone = get_blob(&c, &s, "kept/app", &small_d).await;
    assert_eq!(gone.0, StatusCode::NOT_FOUND);
}
