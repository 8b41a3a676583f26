//! Test support: start and stop the real server, push content, build OCI layouts.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest as _;

pub mod engines;
pub mod faultproxy;
pub mod oidc;
pub mod storage;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The server admin's password in every test server (set through `BERTH_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "admin-test-password-0123";

/// The secret that seals the signing keys of servers on PostgreSQL.
pub const TEST_SECRET_KEY: &str = "test-secret-key-that-seals-signing-keys-0123456789";

/// `admin:<password>`, for clients' `--creds`.
pub fn admin_creds() -> String {
    format!("admin:{ADMIN_PASSWORD}")
}

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// A running `berth serve` with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub host: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub log: Arc<Mutex<String>>,
    extra: Vec<String>,
    /// Environment given at start, given again at every restart.
    env: Vec<(String, String)>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_args(&[])
    }

    /// A server that logs at the most verbose level (every request, every decision), for the
    /// tests that check no secret ever reaches the log.
    pub fn start_verbose() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::start_in(&data, &[], &[("BERTH_LOG", "trace")]);
        s._tmp = Some(tmp);
        s
    }

    pub fn start_args(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::start_in(&data, extra, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts on `data_dir` with extra arguments and environment. When the suite runs against
    /// PostgreSQL (`engines::suite_database`), the server gets a fresh database of its own
    /// unless the test chose one.
    pub fn start_in(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let chosen =
            extra.contains(&"--database") || env.iter().any(|(k, _)| k == "BERTH_DATABASE_URL");
        if !chosen && let Some(url) = suite_database(data_dir) {
            env.push(("BERTH_DATABASE_URL".into(), url));
            env.push(("BERTH_SECRET_KEY".into(), TEST_SECRET_KEY.into()));
        }
        let chosen = extra.contains(&"--storage") || env.iter().any(|(k, _)| k == "BERTH_STORAGE");
        if !chosen && let Some(s3) = suite_storage(data_dir) {
            env.extend(s3);
        }
        Server::start_with(data_dir, extra, env)
    }

    /// A server on the embedded engine whatever the suite runs on, for tests that read its files
    /// (its signing key, its database file).
    pub fn start_embedded() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::start_with(&data, &[], Vec::new());
        s._tmp = Some(tmp);
        s
    }

    /// Starts on `data_dir` with exactly these arguments and environment.
    pub fn start_with(data_dir: &Path, extra: &[&str], env: Vec<(String, String)>) -> Server {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("serve");
        if !extra.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir").arg(data_dir);
        cmd.args(extra)
            .env("BERTH_LOG", "info")
            .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
            // The tests' OpenID issuers listen on loopback; a test that checks the refusal
            // sets this back to false.
            .env("BERTH_ALLOW_PRIVATE_ISSUERS", "true");
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let (child, addr, log) = spawn_and_wait(cmd);
        let scheme = if extra.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        Server {
            child: Some(child),
            base: format!("{scheme}://{addr}"),
            host: addr,
            data_dir: data_dir.to_owned(),
            _tmp: None,
            log,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            env,
        }
    }

    /// Starts the server under `strace`, which writes every file sync, rename and socket write
    /// (with the file or socket each names) to `trace`.
    pub fn start_traced(trace: &Path) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-y", "-s", "300", "-X", "raw", "--seccomp-bpf"])
            .args([
                "-e",
                "trace=fsync,fdatasync,sync_file_range,rename,renameat,renameat2,write,writev,sendto,sendmsg",
            ])
            .arg("-o")
            .arg(trace)
            .arg("--")
            .arg(berth_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("BERTH_LOG", "info")
            .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let (child, addr, log) = spawn_and_wait(cmd);
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            host: addr,
            data_dir: data,
            _tmp: Some(tmp),
            log,
            extra: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Keeps `dir` (the data directory's parent, files the server reads) as long as the server.
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._tmp = Some(dir);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        signal(c.id(), "TERM");
        c.wait().unwrap()
    }

    /// Waits for a server that was already signalled to exit.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        self.child.take().unwrap().wait().unwrap()
    }

    /// Starts a new server process on the same data directory (after `kill9`/`terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (child, addr, log) = {
            let mut cmd = Command::new(berth_bin());
            cmd.arg("serve");
            if !extra.contains(&"--listen") {
                cmd.arg("--listen").arg("127.0.0.1:0");
            }
            cmd.arg("--data-dir").arg(&self.data_dir);
            cmd.args(&extra)
                .env("BERTH_LOG", "info")
                .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .env("BERTH_ALLOW_PRIVATE_ISSUERS", "true");
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            spawn_and_wait(cmd)
        };
        self.child = Some(child);
        self.base = format!("http://{addr}");
        self.host = addr;
        self.log = log;
    }

    /// A server-side command (`berth gc`, `berth keys`, …) on this server's stores: its data
    /// directory and the environment it was started with (its database, if any).
    pub fn server_command(&self, sub: &[&str]) -> Command {
        let mut cmd = Command::new(berth_bin());
        cmd.args(sub).arg("--data-dir").arg(&self.data_dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The PostgreSQL URL this server's metadata lives at, when it is not on SQLite.
    pub fn database_url(&self) -> Option<String> {
        self.env_var("BERTH_DATABASE_URL")
    }

    /// A variable of the environment the server was started with.
    pub fn env_var(&self, k: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A server run under a tracer is the tracer's child: end it first.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Spawns the server and reads its stderr until it says where it listens.
fn spawn_and_wait(mut cmd: Command) -> (Child, String, Arc<Mutex<String>>) {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawning berth");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("listening on ")
                && let Some(tx) = tx.take()
            {
                let url = &line[i + "listening on ".len()..];
                let addr = url
                    .split("://")
                    .nth(1)
                    .unwrap_or("")
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send(addr);
            }
            let mut l = log2.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => (child, addr, log),
        Err(_) => {
            let _ = child.kill();
            panic!("berth did not start:\n{}", log.lock().unwrap());
        }
    }
}

/// An HTTP client that authenticates as the server admin (Basic auth on every request).
pub fn client() -> reqwest::Client {
    basic_client("admin", ADMIN_PASSWORD)
}

/// An HTTP client that sends no credentials.
pub fn anonymous_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// An HTTP client that sends Basic credentials on every request.
pub fn basic_client(user: &str, secret: &str) -> reqwest::Client {
    basic_builder(user, secret).build().unwrap()
}

/// A client with Basic credentials whose connections come from `source` (any 127.0.0.0/8
/// address works on loopback), for per-address limits.
pub fn basic_client_from(user: &str, secret: &str, source: &str) -> reqwest::Client {
    basic_builder(user, secret)
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

fn basic_builder(user: &str, secret: &str) -> reqwest::ClientBuilder {
    use base64::Engine as _;
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    );
    headers.insert(reqwest::header::AUTHORIZATION, value.parse().unwrap());
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes (xorshift), so each test gets distinct blobs.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// Pushes a blob in one request (`POST ?digest=`) and returns its digest.
pub async fn push_blob(c: &reqwest::Client, s: &Server, repo: &str, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "push blob: {:?} {}",
        r.headers().get("www-authenticate").cloned(),
        r.text().await.unwrap()
    );
    d
}

/// An image manifest body referencing a config and layers (digest, size).
pub fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> String {
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": n}))
        .collect();
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    })
    .to_string()
}

pub async fn put_manifest(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &str,
) -> reqwest::Response {
    c.put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Pushes a small image (config + one layer + manifest) under `tag`; returns the manifest
/// digest and body.
pub async fn push_image(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    tag: &str,
    seed: u64,
) -> (String, String) {
    push_image_sized(c, s, repo, tag, seed, 1024 + (seed as usize % 512)).await
}

/// `push_image` with a layer of `layer_len` bytes (on S3, over 16 KiB is an object in the bucket;
/// at most, the blob's row keeps it).
pub async fn push_image_sized(
    c: &reqwest::Client,
    s: &Server,
    repo: &str,
    tag: &str,
    seed: u64,
    layer_len: usize,
) -> (String, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let layer = random_bytes(layer_len, seed);
    let cd = push_blob(c, s, repo, config.as_bytes()).await;
    let ld = push_blob(c, s, repo, &layer).await;
    let m = image_manifest((&cd, config.len()), &[(&ld, layer.len())]);
    let r = put_manifest(c, s, repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    (sha256(m.as_bytes()), m)
}

/// The `errors[0].code` of an OCI error response.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A request body fed chunk by chunk from the test, for requests that must stay in flight.
pub fn channel_body() -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (tx, reqwest::Body::wrap_stream(stream))
}

/// Writes `bytes` as a blob of an OCI layout and returns its descriptor.
pub fn layout_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let d = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
}

/// Builds an OCI layout at `dir` whose tag `v1` is an index of two platform images, each with a
/// real tar layer. Returns the index bytes.
pub fn multi_platform_layout(dir: &Path) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut platforms = Vec::new();
    for arch in ["amd64", "arm64"] {
        let root = dir.parent().unwrap().join(format!("rootfs-{arch}"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/arch"), arch).unwrap();
        std::fs::write(
            root.join("payload.bin"),
            random_bytes(300_000, arch.len() as u64),
        )
        .unwrap();
        // A gzip layer, as real images have: registry clients leave those as they are, so the
        // manifests keep their digests.
        let tar_path = dir.parent().unwrap().join(format!("layer-{arch}.tar"));
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar_path)
            .arg("."));
        let tar = std::fs::read(&tar_path).unwrap();
        let gz = Command::new("gzip")
            .arg("-n")
            .arg("-c")
            .arg(&tar_path)
            .output()
            .unwrap();
        assert!(gz.status.success());
        let layer = layout_blob(
            dir,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gz.stdout,
        );
        let config = json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
            "config": {"Cmd": ["/bin/true"]}
        });
        let config = layout_blob(dir, OCI_CONFIG, config.to_string().as_bytes());
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        let mut desc = layout_blob(dir, OCI_MANIFEST, manifest.to_string().as_bytes());
        desc["platform"] = json!({"architecture": arch, "os": "linux"});
        platforms.push(desc);
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms})
        .to_string()
        .into_bytes();
    let mut top = layout_blob(dir, OCI_INDEX, &index);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [top]}).to_string(),
    )
    .unwrap();
    index
}

/// A management-API client: JSON in, (status, JSON) out.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    /// `Authorization` value sent with each request, if any.
    pub auth: Option<String>,
}

impl Api {
    /// As the server admin (Basic).
    pub fn admin(s: &Server) -> Api {
        Api::basic(s, "admin", ADMIN_PASSWORD)
    }

    pub fn basic(s: &Server, user: &str, secret: &str) -> Api {
        use base64::Engine as _;
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
        );
        Api {
            base: s.base.clone(),
            http: anonymous_client(),
            auth: Some(auth),
        }
    }

    pub fn bearer(s: &Server, token: &str) -> Api {
        Api {
            base: s.base.clone(),
            http: anonymous_client(),
            auth: Some(format!("Bearer {token}")),
        }
    }

    pub fn anonymous(s: &Server) -> Api {
        Api {
            base: s.base.clone(),
            http: anonymous_client(),
            auth: None,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(
            method.parse().unwrap(),
            format!("{}/api/v1{path}", self.base),
        );
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("PUT", path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call("DELETE", path, None, &[]).await
    }

    /// Asserts `status` and returns the body.
    pub async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: StatusCode,
    ) -> Value {
        let (got, v) = self.call(method, path, body, &[]).await;
        assert_eq!(got, status, "{method} {path}: {v}");
        v
    }
}

/// Creates user `name` (as admin) and logs in; returns the login answer
/// (`access_token`, `refresh_token`).
pub async fn user_session(s: &Server, name: &str, password: &str) -> Value {
    Api::admin(s)
        .ok(
            "POST",
            "/users",
            Some(json!({"name": name, "password": password})),
            StatusCode::CREATED,
        )
        .await;
    Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": name, "password": password})),
            StatusCode::OK,
        )
        .await
}

/// Creates robot `name` in `org`, binds `role` to it (`scope`: `{}` for the whole org,
/// `{"namespace": …}` or `{"repository": …}`), makes it a token, and returns `accessId:token`.
pub async fn robot_with_token(
    api: &Api,
    org: &str,
    name: &str,
    role: &str,
    scope: Value,
) -> String {
    api.ok(
        "POST",
        &format!("/orgs/{org}/robots"),
        Some(json!({"name": name})),
        StatusCode::CREATED,
    )
    .await;
    let mut binding = json!({"role": role, "subject": format!("robot/{name}")});
    if let Some(m) = scope.as_object() {
        for (k, v) in m {
            binding[k] = v.clone();
        }
    }
    api.ok(
        "PUT",
        &format!("/orgs/{org}/bindings/{name}"),
        Some(binding),
        StatusCode::CREATED,
    )
    .await;
    let t = api
        .ok(
            "POST",
            &format!("/orgs/{org}/robots/{name}/tokens"),
            Some(json!({"name": "t"})),
            StatusCode::CREATED,
        )
        .await;
    format!(
        "{}:{}",
        t["accessId"].as_str().unwrap(),
        t["token"].as_str().unwrap()
    )
}

/// VmHWM (peak resident memory) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A registry (bearer) token from `/token` for Basic `user:secret`, asking `scope` (e.g.
/// `repository:acme/app:pull`).
pub async fn bearer_token(s: &Server, user: &str, secret: &str, scope: &str) -> String {
    token_from(&basic_client(user, secret), s, scope).await
}

/// A registry token for `scope` from `GET /token` with whatever credentials `c` sends.
pub async fn token_from(c: &reqwest::Client, s: &Server, scope: &str) -> String {
    let r = c
        .get(s.url(&format!("/token?service=berth&scope={scope}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// When the suite runs against PostgreSQL (`BERTH_TEST_DATABASE_URL` names a cluster's admin
/// database), a fresh database for a server whose data directory is `data_dir`.
pub fn suite_database(data_dir: &Path) -> Option<String> {
    let admin = std::env::var("BERTH_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())?;
    let mut seed = data_dir.as_os_str().as_encoded_bytes().to_vec();
    seed.extend(std::process::id().to_le_bytes());
    let name = format!("berth_{}", &sha256(&seed)["sha256:".len()..][..16]);
    Some(engines::create_database(&admin, &name))
}

/// When the suite runs against S3 (`BERTH_TEST_S3_ENDPOINT`, a Garage that `scripts/test.sh`
/// started, with the access key above and bucket `berth`), the environment of a server whose
/// blobs go under a prefix of its own.
pub fn suite_storage(data_dir: &Path) -> Option<Vec<(String, String)>> {
    let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())?;
    let mut seed = data_dir.as_os_str().as_encoded_bytes().to_vec();
    seed.extend(std::process::id().to_le_bytes());
    let prefix = &sha256(&seed)["sha256:".len()..][..16];
    Some(vec![
        ("BERTH_STORAGE".into(), format!("s3://berth/{prefix}")),
        ("BERTH_S3_ENDPOINT".into(), endpoint),
        ("BERTH_S3_REGION".into(), "garage".into()),
        ("BERTH_S3_PATH_STYLE".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), engines::GARAGE_KEY_ID.into()),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            engines::GARAGE_SECRET.into(),
        ),
    ])
}

/// Creates user `user` and makes them a member of `org` with `role`, invited by `by`.
pub async fn new_member(s: &Server, by: &Api, org: &str, user: &str, password: &str, role: &str) {
    user_session(s, user, password).await;
    join(s, by, org, user, password, role).await;
}

/// Makes `user` (password `password`) a member of `org` with `role` as an owner does it: `by`
/// invites (202), the user accepts.
pub async fn join(s: &Server, by: &Api, org: &str, user: &str, password: &str, role: &str) {
    by.ok(
        "PUT",
        &format!("/orgs/{org}/members/{user}"),
        Some(json!({ "role": role })),
        StatusCode::ACCEPTED,
    )
    .await;
    Api::basic(s, user, password)
        .ok(
            "POST",
            &format!("/orgs/{org}/invitations/accept"),
            None,
            StatusCode::OK,
        )
        .await;
}

/// Signs in to the console; the session cookie (`name=value`), or `None` when refused.
pub async fn console_cookie(s: &Server, user: &str, password: &str) -> Option<String> {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(s.url("/ui/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::SEE_OTHER {
        return None;
    }
    let c = r.headers().get("set-cookie")?.to_str().unwrap();
    Some(c.split(';').next().unwrap().to_owned())
}

/// The status of a console page with `cookie`: 200 while the session lives, 303 (to the
/// sign-in page) after.
pub async fn console_status(s: &Server, cookie: &str) -> StatusCode {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(s.url("/ui/orgs/acme"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
}
