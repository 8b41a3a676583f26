//! Garbage collection: what it removes, what it keeps, dry runs, upload expiry, and safety while
//! pushes go on.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

fn gc(s: &Server, args: &[&str]) -> Value {
    let out = run(s.server_command(&["gc"]).arg("--json").args(args));
    serde_json::from_str(&out).unwrap()
}

fn blob_file_count(s: &Server) -> usize {
    s.storage().blob_count()
}

#[tokio::test]
async fn gc_removes_unreferenced_blobs_and_reports_dry_run_first() {
    let (s, c) = (Server::start(), client());
    let (kept, kept_body) = push_image(&c, &s, "gc/app", "v1", 31).await;
    let orphan = push_blob(&c, &s, "gc/app", &random_bytes(10_000, 32)).await;
    let (dropped, _) = push_image(&c, &s, "gc/app", "v2", 33).await;
    assert_eq!(
        c.delete(s.url(&format!("/v2/gc/app/manifests/{dropped}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    let (untagged, untagged_body) = push_image(&c, &s, "gc/app", "v3", 34).await;
    assert_eq!(
        c.delete(s.url("/v2/gc/app/manifests/v3"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    let files_before = blob_file_count(&s);
    // Links must be older than the grace period; timestamps have one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let dry = gc(&s, &["--grace", "0s", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    // The orphan, and the config and layer of the deleted manifest.
    assert_eq!(dry["blobs_removed"], 3, "{dry}");
    assert_eq!(
        blob_file_count(&s),
        files_before,
        "a dry run removes nothing"
    );
    assert_eq!(
        c.get(s.url(&format!("/v2/gc/app/blobs/{orphan}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let report = gc(&s, &["--grace", "0s"]);
    assert_eq!(report["blobs_removed"], 3, "{report}");
    assert!(report["bytes_freed"].as_u64().unwrap() > 10_000);
    assert_eq!(blob_file_count(&s), files_before - 3);
    assert_eq!(
        c.get(s.url(&format!("/v2/gc/app/blobs/{orphan}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    // The tagged image and the untagged manifest are whole.
    let m: Value = serde_json::from_str(&kept_body).unwrap();
    for d in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
        let r = c
            .get(s.url(&format!("/v2/gc/app/blobs/{}", d.as_str().unwrap())))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        c.get(s.url(&format!("/v2/gc/app/manifests/{kept}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        c.get(s.url(&format!("/v2/gc/app/manifests/{untagged}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // With --untagged the untagged manifest goes, and its blobs with it.
    let report = gc(&s, &["--grace", "0s", "--untagged"]);
    assert_eq!(
        report["manifests_removed"],
        serde_json::json!([format!("gc/app@{untagged}")])
    );
    assert_eq!(report["blobs_removed"], 2, "{report}");
    // `berth gc` ran beside the server: the server's cache of manifests learns of it at its next
    // read of the revocation log, within about a second.
    let t0 = std::time::Instant::now();
    loop {
        let st = c
            .get(s.url(&format!("/v2/gc/app/manifests/{untagged}")))
            .send()
            .await
            .unwrap()
            .status();
        if st == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(st, StatusCode::OK);
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "served stale for 2.5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m: Value = serde_json::from_str(&untagged_body).unwrap();
    let r = c
        .get(s.url(&format!(
            "/v2/gc/app/blobs/{}",
            m["layers"][0]["digest"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Nothing more to do.
    let again = gc(&s, &["--grace", "0s", "--untagged"]);
    assert_eq!(again["blobs_removed"], 0);
    assert_eq!(again["links_removed"], 0);
}

#[tokio::test]
async fn gc_keeps_recent_blobs_within_the_grace_period() {
    let (s, c) = (Server::start(), client());
    let fresh = push_blob(&c, &s, "gc/fresh", b"just pushed, no manifest yet").await;
    let report = gc(&s, &[]);
    assert_eq!(report["blobs_removed"], 0, "{report}");
    assert_eq!(
        c.get(s.url(&format!("/v2/gc/fresh/blobs/{fresh}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn gc_without_data_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(berth_bin())
        .arg("gc")
        .arg("--data-dir")
        .arg(tmp.path().join("none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: no berth data in "), "{err}");
}

#[tokio::test]
async fn abandoned_uploads_expire() {
    let s = Server::start_args(&["--upload-ttl", "1s"]);
    let c = client();
    let r = c
        .post(s.url("/v2/exp/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    c.patch(s.url(&loc))
        .body(random_bytes(100_000, 35))
        .send()
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if c.get(s.url(&loc)).send().await.unwrap().status() == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
    }
    assert!(gone, "upload session did not expire");
    assert_eq!(s.storage().upload_count(), 0, "its bytes are removed");
}

/// Pushes images continuously while `berth gc` runs again and again beside the server; no blob
/// of an acknowledged manifest may disappear.
#[tokio::test]
async fn gc_while_pushing_never_removes_a_referenced_blob() {
    let (s, c) = (Server::start(), client());
    let shared = random_bytes(4096, 40);
    push_blob(&c, &s, "gc/source", &shared).await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pushers = Vec::new();
    for w in 0..3u64 {
        let (c, base, acked, stop, shared) = (
            c.clone(),
            s.base.clone(),
            acked.clone(),
            stop.clone(),
            shared.clone(),
        );
        pushers.push(tokio::spawn(async move {
            let repo = format!("gc/busy{w}");
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let cfg = format!("{{\"w\":{w},\"i\":{i}}}");
                // Layers repeat every few iterations, so a push can re-upload a digest that a
                // collection is removing at that moment.
                // On S3 worker 0's layers are kept in their rows, the others' are objects.
                let len = if w == 0 { 3000 } else { 20_000 };
                let layer = random_bytes(len, w * 10_000 + i / 3);
                let (cd, ld, sd) = (sha256(cfg.as_bytes()), sha256(&layer), sha256(&shared));
                let body =
                    image_manifest((&cd, cfg.len()), &[(&ld, layer.len()), (&sd, shared.len())]);
                // A blob may be collected between its upload and the manifest (it is not
                // referenced yet); then the manifest is refused and the client pushes again.
                for attempt in 0..20 {
                    for (d, bytes) in [(&cd, cfg.as_bytes().to_vec()), (&ld, layer.clone())] {
                        let r = c
                            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
                            .body(bytes)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), StatusCode::CREATED);
                    }
                    // Dawdle now and then, so that links go unreferenced for longer than the grace.
                    tokio::time::sleep(Duration::from_millis(
                        if i.is_multiple_of(3) && attempt == 0 {
                            1100
                        } else {
                            5
                        },
                    ))
                    .await;
                    let r = c
                        .post(format!(
                            "{base}/v2/{repo}/blobs/uploads/?mount={sd}&from=gc/source"
                        ))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status(),
                        StatusCode::CREATED,
                        "the source keeps the shared blob through its own manifest"
                    );
                    let r = c
                        .put(format!("{base}/v2/{repo}/manifests/t{i}"))
                        .header("content-type", OCI_MANIFEST)
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    if r.status() == StatusCode::CREATED {
                        acked.lock().unwrap().push((repo.clone(), body.clone()));
                        break;
                    }
                    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
                }
            }
        }));
    }
    // The source repository keeps the shared blob referenced.
    let cfg = push_blob(&c, &s, "gc/source", b"{}").await;
    let m = image_manifest((&cfg, 2), &[(&sha256(&shared), shared.len())]);
    assert_eq!(
        put_manifest(&c, &s, "gc/source", "keep", OCI_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );

    let mut gc_cmd = s.server_command(&["gc"]);
    gc_cmd.args(["--grace", "0s", "--untagged", "--json"]);
    let collector = tokio::task::spawn_blocking(move || {
        // The digests whose blob files collections removed.
        let mut removed = std::collections::BTreeSet::new();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            let out = run(&mut gc_cmd);
            let v: Value = serde_json::from_str(&out).unwrap();
            for d in v["removed_blob_digests"].as_array().unwrap() {
                removed.insert(d.as_str().unwrap().to_owned());
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        removed
    });
    let removed = collector.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in pushers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "too few pushes to mean anything: {}",
        acked.len()
    );
    // The race happened: a collection removed the file of a digest that a pusher then pushed
    // again and an acknowledged manifest references (checked readable below).
    let referenced: std::collections::BTreeSet<String> = acked
        .iter()
        .flat_map(|(_, body)| {
            let m: Value = serde_json::from_str(body).unwrap();
            std::iter::once(m["config"]["digest"].as_str().unwrap().to_owned()).chain(
                m["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["digest"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let raced: Vec<_> = removed.intersection(&referenced).collect();
    assert!(
        !raced.is_empty(),
        "no removed blob was pushed again and referenced ({} removed); the test proves nothing",
        removed.len()
    );
    for (repo, body) in &acked {
        let m: Value = serde_json::from_str(body).unwrap();
        let digests = std::iter::once(&m["config"])
            .chain(m["layers"].as_array().unwrap())
            .map(|d| d["digest"].as_str().unwrap().to_owned());
        for d in digests {
            let r = c
                .get(s.url(&format!("/v2/{repo}/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "{repo}: blob {d} of an acknowledged manifest was removed"
            );
            assert_eq!(sha256(&r.bytes().await.unwrap()), d);
        }
    }
}

#[tokio::test]
async fn scheduled_background_collection_runs() {
    let s = Server::start_args(&["--gc-interval", "1s", "--gc-grace", "0s"]);
    let c = client();
    let (kept, _) = push_image(&c, &s, "bg/app", "v1", 60).await;
    let orphan = push_blob(&c, &s, "bg/app", b"nobody references me").await;
    let mut collected = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if c.get(s.url(&format!("/v2/bg/app/blobs/{orphan}")))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::NOT_FOUND
        {
            collected = true;
            break;
        }
    }
    assert!(
        collected,
        "the scheduled collection did not remove the orphan:\n{}",
        s.log_text()
    );
    assert_eq!(
        c.get(s.url(&format!("/v2/bg/app/manifests/{kept}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The run logs when it ends, which may be a moment after the orphan is gone.
    let mut logged = false;
    for _ in 0..40 {
        logged = s.log_text().contains("garbage collection");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        logged,
        "the scheduled collection logged nothing:
{}",
        s.log_text()
    );
}

/// `--untagged` keeps what something still points at: the children of a tagged index, the
/// referrers of a subject that is present, and every manifest younger than the grace period;
/// it removes untagged manifests nothing keeps, and referrers whose subject is gone.
#[tokio::test]
async fn untagged_collection_keeps_index_children_referrers_and_young_manifests() {
    let (s, c) = (Server::start(), client());
    let repo = "keep/app";
    // Two platform images pushed by digest only, kept by a tagged index.
    let (child_a, body_a) = push_image(&c, &s, repo, "tmp-a", 41).await;
    let (child_b, body_b) = push_image(&c, &s, repo, "tmp-b", 42).await;
    for tag in ["tmp-a", "tmp-b"] {
        let r = c
            .delete(s.url(&format!("/v2/{repo}/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": child_a, "size": body_a.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": child_b, "size": body_b.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    })
    .to_string();
    let r = put_manifest(&c, &s, repo, "multi", OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // A tagged image with a signature-like referrer (untagged), and a referrer whose subject
    // will be deleted.
    let (subject, subject_body) = push_image(&c, &s, repo, "v1", 43).await;
    let (gone, gone_body) = push_image(&c, &s, repo, "v0", 44).await;
    let referrer = |subject: &str, size: usize, seed: u64| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": EMPTY, "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
            "annotations": {"seed": seed.to_string()},
        })
        .to_string()
    };
    const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    push_blob(&c, &s, repo, b"{}").await;
    let kept_ref = referrer(&subject, subject_body.len(), 1);
    let orphan_ref = referrer(&gone, gone_body.len(), 2);
    for body in [&kept_ref, &orphan_ref] {
        let d = sha256(body.as_bytes());
        let r = put_manifest(&c, &s, repo, &d, OCI_MANIFEST, body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (kept_ref, orphan_ref) = (sha256(kept_ref.as_bytes()), sha256(orphan_ref.as_bytes()));
    // Delete the second subject itself (by digest): its referrer is left without a subject.
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/{gone}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A plain untagged manifest.
    let (loose, _) = push_image(&c, &s, repo, "loose", 45).await;
    let r = c
        .delete(s.url(&format!("/v2/{repo}/manifests/loose")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // Everything is younger than an hour: nothing goes.
    let young = gc(&s, &["--grace", "1h", "--untagged"]);
    assert_eq!(young["manifests_removed"], serde_json::json!([]), "{young}");
    // Push times are whole seconds and "younger than 0s" keeps what was pushed this second:
    // cross into the next second so that a zero grace really is zero.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Without the grace: exactly the loose manifest and the orphaned referrer go.
    let report = gc(&s, &["--grace", "0s", "--untagged"]);
    let mut removed: Vec<String> = report["manifests_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    removed.sort();
    let mut want = vec![format!("{repo}@{loose}"), format!("{repo}@{orphan_ref}")];
    want.sort();
    assert_eq!(removed, want, "{report}");
    let status = |d: String| {
        let c = c.clone();
        let url = s.url(&format!("/v2/{repo}/manifests/{d}"));
        async move {
            c.get(url)
                .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for kept in [&child_a, &child_b, &subject, &kept_ref] {
        assert_eq!(
            status(kept.clone()).await,
            StatusCode::OK,
            "{kept} was kept"
        );
    }
    for removed in [&loose, &orphan_ref] {
        assert_eq!(
            status(removed.clone()).await,
            StatusCode::NOT_FOUND,
            "{removed} was removed"
        );
    }
    // The children's layers are still served.
    let m: Value = serde_json::from_str(&body_a).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let r = c
        .get(s.url(&format!("/v2/{repo}/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// On either engine (files; the bucket in the PostgreSQL + S3 pass): a blob nothing names, as a
/// crash between placing it and recording it leaves, is swept by the next collection, and what
/// the rows name stays, byte for byte.
#[tokio::test]
async fn the_orphan_sweep_removes_a_blob_no_row_names_on_either_engine() {
    let (s, c) = (Server::start(), client());
    let (_, body) = push_image(&c, &s, "sweep2/app", "v1", 52).await;
    let mut stored = s.storage().blobs();
    stored.sort();
    let bytes = b"orphaned on either engine";
    let d = sha256(bytes);
    s.storage().plant_blob(&d, bytes);
    assert!(
        s.storage().blobs().iter().any(|(name, _)| *name == d),
        "the planted blob is there before the collection"
    );
    let report = gc(&s, &["--grace", "0s"]);
    assert_eq!(report["orphan_files_removed"], 1, "{report}");
    let mut after = s.storage().blobs();
    after.sort();
    assert!(
        !after.iter().any(|(name, _)| *name == d),
        "the orphan was swept"
    );
    assert_eq!(after, stored, "every blob a row names is kept, unchanged");
    let m: Value = serde_json::from_str(&body).unwrap();
    for layer in m["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let r = c
            .get(s.url(&format!("/v2/sweep2/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    }
}

/// Files a crash left without a row are swept: a blob file nothing names goes at once, an
/// upload file without a session once it is older than the upload expiry; files with rows stay.
#[tokio::test]
async fn the_orphan_sweep_removes_only_files_without_rows() {
    // The embedded engine: the test ages files by their modification time.
    let (s, c) = (Server::start_embedded(), client());
    let (_, body) = push_image(&c, &s, "sweep/app", "v1", 51).await;
    let before = blob_file_count(&s);
    // A blob file no row names (as a crash between rename and commit leaves).
    let bytes = b"orphaned by a crash";
    let d = sha256(bytes);
    let hex = &d["sha256:".len()..];
    let dir = s.data_dir.join("blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex), bytes).unwrap();
    // An upload file without a session, an hour old, and a live upload session whose file is
    // as old.
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let age = |p: &std::path::Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    };
    let stray = s.data_dir.join("uploads").join(uuid_like());
    std::fs::write(&stray, b"partial").unwrap();
    age(&stray);
    let r = c
        .post(s.url("/v2/sweep/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let live = r.headers()["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let live_file = s.data_dir.join("uploads").join(&live);
    assert!(live_file.exists());
    age(&live_file);
    // Within the upload expiry (24h by default) the stray upload file is left alone (its
    // session may be about to be written); the orphaned blob file goes at once.
    let report = gc(&s, &["--grace", "0s"]);
    assert_eq!(report["orphan_files_removed"], 1, "{report}");
    assert!(!dir.join(hex).exists(), "the orphaned blob file was swept");
    assert!(stray.exists(), "an upload file within the expiry is kept");
    assert_eq!(blob_file_count(&s), before);
    // Past the upload expiry (30m, from the server's environment variable) the stray file goes;
    // the live session's file stays.
    let out = run(s
        .server_command(&["gc"])
        .args(["--json", "--grace", "0s"])
        .env("BERTH_UPLOAD_TTL", "30m"));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["orphan_files_removed"], 1, "{report}");
    assert!(!stray.exists(), "{report}");
    assert!(
        live_file.exists(),
        "a file with a session row is never swept"
    );
    let m: Value = serde_json::from_str(&body).unwrap();
    let r = c
        .get(s.url(&format!(
            "/v2/sweep/app/blobs/{}",
            m["layers"][0]["digest"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "referenced blobs are never swept"
    );
}

/// A random upload id of the form the server uses.
fn uuid_like() -> String {
    let b = random_bytes(16, 7);
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}
