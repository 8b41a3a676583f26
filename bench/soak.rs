//! The soak: mixed traffic for a long time (`SOAK_SECS`, default 1800) on two berth nodes over
//! PostgreSQL + Garage and, at the same time, on one node of the embedded default. Each backend
//! gets pushes, pulls, registry tokens, workload token exchanges (RFC 8693), management calls,
//! console pages, skopeo copies and a garbage collection every few minutes. Every 10 s it samples
//! each node's RSS and open file descriptors and each operation's p99 latency and errors; at the
//! end it states the RSS and fd slopes after warm-up and writes `bench/results/soak-*.json`
//! (plotted by `bench/soak_plot.py`). Any answer that is not the workload's intent is an error.
//!
//! Run: `bash bench/soak.sh` (builds the release binary, runs this, plots the result).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/engines.rs"]
mod engines;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ADMIN_PW: &str = "soak-admin-password-0123";
const SECRET: &str = "soak-secret-key-that-seals-signing-keys-0123456789";
const ISSUER: &str = "https://issuer.soak.example";

fn berth_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/berth")
}

struct Node {
    name: String,
    base: String,
    child: Child,
    data: PathBuf,
    env: Vec<(String, String)>,
}

impl Node {
    fn start(name: &str, data: &Path, env: &[(String, String)]) -> Node {
        let port = engines::free_port();
        let child = Command::new(berth_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log",
                "warn",
            ])
            .arg("--data-dir")
            .arg(data)
            .env("BERTH_ADMIN_PASSWORD", ADMIN_PW)
            .env("BERTH_ALLOW_PRIVATE_ISSUERS", "true")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("target/release/berth (run `cargo build --release` first)");
        Node {
            name: name.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            child,
            data: data.to_owned(),
            env: env.to_vec(),
        }
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

async fn wait_ready(base: &str) {
    let c = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = c.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready");
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Latencies and errors of one backend's operations, per sampling window.
#[derive(Default)]
struct Window {
    ms: BTreeMap<&'static str, Vec<f64>>,
    errors: BTreeMap<&'static str, u64>,
    error_text: Vec<String>,
}

#[derive(Clone)]
struct Recorder(Arc<Mutex<Window>>);

impl Recorder {
    fn ok(&self, op: &'static str, since: Instant) {
        let ms = since.elapsed().as_secs_f64() * 1000.0;
        self.0.lock().unwrap().ms.entry(op).or_default().push(ms);
    }

    fn err(&self, op: &'static str, what: String) {
        let mut w = self.0.lock().unwrap();
        *w.errors.entry(op).or_default() += 1;
        if w.error_text.len() < 20 {
            w.error_text.push(format!("{op}: {what}"));
        }
    }

    /// Records `r`'s outcome: `want` is the workload's intended status.
    async fn check(
        &self,
        op: &'static str,
        since: Instant,
        r: reqwest::Result<reqwest::Response>,
        want: u16,
    ) -> Option<reqwest::Response> {
        match r {
            Ok(r) if r.status().as_u16() == want => {
                self.ok(op, since);
                Some(r)
            }
            Ok(r) => {
                let st = r.status();
                let body = r.text().await.unwrap_or_default();
                self.err(
                    op,
                    format!("{st} {}", body.chars().take(200).collect::<String>()),
                );
                None
            }
            Err(e) => {
                self.err(op, e.to_string());
                None
            }
        }
    }

    fn take(&self) -> Window {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

/// One backend under test: its nodes (requests go round robin) and the workload's credentials.
struct Backend {
    name: &'static str,
    nodes: Vec<Node>,
    robot_basic: String,
    jwt: Arc<dyn Fn() -> String + Send + Sync>,
    console_cookie: String,
}

async fn setup(name: &'static str, nodes: Vec<Node>, signer: &Arc<Signer>) -> Res<Backend> {
    for n in &nodes {
        wait_ready(&n.base).await;
    }
    let base = nodes[0].base.clone();
    let admin = reqwest::Client::new();
    let api = |p: &str| format!("{base}/api/v1{p}");
    let r = admin
        .post(api("/orgs"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"name": "soak"}))
        .send()
        .await?;
    if r.status() != 201 {
        return Err(format!("create org: {}", r.status()).into());
    }
    for (robot, role) in [("pusher", "Manager"), ("puller", "Reader")] {
        let r = admin
            .post(api("/orgs/soak/robots"))
            .basic_auth("admin", Some(ADMIN_PW))
            .json(&json!({"name": robot}))
            .send()
            .await?;
        if r.status() != 201 {
            return Err(format!("create robot: {}", r.status()).into());
        }
        admin
            .put(api(&format!("/orgs/soak/bindings/{robot}")))
            .basic_auth("admin", Some(ADMIN_PW))
            .json(&json!({"role": role, "subject": format!("robot/{robot}")}))
            .send()
            .await?;
    }
    let r = admin
        .post(api("/orgs/soak/robots/pusher/tokens"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"name": "t"}))
        .send()
        .await?;
    let t: Value = r.json().await?;
    let robot_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            t["accessId"].as_str().unwrap(),
            t["token"].as_str().unwrap()
        ))
    );
    let r = admin
        .post(api("/orgs/soak/robots/puller/trusts"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({
            "name": "ci", "issuer": ISSUER, "subject": "system:serviceaccount:ci:*",
            "audience": "berth", "jwks": signer.jwks.to_string(),
        }))
        .send()
        .await?;
    if r.status() != 201 {
        return Err(format!("create trust: {} {}", r.status(), r.text().await?).into());
    }
    // A console user.
    admin
        .post(api("/users"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"name": "viewer", "password": "viewer-password-0123"}))
        .send()
        .await?;
    admin
        .put(api("/orgs/soak/members/viewer"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"role": "member"}))
        .send()
        .await?;
    admin
        .put(api("/orgs/soak/bindings/viewer"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"role": "Reader", "subject": "user/viewer"}))
        .send()
        .await?;
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .post(format!("{base}/ui/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "viewer"), ("password", "viewer-password-0123")])
        .send()
        .await?;
    let console_cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .ok_or("console sign-in refused")?
        .to_owned();
    let s = signer.clone();
    Ok(Backend {
        name,
        nodes,
        robot_basic,
        jwt: Arc::new(move || s.sign()),
        console_cookie,
    })
}

/// A workload identity provider of the soak's own: berth's key code signs its JWTs.
struct Signer {
    tokens: berth::auth::token::TokenService,
    jwks: Value,
}

impl Signer {
    fn new(dir: &Path) -> Signer {
        let keys = berth::auth::keys::Keys::open(dir).unwrap();
        let jwks = keys.jwks();
        Signer {
            tokens: berth::auth::token::TokenService::new(
                keys,
                ISSUER.into(),
                Duration::from_secs(600),
            ),
            jwks,
        }
    }

    fn sign(&self) -> String {
        self.tokens
            .issue(
                "system:serviceaccount:ci:builder",
                "berth",
                Vec::new(),
                Vec::new(),
            )
            .unwrap()
            .0
    }
}

/// Runs every operation of the workload against `b` until `deadline`.
async fn workload(b: Arc<Backend>, rec: Recorder, deadline: Instant, tmp: PathBuf) {
    let mut tasks = Vec::new();
    // Readers start once the first image is there (a pull before it is a 404 by intent).
    let pushed = Arc::new(tokio::sync::Notify::new());
    let bases: Vec<String> = b.nodes.iter().map(|n| n.base.clone()).collect();
    let pick = move |i: u64| bases[i as usize % bases.len()].clone();
    let every = |ms: u64| tokio::time::interval(Duration::from_millis(ms));

    // Pushes: a 64 KiB layer and a manifest under a new tag; tags older than 100 are removed, so
    // garbage collection has something to take and storage stays level.
    {
        let (b, rec, pick, pushed) = (b.clone(), rec.clone(), pick.clone(), pushed.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let cfg = b"{\"os\":\"linux\"}".to_vec();
            let mut tick = every(200);
            let mut i = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                i += 1;
                let base = pick(i);
                let layer = random(64 * 1024, i);
                let t = Instant::now();
                let mut ok = true;
                for blob in [&cfg, &layer] {
                    let r = c
                        .post(format!("{base}/v2/soak/app/blobs/uploads/?digest={}", sha(blob)))
                        .header("authorization", &b.robot_basic)
                        .body(blob.clone())
                        .send()
                        .await;
                    ok &= rec.check("push_blob", t, r, 201).await.is_some();
                }
                if !ok {
                    continue;
                }
                let m = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&cfg), "size": cfg.len()},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer), "size": layer.len()}],
                })
                .to_string();
                let t = Instant::now();
                let r = c
                    .put(format!("{base}/v2/soak/app/manifests/t{i}"))
                    .header("authorization", &b.robot_basic)
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(m.clone())
                    .send()
                    .await;
                rec.check("push_manifest", t, r, 201).await;
                let t = Instant::now();
                let r = c
                    .put(format!("{base}/v2/soak/app/manifests/latest"))
                    .header("authorization", &b.robot_basic)
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(m)
                    .send()
                    .await;
                if rec.check("push_manifest", t, r, 201).await.is_some() {
                    pushed.notify_waiters();
                    pushed.notify_one();
                }
                if i > 100 {
                    let t = Instant::now();
                    let r = c
                        .delete(format!("{base}/v2/soak/app/manifests/t{}", i - 100))
                        .header("authorization", &b.robot_basic)
                        .send()
                        .await;
                    rec.check("untag", t, r, 202).await;
                }
            }
        }));
    }
    // Pulls: the latest manifest and its layer, with a registry token from /token.
    for k in 0..2u64 {
        let (b, rec, pick, pushed) = (b.clone(), rec.clone(), pick.clone(), pushed.clone());
        tasks.push(tokio::spawn(async move {
            pushed.notified().await;
            let c = reqwest::Client::new();
            let mut tick = every(50);
            let mut i = k;
            while Instant::now() < deadline {
                tick.tick().await;
                i += 2;
                let base = pick(i);
                let t = Instant::now();
                let r = c
                    .get(format!(
                        "{base}/token?service=berth&scope=repository:soak/app:pull"
                    ))
                    .header("authorization", &b.robot_basic)
                    .send()
                    .await;
                let Some(r) = rec.check("token", t, r, 200).await else {
                    continue;
                };
                let token = r.json::<Value>().await.unwrap()["token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let t = Instant::now();
                let r = c
                    .get(format!("{base}/v2/soak/app/manifests/latest"))
                    .bearer_auth(&token)
                    .header("accept", "application/vnd.oci.image.manifest.v1+json")
                    .send()
                    .await;
                let Some(r) = rec.check("pull_manifest", t, r, 200).await else {
                    continue;
                };
                let m: Value = r.json().await.unwrap_or_default();
                let Some(layer) = m["layers"][0]["digest"].as_str() else {
                    continue;
                };
                let t = Instant::now();
                let r = c
                    .get(format!("{base}/v2/soak/app/blobs/{layer}"))
                    .bearer_auth(&token)
                    .send()
                    .await;
                if let Some(r) = rec.check("pull_blob", t, r, 200).await
                    && r.bytes().await.map(|b| sha(&b)).ok().as_deref() != Some(layer)
                {
                    rec.err("pull_blob", format!("{layer}: wrong bytes"));
                }
            }
        }));
    }
    // Workload token exchanges (RFC 8693) for the puller robot.
    {
        let (b, rec, pick) = (b.clone(), rec.clone(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut tick = every(500);
            let mut i = 0;
            while Instant::now() < deadline {
                tick.tick().await;
                i += 1;
                let jwt = (b.jwt)();
                let t = Instant::now();
                let r = c
                    .post(format!("{}/token", pick(i)))
                    .form(&[
                        (
                            "grant_type",
                            "urn:ietf:params:oauth:grant-type:token-exchange",
                        ),
                        ("subject_token", jwt.as_str()),
                        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                        ("client_id", "soak/puller"),
                        ("scope", "repository:soak/app:pull"),
                    ])
                    .send()
                    .await;
                rec.check("exchange", t, r, 200).await;
            }
        }));
    }
    // Management: a robot made, listed and deleted; the org's credentials listed.
    {
        let (rec, pick) = (rec.clone(), pick.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut tick = every(1000);
            let mut i = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                i += 1;
                let api = |p: &str| format!("{}/api/v1{p}", pick(i));
                let name = format!("temp-{i}");
                let calls = [
                    (
                        "POST",
                        "/orgs/soak/robots".to_owned(),
                        Some(json!({"name": name})),
                        201,
                    ),
                    ("GET", "/orgs/soak/robots".to_owned(), None, 200),
                    ("GET", "/orgs/soak/credentials".to_owned(), None, 200),
                    ("DELETE", format!("/orgs/soak/robots/{name}"), None, 204),
                ];
                for (method, path, body, status) in calls {
                    let mut req = c
                        .request(method.parse().unwrap(), api(&path))
                        .basic_auth("admin", Some(ADMIN_PW));
                    if let Some(body) = body {
                        req = req.json(&body);
                    }
                    let t = Instant::now();
                    rec.check("manage", t, req.send().await, status).await;
                }
            }
        }));
    }
    // Console pages of a signed-in member (the repository's page once it exists).
    {
        let (b, rec, pick, pushed) = (b.clone(), rec.clone(), pick.clone(), pushed.clone());
        tasks.push(tokio::spawn(async move {
            pushed.notified().await;
            let c = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut tick = every(1000);
            let mut i = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                i += 1;
                for page in [
                    "/ui/orgs/soak",
                    "/ui/orgs/soak/repositories",
                    "/ui/orgs/soak/repositories/soak/app",
                ] {
                    let t = Instant::now();
                    let r = c
                        .get(format!("{}{page}", pick(i)))
                        .header("cookie", &b.console_cookie)
                        .send()
                        .await;
                    rec.check("console", t, r, 200).await;
                }
            }
        }));
    }
    // A real client: skopeo copies the latest image out and back under another tag.
    {
        let (b, rec, pick, pushed) = (b.clone(), rec.clone(), pick.clone(), pushed.clone());
        tasks.push(tokio::spawn(async move {
            pushed.notified().await;
            let mut tick = every(60_000);
            let mut i = 0u64;
            let creds = {
                let raw = b.robot_basic.trim_start_matches("Basic ");
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .unwrap(),
                )
                .unwrap()
            };
            while Instant::now() < deadline {
                tick.tick().await;
                i += 1;
                let host = pick(i).trim_start_matches("http://").to_owned();
                let dir = tmp.join(format!("skopeo-{}-{i}", b.name));
                let copy = |creds: String, from: String, to: String| {
                    tokio::process::Command::new("skopeo")
                        .args([
                            "copy",
                            "--quiet",
                            "--src-tls-verify=false",
                            "--dest-tls-verify=false",
                        ])
                        .arg(creds)
                        .arg(from)
                        .arg(to)
                        .output()
                };
                let (image, layout) = (
                    format!("docker://{host}/soak/app:latest"),
                    format!("oci:{}:x", dir.display()),
                );
                let t = Instant::now();
                let out = copy(format!("--src-creds={creds}"), image, layout.clone())
                    .await
                    .unwrap();
                if !out.status.success() {
                    rec.err("skopeo", String::from_utf8_lossy(&out.stderr).into_owned());
                    continue;
                }
                let back = format!("docker://{host}/soak/copy:s{i}");
                let out = copy(format!("--dest-creds={creds}"), layout, back)
                    .await
                    .unwrap();
                let _ = std::fs::remove_dir_all(&dir);
                if out.status.success() {
                    rec.ok("skopeo", t);
                } else {
                    rec.err("skopeo", String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
        }));
    }
    // Garbage collection every 3 minutes, beside the running nodes.
    {
        let (b, rec) = (b.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = every(180_000);
            tick.tick().await;
            while Instant::now() < deadline {
                tick.tick().await;
                let n = &b.nodes[0];
                let t = Instant::now();
                let out = tokio::process::Command::new(berth_bin())
                    .args(["gc", "--json", "--grace", "1m", "--untagged"])
                    .arg("--data-dir")
                    .arg(&n.data)
                    .env("BERTH_ADMIN_PASSWORD", ADMIN_PW)
                    .envs(n.env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .await
                    .unwrap();
                if out.status.success() {
                    rec.ok("gc", t);
                    eprintln!(
                        "[{}] gc: {}",
                        b.name,
                        String::from_utf8_lossy(&out.stdout)
                            .chars()
                            .take(160)
                            .collect::<String>()
                    );
                } else {
                    rec.err("gc", String::from_utf8_lossy(&out.stderr).into_owned());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800);
    let warmup = (secs / 6).clamp(10, 300) as f64;
    let tmp = tempfile::tempdir()?;
    let signer = Arc::new(Signer::new(&tmp.path().join("issuer")));

    let pg = engines::PgCluster::start();
    let db = pg.create_database("berth");
    let garage = engines::Garage::start();
    let mut scaled_env = vec![
        ("BERTH_DATABASE_URL".to_owned(), db),
        ("BERTH_SECRET_KEY".to_owned(), SECRET.to_owned()),
    ];
    scaled_env.extend(garage.env("soak"));
    let scaled_nodes = vec![
        Node::start("pg-s3-a", &tmp.path().join("a"), &scaled_env),
        Node::start("pg-s3-b", &tmp.path().join("b"), &scaled_env),
    ];
    let embedded_nodes = vec![Node::start("embedded", &tmp.path().join("e"), &[])];
    let backends = vec![
        Arc::new(setup("pg+s3", scaled_nodes, &signer).await?),
        Arc::new(setup("embedded", embedded_nodes, &signer).await?),
    ];
    eprintln!("soak: {secs} s on {} backends", backends.len());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let recorders: Vec<Recorder> = backends.iter().map(|_| Recorder(Arc::default())).collect();
    let mut runs = Vec::new();
    for (b, rec) in backends.iter().zip(&recorders) {
        runs.push(tokio::spawn(workload(
            b.clone(),
            rec.clone(),
            deadline,
            tmp.path().to_owned(),
        )));
    }
    let mut samples = Vec::new();
    let mut totals: BTreeMap<String, (u64, u64, Vec<f64>)> = BTreeMap::new();
    let mut error_text = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    while Instant::now() < deadline {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        let mut sample = json!({ "t": t });
        for (b, rec) in backends.iter().zip(&recorders) {
            let mut w = rec.take();
            let mut ops = serde_json::Map::new();
            let names: Vec<&'static str> = w.ms.keys().chain(w.errors.keys()).copied().collect();
            for op in names {
                let lat = w.ms.entry(op).or_default();
                let errors = w.errors.get(op).copied().unwrap_or(0);
                let total = totals.entry(format!("{}/{op}", b.name)).or_default();
                total.0 += lat.len() as u64;
                total.1 += errors;
                total.2.extend(lat.iter().copied());
                ops.insert(
                    op.into(),
                    json!({ "n": lat.len(), "errors": errors, "p99_ms": p99(lat) }),
                );
            }
            error_text.extend(w.error_text.iter().map(|e| format!("[{}] {e}", b.name)));
            let nodes: Vec<Value> = b
                .nodes
                .iter()
                .map(|n| json!({ "node": n.name, "rss_kib": n.rss_kib(), "fds": n.fds() }))
                .collect();
            sample[b.name] = json!({ "ops": ops, "nodes": nodes });
        }
        let line: Vec<String> = backends
            .iter()
            .flat_map(|b| {
                b.nodes
                    .iter()
                    .map(move |n| format!("{} {} MiB {} fds", n.name, n.rss_kib() / 1024, n.fds()))
            })
            .collect();
        eprintln!("[{t:6.0}s] {}", line.join(", "));
        for e in error_text.iter().skip(error_text.len().saturating_sub(3)) {
            eprintln!("    error {e}");
        }
        samples.push(sample);
    }
    for r in runs {
        r.await?;
    }
    // Slopes after warm-up, per node, in KiB and fds per minute.
    let mut nodes_summary = Vec::new();
    for b in &backends {
        for (k, n) in b.nodes.iter().enumerate() {
            let pts: Vec<(f64, f64, f64)> = samples
                .iter()
                .filter(|s| s["t"].as_f64().unwrap() >= warmup)
                .map(|s| {
                    let node = &s[b.name]["nodes"][k];
                    (
                        s["t"].as_f64().unwrap() / 60.0,
                        node["rss_kib"].as_f64().unwrap(),
                        node["fds"].as_f64().unwrap(),
                    )
                })
                .collect();
            let xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
            let rss: Vec<f64> = pts.iter().map(|p| p.1).collect();
            let fds: Vec<f64> = pts.iter().map(|p| p.2).collect();
            nodes_summary.push(json!({
                "backend": b.name, "node": n.name,
                "rss_kib_first": rss.first(), "rss_kib_last": rss.last(),
                "rss_kib_max": rss.iter().copied().fold(0.0, f64::max),
                "rss_slope_kib_per_min": slope(&xs, &rss),
                "fds_first": fds.first(), "fds_last": fds.last(),
                "fds_slope_per_min": slope(&xs, &fds),
            }));
        }
    }
    let ops_summary: Vec<Value> = totals
        .iter_mut()
        .map(|(k, (n, e, lat))| {
            json!({ "op": k, "n": n, "errors": e,
                "error_rate": if *n + *e == 0 { 0.0 } else { *e as f64 / (*n + *e) as f64 },
                "p99_ms": p99(lat) })
        })
        .collect();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let result = json!({
        "kind": "soak", "seconds": secs, "warmup_seconds": warmup, "commit": commit,
        "date": chrono_free_date(),
        "nodes": nodes_summary, "ops": ops_summary, "errors": error_text, "samples": samples,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({"nodes": result["nodes"], "ops": result["ops"], "errors": result["errors"]})
        )?
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench/results")
        .join(format!(
            "soak-{}-{commit}.json",
            result["date"].as_str().unwrap()
        ));
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    eprintln!("wrote {}", out.display());
    // Stop the nodes and wait for them before the engines and directories go.
    for b in &backends {
        for n in &b.nodes {
            let _ = Command::new("kill").arg(n.child.id().to_string()).status();
        }
    }
    for b in &backends {
        for n in &b.nodes {
            while Path::new(&format!("/proc/{}/status", n.child.id())).exists()
                && std::fs::read_to_string(format!("/proc/{}/status", n.child.id()))
                    .is_ok_and(|s| !s.contains("State:\tZ"))
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD, from `date`.
fn chrono_free_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
