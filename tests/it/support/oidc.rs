//! A real OpenID provider for the single sign-on tests: `oidc-provider` (npm) started by
//! `tests/oidc/provider.mjs` on a loopback port, with test users and groups; its `/test/users`
//! endpoints change a user's groups or disable them. `tests/oidc/signin.mjs` signs in at its own
//! login page without a browser (the console test does it in Chromium).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::Server;

pub const CLIENT_ID: &str = "berth";
pub const CLIENT_SECRET: &str = "berth-client-secret-0123456789";
/// The provider's name in berth's configuration.
pub const PROVIDER: &str = "corp";
/// Members of this group are server admins.
pub const ADMIN_GROUP: &str = "berth-admins";

pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// A running provider.
pub struct Idp {
    child: Child,
    pub issuer: String,
    _tmp: tempfile::TempDir,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The users every test provider knows: alice (dev), bob (ops), carol (an admin), and mallory,
/// whose provider user name and e-mail are the local admin's.
pub fn test_users() -> Value {
    json!({
        "alice": {"password": "pw-alice", "email": "alice@example.com", "name": "Alice", "preferred_username": "alice", "groups": ["dev"]},
        "bob": {"password": "pw-bob", "email": "bob@example.com", "name": "Bob", "preferred_username": "bob", "groups": ["ops"]},
        "carol": {"password": "pw-carol", "email": "carol@example.com", "name": "Carol", "preferred_username": "carol", "groups": [ADMIN_GROUP]},
        "mallory": {"password": "pw-mallory", "email": "admin@example.com", "name": "Admin", "preferred_username": "admin", "groups": []},
    })
}

impl Idp {
    /// A provider whose client `berth` sends people back to `berth_base`'s callback.
    pub fn start(berth_base: &str, extra_clients: Vec<Value>) -> Idp {
        Idp::start_with(berth_base, extra_clients, true)
    }

    /// `start`, with or without the device authorization grant.
    pub fn start_with(berth_base: &str, extra_clients: Vec<Value>, device_flow: bool) -> Idp {
        let tmp = tempfile::tempdir().unwrap();
        let mut clients = vec![json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("{berth_base}/ui/login/sso/{PROVIDER}/callback")],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "token_endpoint_auth_method": "client_secret_basic",
        })];
        clients.extend(extra_clients);
        let cfg = json!({
            "port": 0,
            "clients": clients,
            "users": test_users(),
            "device_flow": device_flow,
            "id_token_ttl": 300,
            "access_token_ttl": 300,
        });
        let path = tmp.path().join("idp.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        // The provider starts in well under a second; on a machine loaded by the whole suite a
        // start that has said nothing for 60 s is killed and tried once more rather than left
        // to hang the test.
        let mut last = String::new();
        for _ in 0..2 {
            let mut child = Command::new("node")
                .arg(oidc_dir().join("provider.mjs"))
                .arg(&path)
                .current_dir(oidc_dir())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("node runs tests/oidc/provider.mjs (scripts/test.sh installs it)");
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
            match rx.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(line.trim())
                        .unwrap_or_else(|e| panic!("the provider's first line {line:?}: {e}"));
                    return Idp {
                        child,
                        issuer: v["issuer"].as_str().unwrap().to_owned(),
                        _tmp: tmp,
                    };
                }
                Err(e) => {
                    last = e.to_string();
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("the OpenID provider did not start: {last}");
    }

    /// Changes a user at the provider (`{"groups": [...]}`, `{"disabled": true}`).
    pub async fn set_user(&self, id: &str, change: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/test/users/{id}", self.issuer))
            .json(&change)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "changing {id}: {}", r.status());
    }

    /// Signs `user` in at the provider's login page for `auth_url`: the URL the provider sends
    /// the browser back to (berth's callback with `code` and `state`).
    pub fn sign_in(auth_url: &str, user: &str, password: &str) -> String {
        let out = Command::new("node")
            .arg(oidc_dir().join("signin.mjs"))
            .args(["code", auth_url, user, password])
            .current_dir(oidc_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "signin.mjs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Approves a device sign-in at the provider's pages as `user`.
    pub fn approve_device(uri: &str, code: &str, user: &str, password: &str) {
        let out = Command::new("node")
            .arg(oidc_dir().join("signin.mjs"))
            .args(["device", uri, code, user, password])
            .current_dir(oidc_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "signin.mjs device: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A berth server with the provider configured (`--oidc-*`), its groups read again every 2 s.
pub fn sso_server(extra: &[&str]) -> (Server, Idp) {
    sso_server_with(extra, Vec::new())
}

/// `sso_server` whose provider also knows `clients` (`{BASE}` in a redirect URI is berth's).
pub fn sso_server_with(extra: &[&str], clients: Vec<Value>) -> (Server, Idp) {
    sso_server_opts(extra, clients, true)
}

/// `sso_server_with`, choosing whether the provider offers the device grant.
pub fn sso_server_opts(extra: &[&str], clients: Vec<Value>, device_flow: bool) -> (Server, Idp) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let clients = clients
        .into_iter()
        .map(|c| serde_json::from_str(&c.to_string().replace("{BASE}", &base)).unwrap())
        .collect();
    let idp = Idp::start_with(&base, clients, device_flow);
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<&str> = vec![
        "--listen",
        &listen,
        "--public-url",
        &base,
        "--oidc-issuer",
        &idp.issuer,
        "--oidc-name",
        PROVIDER,
        "--oidc-display-name",
        "Corp SSO",
        "--oidc-client-id",
        CLIENT_ID,
        "--oidc-client-secret-file",
        secret.to_str().unwrap(),
        "--oidc-admin-group",
        ADMIN_GROUP,
        "--sso-refresh-interval",
        "2s",
    ];
    args.extend_from_slice(extra);
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &args, &[]);
    s.keep_dir(tmp);
    (s, idp)
}

/// What a console sign-in through the provider left: the session cookie's value (a refresh
/// token: Basic `iamrefresh` in the API and `/token`).
pub struct Console {
    pub session: String,
}

/// The `Set-Cookie` value of cookie `name` in an answer.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?;
            let (k, val) = first.split_once('=')?;
            (k.trim() == name && !val.is_empty()).then(|| val.to_owned())
        })
}

/// Starts a console sign-in: (the provider's authorization URL, the state cookie).
pub async fn start_sign_in(s: &Server) -> (String, String) {
    let r = super::anonymous_client()
        .get(s.url(&format!("/ui/login/sso/{PROVIDER}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    let cookie = set_cookie(&r, "berth_sso").expect("the sign-in's state cookie");
    (to, cookie)
}

/// Finishes a sign-in at berth's callback with `cookie`: the answer.
pub async fn callback(callback_url: &str, cookie: &str) -> reqwest::Response {
    super::anonymous_client()
        .get(callback_url)
        .header("cookie", format!("berth_sso={cookie}"))
        .send()
        .await
        .unwrap()
}

/// Signs `user` in to the console through the provider.
pub async fn console_sign_in(s: &Server, user: &str, password: &str) -> Console {
    let (auth_url, cookie) = start_sign_in(s).await;
    let back = tokio::task::spawn_blocking({
        let (u, p) = (user.to_owned(), password.to_owned());
        move || Idp::sign_in(&auth_url, &u, &p)
    })
    .await
    .unwrap();
    let r = callback(&back, &cookie).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let session = set_cookie(&r, "berth_session").expect("a console session cookie");
    Console { session }
}

/// `berth login URL --sso -a ORG` running, waiting for its device sign-in to be approved.
pub struct CliSignIn {
    child: std::process::Child,
    err: BufReader<std::process::ChildStderr>,
    /// What it said so far.
    pub said: String,
    /// Where to approve it (the provider's page, with the code in it) and the code.
    pub url: String,
    pub code: String,
}

impl CliSignIn {
    pub fn start(s: &Server, cfg: &Path, home: &Path, org: &str) -> CliSignIn {
        let mut child = Command::new(super::berth_bin())
            .args(["login", &s.base, "--sso", "-a", org])
            .env("BERTH_CONFIG", cfg)
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let (mut url, mut code, mut said) = (String::new(), String::new(), String::new());
        for _ in 0..4 {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                break;
            }
            said.push_str(&line);
            if let Some(u) = line.trim().strip_prefix("To sign in, open ") {
                url = u.to_owned();
            }
            if let Some(rest) = line.trim().strip_prefix("and confirm the code ") {
                code = rest.split_whitespace().next().unwrap().to_owned();
                break;
            }
        }
        assert!(
            !url.is_empty() && !code.is_empty(),
            "the CLI shows where and what to confirm: {said}"
        );
        CliSignIn {
            child,
            err,
            said,
            url,
            code,
        }
    }

    /// Waits for the command: its exit status and everything it said.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.err, &mut rest).unwrap();
        (status, format!("{}{rest}", self.said))
    }
}
