//! The server process: health, readiness, metrics, configuration precedence, TLS and graceful
//! shutdown.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (s, c) = (Server::start(), client());
    let r = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let blob = random_bytes(123_456, 50);
    let d = push_blob(&c, &s, "m/app", &blob).await;
    c.get(s.url(&format!("/v2/m/app/blobs/{d}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get(s.url("/v2/m/app/manifests/nope"))
        .send()
        .await
        .unwrap();
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("berth_http_requests_total{route=\"upload_start\",status=\"201\"}"),
        1.0
    );
    assert_eq!(
        value("berth_http_requests_total{route=\"blob_get\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        value("berth_http_requests_total{route=\"manifest_get\",status=\"404\"}"),
        1.0
    );
    assert_eq!(
        value("berth_http_request_duration_seconds_count{route=\"blob_get\"}"),
        1.0
    );
    assert_eq!(
        value("berth_http_request_duration_seconds_bucket{route=\"blob_get\",le=\"+Inf\"}"),
        1.0
    );
    assert!(value("berth_http_request_bytes_total") >= 123_456.0);
    assert!(value("berth_http_response_bytes_total") >= 123_456.0);
    assert_eq!(value("berth_blobs_stored"), 1.0);
    assert_eq!(value("berth_blob_bytes_stored"), 123_456.0);
    assert_eq!(value("berth_uploads_in_progress"), 0.0);
}

/// Starts `berth serve` with the given arguments and environment and returns the data
/// directory it chose, read from its start-up line.
fn data_dir_chosen(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(berth_bin());
    cmd.arg("serve").args(args).env_remove("BERTH_DATA_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map(Result::unwrap)
        .find(|l| l.contains("listening on"))
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    line.split("data_dir=").nth(1).unwrap().trim().to_owned()
}

#[test]
fn configuration_precedence_flags_env_file_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    let file = tmp.path().join("berth.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
            p("from-file")
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (from_env, from_flag) = (p("from-env"), p("from-flag"));
    assert_eq!(data_dir_chosen(&[f], &[]), p("from-file"));
    assert_eq!(
        data_dir_chosen(&[f], &[("BERTH_DATA_DIR", &from_env)]),
        from_env
    );
    assert_eq!(
        data_dir_chosen(
            &[f, "--data-dir", &from_flag],
            &[("BERTH_DATA_DIR", &from_env)]
        ),
        from_flag
    );
    // The listen address from the file was used (port 0), and the database went where it said.
    assert!(tmp.path().join("from-flag/berth.db").is_file());
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    for (content, expect) in [
        ("lisen = \"127.0.0.1:0\"\n", "unknown field `lisen`"),
        (
            "upload_ttl = \"forever\"\n",
            "error: invalid upload_ttl: \"forever\" is not a duration",
        ),
        (
            "listen = \"nowhere\"\n",
            "error: invalid listen: \"nowhere\" is not an address",
        ),
    ] {
        std::fs::write(&file, content).unwrap();
        let out = Command::new(berth_bin())
            .arg("serve")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{content}: {err}");
    }
    let out = Command::new(berth_bin())
        .args(["serve", "--tls-cert", "c.pem"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("tls_cert and tls_key must be given together")
    );
    let out = Command::new(berth_bin())
        .arg("serve")
        .arg(tmp.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: cannot read config file"));
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let s = Server::start_in(
        &tmp.path().join("data"),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(s.base.starts_with("https://"));
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    // Anonymous: the challenge names the token realm over https.
    let r = c.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        challenge,
        format!("Bearer realm=\"{}/token\",service=\"berth\"", s.base)
    );
    let r = c
        .get(s.url("/v2/"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    // The console's session cookie under TLS: Secure, with the __Host- prefix, and it works.
    let console = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = console
        .post(s.url("/ui/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-berth_session=bthf_"), "{cookie}");
    for attr in ["; Path=/", "; HttpOnly", "; SameSite=Strict", "; Secure"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let r = console
        .get(s.url("/ui/"))
        .header("cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "signed in over TLS");
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000",
        "browsers keep to TLS"
    );
    assert!(r.text().await.unwrap().contains("Create organization"));
    // Plain HTTP on the TLS port does not get an answer from the registry.
    let plain = client()
        .get(s.url("/v2/").replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut s = Server::start();
    let c = client();
    let r = c
        .post(s.url("/v2/slow/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let data = random_bytes(3 * 65_536, 51);
    let (tx, body) = channel_body();
    let req = tokio::spawn(c.patch(s.url(&loc)).body(body).send());
    tx.send(Ok(data[..65_536].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(s.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While it drains, the server accepts no new connection.
    let refused = anonymous_client()
        .get(s.url("/v2/"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_connect()),
        "a new connection was served during shutdown: {refused:?}"
    );
    tx.send(Ok(data[65_536..].to_vec())).await.unwrap();
    drop(tx);
    let r = req.await.unwrap().unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "the in-flight upload completes"
    );
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", data.len() - 1).as_str()
    );
    let status = s.terminate_wait();
    assert!(status.success(), "clean exit: {status}");
    // The log reader thread may still be draining the pipe of the exited process (a bounded
    // wait: 50 × 20 ms).
    let mut logged = false;
    for _ in 0..50 {
        if s.log_text().contains("berth stopped") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged, "{}", s.log_text());
}

/// Each pass of `scripts/test.sh` names its engines (`BERTH_TEST_PASS`); a server the suite starts
/// must run on them, so a pass that silently repeats the other fails here.
#[tokio::test]
async fn the_pass_runs_on_the_engines_it_names() {
    let s = Server::start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let log = s.log_text();
        if let Some(l) = log.lines().find(|l| l.contains("berth listening on")) {
            break l.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no start line in {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (meta, blobs) = match std::env::var("BERTH_TEST_PASS").as_deref() {
        Ok("scaled") => ("metadata=postgres://", "blobs=s3://"),
        Ok("embedded") | Err(_) => ("metadata=sqlite:", "blobs=files"),
        Ok(other) => panic!("unknown pass {other:?}"),
    };
    assert!(
        line.contains(meta) && line.contains(blobs),
        "pass {:?} but {line}",
        std::env::var("BERTH_TEST_PASS")
    );
    // The scaled pass must have what it names, never fall back.
    if std::env::var("BERTH_TEST_PASS").as_deref() == Ok("scaled") {
        assert!(std::env::var("BERTH_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty()));
        assert!(std::env::var("BERTH_TEST_S3_ENDPOINT").is_ok_and(|v| !v.is_empty()));
    }
}
