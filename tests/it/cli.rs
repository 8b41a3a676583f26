//! The `berth` command line against a real server: the seed flows from a terminal, the files it
//! writes, and its errors and exit codes.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// Runs `berth ARGS` with the client config at `cfg`, feeding `stdin`.
pub(crate) fn berth(cfg: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(berth_bin());
    // An empty HOME: nothing may come from the real user's files.
    let home = cfg.parent().unwrap().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    cmd.args(args)
        .env("BERTH_CONFIG", cfg)
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Creates user `user` (password `<user>-password-1`), logs in, creates `org` and logs into it.
async fn user_in_new_org(s: &Server, cfg: &Path, user: &str, org: &str) {
    let password = format!("{user}-password-1");
    Api::admin(s)
        .ok(
            "POST",
            "/users",
            Some(json!({"name": user, "password": password})),
            StatusCode::CREATED,
        )
        .await;
    let stdin = format!("{password}\n");
    ok(
        cfg,
        &["login", &s.base, "-u", user, "--password-stdin"],
        Some(&stdin),
    );
    ok(cfg, &["org", "create", org], None);
    ok(
        cfg,
        &["login", "-a", org, "-u", user, "--password-stdin"],
        Some(&stdin),
    );
}

/// Runs and expects success; returns stdout.
pub(crate) fn ok(cfg: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = berth(cfg, args, stdin);
    assert!(
        out.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn seed_flows_from_the_terminal() {
    let s = Server::start();
    Api::admin(&s)
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "alice", "password": "alice-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    // up login -a my-org: first without an org, create it, then into it.
    ok(
        &cfg,
        &["login", &s.base, "-u", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        ok(&cfg, &["org", "create", "acme"], None).contains("acme"),
        "table output names the org"
    );
    ok(
        &cfg,
        &["login", "-a", "acme", "-u", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );
    // up robot create / robot token create --output=token.json
    ok(
        &cfg,
        &["robot", "create", "ci-bot", "--description", "CI"],
        None,
    );
    let list = ok(&cfg, &["robot", "list"], None);
    assert!(
        list.lines().next().unwrap().starts_with("NAME") && list.contains("ci-bot"),
        "{list}"
    );
    ok(
        &cfg,
        &[
            "binding",
            "create",
            "ci-bot-writes",
            "--role",
            "Writer",
            "--robot",
            "ci-bot",
            "--namespace",
            "acme",
        ],
        None,
    );
    let token_file = tmp.path().join("token.json");
    ok(
        &cfg,
        &[
            "robot",
            "token",
            "create",
            "ci-bot",
            "ci-token",
            "--output",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token: Value =
        serde_json::from_str(&std::fs::read_to_string(&token_file).unwrap()).unwrap();
    let keys: Vec<_> = token.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["accessId", "token"], "seed 000's token file");
    let secret = token["token"].as_str().unwrap().to_owned();
    let listed = ok(
        &cfg,
        &["robot", "token", "list", "ci-bot", "-o", "json"],
        None,
    );
    assert!(
        !listed.contains(&secret) && listed.contains("ci-token"),
        "{listed}"
    );

    // up controlplane pull-secret create my-secret -f token.json
    let yaml = ok(
        &cfg,
        &[
            "pull-secret",
            "create",
            "my-secret",
            "-f",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        yaml.contains("kind: Secret") && yaml.contains("type: kubernetes.io/dockerconfigjson"),
        "{yaml}"
    );
    let as_json: Value = serde_json::from_str(&ok(
        &cfg,
        &[
            "pull-secret",
            "create",
            "my-secret",
            "-f",
            token_file.to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(
        as_json["metadata"],
        json!({"name": "my-secret", "namespace": "default"})
    );
    let docker_bytes = base64::engine::general_purpose::STANDARD
        .decode(as_json["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    let docker: Value = serde_json::from_slice(&docker_bytes).unwrap();
    let entry = &docker["auths"][&s.host];
    assert_eq!(entry["username"], token["accessId"]);
    assert_eq!(entry["password"], token["token"]);
    let auth = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(auth).unwrap(),
        format!("{}:{}", token["accessId"].as_str().unwrap(), secret)
    );
    // The Secret's .dockerconfigjson, handed to skopeo as --authfile, pulls.
    let layout = tmp.path().join("layout");
    multi_platform_layout(&layout);
    run(Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &admin_creds(),
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/acme/app:v1", s.host)));
    let authfile = tmp.path().join("dockerconfig.json");
    std::fs::write(&authfile, &docker_bytes).unwrap();
    run(Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
        ])
        .arg(format!("docker://{}/acme/app:v1", s.host)));
    // The YAML form, parsed field by field.
    let parsed: Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(parsed["apiVersion"], "v1");
    assert_eq!(parsed["kind"], "Secret");
    assert_eq!(parsed["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(parsed["metadata"]["namespace"], "default");
    assert_eq!(
        parsed["data"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [".dockerconfigjson"]
    );
    assert_eq!(
        parsed["data"][".dockerconfigjson"],
        as_json["data"][".dockerconfigjson"]
    );

    // Seed 001: an ImageConfig for every image under a prefix.
    let ic = ok(
        &cfg,
        &[
            "image-config",
            "create",
            "official-provider-auth",
            "--prefix",
            &format!("{}/acme", s.host),
            "--pull-secret",
            "my-secret",
            "-o",
            "json",
        ],
        None,
    );
    let ic: Value = serde_json::from_str(&ic).unwrap();
    assert_eq!(ic["apiVersion"], "pkg.crossplane.io/v1beta1");
    assert_eq!(ic["kind"], "ImageConfig");
    assert_eq!(
        ic["spec"]["matchImages"],
        json!([{"prefix": format!("{}/acme", s.host)}])
    );
    assert_eq!(
        ic["spec"]["registry"]["authentication"]["pullSecretRef"]["name"],
        "my-secret"
    );

    // Seed 004: a self-contained config for the automation.
    let robot_cfg = tmp.path().join("robot.yaml");
    let out = berth(
        &cfg,
        &[
            "config",
            "create",
            "--from-token",
            token_file.to_str().unwrap(),
            "--server",
            &s.base,
            "--org",
            "acme",
            "--output",
            robot_cfg.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&robot_cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let other = tmp.path().join("unused.yaml");
    let repos = ok(
        &other,
        &["--config", robot_cfg.to_str().unwrap(), "repo", "list"],
        None,
    );
    assert!(repos.contains("acme/app"), "{repos}");
    let me: Value = serde_json::from_str(&ok(
        &other,
        &[
            "--config",
            robot_cfg.to_str().unwrap(),
            "whoami",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(
        (me["kind"].as_str(), me["name"].as_str()),
        (Some("robot"), Some("acme/ci-bot"))
    );

    // Seed 002 from the terminal.
    let rt: Value = serde_json::from_str(&ok(
        &cfg,
        &["registry-token", "create", "--permanent", "-o", "json"],
        None,
    ))
    .unwrap();
    assert!(rt["token"].as_str().unwrap().starts_with("btht_"));
    assert!(rt["expires"].is_null());

    // config view redacts secrets unless --raw.
    let view = ok(&cfg, &["config", "view"], None);
    assert!(
        view.contains("REDACTED") && !view.contains("bthf_"),
        "{view}"
    );
    assert!(ok(&cfg, &["config", "view", "--raw"], None).contains("bthf_"));
    assert!(
        ok(&cfg, &["config", "get-contexts"], None)
            .lines()
            .any(|l| l.starts_with('*') && l.contains("acme"))
    );

    // Secrets are never in the server's log.
    let log = s.log_text();
    assert!(!log.contains(&secret) && !log.contains(rt["token"].as_str().unwrap()));

    // Logout revokes the session; after it, commands say so with the auth exit code.
    ok(&cfg, &["logout"], None);
    let out = berth(&cfg, &["whoami"], None);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: not logged in"));
}

#[tokio::test]
async fn errors_are_one_readable_line_with_distinct_exit_codes() {
    let s = Server::start();
    Api::admin(&s)
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "bob", "password": "bob-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    // No terminal and no --password-stdin: a usage error, not a hang.
    let out = berth(&cfg, &["login", &s.base, "-u", "bob"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --password-stdin"));
    // Wrong password: authentication exit code, no stack trace.
    let out = berth(
        &cfg,
        &["login", &s.base, "-u", "bob", "--password-stdin"],
        Some("wrong\n"),
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.lines().count() <= 2,
        "{err}"
    );
    // It says what is wrong, not "log in again".
    assert!(
        err.contains("the user name \"bob\" or its password is wrong")
            && !err.contains("log in again"),
        "{err}"
    );
    // https against a plain-HTTP server: said in words, with the URL to use.
    let https = s.base.replacen("http://", "https://", 1);
    let out = berth(
        &cfg,
        &["login", &https, "-u", "bob", "--password-stdin"],
        Some("bob-password-1\n"),
    );
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "the server answers plain HTTP, not HTTPS: use {}",
            s.base
        )),
        "{err}"
    );
    // An unknown organization: it does not exist or you are not a member.
    let out = berth(
        &cfg,
        &[
            "login",
            &s.base,
            "-a",
            "nosuch",
            "-u",
            "bob",
            "--password-stdin",
        ],
        Some("bob-password-1\n"),
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().next().unwrap(),
        "error: organization \"nosuch\" does not exist or you are not a member",
        "{err}"
    );
    // A mistyped subcommand: clap's suggestion; and the exit codes in --help's footer.
    let out = berth(&cfg, &["robto", "list"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a similar subcommand exists: 'robot'"));
    let help = ok(&cfg, &["--help"], None);
    assert!(
        help.contains("Exit codes:") && help.contains("4  not found"),
        "{help}"
    );
    ok(
        &cfg,
        &["login", &s.base, "-u", "bob", "--password-stdin"],
        Some("bob-password-1\n"),
    );
    ok(&cfg, &["org", "create", "bobs"], None);
    // Not found: the API's message, exit code 4.
    let out = berth(&cfg, &["robot", "get", "nope", "--org", "bobs"], None);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: robot \"nope\" not found in organization \"bobs\""
    );
    // No organization anywhere: usage.
    let out = berth(&cfg, &["robot", "list"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --org ORG"));
    // Not allowed: auth exit code.
    let out = berth(&cfg, &["robot", "list", "--org", "admin-only"], None);
    assert_eq!(out.status.code(), Some(3));
    // A server that is not there: server/network exit code, with a hint.
    let dead = tmp.path().join("dead.yaml");
    let out = berth(
        &dead,
        &[
            "login",
            "http://127.0.0.1:9",
            "-u",
            "bob",
            "--password-stdin",
        ],
        Some("x\n"),
    );
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
    // clap's own usage errors keep exit code 2.
    let out = berth(&cfg, &["robot", "frobnicate"], None);
    assert_eq!(out.status.code(), Some(2));
    // The session's access token is cached: a second command does not ask for a new one.
    let _ = berth(&cfg, &["whoami"], None);
    let out = berth(&cfg, &["--verbose", "whoami"], None);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("/auth/access-token"),
        "the access token was not reused"
    );
    // --verbose shows requests, never credentials.
    let out = berth(&cfg, &["--verbose", "whoami"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("> GET ")
            && !err.contains("bthf_")
            && !err.to_lowercase().contains("authorization"),
        "{err}"
    );
}

#[tokio::test]
async fn management_commands() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    let admin = tmp.path().join("admin.yaml");
    ok(
        &admin,
        &["login", &s.base, "-u", "admin", "--password-stdin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    // Users (server admins).
    ok(
        &admin,
        &["user", "create", "dana", "--password-stdin"],
        Some("dana-password-1\n"),
    );
    assert!(ok(&admin, &["user", "list"], None).contains("dana"));
    ok(
        &admin,
        &["user", "passwd", "dana", "--password-stdin"],
        Some("dana-password-2\n"),
    );
    let out = berth(
        &cfg,
        &["login", &s.base, "-u", "dana", "--password-stdin"],
        Some("dana-password-1\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "the old password no longer works"
    );
    ok(
        &cfg,
        &["login", &s.base, "-u", "dana", "--password-stdin"],
        Some("dana-password-2\n"),
    );
    ok(&cfg, &["org", "create", "dorg"], None);
    ok(
        &cfg,
        &["login", "-a", "dorg", "-u", "dana", "--password-stdin"],
        Some("dana-password-2\n"),
    );
    let org: Value =
        serde_json::from_str(&ok(&cfg, &["org", "get", "dorg", "-o", "json"], None)).unwrap();
    assert_eq!(org["namespaces"][0]["name"], "dorg");
    // Namespaces.
    ok(&cfg, &["namespace", "create", "dorg-extra"], None);
    let yaml = ok(
        &cfg,
        &[
            "namespace",
            "set-public",
            "dorg-extra",
            "true",
            "-o",
            "yaml",
        ],
        None,
    );
    assert!(yaml.contains("public: true"), "{yaml}");
    assert!(ok(&cfg, &["namespace", "list"], None).contains("dorg-extra"));
    // Members.
    ok(
        &admin,
        &["user", "create", "erin", "--password-stdin"],
        Some("erin-password-1\n"),
    );
    // An owner invites; erin sees the invitation and accepts it from her own login.
    let added = berth(&cfg, &["member", "add", "erin"], None);
    assert!(added.status.success());
    assert!(String::from_utf8_lossy(&added.stderr).contains("member accept"));
    let erin = tmp.path().join("erin.yaml");
    ok(
        &erin,
        &["login", &s.base, "-u", "erin", "--password-stdin"],
        Some("erin-password-1\n"),
    );
    assert!(ok(&erin, &["member", "invitations"], None).contains("dorg"));
    ok(&erin, &["member", "accept", "--org", "dorg"], None);
    assert!(
        ok(&cfg, &["member", "list"], None)
            .lines()
            .any(|l| l.starts_with("erin") && l.contains("member"))
    );
    ok(&cfg, &["member", "remove", "erin"], None);
    // Roles and can-i.
    ok(
        &cfg,
        &[
            "role",
            "create",
            "puller",
            "--verb",
            "pull",
            "--name",
            "dorg/pub-*",
        ],
        None,
    );
    let role: Value =
        serde_json::from_str(&ok(&cfg, &["role", "get", "puller", "-o", "json"], None)).unwrap();
    assert_eq!(
        role["rules"],
        json!([{"resources": ["repositories"], "verbs": ["pull"], "names": ["dorg/pub-*"]}])
    );
    ok(&cfg, &["robot", "create", "bot"], None);
    ok(
        &cfg,
        &[
            "binding", "create", "bot", "--role", "puller", "--robot", "bot",
        ],
        None,
    );
    assert_eq!(
        ok(
            &cfg,
            &["can-i", "pull", "dorg/pub-x", "--as", "robot/bot"],
            None
        )
        .trim(),
        "yes"
    );
    let out = berth(
        &cfg,
        &["can-i", "push", "dorg/pub-x", "--as", "robot/bot"],
        None,
    );
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(1), "no")
    );
    assert_eq!(
        ok(&cfg, &["can-i", "delete", "dorg/anything"], None).trim(),
        "yes",
        "owners may"
    );
    assert_eq!(
        ok(&cfg, &["can-i", "create", "robots/new"], None).trim(),
        "yes"
    );
    // API keys: own and robot; written as {"name", "apikey"} with mode 0600; they work.
    let key_file = tmp.path().join("key.json");
    ok(
        &cfg,
        &[
            "apikey",
            "create",
            "laptop",
            "--output",
            key_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key: Value = serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert_eq!(key["name"], "laptop");
    let apikey = key["apikey"].as_str().unwrap();
    push_image(&basic_client("iamapikey", apikey), &s, "dorg/app", "v1", 7).await;
    let robot_key: Value = serde_json::from_str(&ok(
        &cfg,
        &["apikey", "create", "k", "--robot", "bot"],
        None,
    ))
    .unwrap();
    assert!(robot_key["apikey"].as_str().unwrap().starts_with("btha_"));
    let listed: Value =
        serde_json::from_str(&ok(&cfg, &["apikey", "list", "-o", "json"], None)).unwrap();
    let id = listed["apikeys"][0]["id"].as_str().unwrap().to_owned();
    ok(&cfg, &["apikey", "delete", &id], None);
    // Tags.
    let (d2, m2) = push_image(&client(), &s, "dorg/app", "v2", 8).await;
    let table = ok(&cfg, &["tag", "list", "dorg/app", "--sort", "name"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TAG", "DIGEST", "SIZE", "PUSHED", "PLATFORMS"],
        "{table}"
    );
    assert!(
        lines[1].starts_with("v1 ") && lines[2].starts_with("v2 "),
        "{table}"
    );
    assert!(
        lines[2].contains(&d2[..19]),
        "the digest, shortened: {table}"
    );
    assert!(lines[2].contains(" KiB"), "the size, readable: {table}");
    assert_eq!(lines.len(), 3, "{table}");
    let listed: Value = serde_json::from_str(&ok(
        &cfg,
        &["tag", "list", "dorg/app", "--filter", "V2", "-o", "json"],
        None,
    ))
    .unwrap();
    let v2 = &listed["tags"][0];
    assert_eq!(listed["tags"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(v2["digest"], d2.as_str());
    let m2: Value = serde_json::from_str(&m2).unwrap();
    let blobs: u64 =
        m2["layers"][0]["size"].as_u64().unwrap() + m2["config"]["size"].as_u64().unwrap();
    assert_eq!(
        v2["size"].as_u64().unwrap(),
        blobs + m2.to_string().len() as u64,
        "the image's size: manifest, config and layers: {v2}"
    );
    assert!(v2["pushed"].as_str().is_some(), "{v2}");
    // One repository's view; a repository deleted whole.
    push_image(&client(), &s, "dorg/old", "v1", 9).await;
    let got = ok(&cfg, &["repo", "get", "dorg/old"], None);
    assert!(
        got.contains("Repository: dorg/old") && got.contains("You may: pull, push, delete"),
        "{got}"
    );
    assert!(got.contains("\nv1 "), "{got}");
    ok(&cfg, &["repo", "delete", "dorg/old"], None);
    let out = berth(&cfg, &["repo", "get", "dorg/old"], None);
    assert_eq!(out.status.code(), Some(4), "not found: {out:?}");
    let out = berth(&cfg, &["tag", "list", "app"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NAMESPACE/REPOSITORY"),
        "{out:?}"
    );
    let out = berth(&cfg, &["repo", "delete", "dorg/old"], None);
    assert_eq!(out.status.code(), Some(4), "a second delete: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("repository dorg/old not found"),
        "{out:?}"
    );
    ok(&cfg, &["tag", "delete", "dorg/app:v1"], None);
    assert_eq!(
        ok(&cfg, &["tag", "list", "dorg/app", "-o", "json"], None)
            .matches("\"tag\"")
            .count(),
        1
    );
    let out = berth(&cfg, &["tag", "delete", "dorg-app-without-tag"], None);
    assert_eq!(out.status.code(), Some(2));
    // Audit: dana sees her own events.
    let events: Value = serde_json::from_str(&ok(
        &cfg,
        &["audit", "list", "--since", "1h", "-o", "json"],
        None,
    ))
    .unwrap();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "apikey.create"),
        "{events}"
    );
    // Clean up: delete the org; a second delete is not found.
    ok(&cfg, &["org", "delete", "dorg"], None);
    assert_eq!(
        berth(&admin, &["org", "delete", "dorg"], None)
            .status
            .code(),
        Some(4)
    );
    ok(&admin, &["user", "delete", "erin"], None);
}

#[tokio::test]
async fn docker_config_and_the_credential_helper_with_skopeo() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "fay", "forg").await;
    push_image(&client(), &s, "forg/app", "v1", 11).await;
    let image = format!("docker://{}/forg/app:v1", s.host);

    // A user session goes into credHelpers (docker never holds the refresh token); other
    // entries of the file stay.
    let docker_cfg = tmp.path().join("docker/config.json");
    std::fs::create_dir_all(docker_cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &docker_cfg,
        r#"{"auths":{"other.example":{"auth":"eDp5"}},"psFormat":"table"}"#,
    )
    .unwrap();
    ok(
        &cfg,
        &["docker-config", "--file", docker_cfg.to_str().unwrap()],
        None,
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&docker_cfg).unwrap()).unwrap();
    assert_eq!(doc["auths"]["other.example"]["auth"], "eDp5");
    assert_eq!(doc["psFormat"], "table");
    assert_eq!(doc["credHelpers"][&s.host], "berth");
    assert!(
        doc["auths"].is_object(),
        "clients that read auths find it: {doc}"
    );
    assert!(!doc.to_string().contains("bthf_"));

    // skopeo follows credHelpers to docker-credential-berth, which answers an iambearer token.
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(berth_bin(), bin_dir.join("docker-credential-berth")).unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            docker_cfg.to_str().unwrap(),
            &image,
        ])
        .env("PATH", &path)
        .env("BERTH_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The helper's protocol directly.
    let helper = |action: &str, input: &str| {
        let mut c = Command::new(bin_dir.join("docker-credential-berth"));
        c.arg(action)
            .env("BERTH_CONFIG", &cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let got = helper("get", &s.host);
    assert!(got.status.success());
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["Username"], "iambearer");
    assert!(
        got["Secret"].as_str().unwrap().starts_with("eyJ"),
        "a short-lived JWT, not the refresh token"
    );
    let listed: Value = serde_json::from_slice(&helper("list", "").stdout).unwrap();
    assert_eq!(listed[&s.base], "iambearer");
    let refused = helper(
        "store",
        &json!({"ServerURL": "elsewhere.example", "Username": "fay", "Secret": "a password"})
            .to_string(),
    );
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stdout).contains("stores no passwords")
    );
    // `docker logout` (erase) forgets what docker stored; the `berth login` session is not
    // docker's to end.
    assert!(helper("erase", &s.host).status.success());
    let kept = helper("get", &s.host);
    assert!(kept.status.success());
    let kept: Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(kept["Username"], "iambearer");
    let nothing = helper("get", "elsewhere.example");
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stdout).contains("credentials not found"));

    // With a robot token file: a plain auths entry, usable as a containers auth.json.
    ok(
        &cfg,
        &[
            "login",
            &s.base,
            "-a",
            "forg",
            "-u",
            "fay",
            "--password-stdin",
        ],
        Some("fay-password-1\n"),
    );
    ok(&cfg, &["robot", "create", "puller"], None);
    ok(
        &cfg,
        &[
            "binding", "create", "puller", "--role", "Reader", "--robot", "puller",
        ],
        None,
    );
    let token_file = tmp.path().join("token.json");
    ok(
        &cfg,
        &[
            "robot",
            "token",
            "create",
            "puller",
            "t",
            "--output",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    let auth_json = tmp.path().join("auth.json");
    ok(
        &cfg,
        &[
            "docker-config",
            "--file",
            auth_json.to_str().unwrap(),
            "-f",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            auth_json.to_str().unwrap(),
            &image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = ok(
        &cfg,
        &[
            "docker-config",
            "--print",
            "-f",
            token_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(printed.contains("\"auths\""));
    // Completions.
    assert!(ok(&cfg, &["completion", "bash"], None).contains("_berth"));
    assert!(ok(&cfg, &["completion", "fish"], None).contains("complete -c berth"));
}

#[tokio::test]
async fn apply_is_idempotent_and_checks_every_document_first() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "gus", "gorg").await;
    ok(&cfg, &["robot", "create", "deployer"], None);
    let manifest = |verbs: &str| {
        format!(
            "apiVersion: berth/v1\nkind: Role\nmetadata:\n  name: puller\nrules:\n- resources: [repositories]\n  verbs: [{verbs}]\n  names: [\"gorg/pub-*\"]\n\
             ---\napiVersion: berth/v1\nkind: Binding\nmetadata:\n  name: deployer\nrole: puller\nsubject: robot/deployer\nnamespace: gorg\n"
        )
    };
    let file = tmp.path().join("rbac.yaml");
    std::fs::write(&file, manifest("pull")).unwrap();
    let f = file.to_str().unwrap();
    assert_eq!(
        ok(&cfg, &["apply", "-f", f], None),
        "role/puller created\nbinding/deployer created\n"
    );
    assert_eq!(
        ok(&cfg, &["apply", "-f", f], None),
        "role/puller unchanged\nbinding/deployer unchanged\n"
    );
    assert_eq!(
        ok(&cfg, &["apply", "-f", "-"], Some(&manifest("pull, push"))),
        "role/puller configured\nbinding/deployer unchanged\n"
    );
    // What `list -o yaml` prints applies as it is (built-in roles left alone).
    let roles = ok(&cfg, &["role", "list", "-o", "yaml"], None);
    let bindings = ok(&cfg, &["binding", "list", "-o", "yaml"], None);
    assert_eq!(
        ok(
            &cfg,
            &["apply", "-f", "-"],
            Some(&format!("{roles}\n---\n{bindings}"))
        ),
        "role/puller unchanged\nbinding/deployer unchanged\n"
    );
    assert_eq!(
        ok(
            &cfg,
            &["can-i", "push", "gorg/pub-x", "--as", "robot/deployer"],
            None
        )
        .trim(),
        "yes"
    );
    // A bad document anywhere: nothing is applied, and the error names it.
    let bad = format!(
        "{}---\nkind: Planet\nmetadata:\n  name: x\n",
        manifest("pull")
    );
    let out = berth(&cfg, &["apply", "-f", "-"], Some(&bad));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("document 3: kind must be Role, ClusterRole, RoleBinding, ClusterRoleBinding or Binding, not Planet")
    );
    assert_eq!(
        ok(
            &cfg,
            &["can-i", "push", "gorg/pub-x", "--as", "robot/deployer"],
            None
        )
        .trim(),
        "yes",
        "unchanged"
    );
    let out = berth(&cfg, &["apply", "-f", "-"], Some("kind: Role\nrules: []\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metadata.name is missing"));
}

/// Output with the parts that vary between runs replaced: the server address, RFC 3339 times
/// and UUIDs.
fn redact(text: &str, s: &Server) -> String {
    let text = text.replace(&s.base, "[SERVER]").replace(&s.host, "[HOST]");
    let b = text.as_bytes();
    let (mut out, mut i) = (String::new(), 0);
    let is_time = |w: &[u8]| {
        w.len() == 20
            && w.iter().enumerate().all(|(k, c)| match k {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'Z',
                _ => c.is_ascii_digit(),
            })
    };
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter().enumerate().all(|(k, c)| {
                if [8, 13, 18, 23].contains(&k) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };
    while i < b.len() {
        if b.len() - i >= 20 && is_time(&b[i..i + 20]) {
            out.push_str("[TIME]");
            i += 20;
        } else if b.len() - i >= 36 && is_uuid(&b[i..i + 36]) {
            out.push_str("[ID]");
            i += 36;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[tokio::test]
async fn output_snapshots() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "hal", "horg").await;
    ok(
        &cfg,
        &[
            "robot",
            "create",
            "builder",
            "--description",
            "builds things",
        ],
        None,
    );
    ok(&cfg, &["robot", "create", "reader"], None);
    ok(
        &cfg,
        &[
            "robot",
            "token",
            "create",
            "builder",
            "ci",
            "--expires-in",
            "90d",
            "--output",
            tmp.path().join("t.json").to_str().unwrap(),
        ],
        None,
    );
    // The cached access token's expiry varies too.
    let snap = |args: &[&str]| {
        redact(&ok(&cfg, args, None), &s)
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("access-token-expires: ") {
                    "    access-token-expires: [UNIX]"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    assert_eq!(
        snap(&["robot", "list"]),
        "NAME     BINDINGS  CREDENTIALS  TRUSTS  LAST USED  DESCRIPTION\nbuilder  none      1            0       -          builds things\nreader   none      0            0       -          -\n"
    );
    // Ids and times have fixed widths, so the padding is part of the snapshot.
    assert_eq!(
        snap(&["robot", "token", "list", "builder"]),
        "NAME  CREATED               EXPIRES               LAST USED  FROM  STATUS  ID\nci    [TIME]  [TIME]  -          -     active  [ID]\n"
    );
    assert_eq!(
        snap(&["whoami"]),
        "KIND  NAME  ORG   ADMIN\nuser  hal   horg  false\n"
    );
    // The server's port varies in length: compare this table cell by cell.
    let cells = |t: &str| {
        t.lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(&snap(&["config", "get-contexts"])),
        cells(
            "CURRENT NAME SERVER CREDENTIAL ORG\nhal@[HOST] [HOST] hal@[HOST] -\n* horg [HOST] hal@[HOST] horg"
        )
    );
    assert_eq!(
        snap(&["robot", "get", "reader", "-o", "yaml"]),
        "apikeys: []\nbindings: []\ncreated: [TIME]\ndescription: null\nname: reader\norg: horg\ntokens: []\ntrusts: []\n"
    );
    assert_eq!(
        snap(&["config", "view", "--minify"]),
        "api-version: berth/v1\ncontexts:\n- context:\n    credential: hal@[HOST]\n    org: horg\n    server: [HOST]\n  name: horg\n\
         credentials:\n- credential:\n    access-token: REDACTED\n    access-token-expires: [UNIX]\n    refresh-token: REDACTED\n  name: hal@[HOST]\ncurrent-context: horg\nkind: Config\n\
         servers:\n- name: [HOST]\n  server:\n    url: [SERVER]\n"
    );
    let out = berth(
        &cfg,
        &[
            "pull-secret",
            "create",
            "s",
            "--username",
            "u",
            "--password-stdin",
            "--server",
            "registry.example",
            "-o",
            "json",
        ],
        Some("p\n"),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let docker = base64::engine::general_purpose::STANDARD
        .decode(v["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&docker).unwrap(),
        json!({"auths": {"registry.example": {"username": "u", "password": "p", "auth": "dTpw"}}})
    );
}

/// The commands the other tests do not reach: happy path with a snapshot, and an error path.
#[tokio::test]
async fn remaining_commands_and_their_error_paths() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "ivy", "iorg").await;
    let snap = |args: &[&str]| redact(&ok(&cfg, args, None), &s);
    let fails = |args: &[&str], code: i32, message: &str| {
        let out = berth(&cfg, args, None);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "berth {args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(message),
            "berth {args:?}: {err}"
        );
    };
    assert_eq!(snap(&["org", "list"]), "NAME  CREATED\niorg  [TIME]\n");
    fails(
        &["org", "get", "nope"],
        4,
        "organization \"nope\" does not exist or you are not a member",
    );

    ok(&cfg, &["robot", "create", "r1"], None);
    let t: Value = serde_json::from_str(&ok(
        &cfg,
        &["robot", "token", "create", "r1", "t1", "--output", "-"],
        None,
    ))
    .unwrap();
    let id = t["accessId"].as_str().unwrap();
    ok(&cfg, &["robot", "token", "delete", "r1", id], None);
    // A revoked token stays listed as a trace, marked revoked; it cannot be revoked twice, and
    // its name is free again.
    assert_eq!(
        snap(&["robot", "token", "list", "r1"]),
        "NAME  CREATED               EXPIRES  LAST USED  FROM  STATUS   ID\nt1    [TIME]  -        -          -     revoked  [ID]\n"
    );
    fails(&["robot", "token", "delete", "r1", id], 4, "not found");
    fails(&["robot", "token", "rotate", "r1", "t1"], 4, "not found");
    ok(
        &cfg,
        &["robot", "token", "create", "r1", "t1", "--output", "-"],
        None,
    );
    // By name, the live one (the revoked one's name is not a second candidate).
    ok(
        &cfg,
        &[
            "robot",
            "token",
            "rotate",
            "r1",
            "t1",
            "--overlap",
            "0",
            "--output",
            "-",
        ],
        None,
    );
    ok(&cfg, &["robot", "token", "delete", "r1", "t1"], None);
    // By name as well as by id; a name is unique per owner.
    ok(
        &cfg,
        &[
            "robot",
            "token",
            "create",
            "r1",
            "named",
            "--expires-in",
            "7d",
            "--output",
            "-",
        ],
        None,
    );
    fails(
        &["robot", "token", "create", "r1", "named", "--output", "-"],
        1,
        "already exists",
    );
    let listed = snap(&["robot", "token", "list", "r1"]);
    assert!(
        listed.contains("named") && listed.contains("expiring"),
        "{listed}"
    );
    ok(&cfg, &["robot", "token", "delete", "r1", "named"], None);
    let listed = snap(&["robot", "token", "list", "r1"]);
    assert!(
        listed.lines().skip(1).all(|l| l.contains(" revoked ")) && listed.contains("named "),
        "every token of r1 is revoked now: {listed}"
    );
    ok(&cfg, &["apikey", "create", "laptop", "--output", "-"], None);
    fails(
        &["apikey", "create", "laptop", "--output", "-"],
        1,
        "already exists",
    );
    ok(&cfg, &["apikey", "delete", "laptop"], None);
    fails(&["apikey", "delete", "laptop"], 4, "not found");
    ok(
        &cfg,
        &[
            "binding",
            "create",
            "b1",
            "--role",
            "Reader",
            "--robot",
            "r1",
            "--repository",
            "iorg/app-*",
        ],
        None,
    );
    assert_eq!(
        snap(&["binding", "list"]),
        "NAME  ROLE    SUBJECT   NAMESPACE  REPOSITORY\nb1    Reader  robot/r1  -          iorg/app-*\n"
    );
    fails(
        &["binding", "create", "b2", "--role", "Nope", "--robot", "r1"],
        4,
        "role \"Nope\" not found",
    );
    fails(
        &[
            "binding",
            "create",
            "b3",
            "--role",
            "Reader",
            "--robot",
            "r1",
            "--namespace",
            "elsewhere",
        ],
        4,
        "namespace \"elsewhere\" not found in organization \"iorg\": create it with `berth namespace create elsewhere --org iorg`",
    );
    ok(&cfg, &["binding", "delete", "b1"], None);
    fails(&["binding", "delete", "b1"], 4, "binding \"b1\" not found");
    ok(&cfg, &["robot", "delete", "r1"], None);
    fails(
        &["robot", "delete", "r1"],
        4,
        "robot \"r1\" not found in organization \"iorg\"",
    );

    let rt: Value = serde_json::from_str(&ok(
        &cfg,
        &[
            "registry-token",
            "create",
            "--description",
            "ci",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let rt_id = rt["id"].as_str().unwrap();
    assert_eq!(
        snap(&["registry-token", "list"]),
        "NAME  DESCRIPTION  READWRITE  CREATED               EXPIRES               LAST USED  FROM  STATUS  ID\n-     ci           false      [TIME]  [TIME]  -          -     active  [ID]\n"
    );
    ok(&cfg, &["registry-token", "delete", rt_id], None);
    fails(&["registry-token", "delete", rt_id], 4, "not found");
    // Named, used once: the list shows when and from where; deleted by its name.
    let named: Value = serde_json::from_str(&ok(
        &cfg,
        &[
            "registry-token",
            "create",
            "--name",
            "pulls",
            "--permanent",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let r = basic_client("token", named["token"].as_str().unwrap())
        .get(s.url("/token?service=berth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = snap(&["registry-token", "list"]);
        if listed.contains("127.0.0.1") {
            assert!(
                listed.contains("pulls") && listed.contains("active"),
                "{listed}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last use never shown: {listed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ok(&cfg, &["registry-token", "delete", "pulls"], None);
    fails(&["registry-token", "delete", "pulls"], 4, "not found");

    ok(&cfg, &["role", "create", "viewer", "--verb", "pull"], None);
    assert_eq!(
        snap(&["role", "list"]),
        "NAME     BUILTIN  RULES\n\
         Reader   true     pull,list on repositories\n\
         Writer   true     pull,list,push on repositories\n\
         Manager  true     pull,list,push,delete on repositories; * on robots,credentials,roles,bindings\n\
         viewer   false    pull on repositories\n"
    );
    fails(
        &["role", "create", "bad", "--verb", "fly"],
        2,
        "unknown verb \"fly\"",
    );
    ok(&cfg, &["role", "delete", "viewer"], None);
    fails(
        &["role", "delete", "viewer"],
        4,
        "role \"viewer\" not found",
    );

    ok(
        &cfg,
        &["config", "use-context", &format!("ivy@{}", s.host)],
        None,
    );
    assert!(
        snap(&["config", "get-contexts"])
            .lines()
            .any(|l| l.starts_with("*        ivy@[HOST]"))
    );
    fails(
        &["config", "use-context", "nope"],
        2,
        "no context named \"nope\"",
    );
    assert!(ok(&cfg, &["completion", "zsh"], None).contains("#compdef berth"));
    let out = berth(&cfg, &["completion", "tcsh"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn sessions_are_listed_and_ended_and_own_password_changes_need_the_current_one() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, other) = (
        tmp.path().join("config.yaml"),
        tmp.path().join("other.yaml"),
    );
    user_in_new_org(&s, &cfg, "sara", "sara-org").await;
    ok(
        &other,
        &["login", &s.base, "-u", "sara", "--password-stdin"],
        Some("sara-password-1\n"),
    );
    let v: Value =
        serde_json::from_str(&ok(&cfg, &["session", "list", "-o", "json"], None)).unwrap();
    let list = v["sessions"].as_array().unwrap();
    assert!(list.len() >= 2, "{v}");
    assert!(
        list.iter().all(|x| x["source"]["kind"] == "password"),
        "{v}"
    );
    let table = ok(&cfg, &["session", "list"], None);
    assert!(
        table.contains("FROM") && table.contains("password"),
        "{table}"
    );
    // Where each session was last used from, and with what client (written within a second).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let table = ok(&cfg, &["session", "list"], None);
    assert!(
        table.contains("ADDRESS") && table.contains("CLIENT") && table.contains("127.0.0.1"),
        "{table}"
    );
    assert!(table.contains("berth/"), "the client: {table}");
    // End the other client's session: it must log in again, this one goes on.
    let theirs: Value =
        serde_json::from_str(&ok(&other, &["session", "list", "-o", "json"], None)).unwrap();
    let id = theirs["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&cfg, &["session", "revoke", &id], None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = berth(&other, &["whoami"], None);
        if out.status.code() == Some(3) {
            break;
        }
        assert!(out.status.success());
        assert!(
            std::time::Instant::now() < deadline,
            "the ended session still works"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    ok(&cfg, &["whoami"], None);
    let out = berth(&cfg, &["session", "revoke"], None);
    assert_eq!(out.status.code(), Some(2));
    // Your own password: the current one first, then the new one; a wrong current one is refused.
    let out = berth(
        &cfg,
        &["user", "passwd", "sara", "--password-stdin"],
        Some("not-the-password\nsara-password-2\n"),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = berth(
        &cfg,
        &["user", "passwd", "sara", "--password-stdin"],
        Some("sara-password-1\nsara-password-2\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(
        &cfg,
        &["login", "-u", "sara", "--password-stdin"],
        Some("sara-password-2\n"),
    );
}

/// The client config is written atomically: a private temporary file, synced, then renamed over
/// the config; the config itself is never opened for writing (a crash leaves the old one whole).
#[tokio::test]
async fn the_client_config_is_written_atomically() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    let trace = tmp.path().join("trace");
    let home = tmp.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    for round in 0..2 {
        // The second round replaces an existing config.
        let mut child = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-y",
                "-e",
                "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
                "-o",
            ])
            .arg(&trace)
            .arg("--")
            .arg(berth_bin())
            .args(["login", &s.base, "-u", "admin", "--password-stdin"])
            .env("BERTH_CONFIG", &cfg)
            .env("HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&trace).unwrap();
        let cfg_name = cfg.to_str().unwrap();
        let mut synced: Vec<String> = Vec::new();
        let mut renamed = false;
        for line in text.lines() {
            let writes = line.contains("O_WRONLY") || line.contains("O_RDWR");
            if line.contains("openat(") && writes && line.contains(&format!("\"{cfg_name}\"")) {
                panic!("round {round}: the config was opened for writing in place: {line}");
            }
            if let Some(i) = line.find("fsync(").or_else(|| line.find("fdatasync("))
                && let Some(path) = line[i..]
                    .split('<')
                    .nth(1)
                    .and_then(|p| p.split('>').next())
            {
                synced.push(path.to_owned());
            }
            if line.contains("rename(")
                && line.ends_with("= 0")
                && line.contains(&format!(", \"{cfg_name}\""))
            {
                let from = line.split('"').nth(1).unwrap();
                assert_ne!(from, cfg_name);
                assert!(
                    synced.iter().any(|p| p == from),
                    "round {round}: {from} renamed over the config before it was synced"
                );
                renamed = true;
            }
        }
        assert!(
            renamed,
            "round {round}: the config was not renamed into place:\n{text}"
        );
        let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[tokio::test]
async fn a_robot_is_bound_in_one_step_and_an_unbound_one_says_so() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "una", "uorg").await;
    // With --role: bound at once, and its token pulls.
    let out = berth(
        &cfg,
        &[
            "robot",
            "create",
            "puller",
            "--role",
            "Reader",
            "--namespace",
            "uorg",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bound role \"Reader\"") && !err.contains("warning"),
        "{err}"
    );
    let list: Value =
        serde_json::from_str(&ok(&cfg, &["binding", "list", "-o", "json"], None)).unwrap();
    let v = list["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "puller")
        .unwrap()
        .clone();
    assert_eq!(
        (
            v["role"].as_str(),
            v["subject"].as_str(),
            v["namespace"].as_str()
        ),
        (Some("Reader"), Some("robot/puller"), Some("uorg"))
    );
    let out = berth(
        &cfg,
        &["robot", "token", "create", "puller", "t", "--output", "-"],
        None,
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = basic_client(
        t["accessId"].as_str().unwrap(),
        t["token"].as_str().unwrap(),
    )
    .get(s.url("/token?service=berth&scope=repository:uorg/app:pull"))
    .send()
    .await
    .unwrap();
    let granted: Value = r.json().await.unwrap();
    let jwt = granted["token"].as_str().unwrap();
    let claims = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["access"][0]["actions"], json!(["pull"]));
    // Without: a warning with the command that fixes it, at create and at token create.
    let out = berth(&cfg, &["robot", "create", "idle"], None);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: robot \"idle\" has no bindings")
            && err.contains("berth binding create idle --role"),
        "{err}"
    );
    let out = berth(
        &cfg,
        &["robot", "token", "create", "idle", "t", "--output", "-"],
        None,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no bindings"));
    // A namespace that does not exist: says so, and how to create it; nothing is created.
    let out = berth(
        &cfg,
        &[
            "robot",
            "create",
            "lost",
            "--role",
            "Reader",
            "--namespace",
            "nowhere",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("namespace \"nowhere\" not found in organization \"uorg\": create it with `berth namespace create nowhere --org uorg`"),
        "{err}"
    );
    let out = berth(
        &cfg,
        &[
            "binding",
            "create",
            "b",
            "--role",
            "Reader",
            "--robot",
            "idle",
            "--repository",
            "nowhere/app-*",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("berth namespace create nowhere"));
    // --namespace without --role is a usage error.
    let out = berth(&cfg, &["robot", "create", "x", "--namespace", "uorg"], None);
    assert_eq!(out.status.code(), Some(2));
}

/// Seed 004's users write Kubernetes RBAC: ClusterRole/Role with resourceNames, RoleBinding
/// scoped by its namespace, ServiceAccount subjects. `apply` takes it; `get -o yaml` exports
/// documents that `apply` takes back unchanged; errors name document and field in plain words.
#[tokio::test]
async fn apply_takes_kubernetes_rbac_and_exports_round_trip() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "kim", "korg").await;
    for robot in ["deployer", "builder"] {
        ok(
            &cfg,
            &[
                "robot",
                "create",
                robot,
                "--role",
                "Reader",
                "--namespace",
                "korg",
            ],
            None,
        );
        ok(&cfg, &["binding", "delete", robot], None);
    }
    let rbac = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: image-puller\nrules:\n- apiGroups: [\"\"]\n  resources: [repositories]\n  verbs: [pull, list]\n  resourceNames: [\"korg/app-*\"]\n\
        ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: ci-pull\n  namespace: korg\nsubjects:\n- kind: ServiceAccount\n  name: deployer\n- kind: Robot\n  name: korg/builder\nroleRef:\n  kind: ClusterRole\n  name: image-puller\n  apiGroup: rbac.authorization.k8s.io\n\
        ---\napiVersion: berth.dev/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: kim-reads\nsubjects:\n- kind: User\n  name: kim\nroleRef:\n  kind: Role\n  name: Reader\n";
    let out = ok(&cfg, &["apply", "-f", "-"], Some(rbac));
    assert_eq!(
        out,
        "clusterrole/image-puller created\nrolebinding/ci-pull created\nclusterrolebinding/kim-reads created\n"
    );
    let again = ok(&cfg, &["apply", "-f", "-"], Some(rbac));
    assert_eq!(
        again,
        "clusterrole/image-puller unchanged\nrolebinding/ci-pull unchanged\nclusterrolebinding/kim-reads unchanged\n"
    );
    // The rules hold: pull of korg/app-* only, for both subjects.
    for robot in ["deployer", "builder"] {
        let who = format!("robot/{robot}");
        assert_eq!(
            ok(&cfg, &["can-i", "pull", "korg/app-web", "--as", &who], None).trim(),
            "yes"
        );
        let out = berth(&cfg, &["can-i", "pull", "korg/other", "--as", &who], None);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
        let out = berth(&cfg, &["can-i", "push", "korg/app-web", "--as", &who], None);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    }
    // Export → apply: unchanged, for a role and for each binding.
    for (what, name) in [
        ("role", "image-puller"),
        ("binding", "ci-pull.deployer"),
        ("binding", "ci-pull.builder"),
        ("binding", "kim-reads"),
    ] {
        let yaml = ok(&cfg, &[what, "get", name, "-o", "yaml"], None);
        assert!(yaml.contains("apiVersion: berth.dev/v1"), "{yaml}");
        let out = ok(&cfg, &["apply", "-f", "-"], Some(&yaml));
        assert_eq!(out, format!("{what}/{name} unchanged\n"), "{yaml}");
    }
    // Plain-word errors naming the document and the field; nothing applied.
    for (doc, want) in [
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: x}\nsubjects: [{kind: ServiceAccount, name: deployer}]\nroleRef: {name: image-puller}\n",
            "document 1: roleRef.kind is missing (Role or ClusterRole)",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: x}\nsubjects: [{kind: Team, name: devs}]\nroleRef: {kind: Role, name: Reader}\n",
            "document 1: subjects[0].kind must be Robot, ServiceAccount, User or Group, not Team",
        ),
        (
            "apiVersion: v1\nkind: Role\nmetadata: {name: x}\nrules: []\n",
            "document 1: apiVersion v1 is not one berth reads",
        ),
        (
            "kind: ClusterRole\nmetadata: {name: x}\nrules: [{resources: [repositories], verbs: [pull], color: red}]\n",
            "document 1: rules[0]: unknown field color",
        ),
        (
            "kind: ClusterRole\nmetadata: {name: x}\nrules: [{resources: [pods], verbs: [get]}]\n",
            "document 1: rules[0]: unknown resource",
        ),
    ] {
        let out = berth(&cfg, &["apply", "-f", "-"], Some(doc));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("Some(") && !err.contains("None"), "{err}");
    }
}

/// `pull-secret create` as kubectl users type it: `-n`, `-f -`, `--docker-server`,
/// `--docker-email`; the Secret means exactly what `kubectl create secret docker-registry
/// --dry-run=client -o yaml` prints. `image-config create` takes several prefixes; the secret
/// makers write token files, never table cells; `config create --output -` prints the config.
#[tokio::test]
async fn files_as_kubectl_users_expect() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "kay", "kaorg").await;
    ok(
        &cfg,
        &["robot", "create", "puller", "--role", "Reader"],
        None,
    );
    let token_file = ok(
        &cfg,
        &["robot", "token", "create", "puller", "t", "--output", "-"],
        None,
    );
    let t: Value = serde_json::from_str(&token_file).unwrap();
    let (id, secret) = (
        t["accessId"].as_str().unwrap(),
        t["token"].as_str().unwrap(),
    );
    let ours = ok(
        &cfg,
        &[
            "pull-secret",
            "create",
            "regcred",
            "-f",
            "-",
            "-n",
            "ci",
            "--docker-server",
            &s.host,
            "--docker-email",
            "ci@example.com",
        ],
        Some(&token_file),
    );
    let home = tmp.path().join("kubectl-home");
    std::fs::create_dir_all(&home).unwrap();
    let theirs = run(Command::new("kubectl")
        .args([
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            "ci",
            "--docker-server",
            &s.host,
        ])
        .args([
            "--docker-username",
            id,
            "--docker-password",
            secret,
            "--docker-email",
            "ci@example.com",
        ])
        .args(["--dry-run=client", "-o", "yaml"])
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("none")));
    let parse = |y: &str| -> Value { serde_norway::from_str(y).unwrap() };
    let (ours, theirs) = (parse(&ours), parse(&theirs));
    for k in ["apiVersion", "kind", "type"] {
        assert_eq!(ours[k], theirs[k], "{k}");
    }
    for k in ["name", "namespace"] {
        assert_eq!(ours["metadata"][k], theirs["metadata"][k], "metadata.{k}");
    }
    let config = |v: &Value| -> Value {
        let b = base64::engine::general_purpose::STANDARD
            .decode(v["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    };
    assert_eq!(
        config(&ours),
        config(&theirs),
        "the .dockerconfigjson means the same"
    );
    // Typed as for kubectl, with the password on the command line (seeds 001 and 002): the same
    // Secret, and a warning that the process list shows it.
    let out = berth(
        &cfg,
        &[
            "pull-secret",
            "create",
            "regcred",
            "-n",
            "ci",
            "--docker-server",
            &s.host,
            "--docker-username",
            id,
            "--docker-password",
            secret,
            "--docker-email",
            "ci@example.com",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        config(&parse(&String::from_utf8_lossy(&out.stdout))),
        config(&theirs),
        "--docker-password gives the Secret kubectl makes"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--password-stdin"),
        "no warning about a password on the command line"
    );
    // --server and --docker-server are one flag.
    let a = ok(
        &cfg,
        &["pull-secret", "create", "x", "-f", "-", "--server", &s.host],
        Some(&token_file),
    );
    let b = ok(
        &cfg,
        &[
            "pull-secret",
            "create",
            "x",
            "-f",
            "-",
            "--docker-server",
            &s.host,
        ],
        Some(&token_file),
    );
    assert_eq!(a, b);
    // Several prefixes for one ImageConfig.
    let ic: Value = serde_norway::from_str(&ok(
        &cfg,
        &[
            "image-config",
            "create",
            "images",
            "--prefix",
            "r.example.com/a",
            "--prefix",
            "r.example.com/b",
            "--pull-secret",
            "regcred",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(
        ic["spec"]["matchImages"],
        json!([{"prefix": "r.example.com/a"}, {"prefix": "r.example.com/b"}])
    );
    // A registry token goes to a file (0600) or stdout as {"token"}, never into a table; the
    // pull secret takes that file.
    let rt_file = tmp.path().join("registry-token.json");
    let out = berth(
        &cfg,
        &[
            "registry-token",
            "create",
            "--name",
            "ci",
            "--output",
            rt_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the secret went to stdout too");
    let rt: Value = serde_json::from_str(&std::fs::read_to_string(&rt_file).unwrap()).unwrap();
    assert!(rt["token"].as_str().unwrap().starts_with("btht_"));
    assert_eq!(
        std::fs::metadata(&rt_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let table = ok(&cfg, &["registry-token", "list"], None);
    assert!(!table.contains("btht_"), "{table}");
    let ps: Value = parse(&ok(
        &cfg,
        &[
            "pull-secret",
            "create",
            "rt",
            "-f",
            rt_file.to_str().unwrap(),
        ],
        None,
    ));
    assert_eq!(config(&ps)["auths"][&s.host]["username"], "token");
    // config create --output - prints the self-contained config.
    let robot_file = tmp.path().join("robot.json");
    std::fs::write(&robot_file, &token_file).unwrap();
    let out = ok(
        &cfg,
        &[
            "config",
            "create",
            "--from-token",
            robot_file.to_str().unwrap(),
            "--server",
            &s.base,
            "--output",
            "-",
        ],
        None,
    );
    let printed: Value = serde_norway::from_str(&out).unwrap();
    assert_eq!(printed["current-context"], "default", "{out}");
    assert!(!tmp.path().join("-").exists());
}

/// Seed 003 with docker itself: `berth docker-config` for a user session sets up the helper
/// (and its link); `docker login -u iamapikey` stores the typed credential through it, `get`
/// returns it, a plain password is refused with what to do instead, `docker logout` forgets it.
#[tokio::test]
async fn docker_login_with_a_typed_secret_through_the_helper() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    let home = tmp.path().join("empty-home");
    user_in_new_org(&s, &cfg, "dora", "dorg").await;
    let out = berth(&cfg, &["docker-config"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    let link = home.join(".local/bin/docker-credential-berth");
    assert!(
        said.contains("linked the credential helper") && said.contains(link.to_str().unwrap()),
        "{said}"
    );
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(berth_bin()).unwrap()
    );
    // Run again: the link is found, not made twice.
    let again = berth(&cfg, &["docker-config"], None);
    assert!(again.status.success());
    let key: Value = serde_json::from_str(&ok(
        &cfg,
        &["apikey", "create", "docker", "--output", "-"],
        None,
    ))
    .unwrap();
    let key = key["apikey"].as_str().unwrap();
    let path = format!(
        "{}:{}",
        home.join(".local/bin").display(),
        std::env::var("PATH").unwrap()
    );
    let docker = |args: &[&str], stdin: &str| {
        let mut child = Command::new("docker")
            .args(args)
            .env("HOME", &home)
            .env("PATH", &path)
            .env("BERTH_CONFIG", &cfg)
            .env_remove("DOCKER_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = docker(
        &["login", "-u", "iamapikey", "--password-stdin", &s.host],
        &format!("{key}\n"),
    );
    assert!(
        out.status.success(),
        "docker login: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // docker asked for an offline token, so what it stores is berth's answer to that login: a
    // refresh token (docker's "identity token") whose session is tied to the API key. It is
    // kept in berth's config (0600), nothing in docker's.
    let docker_cfg = std::fs::read_to_string(home.join(".docker/config.json")).unwrap();
    assert!(
        !docker_cfg.contains(key) && !docker_cfg.contains("bthf_"),
        "{docker_cfg}"
    );
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The helper hands docker that credential back.
    let got = helper_get(&link, &cfg, &s.host);
    assert_eq!(got["Username"], "<token>");
    let identity = got["Secret"].as_str().unwrap().to_owned();
    assert!(identity.starts_with("bthf_"));
    assert!(std::fs::read_to_string(&cfg).unwrap().contains(&identity));
    // docker uses it as its refresh grant at /token; it works…
    let grant = |t: String| {
        reqwest::Client::new()
            .post(s.url("/token"))
            .form(&[
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", t),
                ("service", "berth".to_owned()),
                ("scope", "repository:dorg/app:pull".to_owned()),
            ])
            .send()
    };
    assert_eq!(
        grant(identity.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    // With a user's password, docker hands the helper berth's answer, a session, never the
    // password: no file holds it (a password given to the helper directly is refused, see
    // docker_config_and_the_credential_helper_with_skopeo).
    let out = docker(
        &["login", "-u", "dora", "--password-stdin", &s.host],
        "dora-password-1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [cfg.clone(), home.join(".docker/config.json")] {
        assert!(
            !std::fs::read_to_string(&f)
                .unwrap()
                .contains("dora-password-1"),
            "{}",
            f.display()
        );
    }
    // docker logout forgets it; the berth session stays.
    let out = docker(&["logout", &s.host], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!std::fs::read_to_string(&cfg).unwrap().contains(&identity));
    ok(&cfg, &["whoami"], None);
    // …and ends with the API key it came from.
    let out = docker(
        &["login", "-u", "iamapikey", "--password-stdin", &s.host],
        &format!("{key}\n"),
    );
    assert!(out.status.success());
    let fresh = helper_get(&link, &cfg, &s.host)["Secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(fresh, identity);
    assert_eq!(grant(fresh.clone()).await.unwrap().status(), StatusCode::OK);
    ok(&cfg, &["apikey", "delete", "docker"], None);
    assert_eq!(
        grant(fresh).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// `docker-credential-berth get` for `host`, as docker runs it.
fn helper_get(helper: &Path, cfg: &Path, host: &str) -> Value {
    let mut get = Command::new(helper)
        .arg("get")
        .env("BERTH_CONFIG", cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    get.stdin
        .take()
        .unwrap()
        .write_all(host.as_bytes())
        .unwrap();
    serde_json::from_slice(&get.wait_with_output().unwrap().stdout).unwrap()
}

/// `/token` status for a login user name and secret.
async fn token_status(s: &Server, user: &str, secret: &str) -> StatusCode {
    basic_client(user, secret)
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits (within the 30 s revocation bound after `from`) until the secret is refused.
async fn refused_within(s: &Server, user: &str, secret: &str, from: Instant, bound: Duration) {
    loop {
        match token_status(s, user, secret).await {
            StatusCode::UNAUTHORIZED => return,
            StatusCode::OK if from.elapsed() < bound => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("{user}: answered {other} after {:?}", from.elapsed()),
        }
    }
}

#[tokio::test]
async fn rotation_with_overlap_and_warnings_before_expiry() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "alice", "acme").await;
    push_image(
        &basic_client("alice", "alice-password-1"),
        &s,
        "acme/app",
        "v1",
        3,
    )
    .await;
    ok(
        &cfg,
        &["robot", "create", "deployer", "--role", "Reader"],
        None,
    );
    let file = |name: &str| tmp.path().join(name).to_str().unwrap().to_owned();
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join(name)).unwrap()).unwrap()
    };
    ok(
        &cfg,
        &[
            "robot",
            "token",
            "create",
            "deployer",
            "ci",
            "--expires-in",
            "10d",
            "--output",
            &file("t1.json"),
        ],
        None,
    );
    let t1 = read("t1.json");
    let id = t1["accessId"].as_str().unwrap().to_owned();
    let secret1 = t1["token"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&s, &id, &secret1).await, StatusCode::OK);

    // A rotation with a 4 s overlap: the same accessId, a new secret; both work until the
    // overlap ends, then the old one stops (within the revocation bound).
    let out = berth(
        &cfg,
        &[
            "robot",
            "token",
            "rotate",
            "deployer",
            "ci",
            "--overlap",
            "4s",
            "--output",
            &file("t2.json"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated_at = Instant::now();
    assert!(String::from_utf8_lossy(&out.stderr).contains("the old secret works until"));
    let t2 = read("t2.json");
    assert_eq!(t2["accessId"], id.as_str());
    let secret2 = t2["token"].as_str().unwrap().to_owned();
    assert_ne!(secret1, secret2);
    assert_eq!(token_status(&s, &id, &secret2).await, StatusCode::OK);
    assert_eq!(
        token_status(&s, &id, &secret1).await,
        StatusCode::OK,
        "the overlap"
    );
    refused_within(&s, &id, &secret1, rotated_at, Duration::from_secs(4 + 30)).await;
    assert!(
        rotated_at.elapsed() >= Duration::from_secs(3),
        "the old secret stopped before its overlap ended"
    );
    assert_eq!(token_status(&s, &id, &secret2).await, StatusCode::OK);

    // `pull-secret create --rotate` with no overlap: the old secret stops at once, the Secret
    // carries the new one under the same user name, and skopeo pulls with it.
    let yaml = ok(
        &cfg,
        &[
            "pull-secret",
            "create",
            "regcred",
            "--rotate",
            "deployer/ci",
            "--overlap",
            "0",
        ],
        None,
    );
    assert_eq!(
        token_status(&s, &id, &secret2).await,
        StatusCode::UNAUTHORIZED
    );
    let secret_doc: Value = serde_norway::from_str(&yaml).unwrap();
    let b64 = secret_doc["data"][".dockerconfigjson"].as_str().unwrap();
    let docker: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap(),
    )
    .unwrap();
    let entry = &docker["auths"][s.host.as_str()];
    assert_eq!(entry["username"], id.as_str());
    let secret3 = entry["password"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&s, &id, &secret3).await, StatusCode::OK);
    let pulled = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
        ])
        .arg(format!("{id}:{secret3}"))
        .arg(format!("docker://{}/acme/app:v1", s.host))
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );

    // API keys and registry tokens rotate the same way.
    ok(
        &cfg,
        &[
            "apikey",
            "create",
            "k",
            "--robot",
            "deployer",
            "--output",
            &file("k1.json"),
        ],
        None,
    );
    let k1 = read("k1.json")["apikey"].as_str().unwrap().to_owned();
    ok(
        &cfg,
        &[
            "apikey",
            "rotate",
            "k",
            "--robot",
            "deployer",
            "--overlap",
            "0",
            "--output",
            &file("k2.json"),
        ],
        None,
    );
    let k2 = read("k2.json")["apikey"].as_str().unwrap().to_owned();
    assert_eq!(
        token_status(&s, "iamapikey", &k1).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(token_status(&s, "iamapikey", &k2).await, StatusCode::OK);
    ok(
        &cfg,
        &[
            "registry-token",
            "create",
            "--name",
            "rt",
            "--output",
            &file("r1.json"),
        ],
        None,
    );
    let r1 = read("r1.json")["token"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&s, "token", &r1).await, StatusCode::OK);
    ok(
        &cfg,
        &[
            "registry-token",
            "rotate",
            "rt",
            "--overlap",
            "0",
            "--output",
            &file("r2.json"),
        ],
        None,
    );
    let r2 = read("r2.json")["token"].as_str().unwrap().to_owned();
    assert_eq!(
        token_status(&s, "token", &r1).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(token_status(&s, "token", &r2).await, StatusCode::OK);
    // Bad overlaps are refused with a readable error.
    let out = berth(
        &cfg,
        &[
            "robot",
            "token",
            "rotate",
            "deployer",
            "ci",
            "--overlap",
            "forever",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What needs attention: the token expiring in 10 days, and a token never used.
    ok(
        &cfg,
        &["robot", "token", "create", "deployer", "idle"],
        None,
    );
    let listed: Value = serde_json::from_str(&ok(
        &cfg,
        &[
            "credential",
            "list",
            "--expiring-within",
            "14d",
            "-o",
            "json",
        ],
        None,
    ))
    .unwrap();
    let names: Vec<&str> = listed["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains(&"ci"), "{listed}");
    assert!(
        !names.contains(&"idle"),
        "a token without expiry listed as expiring: {listed}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listed: Value = serde_json::from_str(&ok(
        &cfg,
        &["credential", "list", "--unused-for", "1s", "-o", "json"],
        None,
    ))
    .unwrap();
    let idle = listed["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "idle")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(idle["reasons"], json!(["never used"]));
    let table = ok(
        &cfg,
        &["credential", "list", "--expiring-within", "14d"],
        None,
    );
    assert!(
        table.contains("KIND") && table.contains("expiring"),
        "{table}"
    );

    // /metrics: when each credential expires, for an admin's scrape only.
    let metric = "berth_credential_expiry_timestamp_seconds{org=\"acme\",kind=\"robot_token\",owner=\"deployer\",name=\"ci\"}";
    let scrape = |c: reqwest::Client| {
        let url = s.url("/metrics");
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let admin = scrape(basic_client("admin", ADMIN_PASSWORD)).await;
    let line = admin
        .lines()
        .find(|l| l.starts_with(metric))
        .unwrap_or_else(|| panic!("no {metric} in\n{admin}"));
    let at: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((at - now - 10 * 86_400).abs() < 120, "{line}");
    let anon = scrape(anonymous_client()).await;
    assert!(
        !anon.contains("berth_credential_expiry_timestamp_seconds{"),
        "credential names in an anonymous scrape"
    );
}

#[tokio::test]
async fn the_credential_helper_answers_the_identity_the_user_chose() {
    let s = Server::start();
    Api::admin(&s)
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "alice", "password": "alice-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    // The README's sequence: the admin logs in, then alice, on the same host.
    ok(
        &cfg,
        &["login", &s.base, "-u", "admin", "--password-stdin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    ok(
        &cfg,
        &["login", "-u", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );
    let link = tmp.path().join("docker-credential-berth");
    std::os::unix::fs::symlink(berth_bin(), &link).unwrap();
    let whoami = |secret: String| {
        let s = &s;
        async move {
            Api::basic(s, "iambearer", &secret)
                .get("/auth/whoami")
                .await
        }
    };
    let got = helper_get(&link, &cfg, &s.host);
    let (st, who) = whoami(got["Secret"].as_str().unwrap().to_owned()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(who["name"], "alice", "the helper answered as {who}");
    // Back to the admin's context: the helper follows.
    let contexts = ok(&cfg, &["config", "get-contexts", "-o", "json"], None);
    let contexts: Value = serde_json::from_str(&contexts).unwrap();
    let admin_ctx = contexts
        .as_array()
        .or_else(|| contexts["contexts"].as_array())
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .find(|n| n.starts_with("admin"))
        .expect("the admin's context");
    ok(&cfg, &["config", "use-context", &admin_ctx], None);
    let got = helper_get(&link, &cfg, &s.host);
    let (_, who) = whoami(got["Secret"].as_str().unwrap().to_owned()).await;
    assert_eq!(who["name"], "admin", "{who}");
    // Alice ends her sessions: nothing of hers answers any more.
    ok(
        &cfg,
        &["login", "-u", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );
    ok(&cfg, &["session", "revoke", "--all"], None);
    let mut get = Command::new(&link)
        .arg("get")
        .env("BERTH_CONFIG", &cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    get.stdin
        .take()
        .unwrap()
        .write_all(s.host.as_bytes())
        .unwrap();
    let out = get.wait_with_output().unwrap();
    if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (st, who) = whoami(v["Secret"].as_str().unwrap().to_owned()).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "after revoke --all the helper still answers {who}"
        );
    }
}

#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "pia", "porg").await;
    for i in 0..30 {
        ok(&cfg, &["robot", "create", &format!("bot-{i:02}")], None);
    }
    // The reader takes one line and goes away, as `| head -1` does.
    let mut child = Command::new(berth_bin())
        .args(["audit", "list", "--limit", "500"])
        .env("BERTH_CONFIG", &cfg)
        .env("HOME", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[tokio::test]
async fn a_new_secret_never_silently_replaces_another() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "otto", "oorg").await;
    ok(&cfg, &["robot", "create", "ci", "--role", "Reader"], None);
    let file = tmp.path().join("token.json");
    let f = file.to_str().unwrap();
    ok(
        &cfg,
        &["robot", "token", "create", "ci", "first", "--output", f],
        None,
    );
    let first = std::fs::read_to_string(&file).unwrap();
    let out = berth(
        &cfg,
        &["robot", "token", "create", "ci", "second", "--output", f],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        first,
        "the only copy is kept"
    );
    // A robot config is a secret too: written over only with --force.
    let robot_cfg = tmp.path().join("robot.yaml");
    std::fs::write(&robot_cfg, "precious\n").unwrap();
    let rc = robot_cfg.to_str().unwrap();
    let create = [
        "config",
        "create",
        "--from-token",
        f,
        "--server",
        &s.base,
        "--output",
        rc,
    ];
    let out = berth(&cfg, &create, None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(std::fs::read_to_string(&robot_cfg).unwrap(), "precious\n");
    let mut forced = create.to_vec();
    forced.push("--force");
    ok(&cfg, &forced, None);
    let written = std::fs::read_to_string(&robot_cfg).unwrap();
    assert!(
        written != "precious\n" && written.contains(&s.base),
        "{written}"
    );
    // Rotating the token whose file it is rewrites it (README's flow), with no --force.
    ok(
        &cfg,
        &[
            "robot",
            "token",
            "rotate",
            "ci",
            "first",
            "--overlap",
            "0",
            "--output",
            f,
        ],
        None,
    );
    let rotated = std::fs::read_to_string(&file).unwrap();
    assert_ne!(rotated, first);
    let id = |t: &str| serde_json::from_str::<Value>(t).unwrap()["accessId"].clone();
    assert_eq!(id(&rotated), id(&first));
    // With --force the user says the old file may go.
    ok(
        &cfg,
        &[
            "robot", "token", "create", "ci", "second", "--output", f, "--force",
        ],
        None,
    );
    assert_ne!(id(&std::fs::read_to_string(&file).unwrap()), id(&first));
}

/// One view per robot: `robot get` shows its bindings, its tokens and API keys with status and
/// last use, and its trusts; `robot list` what each may do and when it was last used; `role list`
/// shows rules as words, not JSON.
#[tokio::test]
async fn the_cli_shows_what_a_robot_can_do() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "rhea", "rheaorg").await;
    ok(
        &cfg,
        &[
            "robot",
            "create",
            "puller",
            "--role",
            "Reader",
            "--namespace",
            "rheaorg",
        ],
        None,
    );
    ok(&cfg, &["robot", "create", "idle"], None);
    // A robot named with its organization, as elsewhere (ORG/ROBOT).
    assert!(ok(&cfg, &["robot", "get", "rheaorg/idle"], None).contains("idle"));
    ok(
        &cfg,
        &[
            "robot",
            "trust",
            "add",
            "idle",
            "gh",
            "--issuer",
            "https://token.actions.githubusercontent.com",
            "--subject",
            "repo:rhea/app:*",
        ],
        None,
    );
    let trusts = ok(&cfg, &["robot", "trust", "list", "rheaorg/idle"], None);
    assert!(
        trusts.contains("(service name)"),
        "the default audience, said: {trusts}"
    );
    let out = berth(&cfg, &["robot", "get", "rheaorg/nobody"], None);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    let file = ok(
        &cfg,
        &["robot", "token", "create", "puller", "ci", "--output", "-"],
        None,
    );
    ok(&cfg, &["robot", "token", "create", "puller", "spare"], None);
    let t: Value = serde_json::from_str(&file).unwrap();
    // The token is used once.
    let r = basic_client(
        t["accessId"].as_str().unwrap(),
        t["token"].as_str().unwrap(),
    )
    .get(s.url("/token?service=berth&scope=repository:rheaorg/app:pull"))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // "Last used" is written behind; it shows within seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let view = loop {
        let view = ok(&cfg, &["robot", "get", "puller"], None);
        let used = view
            .lines()
            .any(|l| l.starts_with("ci ") && l.contains("127.0.0.1"));
        if used {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the token's last use never showed:\n{view}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for part in ["bindings:", "tokens:", "api keys:", "trusts:"] {
        assert!(view.contains(part), "{part} missing:\n{view}");
    }
    assert!(
        view.lines()
            .any(|l| l.contains("Reader") && l.contains("rheaorg")),
        "the binding is shown:\n{view}"
    );
    assert!(
        view.lines()
            .any(|l| l.starts_with("spare ") && l.contains("active")),
        "the unused token is shown with its status:\n{view}"
    );
    let json: Value =
        serde_json::from_str(&ok(&cfg, &["robot", "get", "puller", "-o", "json"], None)).unwrap();
    assert_eq!(json["tokens"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json["bindings"][0]["role"], "Reader", "{json}");
    let list = ok(&cfg, &["robot", "list"], None);
    let row = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{list}"))
            .to_owned()
    };
    assert!(
        row("puller").contains("Reader (namespace rheaorg)") && row("puller").contains(" 2 "),
        "{list}"
    );
    assert!(row("idle").contains("none"), "{list}");
    let roles = ok(&cfg, &["role", "list"], None);
    assert!(
        !roles.contains('[') && !roles.contains('{'),
        "rules as JSON in the table:\n{roles}"
    );
    assert!(roles.contains("on repositories"), "{roles}");
}

/// Small things users noticed: year and week durations, a zero expiry refused, `ls`, a login
/// that replaces its previous session, a namespace typed with a `/` explained, the favicon.
#[tokio::test]
async fn small_things_users_noticed() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "tess", "tessorg").await;
    ok(&cfg, &["robot", "create", "bot", "--role", "Reader"], None);
    // 1y and 52w are durations; 0s is not an expiry.
    for d in ["1y", "52w"] {
        ok(
            &cfg,
            &[
                "robot",
                "token",
                "create",
                "bot",
                &format!("t{d}"),
                "--expires-in",
                d,
            ],
            None,
        );
    }
    let out = berth(
        &cfg,
        &[
            "robot",
            "token",
            "create",
            "bot",
            "zero",
            "--expires-in",
            "0s",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("longer than 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `ls` lists.
    assert!(ok(&cfg, &["robot", "ls"], None).contains("bot"));
    // A namespace is one segment: the message says what to type instead.
    let out = berth(
        &cfg,
        &[
            "binding",
            "create",
            "b",
            "--role",
            "Reader",
            "--robot",
            "bot",
            "--namespace",
            "tessorg/team-a",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--repository 'tessorg/team-a/*'") && err.contains("--namespace tessorg"),
        "{err}"
    );
    // Logging in again replaces the session: one is left on the server.
    let pw = "tess-password-1\n";
    ok(
        &cfg,
        &[
            "login",
            &s.base,
            "-u",
            "tess",
            "--password-stdin",
            "-a",
            "tessorg",
        ],
        Some(pw),
    );
    ok(
        &cfg,
        &[
            "login",
            &s.base,
            "-u",
            "tess",
            "--password-stdin",
            "-a",
            "tessorg",
        ],
        Some(pw),
    );
    let sessions = ok(&cfg, &["session", "list", "-o", "json"], None);
    let v: Value = serde_json::from_str(&sessions).unwrap();
    let named: Vec<&Value> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "session")
        .collect();
    assert_eq!(named.len(), 1, "{sessions}");
    // can-i about a robot that does not exist: "no such robot", exit 4 (not a quiet "no").
    let out = berth(
        &cfg,
        &["can-i", "pull", "tessorg/app", "--as", "robot/typo"],
        None,
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such robot"));
    assert_eq!(
        ok(
            &cfg,
            &["can-i", "pull", "tessorg/app", "--as", "robot/bot"],
            None
        )
        .trim(),
        "yes"
    );
    // A role whose verb means nothing on its resource is refused, saying why.
    let out = berth(
        &cfg,
        &[
            "role",
            "create",
            "odd",
            "--verb",
            "create",
            "--resource",
            "repositories",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("means nothing on repositories"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The console's icon.
    let r = anonymous_client()
        .get(s.url("/favicon.ico"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
}

#[tokio::test]
async fn logging_in_again_refreshes_the_context_you_were_in() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    user_in_new_org(&s, &cfg, "lena", "lorg").await;
    ok(&cfg, &["robot", "create", "bot"], None);
    ok(&cfg, &["session", "revoke", "--all"], None);
    let out = berth(&cfg, &["robot", "list"], None);
    assert_eq!(out.status.code(), Some(3), "signed out: {out:?}");
    // A bare login: the same server, user, organization and context.
    let out = berth(
        &cfg,
        &["login", "--password-stdin"],
        Some("lena-password-1\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lena logged in (context \"lorg\")"),
        "{out:?}"
    );
    assert!(ok(&cfg, &["robot", "list"], None).contains("bot"));
    let contexts = ok(&cfg, &["config", "get-contexts"], None);
    assert_eq!(
        contexts.lines().count(),
        3,
        "no new context beside the old ones: {contexts}"
    );
}

/// Runs `berth ARGS` on a pseudo-terminal (util-linux `script`), typing `typed`; the exit
/// status and everything the terminal showed.
fn on_terminal(cfg: &Path, args: &str, typed: &str) -> (Option<i32>, String) {
    let mut child = Command::new("script")
        .args(["-qec", &format!("{} {args}", berth_bin()), "/dev/null"])
        .env("BERTH_CONFIG", cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(typed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_new_password_typed_at_the_terminal_is_asked_twice() {
    let s = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.yaml");
    ok(
        &cfg,
        &["login", &s.base, "-u", "admin", "--password-stdin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    let (code, shown) = on_terminal(&cfg, "user create bob", "bob-password-1\nbob-password-2\n");
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("password again") && shown.contains("differ"),
        "{shown}"
    );
    let users = Api::admin(&s)
        .ok("GET", "/users", None, StatusCode::OK)
        .await;
    assert!(
        !users.to_string().contains("\"bob\""),
        "nothing was made: {users}"
    );
    let (code, shown) = on_terminal(&cfg, "user create bob", "bob-password-1\nbob-password-1\n");
    assert_eq!(code, Some(0), "{shown}");
    let (st, _) = Api::basic(&s, "bob", "bob-password-1")
        .get("/auth/whoami")
        .await;
    assert_eq!(st, StatusCode::OK);
    // Choosing an organization for a user signed in here asks no password again.
    ok(&cfg, &["org", "create", "borg"], None);
    let (code, shown) = on_terminal(&cfg, "login -a borg -u admin", "");
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("already signed in") && !shown.contains("password"),
        "{shown}"
    );
    assert!(ok(&cfg, &["robot", "list"], None).starts_with("NAME"));
    // An organization the user may not see: the password is asked (and here not given).
    let (code, shown) = on_terminal(&cfg, "login -a nowhere -u admin", "\n");
    assert_ne!(code, Some(0), "{shown}");
}
