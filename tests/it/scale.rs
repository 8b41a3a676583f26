//! Scale-out: several `berth serve` processes on one PostgreSQL and one blob store (a Garage
//! bucket, or a shared directory) are one registry, with no sticky sessions. The engines are the
//! test's own, stopped and started at will.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::engines::{Garage, PgCluster};
use crate::support::*;

/// The environment of a node on `db`.
fn node_env(db: &str) -> Vec<(String, String)> {
    vec![
        ("BERTH_DATABASE_URL".into(), db.to_owned()),
        ("BERTH_SECRET_KEY".into(), TEST_SECRET_KEY.into()),
    ]
}

/// Two nodes on one database and one blob store.
struct Pair {
    a: Server,
    b: Server,
    db: String,
    _garage: Option<Garage>,
    _pg: PgCluster,
    _tmp: tempfile::TempDir,
}

/// What the nodes share besides the database.
#[derive(Clone, Copy, Debug)]
enum Blobs {
    /// A Garage bucket; each node has a data directory of its own.
    Bucket,
    /// One directory (a shared filesystem).
    Directory,
}

fn two_nodes(blobs: Blobs) -> Pair {
    let pg = PgCluster::start();
    let db = pg.create_database("berth");
    let tmp = tempfile::tempdir().unwrap();
    let garage = matches!(blobs, Blobs::Bucket).then(Garage::start);
    let node = |name: &str| {
        let mut env = node_env(&db);
        let data = match &garage {
            Some(g) => {
                env.extend(g.env("registry"));
                tmp.path().join(name)
            }
            None => tmp.path().join("shared"),
        };
        Server::start_with(&data, &[], env)
    };
    let (a, b) = (node("a"), node("b"));
    Pair {
        a,
        b,
        db,
        _garage: garage,
        _pg: pg,
        _tmp: tmp,
    }
}

/// A reverse proxy on loopback that sends each request to the next node in turn (round robin
/// per request, not per connection), as a load balancer without sticky sessions would.
async fn round_robin(nodes: Vec<String>) -> (String, Arc<AtomicUsize>) {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;
    use futures_util::TryStreamExt as _;

    let counter = Arc::new(AtomicUsize::new(0));
    let (nodes, n) = (Arc::new(nodes), counter.clone());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (nodes, n, http) = (nodes.clone(), n.clone(), http.clone());
        async move {
            let node = &nodes[n.fetch_add(1, Ordering::SeqCst) % nodes.len()];
            let (parts, body) = req.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut out = http
                .request(parts.method.clone(), format!("{node}{path}"))
                .body(reqwest::Body::wrap_stream(body.into_data_stream()));
            for (k, v) in &parts.headers {
                out = out.header(k, v);
            }
            match out.send().await {
                Ok(r) => {
                    let mut resp = Response::builder().status(r.status());
                    for (k, v) in r.headers() {
                        resp = resp.header(k, v);
                    }
                    resp.body(Body::from_stream(
                        r.bytes_stream().map_err(std::io::Error::other),
                    ))
                    .unwrap()
                }
                Err(e) => Response::builder()
                    .status(502)
                    .body(Body::from(e.to_string()))
                    .unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, counter)
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned()
}

/// `Location` made absolute against `s`.
fn at(s: &Server, loc: &str) -> String {
    if loc.starts_with("http") {
        let path = loc.splitn(4, '/').nth(3).unwrap_or("");
        s.url(&format!("/{path}"))
    } else {
        s.url(loc)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_are_one_registry_for_uploads_tokens_keys_and_revocation() {
    let p = two_nodes(Blobs::Bucket);
    let c = client();
    let admin_a = Api::admin(&p.a);
    admin_a
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;

    // A chunked upload that alternates nodes on every request: POST on A, PATCH on B, PATCH on
    // A, PUT on B.
    let blob = random_bytes(3 * 1024 * 1024 + 17, 901);
    let digest = sha256(&blob);
    let r = c
        .post(p.a.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut loc = location(&r);
    let chunks: Vec<&[u8]> = blob.chunks(1024 * 1024 + 3).collect();
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let node = if i % 2 == 0 { &p.b } else { &p.a };
        let r = c
            .patch(at(node, &loc))
            .header(
                "Content-Range",
                format!("{offset}-{}", offset + chunk.len() - 1),
            )
            .header("Content-Type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "chunk {i} on node {}",
            i % 2
        );
        offset += chunk.len();
        loc = location(&r);
    }
    // The other node reports the same progress.
    let status = c.get(at(&p.a, &loc)).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status.headers()["Range"].to_str().unwrap(),
        format!("0-{}", blob.len() - 1)
    );
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{}{sep}digest={digest}", at(&p.b, &loc)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for node in [&p.a, &p.b] {
        let got = c
            .get(node.url(&format!("/v2/acme/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
    }

    // A robot made through A; its token works on B, and a bearer token issued by A is accepted
    // by B (the signing keys live in the database).
    let robot = robot_with_token(
        &admin_a,
        "acme",
        "ci",
        "Writer",
        json!({"namespace": "acme"}),
    )
    .await;
    let (user, secret) = robot.split_once(':').unwrap();
    let jwt = bearer_token(&p.a, user, secret, "repository:acme/app:pull").await;
    let pull_b = |jwt: String| {
        let url = p.b.url(&format!("/v2/acme/app/blobs/{digest}"));
        async move {
            anonymous_client()
                .head(url)
                .bearer_auth(jwt)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(pull_b(jwt.clone()).await, StatusCode::OK);
    let basic_b = basic_client(user, secret);
    assert_eq!(
        basic_b
            .head(p.b.url(&format!("/v2/acme/app/blobs/{digest}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // `berth keys rotate` against the database reaches B without a restart.
    let before: Value = anonymous_client()
        .get(p.b.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = run(p
        .a
        .server_command(&["keys", "rotate"])
        .env("BERTH_DATABASE_URL", &p.db));
    let kid = out
        .trim()
        .strip_prefix("new signing key ")
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jwks: Value = anonymous_client()
            .get(p.b.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never saw key {kid}: {before} → {jwks}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The old token still verifies on B after the rotation.
    assert_eq!(pull_b(jwt.clone()).await, StatusCode::OK);

    // The robot's token deleted through A: B refuses the token and the bearer token A issued
    // from it within the bound (measured here: about a second).
    let deleted = Instant::now();
    admin_a
        .ok(
            "DELETE",
            "/orgs/acme/robots/ci/tokens/t",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    loop {
        let basic = basic_b
            .head(p.b.url(&format!("/v2/acme/app/blobs/{digest}")))
            .send()
            .await
            .unwrap()
            .status();
        if basic == StatusCode::UNAUTHORIZED
            && pull_b(jwt.clone()).await == StatusCode::UNAUTHORIZED
        {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(30),
            "B still accepts a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        deleted.elapsed() < Duration::from_secs(5),
        "{:?}",
        deleted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_through_a_round_robin_balancer_pushes_and_pulls() {
    let p = two_nodes(Blobs::Bucket);
    let (proxy, served) = round_robin(vec![p.a.base.clone(), p.b.base.clone()]).await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let index = multi_platform_layout(&src);
    let dst = format!("docker://{proxy}/acme/multi:v1");
    let skopeo = |args: &[&str]| {
        let out = Command::new("skopeo")
            .arg("--insecure-policy")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let src_ref = format!("oci:{}:v1", src.display());
    tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &admin_creds(),
            &src_ref,
            &dst,
        ])
    });
    let raw = tokio::task::block_in_place(|| {
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &admin_creds(),
            &dst,
        ])
    });
    assert_eq!(raw, index);
    let out = tmp.path().join("out");
    let out_ref = format!("oci:{}:v1", out.display());
    tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            &admin_creds(),
            &dst,
            &out_ref,
        ])
    });
    let copied = std::fs::read(out.join("index.json")).unwrap();
    let copied: Value = serde_json::from_slice(&copied).unwrap();
    assert_eq!(
        copied["manifests"][0]["digest"].as_str().unwrap(),
        sha256(&index)
    );
    // Both nodes served: the balancer alternated every request.
    assert!(served.load(Ordering::SeqCst) > 20);
    for node in [&p.a, &p.b] {
        let served_by: u64 = metric_sum(node, "berth_http_requests_total").await;
        assert!(served_by > 10, "a node served only {served_by} requests");
    }
}

/// Waits for `/readyz` to answer 200 (a node recovering by itself after its stores came back).
async fn wait_until_ready(s: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ready = anonymous_client()
            .get(s.url("/readyz"))
            .send()
            .await
            .unwrap();
        if ready.status() == StatusCode::OK {
            return;
        }
        assert!(Instant::now() < deadline, "berth did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of a counter family on a node's `/metrics`.
async fn metric_sum(s: &Server, family: &str) -> u64 {
    let text = anonymous_client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(family))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_upload_the_other_finishes_it() {
    for blobs in [Blobs::Bucket, Blobs::Directory] {
        node_killed_mid_upload(two_nodes(blobs)).await;
    }
}

async fn node_killed_mid_upload(mut p: Pair) {
    let c = client();
    let blob = random_bytes(2 * 1024 * 1024, 902);
    let digest = sha256(&blob);
    let (first, second) = blob.split_at(1024 * 1024 + 5);
    let r = c
        .post(p.a.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    let r = c
        .patch(at(&p.a, &loc))
        .header("Content-Range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    p.a.kill9();
    let r = c
        .patch(at(&p.b, &loc))
        .header(
            "Content-Range",
            format!("{}-{}", first.len(), blob.len() - 1),
        )
        .body(second.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{}{sep}digest={digest}", at(&p.b, &loc)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = c
        .get(p.b.url(&format!("/v2/acme/app/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), blob.len());
    assert_eq!(sha256(&got), digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_under_traffic_answers_503_then_recovers_losing_nothing() {
    let mut pg = PgCluster::start();
    let db = pg.create_database("berth");
    let garage = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = node_env(&db);
    env.extend(garage.env("registry"));
    let s = Server::start_with(&tmp.path().join("data"), &["--database-timeout", "2s"], env);
    let c = client();
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let (digest, _) = push_image(&c, &s, "acme/app", &format!("v{i}"), 910 + i).await;
        acknowledged.push((format!("v{i}"), digest));
    }

    pg.stop();
    // While the database is down: 503 with an OCI error body, quickly (never a hang), for
    // reads, writes and the token endpoint; /readyz says not ready.
    for _ in 0..3 {
        let started = Instant::now();
        let r = c
            .get(s.url("/v2/acme/app/manifests/v0"))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            s.log_text()
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
        // The database timeout is 2 s: the answer comes within it, with room for a slow CI.
        eprintln!(
            "503 while the database is down after {:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
    let push = c
        .post(s.url(&format!(
            "/v2/acme/app/blobs/uploads/?digest={}",
            sha256(b"while down")
        )))
        .body(b"while down".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        push.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        s.log_text()
    );
    let ready = anonymous_client()
        .get(s.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let token = c
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::SERVICE_UNAVAILABLE);

    pg.resume();
    // Back without restarting berth.
    wait_until_ready(&s, Duration::from_secs(30)).await;
    for (tag, digest) in &acknowledged {
        let r = c
            .get(s.url(&format!("/v2/acme/app/manifests/{tag}")))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{tag}");
        assert_eq!(
            r.headers()["Docker-Content-Digest"].to_str().unwrap(),
            digest
        );
    }
    let (_, _) = push_image(&c, &s, "acme/app", "after", 990).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_stopped_under_traffic_answers_503_then_recovers_losing_nothing() {
    let pg = PgCluster::start();
    let db = pg.create_database("berth");
    let mut garage = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = node_env(&db);
    env.extend(garage.env("registry"));
    let s = Server::start_with(&tmp.path().join("data"), &[], env);
    let c = client();
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let (digest, body) = push_image(&c, &s, "acme/app", &format!("v{i}"), 920 + i).await;
        acknowledged.push((format!("v{i}"), digest, body));
    }
    let layer = random_bytes(300_000, 930);
    let layer_d = push_blob(&c, &s, "acme/app", &layer).await;

    garage.stop();
    // Blob reads and writes: 503 with an OCI error, in seconds; manifests (in the database)
    // are still served; /readyz says not ready. (A blob of at most 16 KiB is kept in its row,
    // not in the bucket: see below.)
    let down = random_bytes(16 * 1024 + 1, 931);
    let started = Instant::now();
    let r = c
        .post(s.url(&format!(
            "/v2/acme/app/blobs/uploads/?digest={}",
            sha256(&down)
        )))
        .body(down.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        s.log_text()
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let r = c
        .get(s.url("/v2/acme/app/manifests/v0"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ready = anonymous_client()
        .get(s.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // A small blob (an image's config) needs no bucket: pushed and read back while it is down.
    let small = random_bytes(16 * 1024, 932);
    let small_d = push_blob(&c, &s, "acme/app", &small).await;
    let r = c
        .get(s.url(&format!("/v2/acme/app/blobs/{small_d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), small);

    garage.resume();
    wait_until_ready(&s, Duration::from_secs(60)).await;
    // The push refused while the bucket was down left no row behind: a blob's row is written
    // only once its object is in place, so the registry never names bytes it does not have.
    let refused = sha256(&down);
    let r = c
        .head(s.url(&format!("/v2/acme/app/blobs/{refused}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a row without its object"
    );
    assert!(
        !s.storage().blobs().iter().any(|(name, _)| *name == refused),
        "no object of the refused push"
    );
    let got = c
        .get(s.url(&format!("/v2/acme/app/blobs/{layer_d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(sha256(&got.bytes().await.unwrap()), layer_d);
    for (tag, digest, _) in &acknowledged {
        let r = c
            .get(s.url(&format!("/v2/acme/app/manifests/{tag}")))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["Docker-Content-Digest"].to_str().unwrap(),
            digest
        );
    }
    push_image(&c, &s, "acme/app", "after", 940).await;
}

/// `berth gc` on node A's stores while node B pushes: no blob of an acknowledged manifest goes.
#[tokio::test(flavor = "multi_thread")]
async fn gc_on_one_node_while_another_pushes_keeps_every_referenced_blob() {
    let p = two_nodes(Blobs::Bucket);
    let c = client();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b_base, stop2, c2) = (p.b.base.clone(), stop.clone(), c.clone());
    let pusher = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            i += 1;
            // A layer that repeats every third push: a collection may be removing it just then.
            let layer = random_bytes(20_000, 950 + i % 3);
            let cfg = format!("{{\"i\":{i}}}");
            let (ld, cd) = (sha256(&layer), sha256(cfg.as_bytes()));
            for attempt in 0..20 {
                for (d, bytes) in [(&cd, cfg.as_bytes().to_vec()), (&ld, layer.clone())] {
                    let r = c2
                        .post(format!("{b_base}/v2/acme/busy/blobs/uploads/?digest={d}"))
                        .body(bytes)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::CREATED);
                }
                let m = image_manifest((&cd, cfg.len()), &[(&ld, layer.len())]);
                let r = c2
                    .put(format!("{b_base}/v2/acme/busy/manifests/t{i}"))
                    .header("Content-Type", OCI_MANIFEST)
                    .body(m)
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::CREATED {
                    acked.push((format!("t{i}"), ld.clone()));
                    break;
                }
                // A blob collected between its upload and the manifest: push again.
                assert_eq!(r.status(), StatusCode::BAD_REQUEST, "attempt {attempt}");
            }
        }
        acked
    });
    let mut gc = p.a.server_command(&["gc"]);
    gc.args(["--grace", "0s", "--untagged", "--json"]);
    let collector = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut runs = 0;
        while start.elapsed() < Duration::from_secs(5) {
            let out = run(&mut gc);
            let _: Value = serde_json::from_str(&out).unwrap();
            runs += 1;
        }
        runs
    });
    let runs = collector.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let acked = pusher.await.unwrap();
    assert!(
        runs >= 2 && acked.len() >= 5,
        "{runs} collections, {} pushes",
        acked.len()
    );
    for (tag, layer) in &acked {
        for node in [&p.a, &p.b] {
            let r = c
                .get(node.url(&format!("/v2/acme/busy/manifests/{tag}")))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{tag}");
            let r = c
                .get(node.url(&format!("/v2/acme/busy/blobs/{layer}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{tag}: {layer}");
            assert_eq!(&sha256(&r.bytes().await.unwrap()), layer);
        }
    }
}

/// 1 GiB pushed in 16 MiB chunks, every request to the other node: each node's memory stays
/// bounded (what it adds to its own peak before the push is a few part buffers, not the blob),
/// and the blob is served whole by both.
#[tokio::test(flavor = "multi_thread")]
async fn a_gib_pushed_in_chunks_alternating_nodes_keeps_each_node_small() {
    use futures_util::StreamExt as _;
    let p = two_nodes(Blobs::Bucket);
    let c = client();
    const CHUNK: usize = 16 * 1024 * 1024;
    const CHUNKS: usize = 64;
    let chunk_bytes = |i: usize| random_bytes(CHUNK, 1000 + i as u64);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    for i in 0..CHUNKS {
        sha2::Digest::update(&mut h, chunk_bytes(i));
    }
    let digest = format!("sha256:{}", hex::encode(sha2::Digest::finalize(h)));
    // Each node checks the password once (argon2's 19 MiB) before the baseline: the bound is on
    // what the push adds, and the first login on a node would otherwise land inside it.
    for node in [&p.a, &p.b] {
        let r = c.get(node.url("/v2/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let before = [peak_rss_kib(p.a.pid()), peak_rss_kib(p.b.pid())];
    let r = c
        .post(p.a.url("/v2/acme/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let mut loc = location(&r);
    for i in 0..CHUNKS {
        let node = if i % 2 == 0 { &p.b } else { &p.a };
        let start = i * CHUNK;
        let r = c
            .patch(at(node, &loc))
            .header("Content-Range", format!("{start}-{}", start + CHUNK - 1))
            .body(chunk_bytes(i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "chunk {i}");
        loc = location(&r);
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{}{sep}digest={digest}", at(&p.a, &loc)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(p.b.url(&format!("/v2/acme/big/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.bytes_stream();
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    let mut n = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len();
        sha2::Digest::update(&mut h, &chunk);
    }
    assert_eq!(n, CHUNK * CHUNKS);
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Digest::finalize(h))),
        digest
    );
    let peaks = [peak_rss_kib(p.a.pid()), peak_rss_kib(p.b.pid())];
    eprintln!("peak RSS before the push {before:?} KiB, after {peaks:?} KiB");
    for (b, a) in before.iter().zip(&peaks) {
        assert!(
            a.saturating_sub(*b) <= 64 * 1024,
            "peak RSS of the nodes went from {before:?} to {peaks:?} KiB"
        );
    }
}

/// Wrong secrets for one credential spread over two nodes: the nodes count together, so the
/// attacker gets the limit (plus at most one blind try per node), not the limit per node; the
/// right secret from another address keeps working on both.
#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_count_across_nodes() {
    let p = two_nodes(Blobs::Directory);
    let admin = Api::admin(&p.a);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let robot =
        robot_with_token(&admin, "acme", "ci", "Reader", json!({"namespace": "acme"})).await;
    let (user, secret) = robot.split_once(':').unwrap();
    let mut wrong = secret.to_owned();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    let attacker = basic_client_from(user, &wrong, "127.0.0.7");
    // Failures are counted per minute: start well inside one, so the 40 attempts (about a
    // second) cannot straddle two windows and be counted twice over (seen once as 12).
    let second_of_minute = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 60
    };
    while second_of_minute() > 50 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (mut checked, mut limited) = (0, 0);
    for i in 0..40 {
        let node = if i % 2 == 0 { &p.a } else { &p.b };
        let status = attacker
            .get(node.url("/v2/"))
            .send()
            .await
            .unwrap()
            .status();
        match status {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert!(
        (10..=11).contains(&checked),
        "{checked} wrong secrets were checked across two nodes (limit 10 per credential and address)"
    );
    assert_eq!(checked + limited, 40);
    for node in [&p.a, &p.b] {
        let ok = basic_client_from(user, secret, "127.0.0.8")
            .get(node.url("/v2/"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(ok, StatusCode::OK);
    }
}

/// `berth migrate` moves a populated embedded installation to PostgreSQL + S3 (twice: the
/// second run finds everything there); then two nodes on the new stores serve the same
/// content to the same robot token, API key and registry token, and take new writes.
#[tokio::test(flavor = "multi_thread")]
async fn migrate_moves_an_embedded_installation_and_its_credentials_keep_working() {
    // The embedded installation: an org, a robot with a token, an API key, a registry token,
    // images, audit events.
    let mut old = Server::start_embedded();
    let admin = Api::admin(&old);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let robot =
        robot_with_token(&admin, "acme", "ci", "Writer", json!({"namespace": "acme"})).await;
    let key = admin
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "laptop"})),
            StatusCode::CREATED,
        )
        .await;
    let apikey = key["apikey"].as_str().unwrap().to_owned();
    let r = client()
        .post(old.url("/api/v1/tokens?permanent=true"))
        .header("organization", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let reg: Value = r.json().await.unwrap();
    let c = client();
    let mut images = Vec::new();
    for i in 0..3 {
        let (digest, body) = push_image(&c, &old, "acme/app", &format!("v{i}"), 960 + i).await;
        images.push((format!("v{i}"), digest, body));
    }
    let big = random_bytes(6 * 1024 * 1024 + 3, 970);
    let big_d = push_blob(&c, &old, "acme/app", &big).await;
    let jwks_before: Value = anonymous_client()
        .get(old.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    old.terminate();

    let pg = PgCluster::start();
    let db = pg.create_database("berth");
    let garage = Garage::start();
    let migrate = || {
        let mut cmd = Command::new(berth_bin());
        cmd.args(["migrate", "--from-data-dir"])
            .arg(&old.data_dir)
            .args(["--to-database", &db, "--to-storage", "s3://berth/registry"])
            .args([
                "--s3-endpoint",
                &garage.endpoint(),
                "--s3-region",
                "garage",
                "--s3-path-style",
            ])
            .env("BERTH_SECRET_KEY", TEST_SECRET_KEY)
            .env("AWS_ACCESS_KEY_ID", crate::support::engines::GARAGE_KEY_ID)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                crate::support::engines::GARAGE_SECRET,
            );
        run(&mut cmd)
    };
    let first = migrate();
    assert!(
        first.contains("7 blobs (7 copied and verified, 0 already there)"),
        "{first}"
    );
    let again = migrate();
    assert!(
        again.contains("(0 new)") && again.contains("(0 copied and verified, 7 already there)"),
        "{again}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let node = |name: &str| {
        let mut env = node_env(&db);
        env.extend(garage.env("registry"));
        Server::start_with(&tmp.path().join(name), &[], env)
    };
    let (a, b) = (node("a"), node("b"));
    // The same signing keys: bearer tokens of the old installation still verify.
    let jwks_after: Value = anonymous_client()
        .get(a.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_after["keys"], jwks_before["keys"]);
    // The same content, byte for byte, on both nodes, to the robot token.
    let (user, secret) = robot.split_once(':').unwrap();
    let robot_client = basic_client(user, secret);
    for node in [&a, &b] {
        for (tag, digest, body) in &images {
            let r = robot_client
                .get(node.url(&format!("/v2/acme/app/manifests/{tag}")))
                .header("Accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{tag}");
            assert_eq!(
                r.headers()["Docker-Content-Digest"].to_str().unwrap(),
                digest
            );
            assert_eq!(r.text().await.unwrap(), *body);
        }
        let got = robot_client
            .get(node.url(&format!("/v2/acme/app/blobs/{big_d}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), big.as_slice());
    }
    // The API key and the registry token too (seed 002: user name `token`).
    let r = Api::basic(&b, "iamapikey", &apikey)
        .get("/auth/whoami")
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let r = basic_client("token", reg["token"].as_str().unwrap())
        .get(a.url("/v2/acme/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // New writes get new ids (the sequences moved past the copied ones).
    let admin_b = Api::admin(&b);
    admin_b
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "new-bot"})),
            StatusCode::CREATED,
        )
        .await;
    push_image(&robot_client, &a, "acme/app", "after", 990).await;
    let (audit_status, audit) = admin_b.get("/audit?limit=500").await;
    assert_eq!(audit_status, StatusCode::OK);
    assert!(audit.to_string().contains("robot.create"), "{audit}");
}

/// The other combination: SQLite (one node) with its blobs in a bucket. Push, pull, delete and
/// collect; the bucket holds exactly the layers still referenced, the rows their small configs.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_with_a_bucket_pushes_pulls_and_collects() {
    let garage = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(&tmp.path().join("data"), &[], garage.env("single"));
    assert!(s.database_url().is_none());
    let c = client();
    let (keep, keep_body) = push_image_sized(&c, &s, "acme/app", "keep", 1101, 20_000).await;
    let (gone, _) = push_image_sized(&c, &s, "acme/app", "gone", 1102, 20_001).await;
    let r = c
        .delete(s.url(&format!("/v2/acme/app/manifests/{gone}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(s.storage().blob_count(), 4);
    assert_eq!(s.storage().objects().len(), 2, "the layers are objects");
    // Links younger than a second are within even a zero grace period (timestamps are seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report: Value = serde_json::from_str(&run(s
        .server_command(&["gc"])
        .args(["--grace", "0s", "--json"])))
    .unwrap();
    assert_eq!(report["blobs_removed"], 2, "{report}");
    let objects: Vec<String> = s.storage().objects().into_iter().map(|(d, _)| d).collect();
    let m: Value = serde_json::from_str(&keep_body).unwrap();
    assert_eq!(objects, [m["layers"][0]["digest"].as_str().unwrap()]);
    let kept: Vec<String> = s.storage().blobs().into_iter().map(|(d, _)| d).collect();
    let mut want = vec![
        m["config"]["digest"].as_str().unwrap().to_owned(),
        m["layers"][0]["digest"].as_str().unwrap().to_owned(),
    ];
    want.sort();
    let mut kept = kept;
    kept.sort();
    assert_eq!(kept, want);
    let r = c
        .get(s.url("/v2/acme/app/manifests/keep"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["Docker-Content-Digest"].to_str().unwrap(), keep);
    for d in &want {
        let r = c
            .get(s.url(&format!("/v2/acme/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(sha256(&r.bytes().await.unwrap()), *d);
    }

    // Moving up to PostgreSQL on the same bucket: the configs' rows come with their bytes.
    s.terminate();
    let pg = PgCluster::start();
    let db = pg.create_database("berth");
    let mut migrate = Command::new(berth_bin());
    migrate
        .args(["migrate", "--from-data-dir"])
        .arg(&s.data_dir)
        .args(["--to-database", &db, "--to-storage", "s3://berth/single"])
        .args(["--s3-endpoint", &garage.endpoint(), "--s3-region", "garage"])
        .arg("--s3-path-style")
        .env("BERTH_SECRET_KEY", TEST_SECRET_KEY)
        .env("AWS_ACCESS_KEY_ID", crate::support::engines::GARAGE_KEY_ID)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            crate::support::engines::GARAGE_SECRET,
        );
    let out = run(&mut migrate);
    assert!(
        out.contains("2 blobs (0 copied and verified, 2 already there)"),
        "{out}"
    );
    let mut env = node_env(&db);
    env.extend(garage.env("single"));
    let node = Server::start_with(&tmp.path().join("node"), &[], env);
    for d in &want {
        let r = c
            .get(node.url(&format!("/v2/acme/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{d}");
        assert_eq!(sha256(&r.bytes().await.unwrap()), *d);
    }
}

/// A 41 MiB blob in a bucket comes back byte for byte, whole and by ranges that start and end
/// anywhere; a bucket that dies mid-pull ends the body with an error, never a short body that
/// looks complete.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_blob_in_a_bucket_is_pulled_whole_and_by_range_byte_for_byte() {
    use futures_util::StreamExt as _;
    const MIB: usize = 1024 * 1024;
    let mut garage = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(&tmp.path().join("data"), &[], garage.env("single"));
    let c = client();
    let blob = random_bytes(41 * MIB + 12_345, 1150);
    let d = push_blob(&c, &s, "acme/big", &blob).await;
    let url = s.url(&format!("/v2/acme/big/blobs/{d}"));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), blob.len());
    assert_eq!(sha256(&got), d);
    for (from, to) in [
        (0, 8 * MIB - 1),
        (8 * MIB - 7, 8 * MIB + 6),
        (3 * MIB + 1, 35 * MIB + 99),
        (17 * MIB, blob.len() - 1),
        (blob.len() - 20 * MIB - 1, blob.len() - 2),
    ] {
        let r = c
            .get(&url)
            .header("Range", format!("bytes={from}-{to}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{from}-{to}");
        let part = r.bytes().await.unwrap();
        assert!(part[..] == blob[from..=to], "bytes {from}-{to} differ");
    }
    // The bucket killed after the first bytes: the rest of the body is an error.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.bytes_stream();
    let mut n = body.next().await.unwrap().unwrap().len();
    garage.stop();
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => n += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed && n < blob.len(),
        "a pull cut by the bucket's death read {n} of {} bytes and ended without an error",
        blob.len()
    );
    garage.resume();
}

/// Two nodes' metadata stores on one new PostgreSQL database (its cluster, kept alive by the
/// caller), with statements bounded by `timeout`.
fn two_stores(
    timeout: Duration,
) -> (
    PgCluster,
    berth::store::MetadataStore,
    berth::store::MetadataStore,
) {
    use berth::store::{MetadataStore, PgOptions};
    let pg = PgCluster::start();
    let db = pg.create_database("berth");
    let open = || {
        MetadataStore::open_postgres(&PgOptions {
            url: db.clone(),
            pool_size: 4,
            statement_timeout: timeout,
        })
        .unwrap()
    };
    let (a, b) = (open(), open());
    (pg, a, b)
}

/// Scheduled GC and upload expiry run on one node at a time: the lease is a PostgreSQL session
/// lock (PostgreSQL frees it when the holder's connection dies, so a node killed with its lease
/// does not keep it), held by one node until it lets go and refused to another meanwhile. With
/// SQLite (one node) it is always granted.
#[test]
fn leases_go_to_one_node_at_a_time() {
    use berth::store::MetadataStore;
    let (_pg, a, b) = two_stores(Duration::from_secs(5));
    let held = a
        .try_lease("gc")
        .unwrap()
        .expect("the first node gets the lease");
    assert!(
        b.try_lease("gc").unwrap().is_none(),
        "two nodes held the gc lease"
    );
    // Another job's lease is independent.
    let expiry = b.try_lease("upload-expiry").unwrap();
    assert!(expiry.is_some());
    assert!(a.try_lease("upload-expiry").unwrap().is_none());
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if b.try_lease("gc").unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the released lease never came free"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(expiry);
    assert!(a.try_lease("upload-expiry").unwrap().is_some());
    // SQLite: one node, always granted.
    let tmp = tempfile::tempdir().unwrap();
    let lite = MetadataStore::open(&tmp.path().join("berth.db")).unwrap();
    let one = lite.try_lease("gc").unwrap();
    assert!(one.is_some() && lite.try_lease("gc").unwrap().is_some());
}

/// A policy change or a rotation on one node reaches the other within the revocation bound:
/// its cached grants and remembered logins, and the registry tokens it issued.
#[tokio::test(flavor = "multi_thread")]
async fn policy_changes_and_rotations_on_one_node_reach_the_other() {
    let p = two_nodes(Blobs::Directory);
    let admin_a = Api::admin(&p.a);
    admin_a
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    push_image(&client(), &p.a, "acme/app", "v1", 3).await;
    let t = robot_with_token(&admin_a, "acme", "ci", "Reader", json!({})).await;
    let (id, secret) = t.split_once(':').unwrap();
    // Node B answers the robot and remembers its login and grants; it issues a registry token.
    let token_b = |user: String, secret: String| {
        let b = &p.b;
        async move {
            basic_client(&user, &secret)
                .get(b.url("/token?service=berth&scope=repository:acme/app:pull"))
                .send()
                .await
                .unwrap()
        }
    };
    let r = token_b(id.to_owned(), secret.to_owned()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let bearer = v["token"].as_str().unwrap().to_owned();
    let pull_b = |jwt: String| {
        let b = &p.b;
        async move {
            anonymous_client()
                .get(b.url("/v2/acme/app/manifests/v1"))
                .header("authorization", format!("Bearer {jwt}"))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(pull_b(bearer.clone()).await, StatusCode::OK);
    // The binding is deleted on node A: B's bearer token and B's grants follow within the bound.
    admin_a
        .ok(
            "DELETE",
            "/orgs/acme/bindings/ci",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let start = std::time::Instant::now();
    loop {
        let st = pull_b(bearer.clone()).await;
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(st, StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "B still honours the binding"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = token_b(id.to_owned(), secret.to_owned()).await;
    let v: Value = r.json().await.unwrap();
    let fresh = v["token"].as_str().unwrap().to_owned();
    assert_eq!(
        pull_b(fresh).await,
        StatusCode::FORBIDDEN,
        "B's fresh token grants nothing"
    );
    // A person pulling with Basic on B (nothing B writes in between: no token, no audit row):
    // B's cached grants are dropped when the revocation log moves, not by B's own writes.
    admin_a
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "carol", "password": "carol-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    admin_a
        .ok(
            "PUT",
            "/orgs/acme/members/carol",
            Some(json!({"role": "member"})),
            StatusCode::OK,
        )
        .await;
    admin_a
        .ok(
            "PUT",
            "/orgs/acme/bindings/carol-r",
            Some(json!({"role": "Reader", "subject": "user/carol"})),
            StatusCode::CREATED,
        )
        .await;
    let basic_pull_b = || {
        let b = &p.b;
        async move {
            basic_client("carol", "carol-password-1")
                .get(b.url("/v2/acme/app/manifests/v1"))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(basic_pull_b().await, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(basic_pull_b().await, StatusCode::OK);
    admin_a
        .ok(
            "DELETE",
            "/orgs/acme/bindings/carol-r",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let start = std::time::Instant::now();
    loop {
        let st = basic_pull_b().await;
        if st == StatusCode::FORBIDDEN {
            break;
        }
        assert_eq!(st, StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "B still grants carol's binding"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The token is rotated with no overlap on A: B refuses the old secret within the bound.
    admin_a
        .ok(
            "POST",
            &format!("/orgs/acme/robots/ci/tokens/{id}/rotate"),
            Some(json!({"overlap": "0"})),
            StatusCode::OK,
        )
        .await;
    let start = std::time::Instant::now();
    loop {
        let st = token_b(id.to_owned(), secret.to_owned()).await.status();
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(st, StatusCode::OK);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "B still takes the old secret"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The port of an engine's URL (`postgres://…@127.0.0.1:PORT/db`, `http://127.0.0.1:PORT`).
fn port_of(url: &str) -> u16 {
    let after = url.rsplit_once("127.0.0.1:").unwrap().1;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A request's answer while a store is faulty: 503 with `Retry-After` and the OCI error,
/// within `within`.
async fn assert_503_within(req: reqwest::RequestBuilder, within: Duration, what: &str) {
    let started = Instant::now();
    let r = req.send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(r.headers()["retry-after"], "1", "{what}");
    let body = r.text().await.unwrap();
    assert!(
        body.contains("unavailable") || body.contains("UNAVAILABLE"),
        "{what}: {body}"
    );
    eprintln!("{what}: 503 after {took:?}");
    assert!(took < within, "{what} took {took:?}");
}

/// PostgreSQL and Garage behind the tests' fault proxy: stalled, cut mid-request, and (S3)
/// answering 500 and 503 SlowDown. Every request gets a bounded 503 with `Retry-After` (or, for a
/// body already under way, a broken body, never a wrong one); when the faults end berth recovers
/// by itself, every acknowledged write is there, and it holds no more engine connections than its
/// pools allow.
#[tokio::test(flavor = "multi_thread")]
async fn faults_between_berth_and_its_engines_answer_503_and_heal_by_themselves() {
    use crate::support::faultproxy::{Fault, FaultProxy};
    let pg = PgCluster::start();
    let db = pg.create_database("berth");
    let garage = Garage::start();
    let pgp = FaultProxy::start(([127, 0, 0, 1], port_of(&db)).into());
    let s3p = FaultProxy::start(([127, 0, 0, 1], port_of(&garage.endpoint())).into());
    let db_via = db.replace(
        &format!(":{}/", port_of(&db)),
        &format!(":{}/", pgp.addr.port()),
    );
    let mut env = node_env(&db_via);
    for (k, v) in garage.env("faults") {
        let v = if k == "BERTH_S3_ENDPOINT" {
            format!("http://{}", s3p.addr)
        } else {
            v
        };
        env.push((k, v));
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        &tmp.path().join("data"),
        &["--database-timeout", "2s", "--s3-timeout", "2s"],
        env,
    );
    let c = client();
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let (digest, body) = push_image(&c, &s, "acme/app", &format!("v{i}"), 950 + i).await;
        acknowledged.push((format!("v{i}"), digest, body));
    }
    let big = random_bytes(24 << 20, 960);
    let big_d = push_blob(&c, &s, "acme/app", &big).await;
    let blob_get = |d: &str| c.get(s.url(&format!("/v2/acme/app/blobs/{d}")));
    let bound = Duration::from_secs(20);

    // S3 answers 503 SlowDown, then 500: blob reads and writes get 503; manifests (in the
    // database) are served.
    for status in [503, 500] {
        s3p.set(Fault::Http(status));
        assert_503_within(blob_get(&big_d), bound, &format!("blob GET, S3 {status}")).await;
        // Above the 16 KiB a blob's row keeps: it goes to the bucket.
        let refused = random_bytes(16 * 1024 + 1, if status == 503 { 961 } else { 962 });
        let push = c
            .post(s.url(&format!(
                "/v2/acme/app/blobs/uploads/?digest={}",
                sha256(&refused)
            )))
            .body(refused.clone());
        assert_503_within(push, bound, &format!("blob push, S3 {status}")).await;
        let r = c
            .get(s.url("/v2/acme/app/manifests/v0"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    // S3 stalls: bounded by the S3 timeout and its retries.
    s3p.set(Fault::Stall);
    assert_503_within(blob_get(&big_d), bound, "blob GET, S3 stalled").await;

    // S3 cut mid-body: the body under way breaks (never completes wrong); the next GET is a 503.
    s3p.set(Fault::Pass);
    let mut r = blob_get(&big_d).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.len() < big.len());
    s3p.set(Fault::Cut);
    let mut got = first.len();
    let broke = loop {
        match r.chunk().await {
            Ok(Some(b)) => got += b.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        broke || got < big.len(),
        "a cut body completed: {got} bytes"
    );
    assert_503_within(blob_get(&big_d), bound, "blob GET, S3 cut").await;

    // PostgreSQL cut, then stalled: manifest reads and the API get 503 within the database
    // timeout. (A login verified moments ago may still get a token: the node's cache.)
    s3p.set(Fault::Pass);
    for fault in [Fault::Cut, Fault::Stall] {
        pgp.set(fault);
        let manifest = c
            .get(s.url("/v2/acme/app/manifests/v1"))
            .header("accept", OCI_MANIFEST);
        assert_503_within(
            manifest,
            Duration::from_secs(8),
            &format!("manifest GET, PG {fault:?}"),
        )
        .await;
        let api = c.get(s.url("/api/v1/orgs"));
        assert_503_within(api, Duration::from_secs(8), &format!("API, PG {fault:?}")).await;
    }

    // The faults end: berth recovers by itself, and nothing acknowledged is lost.
    pgp.set(Fault::Pass);
    wait_until_ready(&s, Duration::from_secs(60)).await;
    for (tag, digest, body) in &acknowledged {
        let r = c
            .get(s.url(&format!("/v2/acme/app/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{tag}");
        assert_eq!(
            r.headers()["docker-content-digest"].to_str().unwrap(),
            digest
        );
        assert_eq!(&r.text().await.unwrap(), body);
    }
    let r = blob_get(&big_d).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), big_d);
    push_image(&c, &s, "acme/app", "after", 970).await;
    // No connection leaked: at most the pool's 16 to PostgreSQL, a handful to S3.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!(
        "after the faults: {} connections to PostgreSQL, {} to S3",
        pgp.open_upstream(),
        s3p.open_upstream()
    );
    assert!(pgp.open_upstream() <= 16, "{}", pgp.open_upstream());
    assert!(s3p.open_upstream() <= 16, "{}", s3p.open_upstream());
}

/// PostgreSQL, then Garage, restarted while two nodes take pushes: writes in the gap get 503 (or
/// fail on a dropped connection), never a 500; both nodes recover by themselves, every write
/// either node acknowledged is readable on both, and the pushes go on.
#[tokio::test(flavor = "multi_thread")]
async fn engines_restarted_under_load_on_two_nodes_lose_nothing_acknowledged() {
    let mut p = two_nodes(Blobs::Bucket);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let bad: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut workers = Vec::new();
    for (w, base) in [p.a.base.clone(), p.b.base.clone()].into_iter().enumerate() {
        let (stop, acked, bad) = (stop.clone(), acked.clone(), bad.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                // Every other layer is over 16 KiB: an object in the bucket, not kept in its row.
                let len = if i.is_multiple_of(2) { 2000 } else { 20_000 };
                let layer = random_bytes(len, 7_000_000 + w as u64 * 100_000 + i);
                let ld = sha256(&layer);
                let r = c
                    .post(format!("{base}/v2/acme/load/blobs/uploads/?digest={ld}"))
                    .body(layer.clone())
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status() == StatusCode::CREATED => true,
                    Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => false,
                    Ok(r) => {
                        bad.lock()
                            .unwrap()
                            .push(format!("blob push: {}", r.status()));
                        false
                    }
                    Err(_) => false,
                };
                if !ok {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let cfg = push_blob_to(&c, &base, b"{\"os\":\"linux\"}").await;
                let Some(cfg) = cfg else { continue };
                let tag = format!("n{w}-{i}");
                let body = image_manifest((&cfg, 14), &[(&ld, layer.len())]);
                match c
                    .put(format!("{base}/v2/acme/load/manifests/{tag}"))
                    .header("content-type", OCI_MANIFEST)
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        acked.lock().unwrap().push((tag, body));
                    }
                    Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {}
                    Ok(r) => bad
                        .lock()
                        .unwrap()
                        .push(format!("manifest put: {}", r.status())),
                    Err(_) => {}
                }
            }
        }));
    }
    let count = || acked.lock().unwrap().len();
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "pushes did not go on");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(20).await;
    p._pg.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    p._pg.resume();
    wait_until_ready(&p.a, Duration::from_secs(60)).await;
    wait_until_ready(&p.b, Duration::from_secs(60)).await;
    wait_for(count() + 20).await;
    let garage = p._garage.as_mut().unwrap();
    garage.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    garage.resume();
    wait_until_ready(&p.a, Duration::from_secs(60)).await;
    wait_until_ready(&p.b, Duration::from_secs(60)).await;
    wait_for(count() + 20).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let bad = bad.lock().unwrap().clone();
    assert!(bad.is_empty(), "answers other than 201 and 503: {bad:?}");
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} manifests acknowledged across two engine restarts",
        acked.len()
    );
    let c = client();
    for s in [&p.a, &p.b] {
        for (tag, body) in &acked {
            let r = c
                .get(s.url(&format!("/v2/acme/load/manifests/{tag}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{tag} on {}", s.base);
            assert_eq!(&r.text().await.unwrap(), body);
        }
    }
}

/// A monolithic blob push to `base`; its digest, or `None` when the node refused it.
async fn push_blob_to(c: &reqwest::Client, base: &str, bytes: &[u8]) -> Option<String> {
    let d = sha256(bytes);
    let r = c
        .post(format!("{base}/v2/acme/load/blobs/uploads/?digest={d}"))
        .body(bytes.to_vec())
        .send()
        .await
        .ok()?;
    (r.status() == StatusCode::CREATED).then_some(d)
}

/// Two nodes started at the same moment on an empty database both come up (found by the soak:
/// both made the server admin, and the loser exited), with one admin whose password works on both.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_started_together_on_an_empty_database_both_come_up() {
    let pg = PgCluster::start();
    for round in 0..3 {
        let db = pg.create_database(&format!("together{round}"));
        let tmp = tempfile::tempdir().unwrap();
        let starts: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|n| {
                let (data, env) = (tmp.path().join(n), node_env(&db));
                std::thread::spawn(move || Server::start_with(&data, &[], env))
            })
            .collect();
        let nodes: Vec<Server> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        for s in &nodes {
            let (st, body) = Api::admin(s).get("/auth/whoami").await;
            assert_eq!(st, StatusCode::OK, "{body}");
            assert_eq!(body["name"], "admin");
        }
    }
}

/// What node `s` answers for manifest `reference` of `repo`: its status and body.
async fn manifest_at(s: &Server, repo: &str, reference: &str) -> (StatusCode, String) {
    let r = client()
        .get(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Waits until `node` answers `want` (status, and body when given), accepting only `before` on
/// the way; returns how long it took.
async fn settles(
    node: &Server,
    what: (&str, &str),
    before: &(StatusCode, String),
    want: &(StatusCode, String),
) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = manifest_at(node, what.0, what.1).await;
        if got.0 == want.0 && (want.0 != StatusCode::OK || got.1 == want.1) {
            return t0.elapsed();
        }
        assert_eq!(got.0, before.0, "neither before nor after: {}", got.1);
        if before.0 == StatusCode::OK {
            assert_eq!(got.1, before.1, "neither before nor after");
        }
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "{} {}: served stale past the bound",
            what.0,
            what.1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each node caches manifests and blob links (`store/cache`): a tag moved or deleted, a manifest
/// or a blob deleted on node A is never served by node B beyond its next read of the revocation
/// log (about a second), and node A itself serves the change at once. A new tag is visible on
/// both at once.
#[tokio::test]
async fn a_deleted_or_moved_tag_is_not_served_stale_by_another_node() {
    let p = two_nodes(Blobs::Directory);
    let (a, b, c) = (&p.a, &p.b, client());
    let admin = Api::admin(a);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "cache"})),
            StatusCode::CREATED,
        )
        .await;
    let repo = "cache/app";
    let (d1, m1) = push_image(&c, a, repo, "t", 1).await;
    let ok = |body: &str| (StatusCode::OK, body.to_owned());
    let gone = (StatusCode::NOT_FOUND, String::new());
    // B reads (and caches) the tag, the manifest by digest and a layer's link.
    let layer = {
        let m: Value = serde_json::from_str(&m1).unwrap();
        m["layers"][0]["digest"].as_str().unwrap().to_owned()
    };
    let head_b = || {
        let (c, url) = (c.clone(), b.url(&format!("/v2/{repo}/blobs/{layer}")));
        async move { c.head(url).send().await.unwrap().status() }
    };
    // So does A, which must serve its own changes at once.
    for _ in 0..3 {
        for node in [a, b] {
            assert_eq!(manifest_at(node, repo, "t").await, ok(&m1));
            assert_eq!(manifest_at(node, repo, &d1).await, ok(&m1));
        }
        assert_eq!(head_b().await, StatusCode::OK);
    }
    let mut worst = Duration::ZERO;

    // The tag moves on A.
    let (_, m2) = push_image(&c, a, repo, "t", 2).await;
    assert_eq!(manifest_at(a, repo, "t").await, ok(&m2), "A at once");
    worst = worst.max(settles(b, (repo, "t"), &ok(&m1), &ok(&m2)).await);
    // A tag pushed on A is on B at once (nothing absent is cached).
    let (_, m3) = push_image(&c, a, repo, "new", 3).await;
    assert_eq!(manifest_at(b, repo, "new").await, ok(&m3), "B at once");

    // The tag is deleted on A (both have just read it again).
    for node in [a, b] {
        assert_eq!(manifest_at(node, repo, "t").await, ok(&m2));
    }
    let r = c
        .delete(a.url(&format!("/v2/{repo}/manifests/t")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(manifest_at(a, repo, "t").await.0, StatusCode::NOT_FOUND);
    worst = worst.max(settles(b, (repo, "t"), &ok(&m2), &gone).await);

    // The first manifest is deleted by digest on A.
    for node in [a, b] {
        assert_eq!(manifest_at(node, repo, &d1).await, ok(&m1));
    }
    let r = c
        .delete(a.url(&format!("/v2/{repo}/manifests/{d1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(manifest_at(a, repo, &d1).await.0, StatusCode::NOT_FOUND);
    worst = worst.max(settles(b, (repo, &d1), &ok(&m1), &gone).await);

    // A layer is unlinked on A: B's HEAD follows.
    assert_eq!(head_b().await, StatusCode::OK);
    let r = c
        .delete(a.url(&format!("/v2/{repo}/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let t0 = Instant::now();
    while head_b().await == StatusCode::OK {
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "B kept the link"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(head_b().await, StatusCode::NOT_FOUND);
    worst = worst.max(t0.elapsed());

    // The repository is deleted on A (through the API): B follows.
    assert_eq!(manifest_at(b, repo, "new").await, ok(&m3));
    admin
        .ok(
            "DELETE",
            &format!("/orgs/cache/repositories/{repo}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    worst = worst.max(settles(b, (repo, "new"), &ok(&m3), &gone).await);
    eprintln!("the longest B served a change late: {worst:?}");
}

/// Content writes of several nodes run side by side (`Lane::Content`), not one at a time: upload
/// sessions and pushes racing to create the same new repositories on two nodes all succeed, and
/// one tag moved over
/// and over on both nodes at once ends naming one manifest, which both nodes serve within the
/// cache's bound, while the manifests it named stay pullable by digest.
#[tokio::test(flavor = "multi_thread")]
async fn content_writes_of_two_nodes_run_side_by_side_and_agree() {
    let p = two_nodes(Blobs::Directory);
    let c = client();
    // Upload sessions opened at once, from both nodes, in repositories that do not exist yet.
    let mut posts = Vec::new();
    for k in 0..64usize {
        let url = [&p.a, &p.b][k % 2].url(&format!("/v2/race/fresh{}/blobs/uploads/", k / 8));
        let c = c.clone();
        posts.push(async move { c.post(url).send().await.unwrap().status() });
    }
    for status in futures_util::future::join_all(posts).await {
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let mut pushes = Vec::new();
    for k in 0..16u64 {
        let (c, node) = (c.clone(), if k % 2 == 0 { &p.a } else { &p.b });
        pushes.push(async move {
            push_image(
                &c,
                node,
                &format!("race/new{}", k % 4),
                &format!("v{k}"),
                1200 + k,
            )
            .await
        });
    }
    let pushed = futures_util::future::join_all(pushes).await;
    for (k, (d, body)) in pushed.iter().enumerate() {
        let repo = format!("race/new{}", k % 4);
        for node in [&p.a, &p.b] {
            assert_eq!(
                manifest_at(node, &repo, &format!("v{k}")).await,
                (StatusCode::OK, body.clone()),
                "{repo}:v{k} on {}",
                node.base
            );
            assert_eq!(manifest_at(node, &repo, d).await.0, StatusCode::OK);
        }
    }
    // Both nodes read (and cache) the tag, then it moves eight times at once, from both.
    let (_, first) = push_image(&c, &p.a, "race/hot", "t", 1300).await;
    for node in [&p.a, &p.b] {
        assert_eq!(manifest_at(node, "race/hot", "t").await.1, first);
    }
    let mut moves = Vec::new();
    for k in 0..8u64 {
        let (c, node) = (c.clone(), if k % 2 == 0 { &p.a } else { &p.b });
        moves.push(async move { push_image(&c, node, "race/hot", "t", 1301 + k).await });
    }
    let moved = futures_util::future::join_all(moves).await;
    let t0 = Instant::now();
    loop {
        let (sa, ba) = manifest_at(&p.a, "race/hot", "t").await;
        let (sb, bb) = manifest_at(&p.b, "race/hot", "t").await;
        assert_eq!((sa, sb), (StatusCode::OK, StatusCode::OK));
        if ba == bb && ba != first {
            assert!(
                moved.iter().any(|(_, m)| *m == ba),
                "the tag names a manifest no push gave it"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "the nodes disagree on the tag past the bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (d, body) in &moved {
        for node in [&p.a, &p.b] {
            assert_eq!(
                manifest_at(node, "race/hot", d).await,
                (StatusCode::OK, body.clone())
            );
        }
    }
}

/// PostgreSQL's write lock has two lanes (`store/postgres`): while a content write of one node
/// that added to the revocation log is open, another node's content write that does not touch
/// the log commits at once (the lane is shared); a manifest PUT in the same repository waits
/// for it (the repository's lock), one in another does not; one that adds to the log waits for
/// the first's commit (the log's sequence numbers commit in order, so no reader skips one); an
/// exclusive write waits for all of them.
#[test]
fn content_writes_share_the_write_lock_and_the_log_commits_in_order() {
    use berth::store::{Error, MetadataStore};
    use std::sync::mpsc;
    let (_pg, a, b) = two_stores(Duration::from_secs(20));
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        a.write_content(|w| {
            w.delete_tag("one/app", "t")?;
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            Ok::<_, Error>(())
        })
        .unwrap();
    });
    held_rx.recv().unwrap();
    let t0 = Instant::now();
    b.write_content(|w| w.ensure_repo("two/app").map(drop))
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a content write waited {:?} for another node's",
        t0.elapsed()
    );
    // A manifest PUT (with its tag) in the repository the open write changed waits for it (the
    // repository's lock); one in another repository does not.
    let put = |store: MetadataStore, repo: &'static str| {
        std::thread::spawn(move || {
            let content = format!("{{\"repo\":\"{repo}\"}}");
            let digest: berth::types::Digest = sha256(content.as_bytes()).parse().unwrap();
            let m = berth::store::NewManifest {
                digest: &digest,
                media_type: "application/vnd.oci.image.manifest.v1+json",
                artifact_type: None,
                subject: None,
                annotations: None,
                content: content.as_bytes(),
                blob_refs: &[],
                manifest_refs: &[],
            };
            let missing = store
                .write_content(|w| w.put_manifest(repo, &m, Some("t")))
                .unwrap();
            assert!(missing.is_none());
        })
    };
    let same = put(b.clone(), "one/app");
    let t0 = Instant::now();
    put(b.clone(), "two/app").join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a manifest PUT waited for another repository's write"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !same.is_finished(),
        "a manifest PUT ran beside an open write of its repository"
    );
    let b2 = b.clone();
    let logger = std::thread::spawn(move || {
        b2.write_content(|w| w.delete_tag("two/app", "t")).unwrap();
    });
    let b3 = b.clone();
    let exclusive = std::thread::spawn(move || {
        b3.write(|w| w.ensure_repo("three/app").map(drop)).unwrap();
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !logger.is_finished(),
        "a second addition to the log committed before the first"
    );
    assert!(
        !exclusive.is_finished(),
        "an exclusive write ran beside a content write"
    );
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    same.join().unwrap();
    logger.join().unwrap();
    exclusive.join().unwrap();
}

/// Upload sessions that die with their server leave multipart uploads in the bucket: once they
/// expire, the server's expiry (after a restart) and garbage collection (with the server down)
/// abort them, so the bucket keeps no incomplete upload (Garage's own count) and no part.
#[tokio::test(flavor = "multi_thread")]
async fn multipart_uploads_of_dead_sessions_are_aborted() {
    let garage = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut env = garage.env("single");
    env.push(("BERTH_UPLOAD_TTL".into(), "2s".into()));
    let mut s = Server::start_with(&tmp.path().join("data"), &[], env);
    let c = client();
    // Garage's bucket information names unfinished multipart uploads only when there are some.
    let incomplete = || {
        let info = garage.cli(&["bucket", "info", "berth"]);
        info.lines()
            .find(|l| l.to_lowercase().contains("multipart uploads"))
            .map_or(0, |l| {
                l.split_whitespace()
                    .find_map(|w| w.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no count in {l:?}"))
            })
    };
    async fn start_sessions(c: &reqwest::Client, s: &Server, n: u64, seed: u64) {
        for i in 0..n {
            let r = c
                .post(s.url("/v2/acme/dead/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let loc = location(&r);
            let r = c
                .patch(at(s, &loc))
                .header("Content-Type", "application/octet-stream")
                .body(random_bytes(6 * 1024 * 1024, seed + i))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
        }
    }
    assert_eq!(incomplete(), 0);
    // The server's own expiry, after a crash and a restart.
    start_sessions(&c, &s, 3, 1400).await;
    assert_eq!(incomplete(), 3, "the chunks started no multipart upload");
    s.kill9();
    s.restart();
    let t0 = Instant::now();
    while incomplete() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "a dead session's multipart upload survived its expiry by the server"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Garbage collection, with the server down.
    start_sessions(&c, &s, 2, 1500).await;
    assert_eq!(incomplete(), 2);
    s.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report: Value = serde_json::from_str(&run(s
        .server_command(&["gc"])
        .args(["--grace", "0s", "--json"])))
    .unwrap();
    assert_eq!(report["uploads_removed"], 2, "{report}");
    assert_eq!(
        incomplete(),
        0,
        "a dead session's multipart upload survived garbage collection"
    );
}

/// Pulls from a bucket whose clients stop reading cannot make the node hold their blobs: each
/// holds a few chunks, so 32 stalled pulls of a 41 MiB blob leave the server's memory within a
/// fixed ceiling (measured: about 2 MiB each), and a pull after them still gets every byte.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_pulls_from_a_bucket_hold_a_few_chunks_each() {
    use futures_util::StreamExt as _;
    let garage = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with(&tmp.path().join("data"), &[], garage.env("single"));
    let c = client();
    let blob = random_bytes(41 * 1024 * 1024, 1600);
    let d = push_blob(&c, &s, "acme/big", &blob).await;
    let url = s.url(&format!("/v2/acme/big/blobs/{d}"));
    let rss = || {
        std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss();
    let mut stalled = Vec::new();
    for _ in 0..32 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut body = r.bytes_stream();
        body.next().await.unwrap().unwrap();
        stalled.push(body);
    }
    // Let every stalled pull fill what it may.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss();
    eprintln!("server RSS {before} KiB before, {during} KiB with 32 stalled pulls");
    assert!(
        during.saturating_sub(before) < 96 * 1024,
        "32 stalled pulls took the server from {before} to {during} KiB"
    );
    let got = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&got), d);
    drop(stalled);
}
