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
                if !answered(
                    c.post(format!("{base}/v2/crash/many/blobs/uploads/?digest={ld}"))
                        .body(layer.clone()),
                    StatusCode::CREATED,
                )
                .await
                {
                    return;
                }
                acked_blobs.lock().unwrap().push((ld.clone(), layer));
                let body = image_manifest((&cfg, 14), &[(&ld, 2048)]);
                let tag = format!("w{w}-{i}");
                attempted.lock().unwrap().push((tag.clone(), body.clone()));
                if !answered(
                    c.put(format!("{base}/v2/crash/many/manifests/{tag}"))
                        .header("content-type", OCI_MANIFEST)
                        .body(body.clone()),
                    StatusCode::CREATED,
                )
                .await
                {
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

/// Whether `req` was answered `status` (a dropped connection or another status: no).
async fn answered(req: reqwest::RequestBuilder, status: StatusCode) -> bool {
    req.send().await.is_ok_and(|r| r.status() == status)
}

/// What a crash-cycle workload had acknowledged (and attempted), across every cycle.
#[derive(Default, Clone)]
struct Ledger {
    /// (tag, manifest body) answered 201.
    manifests: Vec<(String, String)>,
    /// Manifests sent whose answer never came: wholly there or absent after the restart.
    attempted: Vec<(String, String)>,
    /// Tags whose DELETE was answered 202: absent after the restart.
    untagged: Vec<String>,
    /// Tags whose DELETE was sent: there or absent after the restart unless it was answered.
    untagging: Vec<String>,
    /// Blobs answered 201 (monolithic or chunked), and the subset no manifest references.
    blobs: Vec<Blob>,
    loose: Vec<String>,
    /// Robots answered 201.
    robots: Vec<String>,
}

/// One cycle's writers: monolithic pushes with a manifest each, chunked uploads of loose blobs,
/// tag deletions and robot creations, until the server dies.
async fn crash_workload(base: String, cycle: usize, ledger: Arc<Mutex<Ledger>>, cfg: String) {
    let c = client();
    let api = reqwest::Client::new();
    let mut tasks = Vec::new();
    // Image pushes, then untagging every third tag pushed.
    for w in 0..2usize {
        let (c, base, ledger, cfg) = (c.clone(), base.clone(), ledger.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let seed = (cycle * 100 + w) as u64 * 1_000_000 + i as u64;
                let layer = random_bytes(3000 + (i % 7) * 1000, seed);
                let ld = sha256(&layer);
                if !answered(
                    c.post(format!("{base}/v2/crash/mixed/blobs/uploads/?digest={ld}"))
                        .body(layer.clone()),
                    StatusCode::CREATED,
                )
                .await
                {
                    return;
                }
                ledger
                    .lock()
                    .unwrap()
                    .blobs
                    .push((ld.clone(), layer.clone()));
                let tag = format!("c{cycle}-w{w}-{i}");
                let body = image_manifest((&cfg, 14), &[(&ld, layer.len())]);
                ledger
                    .lock()
                    .unwrap()
                    .attempted
                    .push((tag.clone(), body.clone()));
                if !answered(
                    c.put(format!("{base}/v2/crash/mixed/manifests/{tag}"))
                        .header("content-type", OCI_MANIFEST)
                        .body(body.clone()),
                    StatusCode::CREATED,
                )
                .await
                {
                    return;
                }
                ledger.lock().unwrap().manifests.push((tag.clone(), body));
                if i % 3 == 2 {
                    ledger.lock().unwrap().untagging.push(tag.clone());
                    if !answered(
                        c.delete(format!("{base}/v2/crash/mixed/manifests/{tag}")),
                        StatusCode::ACCEPTED,
                    )
                    .await
                    {
                        return;
                    }
                    ledger.lock().unwrap().untagged.push(tag);
                }
            }
        }));
    }
    // Chunked uploads (three PATCHes) of blobs no manifest references.
    {
        let (c, base, ledger) = (c.clone(), base.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let bytes = random_bytes(96 * 1024, (cycle as u64 + 7) * 9_000_000 + i);
                let d = sha256(&bytes);
                let Ok(r) = c
                    .post(format!("{base}/v2/crash/mixed/blobs/uploads/"))
                    .send()
                    .await
                else {
                    return;
                };
                let Some(mut loc) = r
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .map(str::to_owned)
                else {
                    return;
                };
                for (k, chunk) in bytes.chunks(32 * 1024).enumerate() {
                    let start = k * 32 * 1024;
                    let url = if loc.starts_with('/') {
                        format!("{base}{loc}")
                    } else {
                        loc.clone()
                    };
                    let Ok(r) = c
                        .patch(url)
                        .header(
                            "content-range",
                            format!("{start}-{}", start + chunk.len() - 1),
                        )
                        .body(chunk.to_vec())
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() != StatusCode::ACCEPTED {
                        return;
                    }
                    loc = r.headers()["location"].to_str().unwrap().to_owned();
                }
                let sep = if loc.contains('?') { '&' } else { '?' };
                let url = if loc.starts_with('/') {
                    format!("{base}{loc}")
                } else {
                    loc.clone()
                };
                let Ok(r) = c.put(format!("{url}{sep}digest={d}")).send().await else {
                    return;
                };
                if r.status() != StatusCode::CREATED {
                    return;
                }
                let mut l = ledger.lock().unwrap();
                l.blobs.push((d.clone(), bytes));
                l.loose.push(d);
            }
        }));
    }
    // Management writes: robots.
    {
        let (base, ledger) = (base.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("bot-{cycle}-{i}");
                if !answered(
                    api.post(format!("{base}/api/v1/orgs/crash/robots"))
                        .header("authorization", format!("Basic {}", b64(&admin_creds())))
                        .json(&serde_json::json!({ "name": name })),
                    StatusCode::CREATED,
                )
                .await
                {
                    return;
                }
                ledger.lock().unwrap().robots.push(name);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every acknowledged write of the ledger is readable as acknowledged; what was in flight is
/// whole or absent; every stored blob holds the bytes its name says.
async fn assert_ledger(s: &Server, ledger: &Ledger) {
    let c = client();
    for (tag, body) in &ledger.manifests {
        let r = c
            .get(s.url(&format!("/v2/crash/mixed/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        if ledger.untagged.contains(tag) {
            assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "untagged {tag} came back"
            );
            let by_digest = c
                .get(s.url(&format!(
                    "/v2/crash/mixed/manifests/{}",
                    sha256(body.as_bytes())
                )))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(
                by_digest.status(),
                StatusCode::OK,
                "untagging {tag} lost its manifest"
            );
        } else if ledger.untagging.contains(tag) && r.status() == StatusCode::NOT_FOUND {
            // Its DELETE was committed, but the server died before answering it.
        } else {
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "acknowledged manifest {tag} lost"
            );
            assert_eq!(&r.text().await.unwrap(), body);
        }
    }
    for (tag, body) in &ledger.attempted {
        let r = c
            .get(s.url(&format!("/v2/crash/mixed/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => assert_eq!(&r.text().await.unwrap(), body),
            StatusCode::NOT_FOUND => {}
            other => panic!("{tag}: {other}"),
        }
    }
    for (d, bytes) in &ledger.blobs {
        let r = c
            .get(s.url(&format!("/v2/crash/mixed/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "acknowledged blob {d} lost");
        assert_eq!(
            &r.bytes().await.unwrap().to_vec(),
            bytes,
            "blob {d} changed"
        );
    }
    let api = Api::admin(s);
    let (st, v) = api.get("/orgs/crash/robots").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let have: Vec<&str> = v["robots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for r in &ledger.robots {
        assert!(have.contains(&r.as_str()), "acknowledged robot {r} lost");
    }
    assert_blob_files_intact(s);
}

/// kill -9 at random moments of a mixed workload, `BERTH_CRASH_CYCLES` times (5 in the suite;
/// `bench/crash.sh` runs 50): after each restart every acknowledged write of every cycle is
/// there, nothing partial is visible; then garbage collection removes exactly the blobs no
/// manifest references.
#[tokio::test]
async fn kill9_at_random_moments_of_a_mixed_workload_cycle_after_cycle() {
    let cycles: usize = std::env::var("BERTH_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut s = Server::start();
    let c = client();
    let cfg = push_blob(&c, &s, "crash/mixed", b"{\"os\":\"linux\"}").await;
    // The admin's first push made the organization `crash` (its robots are written below).
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    // A seed of its own each run, printed, so a failing schedule can be replayed.
    let seed: u64 = std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 7919 + 17);
    eprintln!("crash cycles: {cycles}, seed {seed}");
    let mut rng = seed;
    for cycle in 0..cycles {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(80 + (rng >> 33) % 700);
        let work = tokio::spawn(crash_workload(
            s.base.clone(),
            cycle,
            ledger.clone(),
            cfg.clone(),
        ));
        tokio::time::sleep(delay).await;
        s.kill9();
        tokio::time::timeout(Duration::from_secs(60), work)
            .await
            .expect("the writers stop when the server dies")
            .unwrap();
        s.restart();
        let snapshot = ledger.lock().unwrap().clone();
        assert_ledger(&s, &snapshot).await;
        eprintln!(
            "cycle {cycle}: killed after {delay:?}; {} manifests, {} blobs, {} robots acknowledged so far",
            snapshot.manifests.len(),
            snapshot.blobs.len(),
            snapshot.robots.len()
        );
    }
    let l = ledger.lock().unwrap().clone();
    assert!(
        !l.manifests.is_empty() && !l.blobs.is_empty(),
        "the workload never got a write acknowledged"
    );
    let (loose, blobs) = (l.loose, l.blobs);

    // What the stored manifests reference (acknowledged ones, and those in flight that landed).
    let mut referenced = std::collections::HashSet::new();
    let stored: Vec<(String, String)> = {
        let l = ledger.lock().unwrap();
        l.manifests
            .iter()
            .chain(l.attempted.iter())
            .cloned()
            .collect()
    };
    for (_, body) in &stored {
        let r = c
            .get(s.url(&format!(
                "/v2/crash/mixed/manifests/{}",
                sha256(body.as_bytes())
            )))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            let m: serde_json::Value = serde_json::from_str(body).unwrap();
            for l in m["layers"].as_array().unwrap() {
                referenced.insert(l["digest"].as_str().unwrap().to_owned());
            }
        }
    }
    // Collection after the crashes: every blob a stored manifest references stays; the rest
    // (loose uploads, layers whose manifest died with the server) go.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = run(s.server_command(&["gc"]).args(["--json", "--grace", "0s"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut gone = 0u64;
    for (d, bytes) in &blobs {
        let r = c
            .get(s.url(&format!("/v2/crash/mixed/blobs/{d}")))
            .send()
            .await
            .unwrap();
        if referenced.contains(d) {
            assert_eq!(r.status(), StatusCode::OK, "gc removed referenced blob {d}");
            assert_eq!(&r.bytes().await.unwrap().to_vec(), bytes);
        } else {
            assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "unreferenced blob {d} survived gc"
            );
            gone += 1;
        }
    }
    assert!(gone >= loose.len() as u64);
    assert!(
        report["blobs_removed"].as_u64().unwrap() >= gone,
        "{report}"
    );
    eprintln!(
        "gc after the crashes removed {} blobs ({gone} acknowledged ones no manifest references)",
        report["blobs_removed"]
    );
    let snapshot = Ledger {
        blobs: Vec::new(),
        loose: Vec::new(),
        ..ledger.lock().unwrap().clone()
    };
    assert_ledger(&s, &snapshot).await;
}
