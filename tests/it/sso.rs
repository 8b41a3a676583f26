//! Single sign-on against a real OpenID provider (`oidc-provider`, `tests/oidc`): people sign in
//! to the console and the CLI through it, get access only through their groups' bindings, and
//! lose it within the bound when the provider says so. The attacks on the flow are in
//! `attacks.rs`; the console's sign-in in Chromium is in `console.rs`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::oidc::{PROVIDER, console_sign_in, sso_server};
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
