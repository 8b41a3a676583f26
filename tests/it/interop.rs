//! Interop: an unmodified CNCF Distribution (Debian's `docker-registry`) configured with berth's
//! `/token` realm, service, issuer and CA bundle accepts berth's tokens, and denies what berth's
//! policy does not grant. skopeo is the client.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

struct Distribution {
    child: Child,
    host: String,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago. Another process may take it before Distribution
/// binds it: `start_distribution` then sees Distribution exit and tries another port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts Distribution configured as a user would: the CA bundle fetched from berth's
/// `GET /api/v1/keys/ca.pem`, never read from berth's data directory.
async fn start_distribution(berth: &Server, dir: &std::path::Path) -> Distribution {
    std::fs::create_dir_all(dir).unwrap();
    let r = anonymous_client()
        .get(berth.url("/api/v1/keys/ca.pem"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ca = dir.join("berth-ca.pem");
    std::fs::write(&ca, r.bytes().await.unwrap()).unwrap();
    for _attempt in 0..5 {
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-interop-test\nauth:\n  token:\n    realm: {realm}/token\n    service: berth\n    issuer: berth\n    rootcertbundle: {ca}\n",
            root = dir.join("data").display(),
            realm = berth.base,
            ca = ca.display(),
        );
        let path = dir.join("config.yml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "docker-registry (Debian package) must be installed; scripts/test.sh installs it",
            );
        let mut d = Distribution {
            child,
            host: format!("127.0.0.1:{port}"),
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = anonymous_client()
                .get(format!("http://{}/v2/", d.host))
                .send()
                .await
                && r.status() == StatusCode::UNAUTHORIZED
            {
                let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
                assert!(
                    challenge.contains(&format!("realm=\"{}/token\"", berth.base)),
                    "{challenge}"
                );
                return d;
            }
            if d.child.try_wait().unwrap().is_some() {
                // It could not bind the port (taken meanwhile): try another.
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("docker-registry exited at start five times");
}

#[tokio::test]
async fn distribution_accepts_berth_tokens_and_berth_policy() {
    let s = Server::start();
    let session = user_session(&s, "alice", "alice-password-1").await;
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    alice
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let creds = [
        robot_with_token(&alice, "acme", "pusher", "Writer", json!({})).await,
        robot_with_token(&alice, "acme", "puller", "Reader", json!({})).await,
    ];
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let index = multi_platform_layout(&layout);
    let dist = start_distribution(&s, &tmp.path().join("registry")).await;
    let dest = format!("docker://{}/acme/app:v1", dist.host);
    // The Writer robot pushes through Distribution with a berth token…
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds[0],
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // …the Reader robot pulls it back byte for byte…
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds[1],
            &dest,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, index);
    // …but may not push, and nobody gets in anonymously or into another org's namespace — where
    // that namespace has content (the admin pushes it through Distribution first).
    Api::admin(&s)
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "globex"})),
            StatusCode::CREATED,
        )
        .await;
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &admin_creds(),
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/globex/app:v1", dist.host))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds[1],
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/acme/app:v2", dist.host))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a Reader pushed through Distribution"
    );
    // The same refusals at the protocol level, as Distribution answers them: berth grants the
    // Reader no push and the Writer nothing in globex, so Distribution refuses those tokens
    // with `insufficient_scope`; no token at all is a plain challenge.
    let reader_push = dist_answer(
        &s,
        &dist,
        Some(&creds[1]),
        "acme/app",
        "pull,push",
        "POST",
        "/v2/acme/app/blobs/uploads/",
    )
    .await;
    assert_eq!(reader_push.0, StatusCode::UNAUTHORIZED);
    assert!(
        reader_push.1.contains("insufficient_scope"),
        "{}",
        reader_push.1
    );
    let foreign = dist_answer(
        &s,
        &dist,
        Some(&creds[0]),
        "globex/app",
        "pull",
        "GET",
        "/v2/globex/app/manifests/v1",
    )
    .await;
    assert_eq!(foreign.0, StatusCode::UNAUTHORIZED);
    assert!(foreign.1.contains("insufficient_scope"), "{}", foreign.1);
    let anonymous = dist_answer(
        &s,
        &dist,
        None,
        "acme/app",
        "pull",
        "GET",
        "/v2/acme/app/manifests/v1",
    )
    .await;
    assert_eq!(anonymous.0, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.1.contains("scope=\"repository:acme/app:pull\""),
        "{}",
        anonymous.1
    );
    // Positive controls: the same requests with tokens that do grant them succeed.
    let admin_pull = dist_answer(
        &s,
        &dist,
        Some(&admin_creds()),
        "globex/app",
        "pull",
        "GET",
        "/v2/globex/app/manifests/v1",
    )
    .await;
    assert_eq!(admin_pull.0, StatusCode::OK);
    let writer_push = dist_answer(
        &s,
        &dist,
        Some(&creds[0]),
        "acme/app",
        "pull,push",
        "POST",
        "/v2/acme/app/blobs/uploads/",
    )
    .await;
    assert_eq!(writer_push.0, StatusCode::ACCEPTED);
}

/// Distribution's answer (status, `WWW-Authenticate`) to a request carrying a berth token for
/// `creds` (`user:secret`) asking `repo:actions`; no token when `creds` is `None`.
async fn dist_answer(
    berth: &Server,
    dist: &Distribution,
    creds: Option<&str>,
    repo: &str,
    actions: &str,
    method: &str,
    path: &str,
) -> (StatusCode, String) {
    let mut req = anonymous_client()
        .request(
            method.parse().unwrap(),
            format!("http://{}{path}", dist.host),
        )
        .header("accept", "application/vnd.oci.image.index.v1+json");
    if let Some((user, secret)) = creds.and_then(|c| c.split_once(':')) {
        let token =
            bearer_token(berth, user, secret, &format!("repository:{repo}:{actions}")).await;
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let r = req.send().await.unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status(), challenge)
}
