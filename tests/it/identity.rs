//! Identity and access end to end: the seed flows with skopeo as the client, the token service,
//! revocation, rate limiting, and what must never be logged.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// `skopeo copy` of a small image into `dest` with `creds`; `Ok` if it succeeded.
fn skopeo_push(layout: &std::path::Path, dest: &str, creds: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--all",
        "--dest-tls-verify=false",
    ]);
    match creds {
        Some(c) => cmd.args(["--dest-creds", c]),
        None => cmd.arg("--dest-no-creds"),
    };
    let out = cmd
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(dest)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `skopeo inspect --raw`; the manifest bytes if allowed.
fn skopeo_pull(src: &str, creds: Option<&str>) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    match creds {
        Some(c) => cmd.args(["--creds", c]),
        None => cmd.arg("--no-creds"),
    };
    let out = cmd.arg(src).output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const ACCEPT_ANY: &str =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";

/// Basic credentials `user:secret` as a client (none: anonymous).
fn creds_client(creds: Option<&str>) -> reqwest::Client {
    match creds.and_then(|c| c.split_once(':')) {
        Some((u, p)) => basic_client(u, p),
        None => anonymous_client(),
    }
}

/// A pull of `repo:v1` that exists (the admin reads it) is refused to `creds`: skopeo fails, and
/// the registry's own answer (status and error code) to the manifest GET is returned.
async fn refused_pull(s: &Server, creds: Option<&str>, repo: &str) -> (StatusCode, String) {
    let url = s.url(&format!("/v2/{repo}/manifests/v1"));
    let r = client()
        .get(&url)
        .header("accept", ACCEPT_ANY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{repo}:v1 must exist for the denial to mean anything"
    );
    assert!(skopeo_pull(&format!("docker://{}/{repo}:v1", s.host), creds).is_err());
    let r = creds_client(creds)
        .get(&url)
        .header("accept", ACCEPT_ANY)
        .send()
        .await
        .unwrap();
    (r.status(), error_code(r).await)
}

/// A push into `repo` (whose namespace exists) is refused to `creds`: skopeo fails, and the
/// registry's own answer to starting an upload is returned.
async fn refused_push(
    s: &Server,
    layout: &std::path::Path,
    creds: &str,
    repo: &str,
) -> (StatusCode, String) {
    assert!(
        skopeo_push(
            layout,
            &format!("docker://{}/{repo}:refused", s.host),
            Some(creds)
        )
        .is_err()
    );
    let r = creds_client(Some(creds))
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    (r.status(), error_code(r).await)
}

/// The status of a `/token` login.
async fn token_login(s: &Server, user: &str, secret: &str) -> StatusCode {
    basic_client(user, secret)
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap()
        .status()
}

fn denied() -> (StatusCode, String) {
    (StatusCode::FORBIDDEN, "DENIED".into())
}

fn unauthorized() -> (StatusCode, String) {
    (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
}

/// A server with user `alice` (owner of org `acme`), an org `globex` owned by the admin with an
/// image at `globex/app:v1`, and an image at `acme/app:v1`. Returns the server, alice's session, and the layout dir.
async fn world() -> (Server, Value, tempfile::TempDir, Vec<u8>) {
    let s = Server::start_verbose();
    let session = user_session(&s, "alice", "alice-password-1").await;
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    alice
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    Api::admin(&s)
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "globex"})),
            StatusCode::CREATED,
        )
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let index = multi_platform_layout(&layout);
    for repo in ["acme/app", "globex/app"] {
        skopeo_push(
            &layout,
            &format!("docker://{}/{repo}:v1", s.host),
            Some(&admin_creds()),
        )
        .unwrap();
    }
    (s, session, tmp, index)
}

#[tokio::test]
async fn seed_000_robot_token_pushes_and_pulls_in_its_namespace_only() {
    let (s, session, tmp, index) = world().await;
    let layout = tmp.path().join("layout");
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    alice
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "ci-bot", "description": "CI"})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/ci-bot-writes",
            Some(json!({"role": "Writer", "subject": "robot/ci-bot", "namespace": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let tok = alice
        .ok(
            "POST",
            "/orgs/acme/robots/ci-bot/tokens",
            Some(json!({"name": "ci-token"})),
            StatusCode::CREATED,
        )
        .await;
    let (access_id, token) = (
        tok["accessId"].as_str().unwrap(),
        tok["token"].as_str().unwrap(),
    );
    assert!(token.starts_with("bthr_"), "recognisable prefix: {token}");
    let creds = format!("{access_id}:{token}");
    // Pushes and pulls in its namespace.
    skopeo_push(
        &layout,
        &format!("docker://{}/acme/robot-made:v1", s.host),
        Some(&creds),
    )
    .unwrap();
    assert_eq!(
        skopeo_pull(&format!("docker://{}/acme/app:v1", s.host), Some(&creds)).unwrap(),
        index
    );
    // Denied in another organization's namespace, and anonymously.
    assert_eq!(
        refused_push(&s, &layout, &creds, "globex/app").await,
        denied()
    );
    assert_eq!(refused_pull(&s, Some(&creds), "globex/app").await, denied());
    assert_eq!(refused_pull(&s, None, "acme/app").await, unauthorized());
    // The token list shows no secret, and when it was last used.
    // "Last used" is written behind (within a second): poll for it, with a deadline.
    let start = Instant::now();
    let list = loop {
        let list = alice
            .ok(
                "GET",
                "/orgs/acme/robots/ci-bot/tokens",
                None,
                StatusCode::OK,
            )
            .await;
        if list["tokens"][0]["lastUsed"]["at"].is_string() {
            break list;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "last use never recorded: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(list["tokens"][0]["id"], access_id);
    assert!(!list.to_string().contains(token));
    assert!(list["tokens"][0]["lastUsed"]["at"].is_string(), "{list}");
    // A second token with the same name is refused; another name is fine.
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/ci-bot/tokens",
            Some(json!({"name": "ci-token"})),
            StatusCode::CONFLICT,
        )
        .await;
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/ci-bot/tokens",
            Some(json!({"name": "second", "expiresIn": "90d"})),
            StatusCode::CREATED,
        )
        .await;
    assert_no_secret_logged(
        &s,
        &[
            token,
            session["access_token"].as_str().unwrap(),
            session["refresh_token"].as_str().unwrap(),
        ],
    );
}

#[tokio::test]
async fn seed_002_permanent_registry_token_with_organization_header() {
    let (s, session, tmp, index) = world().await;
    let layout = tmp.path().join("layout");
    let bearer = format!("Bearer {}", session["access_token"].as_str().unwrap());
    let http = anonymous_client();
    let r = http
        .post(s.url("/api/v1/tokens?permanent=true"))
        .header("authorization", &bearer)
        .header("organization", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let ro = body["token"].as_str().unwrap().to_owned();
    assert!(ro.starts_with("btht_"));
    assert!(body["expires"].is_null(), "permanent: {body}");
    let creds = format!("token:{ro}");
    assert_eq!(
        skopeo_pull(&format!("docker://{}/acme/app:v1", s.host), Some(&creds)).unwrap(),
        index
    );
    // Read-only: pushing is denied.
    assert_eq!(
        refused_push(&s, &layout, &creds, "acme/app").await,
        denied()
    );
    // Read-write, expiring (no permanent=true), options in the JSON body.
    let r = http
        .post(s.url("/api/v1/tokens"))
        .header("authorization", &bearer)
        .header("organization", "acme")
        .json(&json!({"readwrite": true, "description": "deploys"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert!(body["expires"].is_string(), "expiring by default: {body}");
    assert_eq!(body["readwrite"], true);
    let rw = body["token"].as_str().unwrap().to_owned();
    skopeo_push(
        &layout,
        &format!("docker://{}/acme/app:rw", s.host),
        Some(&format!("token:{rw}")),
    )
    .unwrap();
    // Not for another organization's namespace.
    assert_eq!(refused_pull(&s, Some(&creds), "globex/app").await, denied());
    // Without the header, or for an org alice is not in: refused.
    let r = http
        .post(s.url("/api/v1/tokens?permanent=true"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http
        .post(s.url("/api/v1/tokens?permanent=true"))
        .header("authorization", &bearer)
        .header("organization", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Listed without secrets; deleted, it stops working.
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    let (st, list) = alice
        .call("GET", "/tokens", None, &[("organization", "acme")])
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["tokens"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&ro));
    let id = body["id"].as_str().unwrap();
    let (st, _) = alice
        .call(
            "DELETE",
            &format!("/tokens/{id}"),
            None,
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // The deleted token gets exactly 401 (the login cache and revocation set reach it within
    // the bound); the other one still works.
    let start = Instant::now();
    loop {
        match token_login(&s, "token", &rw).await {
            StatusCode::UNAUTHORIZED => break,
            StatusCode::OK => {}
            other => panic!("a deleted registry token got {other}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a deleted registry token still works"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        refused_pull(&s, Some(&format!("token:{rw}")), "acme/app").await,
        unauthorized()
    );
    assert_eq!(token_login(&s, "token", &ro).await, StatusCode::OK);
    assert_no_secret_logged(&s, &[&ro, &rw]);
}

#[tokio::test]
async fn seed_003_api_keys_service_ids_and_typed_usernames() {
    let (s, session, tmp, index) = world().await;
    let layout = tmp.path().join("layout");
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    let src = format!("docker://{}/acme/app:v1", s.host);
    // A service ID (robot) with a Reader policy and an API key: pulls, cannot push.
    alice
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "reader"})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/reader",
            Some(json!({"role": "Reader", "subject": "robot/reader"})),
            StatusCode::CREATED,
        )
        .await;
    let key = alice
        .ok(
            "POST",
            "/orgs/acme/robots/reader/apikeys",
            Some(json!({"name": "k8s"})),
            StatusCode::CREATED,
        )
        .await;
    let robot_key = key["apikey"].as_str().unwrap().to_owned();
    assert!(robot_key.starts_with("btha_"));
    assert_eq!(
        skopeo_pull(&src, Some(&format!("iamapikey:{robot_key}"))).unwrap(),
        index
    );
    assert_eq!(
        refused_push(&s, &layout, &format!("iamapikey:{robot_key}"), "acme/app").await,
        denied()
    );
    // A user's API key acts with the user's access (alice owns acme: she may push).
    let own = alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "laptop"})),
            StatusCode::CREATED,
        )
        .await;
    let user_key = own["apikey"].as_str().unwrap().to_owned();
    skopeo_push(
        &layout,
        &format!("docker://{}/acme/app:by-key", s.host),
        Some(&format!("iamapikey:{user_key}")),
    )
    .unwrap();
    // ... also with her user name instead of iamapikey.
    assert_eq!(
        skopeo_pull(&src, Some(&format!("alice:{user_key}"))).unwrap(),
        index
    );
    // ... but not under somebody else's name.
    assert_eq!(
        refused_pull(&s, Some(&format!("admin:{user_key}")), "acme/app").await,
        unauthorized()
    );
    // iambearer: the access token of her session; iamrefresh: her refresh token.
    let access = session["access_token"].as_str().unwrap();
    let refresh = session["refresh_token"].as_str().unwrap();
    assert_eq!(
        skopeo_pull(&src, Some(&format!("iambearer:{access}"))).unwrap(),
        index
    );
    assert_eq!(
        skopeo_pull(&src, Some(&format!("iamrefresh:{refresh}"))).unwrap(),
        index
    );
    // A secret of the wrong kind for the user name is refused.
    for user in ["iamrefresh", "token"] {
        assert_eq!(
            refused_pull(&s, Some(&format!("{user}:{user_key}")), "acme/app").await,
            unauthorized()
        );
    }
    // Revoking the key (deleting it) stops it.
    let id = own["id"].as_str().unwrap();
    alice
        .ok(
            "DELETE",
            &format!("/apikeys/{id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    // Until the bound passes it may still work (200); then the registry answers exactly 401 —
    // never some other failure counted as "revoked".
    let start = Instant::now();
    let key_client = basic_client("iamapikey", &user_key);
    loop {
        let r = key_client
            .get(s.url("/v2/acme/app/manifests/v1"))
            .header("accept", ACCEPT_ANY)
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => break,
            StatusCode::OK => {}
            other => panic!("a deleted API key got {other}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a deleted API key still works after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        refused_pull(&s, Some(&format!("iamapikey:{user_key}")), "acme/app").await,
        unauthorized()
    );
    assert_no_secret_logged(&s, &[&robot_key, &user_key, access, refresh]);
}

#[tokio::test]
async fn seed_004_custom_role_bound_to_a_robot_allows_exactly_its_rules() {
    let (s, session, tmp, _) = world().await;
    let layout = tmp.path().join("layout");
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    skopeo_push(
        &layout,
        &format!("docker://{}/acme/pub-tools:v1", s.host),
        Some(&admin_creds()),
    )
    .unwrap();
    let role = json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"], "names": ["acme/pub-*"]}]});
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/public-puller",
            Some(role.clone()),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/public-puller",
            Some(role),
            StatusCode::OK,
        )
        .await;
    let creds = robot_with_token(&alice, "acme", "deployer", "public-puller", json!({})).await;
    let (access_id, token_secret) = creds.split_once(':').unwrap();
    let tok = json!({"accessId": access_id, "token": token_secret});
    let creds = format!(
        "{}:{}",
        tok["accessId"].as_str().unwrap(),
        tok["token"].as_str().unwrap()
    );
    assert!(
        skopeo_pull(
            &format!("docker://{}/acme/pub-tools:v1", s.host),
            Some(&creds)
        )
        .is_ok()
    );
    assert_eq!(refused_pull(&s, Some(&creds), "acme/app").await, denied());
    assert_eq!(
        refused_push(&s, &layout, &creds, "acme/pub-tools").await,
        denied()
    );
    // The access review says the same.
    for (verb, name, allowed) in [
        ("pull", "acme/pub-tools", true),
        ("pull", "acme/app", false),
        ("push", "acme/pub-tools", false),
    ] {
        let v = alice
            .ok(
                "POST",
                "/orgs/acme/access-review",
                Some(json!({"subject": "robot/deployer", "verb": verb, "name": name})),
                StatusCode::OK,
            )
            .await;
        assert_eq!(v["allowed"], allowed, "{verb} {name}");
    }
    // Built-in roles cannot be replaced; bad rules are refused.
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/Reader",
            Some(json!({"rules": []})),
            StatusCode::CONFLICT,
        )
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/bad",
            Some(json!({"rules": [{"resources": ["planets"], "verbs": ["pull"]}]})),
            StatusCode::BAD_REQUEST,
        )
        .await;
    // A binding cannot reach into another organization's namespace.
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/sneaky",
            Some(json!({"role": "Manager", "subject": "robot/deployer", "namespace": "globex"})),
            StatusCode::BAD_REQUEST,
        )
        .await;
}

/// Decodes a JWT's header and claims (the signature is checked by the server and by Distribution).
fn jwt_parts(jwt: &str) -> (Value, Value) {
    use base64::Engine as _;
    let mut it = jwt.split('.');
    let mut part = || {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(it.next().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    (part(), part())
}

#[tokio::test]
async fn token_service_grants_the_intersection_and_speaks_both_forms() {
    let (s, session, _tmp, _) = world().await;
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    let creds = robot_with_token(&alice, "acme", "r", "Reader", json!({})).await;
    let (access_id, token_secret) = creds.split_once(':').unwrap();
    let tok = json!({"accessId": access_id, "token": token_secret});
    let (id, secret) = (
        tok["accessId"].as_str().unwrap(),
        tok["token"].as_str().unwrap(),
    );
    // Asking for more than allowed is not an error: the grant is cut down.
    let r = basic_client(id, secret)
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull,push,delete&scope=repository:globex/app:pull&scope=registry:catalog:*"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_i64().unwrap() >= 60);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let (header, claims) = jwt_parts(body["token"].as_str().unwrap());
    assert_eq!(header["alg"], "ES256");
    assert!(
        header["kid"].is_string() && header["x5c"][0].is_string(),
        "{header}"
    );
    assert_eq!(claims["iss"], "berth");
    assert_eq!(claims["aud"], "berth");
    assert_eq!(claims["sub"], "robot:acme/r");
    for k in ["exp", "nbf", "iat", "jti"] {
        assert!(!claims[k].is_null(), "claim {k}");
    }
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": "acme/app", "actions": ["pull"]}, {"type": "registry", "name": "catalog", "actions": ["*"]}])
    );
    // The signing key is published.
    let jwks: Value = anonymous_client()
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"] && k["crv"] == "P-256")
    );
    let ca = anonymous_client()
        .get(s.url("/api/v1/keys/ca.pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    // The bearer token works on /v2 for what it grants, and is refused with the challenge for more.
    let bearer = format!("Bearer {}", body["token"].as_str().unwrap());
    let r = anonymous_client()
        .get(s.url("/v2/acme/app/tags/list"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = anonymous_client()
        .delete(s.url("/v2/acme/app/manifests/v1"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    // The catalog lists only what the caller may pull.
    let cat: Value = anonymous_client()
        .get(s.url("/v2/_catalog"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cat["repositories"], json!(["acme/app"]));
    // POST, the OAuth2 form: password grant with offline access returns a refresh token…
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "alice-password-1"),
        ("service", "berth"),
        ("client_id", "test"),
        ("access_type", "offline"),
        ("scope", "repository:acme/app:pull,push"),
    ];
    let r = anonymous_client()
        .post(s.url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "repository:acme/app:pull,push");
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // … which the refresh grant accepts.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", "berth"),
        ("client_id", "test"),
        ("scope", "repository:acme/app:pull"),
    ];
    let r = anonymous_client()
        .post(s.url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Value>().await.unwrap()["access_token"].is_string());
    // Wrong service, wrong grant type, wrong credentials.
    let r = basic_client(id, secret)
        .get(s.url("/token?service=other&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = anonymous_client()
        .post(s.url("/token"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = basic_client("nobody", "nothing")
        .get(s.url("/token?service=berth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    // The failure is audited (events are written within a second).
    let events = Api::admin(&s)
        .ok(
            "GET",
            "/audit?action=login&outcome=failure",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"].is_null()
                && e["attempted"]
                    .as_str()
                    .is_some_and(|a| a.contains("nobody"))),
        "the typed name is recorded as attempted, never as an actor: {events}"
    );
    // Swapped arguments put the secret in the user-name field: it is not recorded.
    let r = basic_client(secret, id)
        .get(s.url("/token?service=berth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let events = Api::admin(&s)
        .ok("GET", "/audit?outcome=failure", None, StatusCode::OK)
        .await;
    assert!(
        !events.to_string().contains(secret),
        "a secret reached the audit trail"
    );
    assert!(events.to_string().contains("[a secret given as user name]"));
    assert_no_secret_logged(&s, &[secret, &refresh]);
}

#[tokio::test]
async fn anonymous_pull_of_a_public_namespace_only() {
    let (s, session, _tmp, index) = world().await;
    let src = format!("docker://{}/acme/app:v1", s.host);
    assert_eq!(refused_pull(&s, None, "acme/app").await, unauthorized());
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    let v = alice
        .ok(
            "PATCH",
            "/namespaces/acme",
            Some(json!({"public": true})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["public"], true);
    assert_eq!(skopeo_pull(&src, None).unwrap(), index);
    // Public means pull, not push.
    let r = anonymous_client()
        .post(s.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"].to_str().unwrap(),
        format!(
            "Bearer realm=\"{}/token\",service=\"berth\",scope=\"repository:acme/app:pull,push\"",
            s.base
        )
    );
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_name_without_locking_out_others() {
    let s = Server::start_verbose();
    user_session(&s, "bob", "bob-password-1").await;
    let mut limited = None;
    for i in 0..15 {
        let r = basic_client("bob", "wrong")
            .get(s.url("/token?service=berth"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((
                i,
                r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            ));
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let (after, retry) = limited.expect("no 429 after 15 failures");
    assert!(after >= 5, "limited too early, after {after}");
    assert!((1..=60).contains(&retry));
    // Bob's right password from another address is not refused; admin from the same address is
    // not either (the limits are per name and address, and per address).
    let r = basic_client_from("bob", "bob-password-1", "127.0.0.2")
        .get(s.url("/token?service=berth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client()
        .get(s.url("/token?service=berth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The server log holds none of the secrets a test created.
fn assert_no_secret_logged(s: &Server, secrets: &[&str]) {
    let log = s.log_text();
    // The server logged at its most verbose level, so the check covers every line it can write.
    assert!(
        log.contains("TRACE request"),
        "the server did not log at trace level"
    );
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    assert!(
        !log.contains(ADMIN_PASSWORD),
        "the admin password reached the log"
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
    let s = Server::start_verbose();
    let get_token = || async {
        let body: Value = client()
            .get(s.url("/token?service=berth&scope=repository:rot/app:pull,push"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["token"].as_str().unwrap().to_owned()
    };
    push_image(&client(), &s, "rot/app", "v1", 70).await;
    let old = get_token().await;
    let old_kid = jwt_parts(&old).0["kid"].as_str().unwrap().to_owned();
    let out = run(&mut s.server_command(&["keys", "rotate"]));
    let new_kid = out
        .trim()
        .strip_prefix("new signing key ")
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);
    // The running server picks the new key up without a restart.
    let start = Instant::now();
    loop {
        let t = get_token().await;
        if jwt_parts(&t).0["kid"] == new_kid.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server did not start signing with the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let jwks: Value = anonymous_client()
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    // A token signed by the old key still works.
    let r = anonymous_client()
        .get(s.url("/v2/rot/app/manifests/v1"))
        .header("authorization", format!("Bearer {old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A forged token (payload changed, signature kept) does not.
    let mut parts: Vec<String> = old.split('.').map(str::to_owned).collect();
    use base64::Engine as _;
    let mut claims = jwt_parts(&old).1;
    claims["access"][0]["name"] = json!("rot/other");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = parts.join(".");
    let r = anonymous_client()
        .get(s.url("/v2/rot/other/tags/list"))
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_and_revoked_robot_tokens_stop_within_the_bound() {
    let (s, session, _tmp, _) = world().await;
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    alice
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "short"})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/short",
            Some(json!({"role": "Reader", "subject": "robot/short"})),
            StatusCode::CREATED,
        )
        .await;
    let brief = alice
        .ok(
            "POST",
            "/orgs/acme/robots/short/tokens",
            Some(json!({"name": "brief", "expiresIn": "2s"})),
            StatusCode::CREATED,
        )
        .await;
    let keep = alice
        .ok(
            "POST",
            "/orgs/acme/robots/short/tokens",
            Some(json!({"name": "keep"})),
            StatusCode::CREATED,
        )
        .await;
    // `true` while the token still gets registry tokens, `false` once it gets exactly 401:
    // any other answer (429, 500, a network error) fails the test instead of passing as revoked.
    let works = |t: Value| {
        let s = &s;
        async move {
            let status = basic_client(
                t["accessId"].as_str().unwrap(),
                t["token"].as_str().unwrap(),
            )
            .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
            .send()
            .await
            .unwrap()
            .status();
            match status {
                StatusCode::OK => true,
                StatusCode::UNAUTHORIZED => false,
                other => panic!("unexpected {other} while waiting for the token to stop"),
            }
        }
    };
    assert!(works(brief.clone()).await);
    assert!(works(keep.clone()).await);
    // Expired: refused once the expiry has passed (and the cache entry, at most 10 s, has gone).
    let start = Instant::now();
    while works(brief.clone()).await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "an expired token still gets tokens after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Deleted: likewise.
    let id = keep["id"].as_str().unwrap();
    alice
        .ok(
            "DELETE",
            &format!("/orgs/acme/robots/short/tokens/{id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let start = Instant::now();
    while works(keep.clone()).await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a deleted token still gets tokens after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn openapi_document_lists_every_route_and_every_listed_route_exists() {
    let s = Server::start_verbose();
    let doc: Value = anonymous_client()
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut ops = 0;
    let admin = Api::admin(&s);
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            ops += 1;
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            // Every documented operation is routed: whatever it answers, it is not the fallback.
            let concrete = path
                .strip_prefix("/api/v1")
                .unwrap()
                .replace('{', "x-")
                .replace('}', "");
            let body = if ["post", "put", "patch"].contains(&method.as_str()) {
                Some(json!({}))
            } else {
                None
            };
            let (status, v) = admin
                .call(&method.to_uppercase(), &concrete, body, &[])
                .await;
            assert!(
                !(status == StatusCode::NOT_FOUND && v["error"]["message"] == "no such endpoint")
                    && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed ({status})"
            );
            // And a request naming nothing that exists is never the server's error.
            assert!(
                !status.is_server_error(),
                "{method} {path} with made-up names answered {status}: {v}"
            );
        }
    }
    assert!(ops >= 48, "only {ops} operations documented");
    // The other direction: every routed operation is documented. On every documented path, each
    // method the document does not list answers 405 (the path exists, that operation does not).
    for (path, methods) in paths {
        let concrete = path
            .strip_prefix("/api/v1")
            .unwrap()
            .replace('{', "x-")
            .replace('}', "");
        let documented = methods.as_object().unwrap();
        for method in ["get", "post", "put", "patch", "delete"] {
            if documented.contains_key(method) {
                continue;
            }
            let (status, _) = admin
                .call(&method.to_uppercase(), &concrete, Some(json!({})), &[])
                .await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is routed but not documented"
            );
        }
    }
    // And the operations the suite and the CLI use are all in the document (those that an
    // older document lacked were the sessions and the access token).
    for (method, path) in [
        ("get", "/api/v1/sessions"),
        ("delete", "/api/v1/sessions"),
        ("delete", "/api/v1/sessions/{id}"),
        ("post", "/api/v1/auth/access-token"),
        ("post", "/api/v1/tokens"),
        ("put", "/api/v1/users/{user}/password"),
    ] {
        assert!(
            paths[path].get(method).is_some(),
            "{method} {path} undocumented"
        );
    }
    // An undocumented path is the fallback.
    let (status, v) = admin.get("/no/such/thing").await;
    assert_eq!(
        (status, v["error"]["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("no such endpoint"))
    );
}

#[tokio::test]
async fn bootstrap_prints_a_random_admin_password_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &[], &[("BERTH_ADMIN_PASSWORD", "")]);
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("created the server admin"))
        .expect("the password is printed");
    let password = line.rsplit(' ').next().unwrap().to_owned();
    assert!(
        password.len() >= 32,
        "a long random password: {}",
        password.len()
    );
    let r = basic_client("admin", &password)
        .get(s.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    s.kill9();
    s.restart();
    assert!(
        !s.log_text().contains("created the server admin"),
        "printed only on the first start"
    );
    let r = basic_client("admin", &password)
        .get(s.url("/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn refresh_rotates_and_logout_revokes() {
    let s = Server::start_verbose();
    let first = user_session(&s, "carol", "carol-password-1").await;
    let anon = Api::anonymous(&s);
    let old = first["refresh_token"].as_str().unwrap();
    let second = anon
        .ok(
            "POST",
            "/auth/refresh",
            Some(json!({"refresh_token": old})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(second["token_type"], "Bearer");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    // The old refresh token was rotated away.
    anon.ok(
        "POST",
        "/auth/refresh",
        Some(json!({"refresh_token": old})),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let me = Api::bearer(&s, second["access_token"].as_str().unwrap())
        .ok("GET", "/auth/whoami", None, StatusCode::OK)
        .await;
    assert_eq!(
        (me["kind"].as_str(), me["name"].as_str()),
        (Some("user"), Some("carol"))
    );
    // Presenting the rotated token again ended its family: the successor is dead too, and so is
    // its access token once the revocation reaches the node (refreshed every second or two).
    let current = second["refresh_token"].as_str().unwrap();
    anon.ok(
        "POST",
        "/auth/refresh",
        Some(json!({"refresh_token": current})),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let bearer = Api::bearer(&s, second["access_token"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = bearer.get("/auth/whoami").await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            std::time::Instant::now() < deadline,
            "the access token outlived its family"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Logout revokes the current one.
    let third = anon
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "carol", "password": "carol-password-1"})),
            StatusCode::OK,
        )
        .await;
    let current = third["refresh_token"].as_str().unwrap();
    anon.ok(
        "POST",
        "/auth/logout",
        Some(json!({"refresh_token": current})),
        StatusCode::NO_CONTENT,
    )
    .await;
    anon.ok(
        "POST",
        "/auth/refresh",
        Some(json!({"refresh_token": current})),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Bad input is a clear error.
    let (status, v) = anon.call("POST", "/auth/login", None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], "invalid");
    anon.ok(
        "POST",
        "/auth/login",
        Some(json!({"username": "carol", "password": "wrong"})),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn mount_needs_pull_on_the_source_else_it_is_a_plain_upload() {
    let (s, session, _tmp, _) = world().await;
    let alice = Api::bearer(&s, session["access_token"].as_str().unwrap());
    let creds = robot_with_token(&alice, "acme", "w", "Writer", json!({"namespace": "acme"})).await;
    let (access_id, token_secret) = creds.split_once(':').unwrap();
    let t = json!({"accessId": access_id, "token": token_secret});
    let robot = basic_client(
        t["accessId"].as_str().unwrap(),
        t["token"].as_str().unwrap(),
    );
    let secret_bytes = random_bytes(3000, 80);
    let d = push_blob(&client(), &s, "globex/private", &secret_bytes).await;
    let own = push_blob(&client(), &s, "acme/app", &random_bytes(3000, 81)).await;
    let r = robot
        .post(s.url(&format!(
            "/v2/acme/mine/blobs/uploads/?mount={d}&from=globex/private"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "no pull on the source: an ordinary upload"
    );
    let r = robot
        .get(s.url(&format!("/v2/acme/mine/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "the other org's blob did not leak in"
    );
    let r = robot
        .post(s.url(&format!(
            "/v2/acme/mine/blobs/uploads/?mount={own}&from=acme/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Only a server admin's push creates a namespace; anyone else is denied, exactly as in a
    // namespace that exists but is not theirs (no oracle of taken names).
    let r = robot
        .post(s.url("/v2/nowhere/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
    let (_, ns) = Api::admin(&s).get("/namespaces/nowhere").await;
    assert_eq!(ns["error"]["code"], "not_found");
}

#[tokio::test]
async fn an_operator_provided_signing_key_and_chain_sign_the_tokens() {
    use rcgen::{
        BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    };
    let tmp = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (key_path, chain_path) = (tmp.path().join("signer.key"), tmp.path().join("chain.pem"));
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&chain_path, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    let s = Server::start_in(
        &tmp.path().join("data"),
        &[
            "--token-key",
            key_path.to_str().unwrap(),
            "--token-cert-chain",
            chain_path.to_str().unwrap(),
        ],
        &[],
    );
    push_image(&client(), &s, "op/app", "v1", 95).await;
    let body: Value = client()
        .get(s.url("/token?service=berth&scope=repository:op/app:pull"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = body["token"].as_str().unwrap();
    use base64::Engine as _;
    let (header, _) = jwt_parts(jwt);
    assert_eq!(
        header["x5c"][0],
        base64::engine::general_purpose::STANDARD.encode(leaf.der())
    );
    let r = anonymous_client()
        .get(s.url("/v2/op/app/manifests/v1"))
        .header("authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let served = anonymous_client()
        .get(s.url("/api/v1/keys/ca.pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        served.split_whitespace().collect::<String>(),
        ca.pem().split_whitespace().collect::<String>()
    );
    // No key of berth's own was made, and rotation is the operator's business.
    assert!(!s.data_dir.join("keys/ca.key").exists());
    let out = Command::new(berth_bin())
        .args(["keys", "rotate", "--data-dir"])
        .arg(&s.data_dir)
        .env("BERTH_TOKEN_KEY", &key_path)
        .env("BERTH_TOKEN_CERT_CHAIN", &chain_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("operator-provided"));
}

/// Calls operations of the management API and checks each answer against the OpenAPI document:
/// the documented success status, every required field present, no undocumented field.
struct Tour {
    s: Server,
    doc: Value,
    seen: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl Tour {
    async fn call(
        &self,
        api: &Api,
        method: &str,
        template: &str,
        concrete: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Value {
        let op = &self.doc["paths"][format!("/api/v1{template}")][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let (status, v) = api
            .call(&method.to_uppercase(), concrete, body, headers)
            .await;
        let responses = op["responses"].as_object().unwrap();
        let success = responses
            .iter()
            .find(|(c, _)| c.starts_with('2') && *c == status.as_str())
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("{method} {template}: undocumented {status}: {v}"));
        // The answer's schema, inline or named in the document's components.
        let mut schema = success["content"]["application/json"]["schema"].clone();
        while let Some(name) = schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
            schema = self.doc["components"]["schemas"][name].clone();
        }
        if schema.is_object() {
            let got = v
                .as_object()
                .unwrap_or_else(|| panic!("{method} {template}: {v}"));
            for f in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    got.contains_key(f.as_str().unwrap()),
                    "{method} {template} lacks {f}: {v}"
                );
            }
            if schema["properties"].is_object() && schema["additionalProperties"] != true {
                for k in got.keys() {
                    assert!(
                        schema["properties"].get(k).is_some(),
                        "{method} {template} answers an undocumented field {k:?}: {v}"
                    );
                }
            }
        } else {
            assert!(
                v.is_null(),
                "{method} {template} documents no body but answered {v}"
            );
        }
        self.seen
            .lock()
            .unwrap()
            .insert((method.to_owned(), template.to_owned()));
        v
    }
}

#[tokio::test]
async fn every_operation_answers_the_shape_the_document_gives() {
    let s = Server::start();
    let doc: Value = anonymous_client()
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = Tour {
        s,
        doc,
        seen: Default::default(),
    };
    let s = &t.s;
    let (admin, anon) = (Api::admin(s), Api::anonymous(s));
    let alice_user = json!({"name": "alice", "password": "alice-password-1"});
    t.call(&admin, "post", "/users", "/users", Some(alice_user), &[])
        .await;
    t.call(
        &admin,
        "post",
        "/users",
        "/users",
        Some(json!({"name": "bob", "password": "bob-password-1"})),
        &[],
    )
    .await;
    t.call(&admin, "get", "/users", "/users", None, &[]).await;
    t.call(&admin, "get", "/users/{user}", "/users/alice", None, &[])
        .await;
    let login = json!({"username": "alice", "password": "alice-password-1"});
    let first = t
        .call(
            &anon,
            "post",
            "/auth/login",
            "/auth/login",
            Some(login),
            &[],
        )
        .await;
    let session = t
        .call(
            &anon,
            "post",
            "/auth/refresh",
            "/auth/refresh",
            Some(json!({"refresh_token": first["refresh_token"]})),
            &[],
        )
        .await;
    let alice = Api::bearer(s, session["access_token"].as_str().unwrap());
    t.call(&alice, "get", "/auth/whoami", "/auth/whoami", None, &[])
        .await;
    t.call(
        &alice,
        "post",
        "/auth/access-token",
        "/auth/access-token",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "post",
        "/orgs",
        "/orgs",
        Some(json!({"name": "acme"})),
        &[],
    )
    .await;
    t.call(&alice, "get", "/orgs", "/orgs", None, &[]).await;
    t.call(&alice, "get", "/orgs/{org}", "/orgs/acme", None, &[])
        .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/members",
        "/orgs/acme/members",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "put",
        "/orgs/{org}/members/{user}",
        "/orgs/acme/members/bob",
        Some(json!({"role": "member"})),
        &[],
    )
    .await;
    // Bob was invited; he sees the invitation and accepts it.
    let bob = Api::basic(s, "bob", "bob-password-1");
    t.call(&bob, "get", "/invitations", "/invitations", None, &[])
        .await;
    t.call(
        &bob,
        "post",
        "/orgs/{org}/invitations/accept",
        "/orgs/acme/invitations/accept",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/members/{user}",
        "/orgs/acme/members/bob",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "post",
        "/orgs/{org}/namespaces",
        "/orgs/acme/namespaces",
        Some(json!({"name": "team"})),
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/namespaces",
        "/orgs/acme/namespaces",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/namespaces/{ns}",
        "/namespaces/team",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "patch",
        "/namespaces/{ns}",
        "/namespaces/team",
        Some(json!({"public": true})),
        &[],
    )
    .await;
    t.call(
        &alice,
        "post",
        "/orgs/{org}/robots",
        "/orgs/acme/robots",
        Some(json!({"name": "ci"})),
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/robots",
        "/orgs/acme/robots",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/robots/{robot}",
        "/orgs/acme/robots/ci",
        None,
        &[],
    )
    .await;
    let trust = json!({
        "name": "builds",
        "issuer": "https://kubernetes.default.svc",
        "subject": "system:serviceaccount:ci:*",
        "claims": {"kubernetes.io.namespace": "ci"},
    });
    t.call(
        &alice,
        "post",
        "/orgs/{org}/robots/{robot}/trusts",
        "/orgs/acme/robots/ci/trusts",
        Some(trust),
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/robots/{robot}/trusts",
        "/orgs/acme/robots/ci/trusts",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/robots/{robot}/trusts/{name}",
        "/orgs/acme/robots/ci/trusts/builds",
        None,
        &[],
    )
    .await;
    let rules = json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"]}]});
    t.call(
        &alice,
        "put",
        "/orgs/{org}/roles/{name}",
        "/orgs/acme/roles/puller",
        Some(rules),
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/roles",
        "/orgs/acme/roles",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/roles/{name}",
        "/orgs/acme/roles/puller",
        None,
        &[],
    )
    .await;
    let binding = json!({"role": "puller", "subject": "robot/ci", "namespace": "team"});
    t.call(
        &alice,
        "put",
        "/orgs/{org}/bindings/{name}",
        "/orgs/acme/bindings/ci",
        Some(binding),
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/bindings",
        "/orgs/acme/bindings",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/bindings/{name}",
        "/orgs/acme/bindings/ci",
        None,
        &[],
    )
    .await;
    let tok = t
        .call(
            &alice,
            "post",
            "/orgs/{org}/robots/{robot}/tokens",
            "/orgs/acme/robots/ci/tokens",
            Some(json!({"name": "t"})),
            &[],
        )
        .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/robots/{robot}/tokens",
        "/orgs/acme/robots/ci/tokens",
        None,
        &[],
    )
    .await;
    let id = tok["id"].as_str().unwrap();
    t.call(
        &alice,
        "post",
        "/orgs/{org}/robots/{robot}/tokens/{id}/rotate",
        &format!("/orgs/acme/robots/ci/tokens/{id}/rotate"),
        Some(json!({"overlap": "1h"})),
        &[],
    )
    .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/credentials",
        "/orgs/acme/credentials",
        None,
        &[],
    )
    .await;
    let (digest, _) = push_image(
        &basic_client("alice", "alice-password-1"),
        s,
        "acme/app",
        "v1",
        96,
    )
    .await;
    let repos = t
        .call(
            &alice,
            "get",
            "/orgs/{org}/repositories",
            "/orgs/acme/repositories",
            None,
            &[],
        )
        .await;
    assert_eq!(repos["repositories"][0]["name"], "acme/app", "{repos}");
    assert_eq!(repos["repositories"][0]["tags"], 1, "{repos}");
    let repo = t
        .call(
            &alice,
            "get",
            "/orgs/{org}/repositories/{repository}",
            "/orgs/acme/repositories/acme/app",
            None,
            &[],
        )
        .await;
    assert_eq!(repo["tags"][0]["tag"], "v1", "{repo}");
    assert_eq!(repo["tags"][0]["digest"], digest.as_str(), "{repo}");
    assert_eq!(repo["actions"], json!(["pull", "push", "delete"]), "{repo}");
    let storage = t
        .call(
            &alice,
            "get",
            "/orgs/{org}/storage",
            "/orgs/acme/storage",
            None,
            &[],
        )
        .await;
    assert!(
        storage["namespaces"][0]["size"].as_u64().unwrap() > 1024,
        "{storage}"
    );
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/repositories/{repository}",
        "/orgs/acme/repositories/acme/app",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/robots/{robot}/tokens/{id}",
        &format!("/orgs/acme/robots/ci/tokens/{id}"),
        None,
        &[],
    )
    .await;
    let key = t
        .call(
            &alice,
            "post",
            "/orgs/{org}/robots/{robot}/apikeys",
            "/orgs/acme/robots/ci/apikeys",
            Some(json!({})),
            &[],
        )
        .await;
    t.call(
        &alice,
        "get",
        "/orgs/{org}/robots/{robot}/apikeys",
        "/orgs/acme/robots/ci/apikeys",
        None,
        &[],
    )
    .await;
    let id = key["id"].as_str().unwrap();
    t.call(
        &alice,
        "post",
        "/orgs/{org}/robots/{robot}/apikeys/{id}/rotate",
        &format!("/orgs/acme/robots/ci/apikeys/{id}/rotate"),
        Some(json!({"overlap": "0"})),
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/robots/{robot}/apikeys/{id}",
        &format!("/orgs/acme/robots/ci/apikeys/{id}"),
        None,
        &[],
    )
    .await;
    let own = t
        .call(
            &alice,
            "post",
            "/apikeys",
            "/apikeys",
            Some(json!({"name": "mine"})),
            &[],
        )
        .await;
    t.call(&alice, "get", "/apikeys", "/apikeys", None, &[])
        .await;
    let id = own["id"].as_str().unwrap();
    t.call(
        &alice,
        "post",
        "/apikeys/{id}/rotate",
        &format!("/apikeys/{id}/rotate"),
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/apikeys/{id}",
        &format!("/apikeys/{id}"),
        None,
        &[],
    )
    .await;
    let org = [("organization", "acme")];
    let rt = t
        .call(&alice, "post", "/tokens", "/tokens", None, &org)
        .await;
    t.call(&alice, "get", "/tokens", "/tokens", None, &org)
        .await;
    let id = rt["id"].as_str().unwrap();
    t.call(
        &alice,
        "post",
        "/tokens/{id}/rotate",
        &format!("/tokens/{id}/rotate"),
        Some(json!({"overlap": "10m"})),
        &org,
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/tokens/{id}",
        &format!("/tokens/{id}"),
        None,
        &org,
    )
    .await;
    let review = json!({"subject": "robot/ci", "verb": "pull", "name": "team/app"});
    t.call(
        &alice,
        "post",
        "/orgs/{org}/access-review",
        "/orgs/acme/access-review",
        Some(review),
        &[],
    )
    .await;
    t.call(&alice, "get", "/audit", "/audit", None, &[]).await;
    let org_audit = t
        .call(
            &alice,
            "get",
            "/orgs/{org}/audit",
            "/orgs/acme/audit",
            None,
            &[],
        )
        .await;
    assert!(
        org_audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["org"] == "acme"),
        "{org_audit}"
    );
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/bindings/{name}",
        "/orgs/acme/bindings/ci",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/roles/{name}",
        "/orgs/acme/roles/puller",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/orgs/{org}/robots/{robot}",
        "/orgs/acme/robots/ci",
        None,
        &[],
    )
    .await;
    t.call(
        &alice,
        "delete",
        "/namespaces/{ns}",
        "/namespaces/team",
        None,
        &[],
    )
    .await;
    // Sessions last: they end the tokens used above.
    let login = || json!({"username": "alice", "password": "alice-password-1"});
    let other = anon
        .ok("POST", "/auth/login", Some(login()), StatusCode::OK)
        .await;
    let logout = json!({"refresh_token": other["refresh_token"]});
    t.call(
        &anon,
        "post",
        "/auth/logout",
        "/auth/logout",
        Some(logout),
        &[],
    )
    .await;
    anon.ok("POST", "/auth/login", Some(login()), StatusCode::OK)
        .await;
    let listed = t
        .call(&alice, "get", "/sessions", "/sessions", None, &[])
        .await;
    let not_current = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["current"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.call(
        &alice,
        "delete",
        "/sessions/{id}",
        &format!("/sessions/{not_current}"),
        None,
        &[],
    )
    .await;
    t.call(&alice, "delete", "/orgs/{org}", "/orgs/acme", None, &[])
        .await;
    let pw = json!({"password": "alice-password-2", "currentPassword": "alice-password-1"});
    t.call(
        &alice,
        "put",
        "/users/{user}/password",
        "/users/alice/password",
        Some(pw),
        &[],
    )
    .await;
    let alice2 = Api::basic(s, "alice", "alice-password-2");
    t.call(&alice2, "delete", "/sessions", "/sessions", None, &[])
        .await;
    t.call(&admin, "delete", "/users/{user}", "/users/bob", None, &[])
        .await;
    let sso = t
        .call(&anon, "get", "/auth/sso", "/auth/sso", None, &[])
        .await;
    assert_eq!(sso["providers"], json!([]), "no provider configured here");
    // Every documented operation was called (the device sign-in's two need a provider: they
    // are toured against one in `sso::the_device_sign_in_answers_what_the_document_says`).
    let mut documented = std::collections::BTreeSet::new();
    for (path, methods) in t.doc["paths"].as_object().unwrap() {
        if path.starts_with("/api/v1/auth/sso/") {
            continue;
        }
        for m in methods.as_object().unwrap().keys() {
            documented.insert((m.clone(), path.strip_prefix("/api/v1").unwrap().to_owned()));
        }
    }
    let seen = t.seen.lock().unwrap().clone();
    let missing: Vec<_> = documented.difference(&seen).collect();
    assert!(missing.is_empty(), "operations not toured: {missing:?}");
}

#[tokio::test]
async fn an_organization_keeps_an_owner() {
    let s = Server::start();
    let alice = Api::bearer(
        &s,
        user_session(&s, "alice", "alice-password-1").await["access_token"]
            .as_str()
            .unwrap(),
    );
    alice
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    for (method, path, body) in [
        ("DELETE", "/orgs/acme/members/alice", None),
        (
            "PUT",
            "/orgs/acme/members/alice",
            Some(json!({"role": "member"})),
        ),
    ] {
        let (st, v) = alice.call(method, path, body, &[]).await;
        assert_eq!(st, StatusCode::CONFLICT, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("last owner"),
            "{v}"
        );
    }
    // With a second owner, the first may go (positive control).
    user_session(&s, "bob", "bob-password-1").await;
    join(&s, &alice, "acme", "bob", "bob-password-1", "owner").await;
    alice
        .ok(
            "DELETE",
            "/orgs/acme/members/alice",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
}
