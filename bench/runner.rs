//! The benchmark runner: berth against CNCF Distribution (Debian's `docker-registry`) and the
//! machine's own bounds, side by side in one run, alternating servers round by round and
//! reporting medians. Prints a table and writes JSON to `bench/results/`.
//!
//! Run: `cargo build --release && cargo run --release --example bench` (see the README).
//! Every response is checked (status, digest); a protocol error aborts the run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

const ROUNDS: usize = 2;
const ADMIN_PW: &str = "bench-admin-password";
const MIB: usize = 1024 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

fn fail<T>(msg: String) -> Res<T> {
    Err(msg.into())
}

struct Server {
    name: &'static str,
    base: String,
    child: Child,
    /// `Authorization` value for requests (berth: a bearer token; Distribution: none).
    auth: Option<String>,
    started: Instant,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn req(&self, c: &reqwest::Client, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = c.request(m, format!("{}{path}", self.base));
        match &self.auth {
            Some(a) => r.header("authorization", a),
            None => r,
        }
    }
}

fn proc_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of a process.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(url: &str, ok: &[u16]) -> Res<()> {
    let c = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(r) = c.get(url).send().await
            && ok.contains(&r.status().as_u16())
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            return fail(format!("{url} did not answer"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn berth_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/berth")
}

async fn start_berth(dir: &Path) -> Res<Server> {
    let port = free_port();
    let started = Instant::now();
    let child = Command::new(berth_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            "warn",
            "--data-dir",
        ])
        .arg(dir)
        .env("BERTH_ADMIN_PASSWORD", ADMIN_PW)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "starting {}: {e} (run `cargo build --release` first)",
                berth_bin().display()
            )
        })?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz"), &[200]).await?;
    Ok(Server {
        name: "berth",
        base,
        child,
        auth: None,
        started,
    })
}

async fn start_distribution(dir: &Path) -> Res<Server> {
    let port = free_port();
    std::fs::create_dir_all(dir)?;
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n",
        dir.join("data").display()
    );
    std::fs::write(dir.join("config.yml"), config)?;
    let started = Instant::now();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting docker-registry: {e} (apt-get install docker-registry)"))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/v2/"), &[200]).await?;
    Ok(Server {
        name: "distribution",
        base,
        child,
        auth: None,
        started,
    })
}

/// A bearer token for berth with pull, push and delete on `repos`.
async fn berth_token(s: &Server, repos: &[&str]) -> Res<String> {
    let mut url = format!("{}/token?service=berth", s.base);
    for r in repos {
        url.push_str(&format!("&scope=repository:{r}:pull,push,delete"));
    }
    let v: Value = reqwest::Client::new()
        .get(url)
        .basic_auth("admin", Some(ADMIN_PW))
        .send()
        .await?
        .json()
        .await?;
    Ok(format!("Bearer {}", v["token"].as_str().ok_or("no token")?))
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn expect(r: &reqwest::Response, status: u16, what: &str) -> Res<()> {
    if r.status().as_u16() != status {
        return fail(format!("{what}: status {} (want {status})", r.status()));
    }
    Ok(())
}

fn expect_digest(r: &reqwest::Response, d: &str, what: &str) -> Res<()> {
    match r
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        Some(got) if got == d => Ok(()),
        other => fail(format!("{what}: Docker-Content-Digest {other:?}, want {d}")),
    }
}

/// A monolithic push as docker clients do it: `POST` for a session, one `PUT ?digest=` with the
/// whole body (Distribution 2.8 does not take `POST ?digest=` with a body).
async fn push_whole(
    base: &str,
    auth: Option<&str>,
    c: &reqwest::Client,
    repo: &str,
    body: Vec<u8>,
    d: &str,
) -> Res<()> {
    let with_auth = |r: reqwest::RequestBuilder| match auth {
        Some(a) => r.header("authorization", a),
        None => r,
    };
    let r = with_auth(c.post(format!("{base}/v2/{repo}/blobs/uploads/")))
        .send()
        .await?;
    expect(&r, 202, "start upload")?;
    let loc = r.headers()["location"].to_str()?.to_owned();
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = with_auth(c.put(format!("{url}{sep}digest={d}")))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await?;
    expect(&r, 201, "monolithic push")?;
    expect_digest(&r, d, "monolithic push")
}

async fn push_chunked(
    s: &Server,
    c: &reqwest::Client,
    repo: &str,
    data: &[u8],
    d: &str,
    chunk: usize,
) -> Res<()> {
    let r = s
        .req(
            c,
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
        )
        .send()
        .await?;
    expect(&r, 202, "start upload")?;
    let mut loc = r.headers()["location"].to_str()?.to_owned();
    let mut off = 0;
    for part in data.chunks(chunk) {
        let url = if loc.starts_with("http") {
            loc.clone()
        } else {
            format!("{}{loc}", s.base)
        };
        let mut req = c
            .patch(url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{off}-{}", off + part.len() - 1));
        if let Some(a) = &s.auth {
            req = req.header("authorization", a);
        }
        let r = req.body(part.to_vec()).send().await?;
        expect(&r, 202, "patch")?;
        loc = r.headers()["location"].to_str()?.to_owned();
        off += part.len();
    }
    let url = if loc.starts_with("http") {
        loc
    } else {
        format!("{}{loc}", s.base)
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut req = c.put(format!("{url}{sep}digest={d}"));
    if let Some(a) = &s.auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await?;
    expect(&r, 201, "close upload")?;
    expect_digest(&r, d, "close upload")
}

async fn pull(s: &Server, c: &reqwest::Client, repo: &str, d: &str) -> Res<u64> {
    let mut r = s
        .req(c, reqwest::Method::GET, &format!("/v2/{repo}/blobs/{d}"))
        .send()
        .await?;
    expect(&r, 200, "pull")?;
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = r.chunk().await? {
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    if got != d {
        return fail(format!("pull: body digest {got}, want {d}"));
    }
    Ok(n)
}

/// Runs `n` pushes of distinct 4 KiB blobs at `conc` concurrency; blobs/s.
async fn small_blobs(
    s: &Server,
    c: &reqwest::Client,
    repo: &str,
    n: usize,
    conc: usize,
    seed: u64,
) -> Res<f64> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (next, c, base, auth, repo) = (
            next.clone(),
            c.clone(),
            s.base.clone(),
            s.auth.clone(),
            repo.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i as usize >= n {
                    return Ok::<(), Error>(());
                }
                let data = random(4096, seed * 1_000_003 + i);
                let d = sha(&data);
                push_whole(&base, auth.as_deref(), &c, &repo, data, &d).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn manifests(
    s: &Server,
    c: &reqwest::Client,
    repo: &str,
    n: usize,
    seed: u64,
) -> Res<(f64, String)> {
    let cfg = format!("{{\"seed\":{seed}}}");
    let cd = sha(cfg.as_bytes());
    push_whole(
        &s.base,
        s.auth.as_deref(),
        c,
        repo,
        cfg.clone().into_bytes(),
        &cd,
    )
    .await?;
    let start = Instant::now();
    let mut last = String::new();
    for i in 0..n {
        let m = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": [], "annotations": {"i": format!("{seed}-{i}")}
        })
        .to_string();
        let d = sha(m.as_bytes());
        let r = s
            .req(
                c,
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/m{i}"),
            )
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(m)
            .send()
            .await?;
        expect(&r, 201, "manifest put")?;
        expect_digest(&r, &d, "manifest put")?;
        last = d;
    }
    Ok((n as f64 / start.elapsed().as_secs_f64(), last))
}

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    client_cpu: f64,
}

/// `conns` connections each looping one request for `dur`; every answer must be `status`.
async fn load(
    url: String,
    auth: Option<String>,
    head: bool,
    conns: usize,
    dur: Duration,
    status: u16,
) -> Res<Load> {
    let cpu0 = cpu_secs(std::process::id());
    let stop = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (url, auth) = (url.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
            let mut lat = Vec::new();
            while Instant::now() < stop {
                let t = Instant::now();
                // The Accept header registry clients send (Distribution answers 404 without it).
                let mut req = if head { c.head(&url) } else { c.get(&url) }
                    .header("accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json");
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                let r = req.send().await?;
                if r.status().as_u16() != status {
                    return Err::<Vec<Duration>, Error>(format!("load: status {}", r.status()).into());
                }
                let _ = r.bytes().await?;
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Load {
        rps: all.len() as f64 / dur.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        client_cpu: cpu_secs(std::process::id()) - cpu0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// The machine's own bounds, measured in this run.
fn bounds(dir: &Path) -> Res<Value> {
    let data = random(512 * MIB, 1);
    let t = Instant::now();
    let _ = sha2::Sha256::digest(&data);
    let sha_mbs = data.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
    let path = dir.join("stream");
    let t = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for chunk in data.chunks(4 * MIB) {
        f.write_all(chunk)?;
    }
    f.sync_data()?;
    let disk_mbs = data.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let small_dir = dir.join("small");
    std::fs::create_dir_all(&small_dir)?;
    let n = 2000;
    let t = Instant::now();
    for i in 0..n {
        let p = small_dir.join(format!("f{i}"));
        let mut f = std::fs::File::create(&p)?;
        f.write_all(&data[..4096])?;
        f.sync_all()?;
    }
    std::fs::File::open(&small_dir)?.sync_all()?;
    let files_s = n as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&small_dir)?;
    Ok(
        json!({ "sha256_mb_s": sha_mbs, "disk_stream_fdatasync_mb_s": disk_mbs, "small_fsync_files_s": files_s }),
    )
}

/// (metric, unit, per-round values for berth, for Distribution, CPU seconds per unit for each).
type Samples = (String, &'static str, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

struct Row {
    metric: String,
    unit: &'static str,
    berth: f64,
    dist: Option<f64>,
    bound: Option<f64>,
    berth_cpu: Option<f64>,
    dist_cpu: Option<f64>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let tmp = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))?;
    eprintln!("measuring the machine's bounds…");
    let bounds = bounds(tmp.path())?;
    let c = reqwest::Client::new();

    let mut b = start_berth(&tmp.path().join("berth")).await?;
    let idle_berth = proc_kib(b.pid(), "VmRSS:");
    let mut d = start_distribution(&tmp.path().join("distribution")).await?;
    let idle_dist = proc_kib(d.pid(), "VmRSS:");
    let repos = [
        "bench/big",
        "bench/small1",
        "bench/small16",
        "bench/manifests",
    ];

    let mut results: Vec<Samples> = Vec::new();
    let mut record =
        |name: &str, unit: &'static str, server: &str, value: f64, cpu_per_unit: f64| {
            let row = match results.iter_mut().find(|r| r.0 == name) {
                Some(r) => r,
                None => {
                    results.push((name.to_owned(), unit, vec![], vec![], vec![], vec![]));
                    results.last_mut().unwrap()
                }
            };
            if server == "berth" {
                row.2.push(value);
                row.4.push(cpu_per_unit);
            } else {
                row.3.push(value);
                row.5.push(cpu_per_unit);
            }
        };
    for round in 0..ROUNDS {
        for which in 0..2 {
            let s: &mut Server = if which == 0 { &mut b } else { &mut d };
            if s.name == "berth" {
                s.auth = Some(berth_token(s, &repos).await?);
            }
            let seed = (round * 2 + which) as u64 + 10;
            eprintln!("round {} · {}", round + 1, s.name);
            let big = Arc::new(random(256 * MIB, seed));
            let big_d = sha(&big);
            let cpu = cpu_secs(s.pid());
            let t = Instant::now();
            push_whole(
                &s.base,
                s.auth.as_deref(),
                &c,
                "bench/big",
                big.as_ref().clone(),
                &big_d,
            )
            .await?;
            let secs = t.elapsed().as_secs_f64();
            record(
                "push 256 MiB, POST + one PUT",
                "MB/s",
                s.name,
                268.435456 / secs,
                (cpu_secs(s.pid()) - cpu) / 268.435456,
            );
            let big2 = random(256 * MIB, seed + 100);
            let big2_d = sha(&big2);
            let cpu = cpu_secs(s.pid());
            let t = Instant::now();
            push_chunked(s, &c, "bench/big", &big2, &big2_d, 8 * MIB).await?;
            let secs = t.elapsed().as_secs_f64();
            record(
                "push 256 MiB, 8 MiB PATCHes",
                "MB/s",
                s.name,
                268.435456 / secs,
                (cpu_secs(s.pid()) - cpu) / 268.435456,
            );
            let cpu = cpu_secs(s.pid());
            let t = Instant::now();
            let n = pull(s, &c, "bench/big", &big_d).await?;
            let secs = t.elapsed().as_secs_f64();
            record(
                "pull 256 MiB",
                "MB/s",
                s.name,
                n as f64 / 1e6 / secs,
                (cpu_secs(s.pid()) - cpu) / 268.435456,
            );
            for (conc, repo) in [(1, "bench/small1"), (16, "bench/small16")] {
                let cpu = cpu_secs(s.pid());
                let rate = small_blobs(s, &c, repo, 2000, conc, seed * 7 + conc as u64).await?;
                record(
                    &format!("4 KiB blobs, concurrency {conc}"),
                    "blobs/s",
                    s.name,
                    rate,
                    (cpu_secs(s.pid()) - cpu) / 2000.0,
                );
            }
            let cpu = cpu_secs(s.pid());
            let (rate, _) = manifests(s, &c, "bench/manifests", 1000, seed).await?;
            record(
                "manifest PUT",
                "manifests/s",
                s.name,
                rate,
                (cpu_secs(s.pid()) - cpu) / 1000.0,
            );
            let blob_url = format!("{}/v2/bench/big/blobs/{big_d}", s.base);
            let manifest_url = format!("{}/v2/bench/manifests/manifests/m0", s.base);
            for (name, url, head) in [
                ("manifest GET by tag, 64 conns", manifest_url, false),
                ("blob HEAD, 64 conns", blob_url, true),
            ] {
                let cpu = cpu_secs(s.pid());
                let l = load(url, s.auth.clone(), head, 64, Duration::from_secs(10), 200).await?;
                let units = l.rps * 10.0;
                record(
                    name,
                    "req/s",
                    s.name,
                    l.rps,
                    (cpu_secs(s.pid()) - cpu) / units.max(1.0),
                );
                record(&format!("{name} p50"), "ms", s.name, l.p50_ms, 0.0);
                record(&format!("{name} p99"), "ms", s.name, l.p99_ms, 0.0);
                record(
                    &format!("{name} load-generator CPU"),
                    "s",
                    s.name,
                    l.client_cpu,
                    0.0,
                );
            }
        }
    }
    let peak_berth = proc_kib(b.pid(), "VmHWM:");
    let peak_dist = proc_kib(d.pid(), "VmHWM:");

    // berth only: token issuance with robot-token Basic auth; bearer GET beside anonymous.
    let admin = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", b.base);
    admin
        .post(api("/orgs/bench/robots"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"name": "bench"}))
        .send()
        .await?;
    admin
        .put(api("/orgs/bench/bindings/bench"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"role": "Reader", "subject": "robot/bench"}))
        .send()
        .await?;
    let t: Value = admin
        .post(api("/orgs/bench/robots/bench/tokens"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"name": "t"}))
        .send()
        .await?
        .json()
        .await?;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            t["accessId"].as_str().unwrap_or(""),
            t["token"].as_str().unwrap_or("")
        ))
    );
    let tokens = load(
        format!(
            "{}/token?service=berth&scope=repository:bench/manifests:pull",
            b.base
        ),
        Some(basic),
        false,
        32,
        Duration::from_secs(5),
        200,
    )
    .await?;
    admin
        .patch(api("/namespaces/bench"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"public": true}))
        .send()
        .await?;
    let url = format!("{}/v2/bench/manifests/manifests/m0", b.base);
    let anon = load(url.clone(), None, false, 64, Duration::from_secs(5), 200).await?;
    let bearer = load(url, b.auth.clone(), false, 64, Duration::from_secs(5), 200).await?;

    // Start to ready with 10,000 repositories in the store.
    drop(b);
    let ready_dir = tmp.path().join("ready");
    {
        let meta = berth::store::MetadataStore::open(&{
            std::fs::create_dir_all(&ready_dir)?;
            ready_dir.join("berth.db")
        })?;
        meta.write(|w| {
            for i in 0..10_000 {
                w.ensure_repo(&format!("org{}/repo{i}", i % 100))?;
            }
            Ok::<_, berth::store::Error>(())
        })?;
    }
    let mut ready = Vec::new();
    for _ in 0..3 {
        let s = start_berth(&ready_dir).await?;
        ready.push(s.started.elapsed().as_secs_f64() * 1000.0);
    }
    let d_ready = d.started.elapsed();
    let _ = d_ready;

    // The table.
    let sha_bound = bounds["sha256_mb_s"].as_f64().unwrap_or(0.0);
    let disk_bound = bounds["disk_stream_fdatasync_mb_s"].as_f64().unwrap_or(0.0);
    let files_bound = bounds["small_fsync_files_s"].as_f64().unwrap_or(0.0);
    let mut rows: Vec<Row> = results
        .into_iter()
        .map(|(metric, unit, bv, dv, bc, dc)| {
            let bound = if metric.starts_with("push") {
                Some(sha_bound.min(disk_bound))
            } else if metric.starts_with("4 KiB") {
                Some(files_bound)
            } else {
                None
            };
            Row {
                metric,
                unit,
                berth: median(bv),
                dist: Some(median(dv)),
                bound,
                berth_cpu: Some(median(bc)),
                dist_cpu: Some(median(dc)),
            }
        })
        .collect();
    rows.push(Row {
        metric: "token issuance, robot-token Basic".into(),
        unit: "tokens/s",
        berth: tokens.rps,
        dist: None,
        bound: None,
        berth_cpu: None,
        dist_cpu: None,
    });
    rows.push(Row {
        metric: "manifest GET, anonymous (public)".into(),
        unit: "req/s",
        berth: anon.rps,
        dist: None,
        bound: None,
        berth_cpu: None,
        dist_cpu: None,
    });
    rows.push(Row {
        metric: "manifest GET, bearer-authorized".into(),
        unit: "req/s",
        berth: bearer.rps,
        dist: None,
        bound: None,
        berth_cpu: None,
        dist_cpu: None,
    });
    rows.push(Row {
        metric: "idle RSS".into(),
        unit: "MiB",
        berth: idle_berth as f64 / 1024.0,
        dist: Some(idle_dist as f64 / 1024.0),
        bound: None,
        berth_cpu: None,
        dist_cpu: None,
    });
    rows.push(Row {
        metric: "peak RSS over the run".into(),
        unit: "MiB",
        berth: peak_berth as f64 / 1024.0,
        dist: Some(peak_dist as f64 / 1024.0),
        bound: None,
        berth_cpu: None,
        dist_cpu: None,
    });
    rows.push(Row {
        metric: "start to ready, 10,000 repositories".into(),
        unit: "ms",
        berth: median(ready),
        dist: None,
        bound: None,
        berth_cpu: None,
        dist_cpu: None,
    });

    println!(
        "{:<44} {:>12} {:>12} {:>7} {:>10} {:>7} {:>12} {:>12}",
        "metric", "berth", "distribution", "ratio", "bound", "% bound", "berth cpu/u", "dist cpu/u"
    );
    let mut json_rows = Vec::new();
    for r in &rows {
        let ratio = r.dist.filter(|d| *d > 0.0).map(|d| r.berth / d);
        let pct = r.bound.filter(|b| *b > 0.0).map(|b| 100.0 * r.berth / b);
        let f = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
        println!(
            "{:<44} {:>12} {:>12} {:>7} {:>10} {:>7} {:>12} {:>12}   {}",
            r.metric,
            format!("{:.1}", r.berth),
            f(r.dist, 1),
            f(ratio, 2),
            f(r.bound, 0),
            f(pct, 0),
            f(r.berth_cpu, 6),
            f(r.dist_cpu, 6),
            r.unit
        );
        json_rows.push(json!({ "metric": r.metric, "unit": r.unit, "berth": r.berth, "distribution": r.dist, "ratio": ratio,
            "bound": r.bound, "percent_of_bound": pct, "berth_cpu_s_per_unit": r.berth_cpu, "distribution_cpu_s_per_unit": r.dist_cpu }));
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let date = berth::auth::token::rfc3339(i64::try_from(now)?);
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&out_dir)?;
    let file = out_dir.join(format!("{}-{commit}.json", &date[..10]));
    let machine = json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())) });
    std::fs::write(
        &file,
        serde_json::to_string_pretty(
            &json!({ "date": date, "commit": commit, "rounds": ROUNDS, "machine": machine, "bounds": bounds, "rows": json_rows }),
        )?,
    )?;
    eprintln!("written {}", file.display());
    Ok(())
}
