//! Single sign-on against a real OpenID provider (`oidc-provider`, `tests/oidc`): people sign in
//! to the console and the CLI through it, get access only through their groups' bindings, and
//! lose it within the bound when the provider says so. The attacks on the flow are in
//! `attacks.rs`; the console's sign-in in Chromium is in `console.rs`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::cli::{berth as berth_cli, ok as cli_ok};
use crate::support::oidc::{self, PROVIDER, console_sign_in, sso_server};
use crate::support::*;

/// The bound the tests allow for a change at the provider to take effect: the refresh interval
/// (2 s in these servers), a reading's round trip and the revocation refresh (1 s), with room
/// for a loaded machine.
const BOUND: Duration = Duration::from_secs(30);

/// Polls `check` until it holds or `BOUND` passes; how long it took.
async fn within_bound<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if check().await {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < BOUND, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether a registry token may start an upload to `repo` (push).
async fn may_push(s: &Server, token: &str, repo: &str) -> bool {
    anonymous_client()
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        == StatusCode::ACCEPTED
}

/// A registry token for `repo` (pull and push asked) with a console session's refresh token.
async fn push_token(s: &Server, session: &str, repo: &str) -> String {
    bearer_token(
        s,
        "iamrefresh",
        session,
        &format!("repository:{repo}:pull,push"),
    )
    .await
}

#[tokio::test]
async fn people_get_access_only_through_their_groups_and_lose_it_when_the_provider_says_so() {
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
    // A group binding made before anyone of the group signed in.
    let (st, b) = admin
        .put(
            "/orgs/acme/bindings/devs",
            json!({"role": "Writer", "subject": "group/dev"}),
        )
        .await;
    assert!(st.is_success(), "{b}");
    assert_eq!(b["subject"], "group/dev");

    // The sign-in page offers the provider.
    let page = anonymous_client()
        .get(s.url("/ui/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("/ui/login/sso/{PROVIDER}"))
            && page.contains("Sign in with Corp SSO")
    );

    let alice = console_sign_in(&s, "alice", "pw-alice").await;
    let a = Api::basic(&s, "iamrefresh", &alice.session);
    let who = a.ok("GET", "/auth/whoami", None, StatusCode::OK).await;
    let sessions = a.ok("GET", "/sessions", None, StatusCode::OK).await;
    assert_eq!(
        sessions["sessions"][0]["source"]["kind"], "sso",
        "{sessions}"
    );
    assert_eq!(who["name"], "alice");
    assert_eq!(who["admin"], false);
    // A member of acme through the group.
    assert!(
        who["orgs"].to_string().contains("acme"),
        "alice is in acme through group dev: {who}"
    );
    let users = admin.ok("GET", "/users", None, StatusCode::OK).await;
    let source = |name: &str| {
        users["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .map(|u| u["source"].clone())
    };
    assert_eq!(source("alice"), Some(json!(PROVIDER)));
    assert_eq!(source("admin"), Some(json!("local")));

    let token = push_token(&s, &alice.session, "acme/app").await;
    assert!(
        may_push(&s, &token, "acme/app").await,
        "the group's Writer binding lets alice push"
    );

    // bob is in another group: nothing in acme.
    let bob = console_sign_in(&s, "bob", "pw-bob").await;
    let bob_token = push_token(&s, &bob.session, "acme/app").await;
    assert!(!may_push(&s, &bob_token, "acme/app").await);
    let b = Api::basic(&s, "iamrefresh", &bob.session);
    assert_eq!(b.get("/orgs/acme").await.0, StatusCode::NOT_FOUND);

    // alice leaves the group at the provider: the token she already holds ends within the
    // bound, and a new one grants nothing.
    idp.set_user("alice", json!({"groups": ["ops"]})).await;
    let took = within_bound("alice's old token ends", || async {
        !may_push(&s, &token, "acme/app").await
    })
    .await;
    eprintln!("leaving the group ended the token in {took:?}");
    assert!(
        !may_push(
            &s,
            &push_token(&s, &alice.session, "acme/app").await,
            "acme/app"
        )
        .await
    );
    assert_eq!(a.get("/orgs/acme").await.0, StatusCode::NOT_FOUND);

    // Server admins come from the provider's admin group, and stop being admins with it.
    let carol = console_sign_in(&s, "carol", "pw-carol").await;
    let c = Api::basic(&s, "iamrefresh", &carol.session);
    assert_eq!(
        c.ok("GET", "/auth/whoami", None, StatusCode::OK).await["admin"],
        true
    );
    assert_eq!(c.get("/users").await.0, StatusCode::OK);
    idp.set_user("carol", json!({"groups": []})).await;
    within_bound("carol stops being an admin", || async {
        c.get("/users").await.0 == StatusCode::FORBIDDEN
    })
    .await;

    // A user the provider disables loses every session and the API keys made through them.
    let key = a
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "laptop", "expiresIn": "1d"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let k = Api::basic(&s, "alice", &key);
    assert_eq!(k.get("/auth/whoami").await.0, StatusCode::OK);
    idp.set_user("alice", json!({"disabled": true})).await;
    within_bound("alice's session ends", || async {
        a.get("/auth/whoami").await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    // The node forgets a remembered login of the key within the revocation bound.
    within_bound("alice's API key ends", || async {
        k.get("/auth/whoami").await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    // bob's session stands.
    assert_eq!(b.get("/auth/whoami").await.0, StatusCode::OK);
    let audit = admin
        .ok("GET", "/audit?action=sso.refused", None, StatusCode::OK)
        .await;
    assert!(!audit["events"].as_array().unwrap().is_empty(), "{audit}");
}

#[tokio::test]
async fn the_cli_signs_in_through_the_provider_and_serves_registry_clients() {
    let (s, idp) = sso_server(&[]);
    let tmp = tempfile::tempdir().unwrap();
    // The admin binds the group from the CLI and checks it with can-i.
    let admin_cfg = tmp.path().join("admin/config");
    std::fs::create_dir_all(admin_cfg.parent().unwrap()).unwrap();
    Api::admin(&s)
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    cli_ok(
        &admin_cfg,
        &[
            "login",
            &s.base,
            "-u",
            "admin",
            "--password-stdin",
            "-a",
            "acme",
        ],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    cli_ok(
        &admin_cfg,
        &[
            "binding", "create", "devs", "--role", "Writer", "--group", "dev",
        ],
        None,
    );
    assert_eq!(
        cli_ok(
            &admin_cfg,
            &["can-i", "push", "acme/app", "--as", "group/dev"],
            None
        )
        .trim(),
        "yes"
    );
    let out = berth_cli(
        &admin_cfg,
        &["can-i", "push", "acme/app", "--as", "group/ops"],
        None,
    );
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(1), "no")
    );
    // `apply -f` round-trips Kubernetes' kind: Group.
    let yaml = cli_ok(&admin_cfg, &["binding", "get", "devs", "-o", "yaml"], None);
    assert!(
        yaml.contains("kind: Group") && yaml.contains("ClusterRoleBinding"),
        "{yaml}"
    );
    let file = tmp.path().join("devs.yaml");
    std::fs::write(&file, &yaml).unwrap();
    cli_ok(&admin_cfg, &["binding", "delete", "devs"], None);
    let out = berth_cli(
        &admin_cfg,
        &["can-i", "push", "acme/app", "--as", "group/dev"],
        None,
    );
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(1), "no"),
        "no binding, no yes"
    );
    cli_ok(&admin_cfg, &["apply", "-f", file.to_str().unwrap()], None);
    assert_eq!(
        cli_ok(&admin_cfg, &["binding", "get", "devs", "-o", "yaml"], None),
        yaml,
        "applied back, exported the same"
    );
    // An image for alice to read.
    let image = {
        push_image(&client(), &s, "acme/app", "v1", 7).await;
        format!("docker://{}/acme/app:v1", s.host)
    };

    // alice signs in from the terminal: the device grant, approved at the provider's pages.
    let cfg = tmp.path().join("alice/config");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let home = tmp.path().join("alice/home");
    std::fs::create_dir_all(&home).unwrap();
    let login = oidc::CliSignIn::start(&s, &cfg, &home, "acme");
    let (url, code) = (login.url.clone(), login.code.clone());
    tokio::task::spawn_blocking(move || {
        // Approved after the CLI's first poll (it waits the provider's 5-second interval), so
        // the CLI has read "authorization_pending" once and gone on polling.
        std::thread::sleep(Duration::from_millis(6500));
        oidc::Idp::approve_device(&url, &code, "alice", "pw-alice");
    })
    .await
    .unwrap();
    let (status, said) = login.finish();
    assert!(status.success(), "berth login --sso: {said}");
    assert!(said.contains("alice signed in through corp"), "{said}");
    assert!(cli_ok(&cfg, &["whoami"], None).contains("alice"));
    // Only berth's session is stored: every JWT in the client config is berth's own.
    let stored = std::fs::read_to_string(&cfg).unwrap();
    for jwt in stored
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter(|w| w.starts_with("eyJ"))
    {
        use base64::Engine as _;
        let payload = jwt.split('.').nth(1).unwrap_or_default();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap_or_default();
        let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap_or_default();
        assert_ne!(
            claims["iss"],
            json!(idp.issuer),
            "a provider token was stored: {stored}"
        );
    }
    assert!(!stored.contains(&idp.issuer), "{stored}");

    // docker-config sets up the helper: skopeo reads with alice's group access.
    let docker_cfg = tmp.path().join("alice/docker.json");
    cli_ok(
        &cfg,
        &["docker-config", "--file", docker_cfg.to_str().unwrap()],
        None,
    );
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(berth_bin(), bin_dir.join("docker-credential-berth")).unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = std::process::Command::new("skopeo")
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
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_local_user_is_not_taken_over_by_a_provider_account_and_local_login_can_be_limited() {
    let (s, _idp) = sso_server(&["--local-login", "admins"]);
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "dave", "password": "dave-password-123"})),
            StatusCode::CREATED,
        )
        .await;
    // mallory's provider account says user name "admin" and the admin's e-mail: a new user.
    let mallory = console_sign_in(&s, "mallory", "pw-mallory").await;
    let m = Api::basic(&s, "iamrefresh", &mallory.session);
    let who = m.ok("GET", "/auth/whoami", None, StatusCode::OK).await;
    assert_eq!(who["name"], "admin-2", "a taken name gets a suffix: {who}");
    assert_eq!(who["admin"], false);
    assert_eq!(m.get("/users").await.0, StatusCode::FORBIDDEN);
    // The local admin is untouched and may still sign in with a password.
    let (st, me) = admin.get("/auth/whoami").await;
    assert_eq!((st, me["admin"].clone()), (StatusCode::OK, json!(true)));
    // --local-login admins: other local users may not sign in with a password.
    let (st, _) = Api::anonymous(&s)
        .post(
            "/auth/login",
            json!({"username": "dave", "password": "dave-password-123"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = Api::anonymous(&s)
        .post(
            "/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn with_local_login_off_the_sign_in_page_offers_only_the_provider() {
    let (s, _idp) = sso_server(&["--local-login", "off"]);
    let page = anonymous_client()
        .get(s.url("/ui/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with Corp SSO"));
    assert!(!page.contains("type=\"password\""), "{page}");
    let (st, _) = Api::anonymous(&s)
        .post(
            "/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

/// The device sign-in's two operations answer what the OpenAPI document says (the identity
/// tour covers every other operation; these need a provider).
#[tokio::test]
async fn the_device_sign_in_answers_what_the_document_says() {
    let (s, _idp) = sso_server(&[]);
    let anon = Api::anonymous(&s);
    let (_, doc) = anon.get("/openapi.json").await;
    let fields = |path: &str| {
        let mut schema = doc["paths"][format!("/api/v1{path}")]["post"]["responses"]["200"]
            ["content"]["application/json"]["schema"]
            .clone();
        // Named in the document's components, or inline.
        while let Some(name) = schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
            schema = doc["components"]["schemas"][name].clone();
        }
        let props: std::collections::BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let required: Vec<String> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect();
        (props, required)
    };
    let (st, listed) = anon.get("/auth/sso").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(listed["providers"][0]["name"], PROVIDER);
    let (st, started) = anon
        .post(&format!("/auth/sso/{PROVIDER}/device"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{started}");
    let (props, required) = fields("/auth/sso/{provider}/device");
    for f in &required {
        assert!(started.get(f).is_some(), "lacks {f}: {started}");
    }
    for k in started.as_object().unwrap().keys() {
        assert!(props.contains(k), "undocumented field {k}: {started}");
    }
    let uri = started["verification_uri_complete"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::task::spawn_blocking(move || oidc::Idp::approve_device(&uri, "-", "bob", "pw-bob"))
        .await
        .unwrap();
    // Three polls at once, the moment it is approved: one reaches the provider and gives the
    // session; the others are told to slow down (two uses of the device code would make the
    // provider revoke bob's grant).
    let token_path = format!("/auth/sso/{PROVIDER}/token");
    let poll = || anon.post(&token_path, json!({"handle": started["handle"]}));
    let (a, b, c) = tokio::join!(poll(), poll(), poll());
    let mut answers = vec![a, b, c];
    answers.sort_by_key(|(st, _)| *st);
    let (st, session) = answers.remove(0);
    assert_eq!(st, StatusCode::OK, "{session}");
    for (st, v) in &answers {
        assert_eq!(*st, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["error"] == "slow_down" || v["error"] == "expired_token",
            "{v}"
        );
    }
    let (props, required) = fields("/auth/sso/{provider}/token");
    for f in &required {
        assert!(session.get(f).is_some(), "lacks {f}: {session}");
    }
    for k in session.as_object().unwrap().keys() {
        assert!(props.contains(k), "undocumented field {k}: {session}");
    }
    let me = Api::bearer(&s, session["access_token"].as_str().unwrap());
    assert_eq!(
        me.ok("GET", "/auth/whoami", None, StatusCode::OK).await["name"],
        "bob"
    );
    // The handle works once, and a replay never reaches the provider (which would revoke bob's
    // grant on seeing its device code again, ending the session at the next reading).
    let (st, v) = anon
        .post(
            &format!("/auth/sso/{PROVIDER}/token"),
            json!({"handle": started["handle"]}),
        )
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("expired_token"))
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let refresh = Api::basic(&s, "iamrefresh", session["refresh_token"].as_str().unwrap());
    assert_eq!(
        refresh.get("/auth/whoami").await.0,
        StatusCode::OK,
        "the replay cost bob nothing"
    );
}

/// Where the provider offers no device grant, `berth login --sso` signs in through the browser
/// and a loopback redirect (RFC 8252): only the command that started it redeems the code.
#[tokio::test]
async fn without_a_device_grant_the_cli_signs_in_through_a_loopback_redirect() {
    use std::io::BufRead as _;
    let (s, _idp) = oidc::sso_server_opts(&[], Vec::new(), false);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut login = std::process::Command::new(berth_bin())
        .args(["login", &s.base, "--sso"])
        .env("BERTH_CONFIG", &cfg)
        .env("HOME", &home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(login.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let start = line
        .trim()
        .strip_prefix("To sign in, open ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    assert!(
        start.starts_with(&s.base) && start.contains("cli_challenge="),
        "{start}"
    );
    // The browser: berth's confirmation page, the provider's login page, berth's callback, the
    // loopback.
    let r = anonymous_client().get(&start).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a command line's sign-in is confirmed first"
    );
    let cookie = oidc::set_cookie(&r, "berth_sso").unwrap();
    let page = r.text().await.unwrap();
    assert!(
        page.contains("A command line on this computer asks to sign in"),
        "{page}"
    );
    let go = s.url(&format!("/ui/login/sso/{PROVIDER}/continue"));
    // Another site's page cannot confirm it (nor would the browser send the Lax cookie).
    let r = anonymous_client()
        .post(&go)
        .header("cookie", format!("berth_sso={cookie}"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = anonymous_client()
        .post(&go)
        .header("cookie", format!("berth_sso={cookie}"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let at_provider = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        at_provider.contains("prompt=login") && at_provider.contains("max_age=0"),
        "the person signs in at the provider now: {at_provider}"
    );
    let back =
        tokio::task::spawn_blocking(move || oidc::Idp::sign_in(&at_provider, "alice", "pw-alice"))
            .await
            .unwrap();
    let r = oidc::callback(&back, &cookie).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        oidc::set_cookie(&r, "berth_session").is_none(),
        "a command line's sign-in opens no console session"
    );
    let to_cli = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to_cli.starts_with("http://127.0.0.1:"), "{to_cli}");
    // The code alone (without the command's verifier) is worth nothing.
    let code = to_cli
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let code: String = serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("c={code}"))
        .unwrap()[0]
        .1
        .clone();
    let (st, _) = Api::anonymous(&s)
        .post(
            &format!("/auth/sso/{PROVIDER}/code"),
            json!({"code": code, "code_verifier": "a-verifier-of-someone-else-0123456789abcdef"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let r = anonymous_client().get(&to_cli).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let status = login.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(status.success(), "{line}{rest}");
    assert!(rest.contains("alice signed in through corp"), "{rest}");
    let who = std::process::Command::new(berth_bin())
        .args(["whoami"])
        .env("BERTH_CONFIG", &cfg)
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&who.stdout).contains("alice"));
    // A start whose return address is not this computer's loopback is refused.
    for bad in [
        "https://evil.example/cb",
        "http://evil.example:8080/cb",
        "http://localhost:8080/cb",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:0/cb",
        "http://127.0.0.2:8080/cb",
        "http://127.1:8080/cb",
        "http://2130706433:8080/cb",
        "http://[::ffff:127.0.0.1]:8080/cb",
        "http://127.0.0.1:4000\\@evil.example/cb",
        "http://u@127.0.0.1:8080/cb",
    ] {
        let r = anonymous_client()
            .get(s.url(&format!("/ui/login/sso/{PROVIDER}")))
            .query(&[
                ("cli_redirect", bad),
                (
                    "cli_challenge",
                    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                ),
                ("cli_state", "0123456789abcdef0123"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(oidc::set_cookie(&r, "berth_sso").is_none());
    }
}
