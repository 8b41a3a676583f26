//! Garbage collection: what it removes, what it keeps, dry runs, upload expiry, and safety while
//! pushes go on.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

fn gc(s: &Server, args: &[&str]) -> Value {
    let out = run(Command::new(berth_bin())
        .arg("gc")
        .arg("--data-dir")
        .arg(&s.data_dir)
        .arg("--json")
        .args(args));
    serde_json::from_str(&out).unwrap()
}

fn blob_file_count(s: &Server) -> usize {
    let base = s.data_dir.join("blobs/sha256");
    std::fs::read_dir(base)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum()
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
    assert_eq!(
        c.get(s.url(&format!("/v2/gc/app/manifests/{untagged}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
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
    assert_eq!(
        std::fs::read_dir(s.data_dir.join("uploads"))
            .unwrap()
            .count(),
        0,
        "its bytes are removed"
    );
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
                let layer = random_bytes(3000, w * 10_000 + i / 3);
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

    let data_dir = s.data_dir.clone();
    let collector = tokio::task::spawn_blocking(move || {
        let mut removed = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            let out = run(Command::new(berth_bin())
                .arg("gc")
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--grace", "0s", "--untagged", "--json"]));
            let v: Value = serde_json::from_str(&out).unwrap();
            removed += v["links_removed"].as_u64().unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
        removed
    });
    let removed = collector.await.unwrap();
    assert!(
        removed > 0,
        "no collection raced a push; the test proves nothing"
    );
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
    assert!(s.log_text().contains("garbage collection"));
}
