//! The benchmark runner: berth against CNCF Distribution (Debian's `docker-registry`) and the
//! machine's own bounds, side by side in one run, alternating servers round by round and
//! reporting medians. Prints a table and writes JSON to `bench/results/`.
//!
//! Run: `cargo build --release && cargo run --release --example bench` (see the README).
//! Every response is checked (status, digest); a protocol error aborts the run.
//!
//! `BENCH_BACKEND=scaled` runs the same workloads with berth on PostgreSQL + Garage (S3) and
//! Distribution with its `s3` driver on the same Garage, both engines started here; the pull
//! bound is then Garage's own GET of an object of the same size, and a second berth node on the
//! same stores gives the two-node figures.

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

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/engines.rs"]
mod engines;
mod http;
mod writes;
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
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
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

/// `target/release/berth`, or the binary `BENCH_BERTH_BIN` names (to compare two builds on the
/// same machine at the same time).
fn berth_bin() -> PathBuf {
    std::env::var_os("BENCH_BERTH_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/berth"),
        PathBuf::from,
    )
}

/// The environment of berth nodes in the scaled configuration (empty: the embedded default).
static BERTH_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

async fn start_berth(dir: &Path) -> Res<Server> {
    start_berth_with(dir, BERTH_ENV.get().map_or(&[], Vec::as_slice)).await
}

/// A berth node in `dir` with the environment `env`.
async fn start_berth_with(dir: &Path, env: &[(String, String)]) -> Res<Server> {
    let port = engines::free_port();
    let started = Instant::now();
    let child = Command::new(berth_bin())
        .envs(env.iter().map(|(k, v)| (k, v)))
        // A round on the scaled stores outlasts the default 5-minute bearer token.
        .env("BERTH_TOKEN_TTL", "1h")
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

async fn start_distribution(dir: &Path, s3: Option<&engines::Garage>) -> Res<Server> {
    let port = engines::free_port();
    std::fs::create_dir_all(dir)?;
    let storage = match s3 {
        // The same bucket configuration as berth's (path style, the Garage endpoint).
        Some(g) => format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: garage\n    regionendpoint: {}\n    forcepathstyle: true\n    bucket: berth\n    rootdirectory: /distribution\n    secure: false\n    v4auth: true\n",
            engines::GARAGE_KEY_ID,
            engines::GARAGE_SECRET,
            g.endpoint()
        ),
        None => format!(
            "  filesystem:\n    rootdirectory: {}\n",
            dir.join("data").display()
        ),
    };
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n{storage}  delete:\n    enabled: true\n  redirect:\n    disable: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
    );
    std::fs::write(dir.join("config.yml"), config)?;
    let started = Instant::now();
    let child = Command::new("docker-registry")
        // Distribution's s3 driver panics at start when AWS_CA_BUNDLE is set.
        .env_remove("AWS_CA_BUNDLE")
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
    let url = absolute(base, loc);
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = with_auth(c.put(format!("{url}{sep}digest={d}")))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await?;
    expect(&r, 201, "monolithic push")?;
    expect_digest(&r, d, "monolithic push")
}

/// An upload `Location` as an absolute URL (servers may answer with a path only).
fn absolute(base: &str, loc: String) -> String {
    if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    }
}

/// `PUT`s an OCI image manifest under `reference`; checks 201 and its digest, which it returns.
async fn put_manifest(
    s: &Server,
    c: &reqwest::Client,
    repo: &str,
    reference: &str,
    manifest: String,
) -> Res<String> {
    let d = sha(manifest.as_bytes());
    let r = s
        .req(
            c,
            reqwest::Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
        )
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await?;
    expect(&r, 201, "manifest put")?;
    expect_digest(&r, &d, "manifest put")?;
    Ok(d)
}

async fn push_chunked(
    s: &Server,
    c: &reqwest::Client,
    repo: &str,
    data: &bytes::Bytes,
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
    while off < data.len() {
        // A slice of the shared buffer: no copy in the client while the clock runs.
        let part = data.slice(off..(off + chunk).min(data.len()));
        let url = absolute(&s.base, loc.clone());
        let mut req = c
            .patch(url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{off}-{}", off + part.len() - 1));
        if let Some(a) = &s.auth {
            req = req.header("authorization", a);
        }
        let r = req.body(part.clone()).send().await?;
        expect(&r, 202, "patch")?;
        loc = r.headers()["location"].to_str()?.to_owned();
        off += part.len();
    }
    let url = absolute(&s.base, loc);
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut req = c.put(format!("{url}{sep}digest={d}"));
    if let Some(a) = &s.auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await?;
    expect(&r, 201, "close upload")?;
    expect_digest(&r, d, "close upload")
}

/// Pulls a blob with the runner's HTTP client, checking the digest header and every byte; MB/s.
async fn pull(s: &Server, repo: &str, d: &str, data: &[u8]) -> Res<f64> {
    let auth: Vec<(&str, &str)> = s
        .auth
        .iter()
        .map(|a| ("authorization", a.as_str()))
        .collect();
    let req = http::Request::new(&format!("{}/v2/{repo}/blobs/{d}", s.base), false, &auth)?;
    let want = format!("docker-content-digest: {d}").into_bytes();
    http::fetch(&req, Some(&want), data).await
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

async fn manifests(s: &Server, c: &reqwest::Client, repo: &str, n: usize, seed: u64) -> Res<f64> {
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
    for i in 0..n {
        let m = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": [], "annotations": {"i": format!("{seed}-{i}")}
        })
        .to_string();
        put_manifest(s, c, repo, &format!("m{i}"), m).await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
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
async fn bounds(dir: &Path) -> Res<Value> {
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

    // Loopback HTTP with sendfile: a 256 MiB file from the page cache, read by the same client
    // as the pulls.
    let file = dir.join("sendfile");
    let body = &data[..256 * MIB];
    {
        // Written back and read once, so the transfers come from clean page cache.
        let mut f = std::fs::File::create(&file)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::io::copy(&mut std::fs::File::open(&file)?, &mut std::io::sink())?;
    }
    let times = 5;
    let (addr, server) = http::sendfile_server(file.clone(), times)?;
    let req = http::Request::new(&format!("http://{addr}/blob"), false, &[])?;
    let mut rates = Vec::new();
    for _ in 0..times {
        rates.push(http::fetch(&req, None, body).await?);
    }
    server.join().map_err(|_| "sendfile server panicked")??;
    std::fs::remove_file(&file)?;
    Ok(json!({
        "sha256_mb_s": sha_mbs,
        "disk_stream_fdatasync_mb_s": disk_mbs,
        "small_fsync_files_s": files_s,
        "loopback_sendfile_mb_s": median(rates),
    }))
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

/// `BENCH_ONLY=push,small` runs only those workloads (push, pull, small, manifest, load, rss,
/// auth, ready, and with `BENCH_BACKEND=scaled` writes: the write-scaling curve of `writes.rs`);
/// unset, it runs all of them.
fn wanted(what: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |v| v.split(',').any(|w| w.trim() == what))
}

/// Pushes the small image the load phases read: a config, a 1 MiB layer and manifest `latest`.
/// Returns the manifest's and the layer's digests.
async fn setup_load_image(s: &Server, c: &reqwest::Client, seed: u64) -> Res<(String, String)> {
    let cfg = format!("{{\"load\":{seed}}}").into_bytes();
    let layer = random(MIB, seed + 7);
    let (cd, ld) = (sha(&cfg), sha(&layer));
    let (cl, ll) = (cfg.len(), layer.len());
    push_whole(&s.base, s.auth.as_deref(), c, "bench/load", cfg, &cd).await?;
    push_whole(&s.base, s.auth.as_deref(), c, "bench/load", layer, &ld).await?;
    let m = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cl},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ll}]
    })
    .to_string();
    let md = put_manifest(s, c, "bench/load", "latest", m).await?;
    Ok((md, ld))
}

/// The `Accept` header registry clients send (Distribution answers 404 to a manifest GET
/// without it).
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A load phase against `url`, every answer checked for `status` and the digest header.
async fn load_digest(
    url: &str,
    auth: Option<&str>,
    head: bool,
    digest: &str,
    conns: usize,
    secs: u64,
) -> Res<http::Load> {
    let mut headers = vec![("accept", ACCEPT)];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let req = http::Request::new(url, head, &headers)?;
    let want = format!("docker-content-digest: {digest}").into_bytes();
    http::load(req, Some(want), conns, Duration::from_secs(secs), 200).await
}

/// Resets a process's peak RSS (`VmHWM`), so the next reading covers only what follows.
/// What Garage itself serves of a 256 MiB object (MB/s): one GET streamed and counted, and the
/// object read as 8 MiB ranged GETs, 4 at a time.
async fn garage_get_bound(g: &engines::Garage) -> Res<(f64, f64)> {
    use futures_util::StreamExt as _;
    use object_store::ObjectStore as _;
    let store = garage_store(g)?;
    let key = object_store::path::Path::from("bound/object");
    let mut up = object_store::WriteMultipart::new_with_chunk_size(
        store.put_multipart(&key).await?,
        8 * MIB,
    );
    for i in 0..32 {
        up.wait_for_capacity(2).await?;
        up.put(bytes::Bytes::from(random(8 * MIB, 500 + i)));
    }
    up.finish().await?;
    let mut single = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut body = store.get(&key).await?.into_stream();
        let mut n = 0usize;
        while let Some(chunk) = body.next().await {
            n += chunk?.len();
        }
        single.push(n as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    // Several GETs at once: the object in 8 MiB ranges, 4 in flight, counted as they arrive.
    let mut parallel = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let n: usize = futures_util::stream::iter(0..32u64)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                async move {
                    let opts = object_store::GetOptions {
                        range: Some(object_store::GetRange::Bounded(
                            i * 8 * MIB as u64..(i + 1) * 8 * MIB as u64,
                        )),
                        ..Default::default()
                    };
                    let mut body = store.get_opts(&key, opts).await?.into_stream();
                    let mut n = 0usize;
                    while let Some(chunk) = body.next().await {
                        n += chunk?.len();
                    }
                    Ok::<usize, object_store::Error>(n)
                }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .sum::<Result<usize, _>>()?;
        parallel.push(n as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    store.delete(&key).await?;
    Ok((median(single), median(parallel)))
}

/// The bench's own client of Garage's bucket.
fn garage_store(g: &engines::Garage) -> Res<object_store::aws::AmazonS3> {
    Ok(object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("berth")
        .with_endpoint(g.endpoint())
        .with_region("garage")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_access_key_id(engines::GARAGE_KEY_ID)
        .with_secret_access_key(engines::GARAGE_SECRET)
        .build()?)
}

/// What Garage itself takes of 4 KiB objects (PUTs/s), `conc` at a time: the bound of a small
/// blob pushed to a bucket, which berth writes with one PUT.
async fn garage_put_bound(g: &engines::Garage, conc: usize) -> Res<f64> {
    use futures_util::StreamExt as _;
    use object_store::ObjectStore as _;
    let store = garage_store(g)?;
    let n = 2000u64;
    let t = Instant::now();
    let done = futures_util::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let key = object_store::path::Path::from(format!("bound/small/{conc}/{i}"));
                let body = bytes::Bytes::from(random(4096, 900_000 + i));
                store.put(&key, body.into()).await
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    for r in done {
        r?;
    }
    Ok(rate)
}

fn reset_peak_rss(pid: u32) -> Res<()> {
    Ok(std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?)
}

/// A robot with pull on the `bench` namespace and a token; the `Authorization: Basic` value.
async fn robot_basic(b: &Server) -> Res<String> {
    let admin = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", b.base);
    let r = admin
        .post(api("/orgs/bench/robots"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"name": "bench"}))
        .send()
        .await?;
    expect(&r, 201, "create robot")?;
    let r = admin
        .put(api("/orgs/bench/bindings/bench"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"role": "Reader", "subject": "robot/bench"}))
        .send()
        .await?;
    if !r.status().is_success() {
        return fail(format!("create binding: status {}", r.status()));
    }
    let r = admin
        .post(api("/orgs/bench/robots/bench/tokens"))
        .basic_auth("admin", Some(ADMIN_PW))
        .json(&json!({"name": "t"}))
        .send()
        .await?;
    expect(&r, 201, "create robot token")?;
    let t: Value = r.json().await?;
    Ok(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            t["accessId"].as_str().ok_or("no accessId")?,
            t["token"].as_str().ok_or("no token")?
        ))
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let tmp = tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))?;
    eprintln!("measuring the machine's bounds…");
    let mut bounds = bounds(tmp.path()).await?;
    let scaled = std::env::var("BENCH_BACKEND").is_ok_and(|v| v == "scaled");
    // The scaled configuration's engines, started here and stopped when the run ends.
    let engines = if scaled {
        eprintln!("starting PostgreSQL and Garage…");
        let pg = engines::PgCluster::start();
        let db = pg.create_database("berth");
        let garage = engines::Garage::start();
        let mut env = vec![
            ("BERTH_DATABASE_URL".to_owned(), db),
            (
                "BERTH_SECRET_KEY".to_owned(),
                "bench-secret-key-that-seals-the-signing-keys".to_owned(),
            ),
        ];
        env.extend(garage.env("berth"));
        BERTH_ENV.set(env).map_err(|_| "environment set twice")?;
        let (single, parallel) = garage_get_bound(&garage).await?;
        bounds["garage_get_single_mb_s"] = json!(single);
        bounds["garage_get_parallel_mb_s"] = json!(parallel);
        bounds["garage_get_mb_s"] = json!(single.max(parallel));
        bounds["garage_put_4k_c1_s"] = json!(garage_put_bound(&garage, 1).await?);
        bounds["garage_put_4k_c16_s"] = json!(garage_put_bound(&garage, 16).await?);
        Some((pg, garage))
    } else {
        None
    };
    eprintln!("{bounds}");
    let c = reqwest::Client::new();

    let mut b = start_berth(&tmp.path().join("berth")).await?;
    // Idle means settled: the first start hashes the admin's password (argon2, 19 MiB), which
    // jemalloc's background thread returns within about a second; read after that.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_berth = proc_kib(b.pid(), "VmRSS:");
    let mut d = start_distribution(
        &tmp.path().join("distribution"),
        engines.as_ref().map(|(_, g)| g),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_dist = proc_kib(d.pid(), "VmRSS:");
    let repos = [
        "bench/big",
        "bench/small1",
        "bench/small16",
        "bench/manifests",
        "bench/load",
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
    let mut load_image = None;
    // `BENCH_ROUNDS=1` for a quicker run (the results file records the rounds).
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        for which in 0..2 {
            let s: &mut Server = if which == 0 { &mut b } else { &mut d };
            if s.name == "berth" {
                s.auth = Some(berth_token(s, &repos).await?);
            }
            let seed = (round * 2 + which) as u64 + 10;
            eprintln!("round {} · {}", round + 1, s.name);
            if wanted("push") || wanted("pull") {
                let big = random(256 * MIB, seed);
                let big_d = sha(&big);
                let body = big.clone();
                let cpu = cpu_secs(s.pid());
                let t = Instant::now();
                push_whole(&s.base, s.auth.as_deref(), &c, "bench/big", body, &big_d).await?;
                let secs = t.elapsed().as_secs_f64();
                record(
                    "push 256 MiB, POST + one PUT",
                    "MB/s",
                    s.name,
                    268.435456 / secs,
                    (cpu_secs(s.pid()) - cpu) / 268.435456,
                );
                if wanted("pull") {
                    let cpu = cpu_secs(s.pid());
                    let rate = pull(s, "bench/big", &big_d, &big).await?;
                    record(
                        "pull 256 MiB",
                        "MB/s",
                        s.name,
                        rate,
                        (cpu_secs(s.pid()) - cpu) / 268.435456,
                    );
                }
            }
            if wanted("push") {
                let big2 = random(256 * MIB, seed + 100);
                let big2_d = sha(&big2);
                let cpu = cpu_secs(s.pid());
                let t = Instant::now();
                push_chunked(
                    s,
                    &c,
                    "bench/big",
                    &bytes::Bytes::from(big2),
                    &big2_d,
                    8 * MIB,
                )
                .await?;
                let secs = t.elapsed().as_secs_f64();
                record(
                    "push 256 MiB, 8 MiB PATCHes",
                    "MB/s",
                    s.name,
                    268.435456 / secs,
                    (cpu_secs(s.pid()) - cpu) / 268.435456,
                );
            }
            if wanted("rss") {
                let huge = random(1024 * MIB, seed + 200);
                let huge_d = sha(&huge);
                reset_peak_rss(s.pid())?;
                push_whole(&s.base, s.auth.as_deref(), &c, "bench/big", huge, &huge_d).await?;
                record(
                    "peak RSS while pushing 1 GiB",
                    "MiB",
                    s.name,
                    proc_kib(s.pid(), "VmHWM:") as f64 / 1024.0,
                    0.0,
                );
            }
            if wanted("small") {
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
            }
            if wanted("manifest") {
                let cpu = cpu_secs(s.pid());
                let rate = manifests(s, &c, "bench/manifests", 1000, seed).await?;
                record(
                    "manifest PUT",
                    "manifests/s",
                    s.name,
                    rate,
                    (cpu_secs(s.pid()) - cpu) / 1000.0,
                );
            }
            if wanted("load") || wanted("auth") {
                let (md, ld) = setup_load_image(s, &c, seed).await?;
                if s.name == "berth" {
                    load_image = Some(md.clone());
                }
                if wanted("load") {
                    let targets = [
                        (
                            "manifest GET by tag, 64 conns",
                            format!("{}/v2/bench/load/manifests/latest", s.base),
                            false,
                            md,
                        ),
                        (
                            "blob HEAD, 64 conns",
                            format!("{}/v2/bench/load/blobs/{ld}", s.base),
                            true,
                            ld,
                        ),
                    ];
                    for (name, url, head, digest) in targets {
                        let cpu = cpu_secs(s.pid());
                        let l = load_digest(&url, s.auth.as_deref(), head, &digest, 64, 10).await?;
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
                            &format!("{name}: load generator CPU"),
                            "CPU s / 10 s",
                            s.name,
                            l.client_cpu,
                            0.0,
                        );
                    }
                }
            }
        }
    }
    let peak_berth = proc_kib(b.pid(), "VmHWM:");
    let peak_dist = proc_kib(d.pid(), "VmHWM:");

    // berth only: token issuance with robot-token Basic auth; bearer GET beside anonymous.
    let mut extra: Vec<Row> = Vec::new();
    let mut only_berth = |metric: &str, unit: &'static str, v: f64| {
        extra.push(Row {
            metric: metric.into(),
            unit,
            berth: v,
            dist: None,
            bound: None,
            berth_cpu: None,
            dist_cpu: None,
        });
    };
    if let Some(md) = load_image.filter(|_| wanted("auth")) {
        let basic = robot_basic(&b).await?;
        let tokens_req = http::Request::new(
            &format!(
                "{}/token?service=berth&scope=repository:bench/load:pull",
                b.base
            ),
            false,
            &[("authorization", basic.as_str())],
        )?;
        let tokens = http::load(tokens_req, None, 32, Duration::from_secs(5), 200).await?;
        only_berth("token issuance, robot-token Basic", "tokens/s", tokens.rps);
        only_berth(
            "token issuance: load generator CPU",
            "CPU s / 5 s",
            tokens.client_cpu,
        );
        let r = reqwest::Client::new()
            .patch(format!("{}/api/v1/namespaces/bench", b.base))
            .basic_auth("admin", Some(ADMIN_PW))
            .json(&json!({"public": true}))
            .send()
            .await?;
        expect(&r, 200, "make namespace public")?;
        let url = format!("{}/v2/bench/load/manifests/latest", b.base);
        let anon = load_digest(&url, None, false, &md, 64, 5).await?;
        let bearer = load_digest(&url, b.auth.as_deref(), false, &md, 64, 5).await?;
        only_berth("manifest GET, anonymous (public)", "req/s", anon.rps);
        only_berth("manifest GET, bearer-authorized", "req/s", bearer.rps);
        if scaled {
            // A second node on the same database and bucket: the same load split over both.
            let b2 = start_berth(&tmp.path().join("berth2")).await?;
            let url2 = format!("{}/v2/bench/load/manifests/latest", b2.base);
            let (one, two) = tokio::join!(
                load_digest(&url, b.auth.as_deref(), false, &md, 32, 5),
                load_digest(&url2, b.auth.as_deref(), false, &md, 32, 5)
            );
            only_berth(
                "manifest GET, two nodes, 2 × 32 conns",
                "req/s",
                one?.rps + two?.rps,
            );
            let req2 = http::Request::new(
                &format!(
                    "{}/token?service=berth&scope=repository:bench/load:pull",
                    b2.base
                ),
                false,
                &[("authorization", basic.as_str())],
            )?;
            let req1 = http::Request::new(
                &format!(
                    "{}/token?service=berth&scope=repository:bench/load:pull",
                    b.base
                ),
                false,
                &[("authorization", basic.as_str())],
            )?;
            let (t1, t2) = tokio::join!(
                http::load(req1, None, 16, Duration::from_secs(5), 200),
                http::load(req2, None, 16, Duration::from_secs(5), 200)
            );
            only_berth("token issuance, two nodes", "tokens/s", t1?.rps + t2?.rps);
        }
    }

    // Start to ready with 10,000 repositories in the store.
    drop(b);
    if let Some((pg, garage)) = engines.as_ref().filter(|_| wanted("writes")) {
        let rtt = 2.0 * writes::DELAY.as_secs_f64() * 1000.0;
        for p in writes::curve(pg, garage, tmp.path()).await? {
            let n = p.nodes;
            only_berth(
                &format!("1 KiB blob pushes, {n} node(s) × 8 clients, +{rtt} ms to PostgreSQL"),
                "blobs/s",
                p.blobs_s,
            );
            only_berth(
                &format!("tagged manifest PUTs, {n} node(s) × 8 clients, +{rtt} ms to PostgreSQL"),
                "manifests/s",
                p.manifests_s,
            );
        }
    }
    if wanted("ready") && !scaled {
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
        only_berth("start to ready, 10,000 repositories", "ms", median(ready));
    }
    drop(d);
    // The table.
    let sha_bound = bounds["sha256_mb_s"].as_f64().unwrap_or(0.0);
    let disk_bound = bounds["disk_stream_fdatasync_mb_s"].as_f64().unwrap_or(0.0);
    let files_bound = bounds["small_fsync_files_s"].as_f64().unwrap_or(0.0);
    let sendfile_bound = bounds["loopback_sendfile_mb_s"].as_f64().unwrap_or(0.0);
    let mut rows: Vec<Row> = results
        .into_iter()
        .map(|(metric, unit, bv, dv, bc, dc)| {
            let bound = if metric.starts_with("push") {
                Some(sha_bound.min(disk_bound).min(sendfile_bound))
            } else if metric.starts_with("pull") && scaled {
                bounds["garage_get_mb_s"].as_f64()
            } else if metric.starts_with("pull") {
                Some(sendfile_bound)
            } else if metric.starts_with("4 KiB") && scaled {
                // Berth writes a small blob to the bucket with one PUT: Garage's own rate
                // of such PUTs bounds it, if below the disk's.
                let conc = if metric.ends_with("16") { "c16" } else { "c1" };
                let put = bounds[format!("garage_put_4k_{conc}_s")].as_f64();
                put.map(|p| p.min(files_bound))
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
    rows.extend(extra);

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
    if std::env::var_os("BENCH_ONLY").is_some() {
        eprintln!("BENCH_ONLY is set: a partial run, no results file written");
        return Ok(());
    }
    let suffix = if scaled { "-scaled" } else { "" };
    let file = out_dir.join(format!("{}-{commit}{suffix}.json", &date[..10]));
    let machine = json!({ "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())) });
    std::fs::write(
        &file,
        serde_json::to_string_pretty(
            &json!({ "date": date, "commit": commit, "rounds": rounds, "backend": if scaled { "postgresql+garage" } else { "sqlite+files" }, "machine": machine, "bounds": bounds, "rows": json_rows }),
        )?,
    )?;
    eprintln!("written {}", file.display());
    Ok(())
}
