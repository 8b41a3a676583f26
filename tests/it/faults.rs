//! Faults of the disk under the embedded default: a filesystem that fills up (a small tmpfs the
//! test mounts) and one the kernel turns read-only under the server (ext4 on a loop device with
//! `errors=remount-ro`, given an error through its `trigger_fs_error` knob, as a failing disk
//! would). Writes fail with a clear answer and store nothing, reads go on, and after space is
//! freed writes succeed again without a restart. The tests mount filesystems, so they run as
//! root (as the suite does).

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// A mounted filesystem, unmounted (lazily, whatever still holds it) when dropped.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn tmpfs(size: &str) -> Mount {
        let m = Mount::empty();
        let opts = format!("size={size}");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(m.path()));
        m
    }

    /// ext4 in a file of `mib` MiB on a loop device; an error makes the kernel remount it
    /// read-only.
    fn ext4(mib: u64) -> Mount {
        let m = Mount::empty();
        let img = m.dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&img)
            .arg(m.path()));
        m
    }

    fn empty() -> Mount {
        assert!(
            rustix::process::geteuid().is_root(),
            "the fault tests mount filesystems: run the suite as root"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Mount { dir }
    }

    /// Makes the kernel see an error on this ext4 filesystem: with `errors=remount-ro` it turns
    /// read-only at once, under every open file.
    fn fail_ext4(&self) {
        let source = run(Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(self.path()));
        let dev = Path::new(source.trim()).file_name().unwrap().to_owned();
        let knob = Path::new("/sys/fs/ext4").join(dev).join("trigger_fs_error");
        std::fs::write(&knob, "berth fault test\n").unwrap();
        let opts = run(Command::new("findmnt")
            .args(["-n", "-o", "OPTIONS"])
            .arg(self.path()));
        assert!(
            opts.starts_with("ro") || opts.contains("emergency_ro"),
            "still writable after an error: {opts}"
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Writes zeros into `path` until the filesystem has no room left; the filler's size.
fn fill(path: &Path) -> u64 {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    n
}

async fn push_blob_status(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    bytes: &[u8],
) -> reqwest::Response {
    c.post(s.url(&format!(
        "/v2/{repo}/blobs/uploads/?digest={}",
        sha256(bytes)
    )))
    .body(bytes.to_vec())
    .send()
    .await
    .unwrap()
}

/// The OCI error answer of a write the disk refused: `status`, the message naming the cause.
async fn assert_refused(r: reqwest::Response, status: StatusCode, says: &str) {
    assert_eq!(r.status(), status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(r.headers()["retry-after"], "1", "a 503 says when to retry");
    }
    let body = r.text().await.unwrap();
    assert!(body.contains(says), "{body}");
}

/// Every upload session's bytes on disk: a refused write leaves none behind.
fn upload_files(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("uploads"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// What a refused write must leave working: `reference`'s manifest as pushed, its layer, the
/// API, and a pull with a registry token.
async fn assert_reads_go_on(s: &Server, reference: &str, manifest: &str) {
    let c = client();
    let got = c
        .get(s.url(&format!("/v2/acme/app/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK, "{reference}");
    assert_eq!(got.text().await.unwrap(), manifest);
    let m: Value = serde_json::from_str(manifest).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let r = c
        .get(s.url(&format!("/v2/acme/app/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    let (st, body) = Api::admin(s).get("/orgs").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let token = bearer_token(s, "admin", ADMIN_PASSWORD, "repository:acme/app:pull").await;
    let r = anonymous_client()
        .get(s.url("/v2/acme/app/tags/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers_once_space_is_freed() {
    let m = Mount::tmpfs("12m");
    let data = m.path().join("data");
    let s = Server::start_with(&data, &[], Vec::new());
    let c = client();
    let (digest, manifest) = push_image(&c, &s, "acme/app", "v1", 1).await;
    push_blob(&c, &s, "acme/app", b"{}").await;
    // Room an operator will free later.
    let reserve = m.path().join("reserve");
    std::fs::write(&reserve, vec![1u8; 3 << 20]).unwrap();

    // Blobs of 1 MiB until the disk is full: the refusal is a 507 that says so, the blob is not
    // there, and its partial bytes are gone.
    let mut refused = None;
    for i in 0..20u64 {
        let blob = random_bytes(1 << 20, 100 + i);
        let r = push_blob_status(&c, &s, "acme/app", &blob).await;
        if r.status() == StatusCode::CREATED {
            continue;
        }
        assert_refused(r, StatusCode::INSUFFICIENT_STORAGE, "storage is full").await;
        refused = Some(blob);
        break;
    }
    let blob = refused.expect("12 MiB never filled up");
    let head = c
        .head(s.url(&format!("/v2/acme/app/blobs/{}", sha256(&blob))))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.status(),
        StatusCode::NOT_FOUND,
        "a refused blob is visible"
    );
    assert_eq!(upload_files(&data), Vec::<PathBuf>::new());

    // The database grows into the full disk: metadata writes are refused the same way.
    let filler = m.path().join("filler");
    fill(&filler);
    let admin = Api::admin(&s);
    let mut refused_org = false;
    for i in 0..200 {
        let (st, body) = admin
            .post("/orgs", json!({ "name": format!("org{i}") }))
            .await;
        if st == StatusCode::CREATED {
            continue;
        }
        assert_eq!(st, StatusCode::INSUFFICIENT_STORAGE, "{body}");
        assert_eq!(body["error"]["code"], "storage_full", "{body}");
        refused_org = true;
        break;
    }
    assert!(refused_org, "the database never ran out of room");
    let v2 = image_manifest((&sha256(b"{}"), 2), &[]);
    let r = put_manifest(&c, &s, "acme/app", "v2", OCI_MANIFEST, &v2).await;
    assert!(
        [StatusCode::INSUFFICIENT_STORAGE, StatusCode::CREATED].contains(&r.status()),
        "{}",
        r.status()
    );

    // Reads go on: the image by digest, its layer, the API, a pull with a token.
    assert_reads_go_on(&s, &digest, &manifest).await;

    // Space comes back: the same writes succeed, without a restart.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&reserve).unwrap();
    let r = push_blob_status(&c, &s, "acme/app", &blob).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let (st, body) = admin
        .post("/orgs", json!({ "name": "after-the-fill" }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{body}");
    let r = put_manifest(&c, &s, "acme/app", "v2", OCI_MANIFEST, &v2).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url(&format!("/v2/acme/app/blobs/{}", sha256(&blob))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), blob);
    drop(s);
}

#[tokio::test]
async fn a_filesystem_turned_read_only_under_the_server_refuses_writes_and_serves_reads() {
    let m = Mount::ext4(64);
    let data = m.path().join("data");
    let s = Server::start_with(&data, &[], Vec::new());
    let c = client();
    let (digest, manifest) = push_image(&c, &s, "acme/app", "v1", 2).await;
    push_blob(&c, &s, "acme/app", b"{}").await;
    let admin = Api::admin(&s);

    m.fail_ext4();

    // Writes: a blob, a manifest, an API change — 503 with Retry-After, saying why.
    let r = push_blob_status(&c, &s, "acme/app", &random_bytes(4096, 9)).await;
    assert_refused(r, StatusCode::SERVICE_UNAVAILABLE, "cannot be written").await;
    let v2 = image_manifest((&sha256(b"{}"), 2), &[]);
    let r = put_manifest(&c, &s, "acme/app", "v2", OCI_MANIFEST, &v2).await;
    assert_refused(r, StatusCode::SERVICE_UNAVAILABLE, "cannot be written").await;
    let r = admin.post("/orgs", json!({ "name": "later" })).await;
    assert_eq!(r.0, StatusCode::SERVICE_UNAVAILABLE, "{}", r.1);
    assert_eq!(r.1["error"]["code"], "unavailable");

    // Reads go on: the manifest by tag and digest, its layer, the API, a pull with a token.
    assert_reads_go_on(&s, "v1", &manifest).await;
    assert_reads_go_on(&s, &digest, &manifest).await;
    drop(s);
}
