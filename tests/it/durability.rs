//! Crash safety: kill -9 the server mid-upload and mid-push; after a restart every acknowledged
//! write is intact and nothing partial is visible.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

/// Every committed blob file holds exactly the bytes its name says.
fn assert_blob_files_intact(s: &Server) {
    for alg in ["sha256"] {
        let base = s.data_dir.join("blobs").join(alg);
        for shard in std::fs::read_dir(&base).unwrap() {
            for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                let f = f.unwrap();
                let bytes = std::fs::read(f.path()).unwrap();
                assert_eq!(
                    sha256(&bytes)[7..],
                    *f.file_name().to_str().unwrap(),
                    "corrupt blob file {:?}",
                    f.path()
                );
            }
        }
    }
}

#[tokio::test]
async fn kill9_during_large_upload_keeps_acknowledged_bytes_and_shows_nothing_partial() {
    let mut s = Server::start();
    let c = client();
    let small = random_bytes(1_000_000, 21);
    let small_d = push_blob(&c, &s, "crash/app", &small).await;

    let big = random_bytes(48 * 1024 * 1024, 22);
    let big_d = sha256(&big);
    let r = c
        .post(s.url("/v2/crash/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let first = 8 * 1024 * 1024;
    let r = c
        .patch(s.url(&loc))
        .header("content-range", format!("0-{}", first - 1))
        .body(big[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Stream the rest slowly and kill the server part-way through.
    let (tx, body) = channel_body();
    let req = tokio::spawn(c.patch(s.url(&loc)).body(body).send());
    for chunk in big[first..first + 12 * 1024 * 1024].chunks(1024 * 1024) {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    drop(tx);
    // The interrupted request fails in whatever way the dropped connection makes it fail.
    let _ = req.await;

    s.restart();
    let c = client();
    // The acknowledged blob is intact.
    let got = c
        .get(s.url(&format!("/v2/crash/app/blobs/{small_d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), small);
    // The unfinished blob is not visible.
    let h = c
        .head(s.url(&format!("/v2/crash/app/blobs/{big_d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), StatusCode::NOT_FOUND);
    // The session survived with at least the acknowledged bytes; resume from where it stands.
    let st = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(st.status(), StatusCode::NO_CONTENT);
    let end: usize = st.headers()["range"]
        .to_str()
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        end + 1 >= first,
        "acknowledged bytes lost: upload has {} bytes",
        end + 1
    );
    let r = c
        .patch(s.url(&loc))
        .header("content-range", format!("{}-{}", end + 1, big.len() - 1))
        .body(big[end + 1..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .put(s.url(&format!("{loc}?digest={big_d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let got = c
        .get(s.url(&format!("/v2/crash/app/blobs/{big_d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), big_d);
    assert_blob_files_intact(&s);
}

/// A blob's digest and bytes.
type Blob = (String, Vec<u8>);

#[tokio::test]
async fn kill9_during_manifest_and_blob_pushes_loses_no_acknowledged_write() {
    let mut s = Server::start();
    let c = client();
    let cfg = push_blob(&c, &s, "crash/many", b"{\"os\":\"linux\"}").await;
    // (tag, manifest body) acknowledged with 201, and (digest, bytes) of acknowledged blobs.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let acked_blobs: Arc<Mutex<Vec<Blob>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let (c, base, cfg) = (c.clone(), s.base.clone(), cfg.clone());
        let (acked, acked_blobs, attempted) =
            (acked.clone(), acked_blobs.clone(), attempted.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let layer = random_bytes(2048, w * 1_000_000 + i);
                let ld = sha256(&layer);
                let Ok(r) = c
                    .post(format!("{base}/v2/crash/many/blobs/uploads/?digest={ld}"))
                    .body(layer.clone())
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != StatusCode::CREATED {
                    return;
                }
                acked_blobs.lock().unwrap().push((ld.clone(), layer));
                let body = image_manifest((&cfg, 14), &[(&ld, 2048)]);
                let tag = format!("w{w}-{i}");
                attempted.lock().unwrap().push((tag.clone(), body.clone()));
                let Ok(r) = c
                    .put(format!("{base}/v2/crash/many/manifests/{tag}"))
                    .header("content-type", OCI_MANIFEST)
                    .body(body.clone())
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != StatusCode::CREATED {
                    return;
                }
                acked.lock().unwrap().push((tag, body));
            }
        }));
    }
    // Let the pushers get going, then pull the plug.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if acked.lock().unwrap().len() >= 40 {
            break;
        }
    }
    s.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    s.restart();
    let c = client();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);
    for (tag, body) in &acked {
        let r = c
            .get(s.url(&format!("/v2/crash/many/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "acknowledged manifest {tag} lost"
        );
        assert_eq!(&r.text().await.unwrap(), body);
    }
    let acked_blobs = acked_blobs.lock().unwrap().clone();
    for (d, bytes) in &acked_blobs {
        let got = c
            .get(s.url(&format!("/v2/crash/many/blobs/{d}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got.to_vec(), bytes, "acknowledged blob {d} lost");
    }
    // What was in flight is either wholly there or absent.
    let attempted = attempted.lock().unwrap().clone();
    for (tag, body) in &attempted {
        let r = c
            .get(s.url(&format!("/v2/crash/many/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => assert_eq!(&r.text().await.unwrap(), body),
            StatusCode::NOT_FOUND => {}
            other => panic!("{tag}: {other}"),
        }
    }
    assert_blob_files_intact(&s);
}

/// A power cut between a blob's rename and its fsync can leave a file at the blob's path with
/// incomplete bytes and no metadata row. Nothing may serve it, and the next push of the digest
/// must replace it.
#[tokio::test]
async fn torn_blob_file_without_a_row_is_never_served_and_is_replaced_by_the_next_push() {
    let (mut s, c) = (Server::start(), client());
    // The repository must exist for the reads below to reach the blob lookup.
    push_blob(&c, &s, "torn/app", &random_bytes(100, 70)).await;
    let bytes = random_bytes(50_000, 71);
    let d = sha256(&bytes);
    let hex = &d[7..];
    let dir = s.data_dir.join("blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex), &bytes[..1000]).unwrap();
    s.kill9();
    s.restart();

    for head in [false, true] {
        let url = s.url(&format!("/v2/torn/app/blobs/{d}"));
        let r = if head { c.head(url) } else { c.get(url) }
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "head={head}");
    }
    push_blob(&c, &s, "torn/app", &bytes).await;
    let r = c
        .get(s.url(&format!("/v2/torn/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_blob_files_intact(&s);
}
