//! Crash safety: kill -9 the server mid-upload and mid-push; after a restart every acknowledged
//! write is intact and nothing partial is visible.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

/// Every committed blob (file or object) holds exactly the bytes its name says.
fn assert_blob_files_intact(s: &Server) {
    for (name, bytes) in s.storage().blobs() {
        assert_eq!(sha256(&bytes), name, "corrupt blob {name}");
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
    // Let the pushers get going, then pull the plug (within a deadline: a stalled server fails
    // the test instead of hanging the suite).
    let start = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if acked.lock().unwrap().len() >= 40 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pushers never got 40 writes acknowledged"
        );
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
    s.storage().plant_blob(&d, &bytes[..1000]);
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

/// What the server did, from its `strace` log, in completion order: a sync of a named file or
/// directory, or the start of a write to a socket (a response).
#[derive(Debug)]
enum Traced {
    Sync(String),
    Respond(String),
}

fn traced_events(trace: &str) -> Vec<Traced> {
    let path_of = |args: &str| {
        let start = args.find('<')? + 1;
        let end = start + args[start..].find('>')?;
        Some(args[start..end].to_owned())
    };
    let mut pending: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in trace.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with("<... fsync resumed>") || call.starts_with("<... fdatasync resumed>") {
            if let Some(p) = pending.remove(pid) {
                out.push(Traced::Sync(p));
            }
        } else if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            let Some(p) = path_of(call) else { continue };
            if call.ends_with("<unfinished ...>") {
                pending.insert(pid, p);
            } else if call.ends_with("= 0") {
                out.push(Traced::Sync(p));
            }
        } else if ["write(", "writev(", "sendto(", "sendmsg("]
            .iter()
            .any(|w| call.starts_with(w))
            && call.contains("<socket:")
        {
            out.push(Traced::Respond(call.to_owned()));
        }
    }
    out
}

/// The index of the first `201` response naming `digest`.
fn response_index(ev: &[Traced], digest: &str) -> usize {
    ev.iter()
        .position(|e| {
            matches!(e, Traced::Respond(t) if t.contains("HTTP/1.1 201")
                && t.contains(&format!("docker-content-digest: {digest}")))
        })
        .unwrap_or_else(|| panic!("no 201 response for {digest} in the trace"))
}

/// The last sync before `before` (and after `after`) of a path ending in `suffix`.
fn synced(ev: &[Traced], after: usize, before: usize, suffix: &str) -> Option<usize> {
    (after..before)
        .rev()
        .find(|&i| matches!(&ev[i], Traced::Sync(p) if p.ends_with(suffix)))
}

/// The write protocol itself, not just process death: before the server acknowledges a blob,
/// the blob file, then its directory, then the database (WAL) were synced, in that order; before
/// it acknowledges a manifest, the database was synced. Removing any one of those syncs fails
/// this test (a `kill -9` test cannot see it: the page cache survives the process).
#[tokio::test]
async fn acknowledged_writes_are_synced_file_directory_database_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let s = Server::start_traced(&trace);
    let c = client();
    let config = br#"{"architecture":"amd64","os":"linux","traced":true}"#;
    let layer = random_bytes(64 * 1024, 77);
    // A chunk of a session that stays open: its 202 says the bytes are kept.
    let r = c
        .post(s.url("/v2/traced/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let session = r.headers()["location"].to_str().unwrap().to_owned();
    let upload_id = session.rsplit('/').next().unwrap().to_owned();
    let r = c
        .patch(s.url(&session))
        .header("content-type", "application/octet-stream")
        .body(random_bytes(1024, 78))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let blobs = [
        push_blob(&c, &s, "traced/app", config).await,
        push_blob(&c, &s, "traced/app", &layer).await,
    ];
    let m = image_manifest((&blobs[0], config.len()), &[(&blobs[1], layer.len())]);
    let r = put_manifest(&c, &s, "traced/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest = sha256(m.as_bytes());
    // Let strace write out what it has seen.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ev = loop {
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        let ev = traced_events(&text);
        let seen = ev.iter().any(|e| {
            matches!(e, Traced::Respond(t) if t.contains(&format!("docker-content-digest: {manifest}")))
        });
        if seen {
            break ev;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trace never showed the manifest's answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let chunk_answer = ev
        .iter()
        .position(|e| {
            matches!(e, Traced::Respond(t) if t.contains("HTTP/1.1 202")
                && t.contains(&upload_id) && t.to_lowercase().contains("range: 0-1023"))
        })
        .expect("no 202 for the chunk in the trace");
    assert!(
        synced(&ev, 0, chunk_answer, &format!("/uploads/{upload_id}")).is_some(),
        "a chunk was acknowledged (202) before the upload's file was synced"
    );
    let mut previous = chunk_answer;
    let mut shards = std::collections::HashSet::new();
    for d in &blobs {
        let hex = &d["sha256:".len()..];
        let resp = response_index(&ev, d);
        // A shard directory made for this blob is itself an entry of `blobs/sha256`: that
        // directory is synced too, or a power cut could lose the new directory and the file in it.
        if shards.insert(hex[..2].to_owned()) {
            assert!(
                synced(&ev, previous, resp, "/blobs/sha256").is_some(),
                "the new shard directory of {d} was not made durable (its parent not synced) before its 201"
            );
        }
        let file = synced(
            &ev,
            previous,
            resp,
            &format!("/blobs/sha256/{}/{hex}", &hex[..2]),
        )
        .unwrap_or_else(|| panic!("blob file of {d} not synced before its 201"));
        let dir =
            synced(&ev, file, resp, &format!("/blobs/sha256/{}", &hex[..2])).unwrap_or_else(|| {
                panic!("directory of {d} not synced after its file, before its 201")
            });
        let db = synced(&ev, dir, resp, "/berth.db-wal")
            .or_else(|| synced(&ev, dir, resp, "/berth.db"))
            .unwrap_or_else(|| panic!("database not synced after the blob of {d}, before its 201"));
        assert!(file < dir && dir < db && db < resp);
        previous = resp;
    }
    let resp = response_index(&ev, &manifest);
    assert!(
        synced(&ev, previous, resp, "/berth.db-wal").is_some()
            || synced(&ev, previous, resp, "/berth.db").is_some(),
        "the manifest was acknowledged before the database was synced"
    );
}
