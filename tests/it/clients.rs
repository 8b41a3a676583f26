//! Real registry clients against berth: skopeo, podman and the oras Python client.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy");
    c
}

#[tokio::test]
async fn skopeo_multi_platform_round_trip_inspect_list_delete() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let index = multi_platform_layout(&src);
    let dst = format!("docker://{}/acme/multi:v1", s.host);
    run(skopeo()
        .args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &admin_creds(),
        ])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(&dst));
    // The index comes back byte for byte, and so does each platform manifest.
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &admin_creds(),
            &dst,
        ])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(raw.stdout, index);
    let parsed: Value = serde_json::from_slice(&index).unwrap();
    for m in parsed["manifests"].as_array().unwrap() {
        let by_digest = format!(
            "docker://{}/acme/multi@{}",
            s.host,
            m["digest"].as_str().unwrap()
        );
        let raw = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                &admin_creds(),
                &by_digest,
            ])
            .output()
            .unwrap();
        assert_eq!(sha256(&raw.stdout), m["digest"].as_str().unwrap());
    }
    // Copy back out into a fresh layout: every blob arrives intact.
    let out = tmp.path().join("out");
    run(skopeo()
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            &admin_creds(),
        ])
        .arg(&dst)
        .arg(format!("oci:{}:v1", out.display())));
    for entry in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name();
        let copied = std::fs::read(out.join("blobs/sha256").join(&name))
            .unwrap_or_else(|_| panic!("{name:?} not copied out"));
        assert_eq!(sha256(&copied)[7..], *name.to_str().unwrap());
    }
    // Tags, then delete.
    run(skopeo()
        .args([
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &admin_creds(),
        ])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{}/acme/multi:v2", s.host)));
    let tags: Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false", "--creds", &admin_creds()])
        .arg(format!("docker://{}/acme/multi", s.host))))
    .unwrap();
    assert_eq!(tags["Tags"], json!(["v1", "v2"]));
    run(Command::new("skopeo").args([
        "delete",
        "--tls-verify=false",
        "--creds",
        &admin_creds(),
        &dst,
    ]));
    let r = client()
        .get(s.url(&format!("/v2/acme/multi/manifests/{}", sha256(&index))))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the manifest is gone, with both its tags"
    );
    let failed = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &admin_creds(),
            &dst,
        ])
        .output()
        .unwrap();
    assert!(!failed.status.success());
}

#[tokio::test]
async fn podman_push_and_pull() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello from podman").unwrap();
    let tar = tmp.path().join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root").arg(tmp.path().join("storage"));
        c.arg("--runroot").arg(tmp.path().join("run"));
        c.args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
        c
    };
    let image_id = run(podman()
        .arg("import")
        .arg(&tar)
        .arg("localhost/berth-test:1"))
    .trim()
    .to_owned();
    let remote = format!("{}/acme/podman:1", s.host);
    run(podman().args([
        "push",
        "--tls-verify=false",
        "--creds",
        &admin_creds(),
        "localhost/berth-test:1",
        &remote,
    ]));
    run(podman().args(["rmi", "localhost/berth-test:1"]));
    run(podman().args([
        "pull",
        "--tls-verify=false",
        "--creds",
        &admin_creds(),
        &remote,
    ]));
    let pulled = run(podman().args(["image", "inspect", "--format", "{{.Id}}", &remote]));
    assert!(
        image_id.ends_with(pulled.trim()),
        "pulled {pulled} pushed {image_id}"
    );
    let tags: Value = client()
        .get(s.url("/v2/acme/podman/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["1"]));
}

#[tokio::test]
async fn oras_artifacts_found_through_referrers() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/clients/oras_referrers.py");
    let out = run(Command::new("python3")
        .arg(script)
        .arg(&s.host)
        .arg(tmp.path())
        .env("BERTH_TEST_CREDS", admin_creds()));
    let pushed: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let subject = pushed["subject"].as_str().unwrap();
    let c = client();
    let idx: Value = c
        .get(s.url(&format!("/v2/acme/art/referrers/{subject}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut found: Vec<(String, String)> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap().to_owned(),
                m["artifactType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let mut want = vec![
        (
            pushed["signature"].as_str().unwrap().to_owned(),
            "application/vnd.example.signature.v1".to_owned(),
        ),
        (
            pushed["sbom"].as_str().unwrap().to_owned(),
            "application/vnd.example.sbom.config.v1+json".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(found, want);
    let sig = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["digest"] == pushed["signature"])
        .unwrap();
    assert_eq!(sig["annotations"]["org.example.signer"], "ci");
    let r = c
        .get(s.url(&format!(
            "/v2/acme/art/referrers/{subject}?artifactType=application/vnd.example.signature.v1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let idx: Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(idx["manifests"][0]["digest"], pushed["signature"]);
}
