//! The web console, driven end to end in headless Chromium (Debian's `chromium`, through
//! Playwright's `playwright-core` from npm: `tests/console/e2e.mjs`) against the real binary.
//! This side sets the scene over the API and the registry and checks, afterwards, what the
//! browser's actions changed; the script drives the pages as a person would and pulls with
//! skopeo using the files the console handed out.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const OLIVIA: &str = "olivia-password-1";
const RITA: &str = "rita-password-1";
/// Stored as a robot description and a tag annotation: must render as text.
const XSS: &str = "<img src=x onerror=\"window.__xss=1;alert(1)\"><script>window.__xss=2</script>";

#[tokio::test]
async fn console_end_to_end_in_chromium() {
    let s = Server::start_verbose();
    let admin = Api::admin(&s);
    for (name, password) in [("olivia", OLIVIA), ("rita", RITA)] {
        admin
            .ok(
                "POST",
                "/users",
                Some(json!({"name": name, "password": password})),
                StatusCode::CREATED,
            )
            .await;
    }
    let olivia = Api::basic(&s, "olivia", OLIVIA);
    olivia
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    join(&s, &olivia, "acme", "rita", RITA, "member").await;
    olivia
        .ok(
            "PUT",
            "/orgs/acme/bindings/rita-reader",
            Some(json!({"role": "Reader", "subject": "user/rita"})),
            StatusCode::CREATED,
        )
        .await;
    // Another organization Olivia is no member of: the console must never show it to her.
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "other"})),
            StatusCode::CREATED,
        )
        .await;

    // Content: an image whose manifest carries the payload as an annotation, an index of it
    // (platforms), a referrer (an SBOM) and a tag to delete; before them, 55 release
    // candidates, so the tags take two pages and the newest (these) are on the first.
    let c = basic_client("olivia", OLIVIA);
    let (_, rc) = push_image(&c, &s, "acme/app", "rc-00", 6).await;
    for i in 1..55 {
        let r = put_manifest(&c, &s, "acme/app", &format!("rc-{i:02}"), OCI_MANIFEST, &rc).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (img, body) = push_image(&c, &s, "acme/app", "1", 7).await;
    let mut m: serde_json::Value = serde_json::from_str(&body).unwrap();
    m["annotations"] = json!({"org.opencontainers.image.description": XSS});
    let annotated = m.to_string();
    let r = put_manifest(&c, &s, "acme/app", "annotated", OCI_MANIFEST, &annotated).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": img, "size": body.len(),
                       "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}],
    })
    .to_string();
    let r = put_manifest(&c, &s, "acme/app", "multi", OCI_INDEX, &index).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let empty = push_blob(&c, &s, "acme/app", b"{}").await;
    let sbom = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": img, "size": body.len()},
    })
    .to_string();
    let r = put_manifest(
        &c,
        &s,
        "acme/app",
        &sha256(sbom.as_bytes()),
        OCI_MANIFEST,
        &sbom,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    push_image(&c, &s, "acme/app", "old", 8).await;

    let root = env!("CARGO_MANIFEST_DIR");
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("node")
        .arg(format!("{root}/tests/console/e2e.mjs"))
        .env("BERTH_URL", s.url(""))
        .env("BERTH_HOST", &s.host)
        .env("OLIVIA_PASSWORD", OLIVIA)
        .env("RITA_PASSWORD", RITA)
        .env("XSS", XSS)
        .env("IMAGE_DIGEST", &img)
        .env("WORK_DIR", work.path())
        .env("SCREENSHOT_DIR", format!("{root}/docs"))
        .current_dir(format!("{root}/tests/console"))
        .output()
        .expect("node runs (scripts/test.sh installs Node.js, chromium and playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every step the script reports was reached.
    for step in [
        "signed in",
        "robot created",
        "binding added",
        "trust added and deleted",
        "token created",
        "reload mints nothing",
        "pulled with the pull secret",
        "rotated",
        "revoked",
        "audit shows the events",
        "xss rendered as text",
        "reader refused",
        "cross-site post refused",
        "other org hidden",
        "tag deleted",
        "tags paged, filtered and sorted",
        "form errors inline",
        "api key rotated with overlap",
        "organization created and switched",
        "apply yaml downloaded",
        "phone layout",
        "signed out",
    ] {
        assert!(
            stdout.contains(&format!("ok: {step}")),
            "step {step:?} missing:\n{stdout}"
        );
    }

    // What the browser did, as the API sees it.
    let robot = olivia
        .ok("GET", "/orgs/acme/robots/puller", None, StatusCode::OK)
        .await;
    assert_eq!(
        robot["description"], XSS,
        "the description is stored as typed"
    );
    let tokens = olivia
        .ok(
            "GET",
            "/orgs/acme/robots/puller/tokens",
            None,
            StatusCode::OK,
        )
        .await;
    let deploy: Vec<_> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "deploy")
        .collect();
    assert!(
        deploy.len() == 1 && deploy[0]["status"] == "revoked",
        "the revoked token stays as a trace, marked revoked: {tokens}"
    );
    let bindings = olivia
        .ok("GET", "/orgs/acme/bindings", None, StatusCode::OK)
        .await;
    assert!(
        bindings["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["subject"] == "robot/puller" && b["role"] == "Reader"),
        "{bindings}"
    );
    // The YAML the console gave is what `berth apply -f` takes: with the robot's binding
    // deleted, applying it brings the binding back.
    let name = bindings["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"] == "robot/puller")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    olivia
        .ok(
            "DELETE",
            &format!("/orgs/acme/bindings/{name}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let cfg = work.path().join("cli").join("config.yaml");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(berth_bin());
        cmd.args(args)
            .env("BERTH_CONFIG", &cfg)
            .env("HOME", work.path().join("cli"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "berth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let pw = format!("{OLIVIA}\n");
    cli(
        &["login", &s.base, "-u", "olivia", "--password-stdin"],
        Some(&pw),
    );
    cli(
        &["login", "-a", "acme", "-u", "olivia", "--password-stdin"],
        Some(&pw),
    );
    let yaml = work.path().join("access.yaml");
    cli(&["apply", "-f", yaml.to_str().unwrap()], None);
    let again = olivia
        .ok(
            "GET",
            &format!("/orgs/acme/bindings/{name}"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (again["role"].as_str(), again["subject"].as_str()),
        (Some("Reader"), Some("robot/puller"))
    );
    // Rita's and the cross-site attempts changed nothing.
    for name in ["rita-bot", "evil"] {
        let (status, _) = olivia
            .call("GET", &format!("/orgs/acme/robots/{name}"), None, &[])
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "robot {name} must not exist");
    }
    let tags = olivia
        .ok(
            "GET",
            "/orgs/acme/repositories/acme/app?sort=name",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(tags["total"], 58, "{tags}");
    let names: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .filter(|t| !t.starts_with("rc-"))
        .collect();
    assert_eq!(
        names,
        ["1", "annotated", "multi"],
        "Olivia deleted `old`, Rita deleted nothing"
    );
    // The commands the secret page names run as shown, with the token file it handed out (the
    // API key of the last rotation, still valid).
    let key_file = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"apikey\"")))
        .max_by_key(|p| p.file_name().unwrap().to_owned())
        .expect("a downloaded API key file");
    let docker_dir = tempfile::tempdir().unwrap();
    for (what, line) in berth::kube::token_file_commands(
        key_file.to_str().unwrap(),
        &s.host,
        "laptop-pull",
        "default",
    ) {
        let args: Vec<&str> = line.split_whitespace().collect();
        let mut cmd = Command::new(berth_bin());
        cmd.args(&args[1..])
            .env("HOME", work.path().join("nobody"))
            .env("BERTH_CONFIG", work.path().join("nobody/config.yaml"))
            .env("DOCKER_CONFIG", docker_dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Only the credential provider reads a request on stdin; a command that does not may
        // exit before a write to it, so the others get none.
        let provider = line.contains("credential-provider");
        cmd.stdin(if provider {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        });
        let mut child = cmd.spawn().unwrap();
        if provider {
            let request = json!({
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "kind": "CredentialProviderRequest",
                "image": format!("{}/acme/app:1", s.host),
            });
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(request.to_string().as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: `{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains("pull-secret") {
            assert!(
                stdout.contains("kubernetes.io/dockerconfigjson"),
                "{stdout}"
            );
        }
        if provider {
            assert!(stdout.contains("CredentialProviderResponse"), "{stdout}");
        }
    }
    // The docker config written by the page's command pulls with skopeo.
    let pulled = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--authfile"])
        .arg(docker_dir.path().join("config.json"))
        .arg(format!("docker://{}/acme/app:1", s.host))
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    // No secret ever reached the server's log (URLs included).
    let log = s.log_text();
    let secrets: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .flat_map(|t| {
            t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .filter(|w| {
                    ["bthr_", "btha_", "btht_", "bthf_"]
                        .iter()
                        .any(|p| w.starts_with(p))
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    // The downloads hold robot tokens and API keys: the check below looks at real secrets.
    for prefix in ["bthr_", "btha_"] {
        assert!(
            secrets.iter().any(|s| s.starts_with(prefix)),
            "no {prefix} secret among the downloads ({} found)",
            secrets.len()
        );
    }
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
    for password in [OLIVIA, RITA] {
        assert!(!log.contains(password), "a password reached the log");
    }
    // The console's own answers: sessions are cookies the page script cannot read.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(s.url("/ui/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "olivia"), ("password", OLIVIA)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: a Secure cookie would never come back"
    );
}

/// A rotation in the console keeps the pull secret's Kubernetes namespace the user names.
#[tokio::test]
async fn a_rotated_tokens_pull_secret_keeps_its_namespace() {
    let s = Server::start();
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let t = robot_with_token(&admin, "acme", "xp", "Reader", json!({})).await;
    let id = t.split_once(':').unwrap().0.to_owned();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = console_cookie(&s, "admin", ADMIN_PASSWORD).await.unwrap();
    let page = http
        .get(s.url("/ui/orgs/acme/robots/xp"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form_at = page
        .find(&format!("/tokens/{id}/rotate"))
        .expect("the token's rotate form");
    let form = &page[form_at..form_at + page[form_at..].find("</form>").unwrap()];
    assert!(
        form.contains("name=\"k8sNamespace\""),
        "the rotate form asks for the namespace: {form}"
    );
    let at = page.find("name=\"_csrf\" value=\"").unwrap() + 20;
    let csrf = page[at..at + 40].to_owned();
    let r = http
        .post(s.url(&format!("/ui/orgs/acme/robots/xp/tokens/{id}/rotate")))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("_csrf", csrf.as_str()),
            ("overlap", "0"),
            ("k8sNamespace", "crossplane-system"),
        ])
        .send()
        .await
        .unwrap();
    // POST → 303 → the one-time page, which the sealed cookie opens once.
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    let once = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("berth_once="))
        .expect("the one-time cookie");
    let view = |cookies: String| http.get(s.url(&to)).header("cookie", cookies).send();
    // Under another organization's page it opens nothing.
    let r = http
        .get(s.url("/ui/orgs/elsewhere/new-secret"))
        .header("cookie", format!("{cookie}; {once}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    let r = view(format!("{cookie}; {once}")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("berth_once=;")),
        "the page clears its cookie"
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("namespace: crossplane-system"), "{body}");
    // Without the cookie (a reload after it was cleared): gone, and no secret.
    let r = view(cookie.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    assert!(!r.text().await.unwrap().contains("bthr_"));
    // The cookie opens only with the session it was sealed for.
    let other = console_cookie(&s, "admin", ADMIN_PASSWORD).await.unwrap();
    let r = http
        .get(s.url(&to))
        .header("cookie", format!("{other}; {once}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::GONE,
        "another session cannot open it"
    );
}

/// Single sign-on end to end in Chromium and from the terminal: a person signs in to the console
/// at the provider's own login page, approves `berth login --sso` at the provider's device page
/// in the same browser, holds what their group is bound to, and loses it within the bound after
/// leaving the group — the console session and the CLI's alike.
#[tokio::test]
async fn single_sign_on_in_chromium_and_the_terminal() {
    use crate::support::oidc::{CliSignIn, sso_server};
    let (s, idp) = sso_server(&[]);
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let (st, _) = admin
        .put(
            "/orgs/acme/bindings/devs",
            json!({"role": "Writer", "subject": "group/dev"}),
        )
        .await;
    assert!(st.is_success());
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let login = CliSignIn::start(&s, &cfg, &home, "acme");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("node")
        .arg(format!("{root}/tests/console/sso.mjs"))
        .env("BERTH_URL", s.url(""))
        .env("SSO_USER", "alice")
        .env("SSO_PASSWORD", "pw-alice")
        .env("DEVICE_URL", &login.url)
        .env("SCREENSHOT_DIR", format!("{root}/docs"))
        .current_dir(format!("{root}/tests/console"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "signed in through the provider",
        "in acme through the group",
        "device sign-in approved",
    ] {
        assert!(stdout.contains(&format!("ok: {step}")), "{step}: {stdout}");
    }
    let session = stdout
        .lines()
        .find_map(|l| l.strip_prefix("session: "))
        .unwrap()
        .to_owned();
    let (status, said) = tokio::task::spawn_blocking(move || login.finish())
        .await
        .unwrap();
    assert!(status.success(), "{said}");
    let whoami = Command::new(berth_bin())
        .args(["whoami"])
        .env("BERTH_CONFIG", &cfg)
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&whoami.stdout).contains("alice"));
    let console = Api::basic(&s, "iamrefresh", &session);
    let repos = |api: &Api| {
        let api = Api {
            base: api.base.clone(),
            http: api.http.clone(),
            auth: api.auth.clone(),
        };
        async move { api.get("/orgs/acme/repositories").await.0 }
    };
    assert_eq!(repos(&console).await, StatusCode::OK);
    // The CLI's session, as the CLI uses it.
    let cli_repo = || {
        let out = Command::new(berth_bin())
            .args(["org", "get", "acme"])
            .env("BERTH_CONFIG", &cfg)
            .env("HOME", &home)
            .output()
            .unwrap();
        out.status.success()
    };
    assert!(
        cli_repo(),
        "the CLI lists acme's repositories through the group"
    );
    // alice leaves the group: both sessions lose acme within the bound.
    idp.set_user("alice", json!({"groups": []})).await;
    let t0 = std::time::Instant::now();
    while repos(&console).await == StatusCode::OK || cli_repo() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "access outlived the group: console {} cli {}\n{}",
            repos(&console).await,
            cli_repo(),
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
