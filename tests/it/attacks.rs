//! Attacks on the identity core, each against the real binary: lock-outs aimed at others,
//! credentials that outlive their source, names that resurrect content, escalation through
//! custom roles, slow globs, login storms, connection exhaustion, bearer tokens after
//! revocation, a forged or flooded audit trail, readable files, weak passwords, refresh races and
//! existence oracles. Each test asserts the registry's answer (status and code), and a positive
//! control shows the same path works for a caller who is allowed.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// The revocation bound: a revoked credential's tokens stop within this.
const REVOCATION_BOUND: Duration = Duration::from_secs(30);

/// GET /token with Basic credentials from `source`; the status.
async fn token_status(s: &Server, user: &str, secret: &str, source: &str) -> StatusCode {
    basic_client_from(user, secret, source)
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap()
        .status()
}

/// A registry (bearer) token for `user:secret` with pull on `repo`.
async fn bearer_for(s: &Server, user: &str, secret: &str, repo: &str) -> String {
    bearer_token(s, user, secret, &format!("repository:{repo}:pull")).await
}

/// The status of a manifest GET with `Authorization: Bearer jwt`.
async fn pull_with_bearer(s: &Server, jwt: &str, repo: &str) -> StatusCode {
    anonymous_client()
        .get(s.url(&format!("/v2/{repo}/manifests/v1")))
        .header("authorization", format!("Bearer {jwt}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .status()
}

/// Polls `check` until it returns `want` or the bound passes; the time it took.
async fn within<F, Fut>(bound: Duration, want: StatusCode, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let start = Instant::now();
    loop {
        let got = check().await;
        if got == want {
            return start.elapsed();
        }
        // Anything but the wanted answer must be the still-valid answer, never an error.
        assert_eq!(
            got,
            StatusCode::OK,
            "unexpected answer while waiting for {want}"
        );
        assert!(start.elapsed() < bound, "still {got} after {bound:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The same secret with its last character changed: same embedded id, wrong secret.
fn tampered(secret: &str) -> String {
    let mut s = secret.to_owned();
    let last = s.pop().unwrap();
    s.push(if last == 'A' { 'B' } else { 'A' });
    s
}

/// A server with org `acme` (owner alice), an image at `acme/app:v1`, and every kind of
/// credential: alice's password, API key and access token, a Reader robot's token and API key,
/// and a registry token.
struct World {
    s: Server,
    alice: Api,
    apikey: String,
    access_token: String,
    robot_token: (String, String),
    robot_key: String,
    registry_token: String,
}

async fn world() -> World {
    world_on(Server::start()).await
}

async fn world_on(s: Server) -> World {
    let session = user_session(&s, "alice", "alice-password-1").await;
    let access_token = session["access_token"].as_str().unwrap().to_owned();
    let alice = Api::bearer(&s, &access_token);
    alice
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    push_image(
        &basic_client("alice", "alice-password-1"),
        &s,
        "acme/app",
        "v1",
        1,
    )
    .await;
    let apikey = alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "k"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let rt = robot_with_token(&alice, "acme", "reader", "Reader", json!({})).await;
    let (id, token) = rt.split_once(':').unwrap();
    let robot_key = alice
        .ok(
            "POST",
            "/orgs/acme/robots/reader/apikeys",
            Some(json!({})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, v) = alice
        .call(
            "POST",
            "/tokens?permanent=true",
            None,
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    World {
        s,
        alice,
        apikey,
        access_token,
        robot_token: (id.to_owned(), token.to_owned()),
        robot_key,
        registry_token: v["token"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn failed_logins_from_one_address_lock_out_nobody_else() {
    let w = world().await;
    let s = &w.s;
    let attacker = "127.0.0.9";
    // Every typed user name and every identity, with wrong secrets (the same embedded ids as
    // the real ones, as from a leaked log), many times over the limits.
    let bad: Vec<(String, String)> = vec![
        ("token".into(), tampered(&w.registry_token)),
        ("iamapikey".into(), tampered(&w.apikey)),
        ("iamapikey".into(), tampered(&w.robot_key)),
        ("iambearer".into(), "eyJnot.a.jwt".into()),
        ("iamrefresh".into(), "bthf_garbage".into()),
        (w.robot_token.0.clone(), tampered(&w.robot_token.1)),
        ("alice".into(), "wrong-password".into()),
    ];
    // Each from its own attacking address, eleven times: past the per-key limit.
    let mut limited = 0;
    for (i, (u, p)) in bad.iter().enumerate() {
        let from = format!("127.0.0.{}", 40 + i);
        for _ in 0..11 {
            match token_status(s, u, p, &from).await {
                StatusCode::UNAUTHORIZED => {}
                StatusCode::TOO_MANY_REQUESTS => limited += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    // And all of them from one address, over the per-address limit.
    for _ in 0..6 {
        for (u, p) in &bad {
            match token_status(s, u, p, attacker).await {
                StatusCode::UNAUTHORIZED => {}
                StatusCode::TOO_MANY_REQUESTS => limited += 1,
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert!(limited > 0, "the attacking address was never limited");
    // The attacker's own address is over its limit, even with a right secret it learns.
    assert_eq!(
        token_status(s, "alice", "alice-password-2-never-verified", attacker).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // From any other address, every valid credential works at once.
    let good: Vec<(&str, &str)> = vec![
        ("token", &w.registry_token),
        ("iamapikey", &w.apikey),
        ("iamapikey", &w.robot_key),
        ("iambearer", &w.access_token),
        (&w.robot_token.0, &w.robot_token.1),
        ("alice", "alice-password-1"),
        ("alice", &w.apikey),
    ];
    for source in ["127.0.0.1", "127.0.0.2"] {
        for (u, p) in &good {
            assert_eq!(
                token_status(s, u, p, source).await,
                StatusCode::OK,
                "{u} from {source}"
            );
        }
    }
    // And directly on /v2 (Basic), where a lock-out would stop pulls.
    let r = basic_client_from("token", &w.registry_token, "127.0.0.3")
        .get(s.url("/v2/acme/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A fleet of clients behind one address sharing one credential (CI runners behind NAT, a
/// DaemonSet's pull secret) must never be refused by the failure limit, however many arrive
/// before the first check ends: identical attempts are checked once (a slow argon2 password
/// and a robot token, whose check waits for the database).
#[tokio::test]
async fn a_fleet_sharing_one_credential_is_never_limited() {
    let s = Server::start();
    let alice = Api::admin(&s);
    // Created, never logged in: no check of this password is remembered yet.
    alice
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "bob", "password": "bob-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let robot = robot_with_token(&alice, "acme", "fleet", "Reader", json!({})).await;
    let (id, token) = robot.split_once(':').unwrap();
    for (user, secret) in [("bob", "bob-password-1"), (id, token)] {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let c = basic_client_from(user, secret, "127.0.0.30");
                let url = s.url("/token?service=berth&scope=repository:acme/app:pull");
                tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                StatusCode::OK => {}
                StatusCode::TOO_MANY_REQUESTS => refused += 1,
                other => panic!("{user}: unexpected {other}"),
            }
        }
        assert_eq!(
            refused, 0,
            "{user}: {refused} of 64 right logins refused with 429"
        );
    }
    // Identical wrong attempts still count one by one: the eleventh is refused.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(token_status(&s, id, "berth_rt_wrong", "127.0.0.31").await);
    }
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
}

#[tokio::test]
async fn a_login_storm_is_limited_before_hashing_and_memory_stays_bounded() {
    let s = Server::start();
    user_session(&s, "bob", "bob-password-1").await;
    // The idle server after one password check (so one argon2 buffer is already counted).
    let before = peak_rss_kib(s.pid());
    // 48 concurrent wrong passwords for one name from one address: slots are reserved before
    // the check, so at most the limit (10) are checked; the rest are refused at once.
    let tasks: Vec<_> = (0..48)
        .map(|_| {
            let url = s.url("/token?service=berth");
            tokio::spawn(async move {
                basic_client_from("bob", "wrong-password", "127.0.0.20")
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut checked = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        checked <= 10,
        "{checked} wrong passwords were checked for one name"
    );
    assert!(checked >= 1);
    // 256 concurrent logins with random names from 16 addresses: hashing runs on a bounded
    // pool, so memory stays under a fixed ceiling however many arrive.
    let tasks: Vec<_> = (0..256)
        .map(|i| {
            let url = s.url("/token?service=berth");
            tokio::spawn(async move {
                basic_client_from(
                    &format!("user{i}"),
                    "wrong-password",
                    &format!("127.0.1.{}", i % 16 + 1),
                )
                .get(url)
                .send()
                .await
                .unwrap()
                .status()
            })
        })
        .collect();
    for t in tasks {
        let st = t.await.unwrap();
        assert!(
            st == StatusCode::UNAUTHORIZED || st == StatusCode::TOO_MANY_REQUESTS,
            "{st}"
        );
    }
    let peak = peak_rss_kib(s.pid());
    eprintln!(
        "peak RSS after the login storm: {} MiB (before {} MiB)",
        peak / 1024,
        before / 1024
    );
    // argon2 takes 19 MiB per running check and at most 2 run at once: ~40 MiB of hashing over
    // the idle server (the claim in ARCHITECTURE), plus the 300 connections' buffers.
    // Unbounded, this storm took well over 1 GiB.
    assert!(
        peak.saturating_sub(before) < 56 * 1024,
        "the storm added {} MiB",
        (peak - before) / 1024
    );
    // The server still answers a right password.
    assert_eq!(
        token_status(&s, "bob", "bob-password-1", "127.0.0.1").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn refresh_tokens_end_with_the_credential_they_came_from() {
    let w = world().await;
    let s = &w.s;
    // A refresh token obtained with an API key, and a registry token from it.
    let r = basic_client("iamapikey", &w.apikey)
        .get(s.url("/token?service=berth&offline_token=true&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let jwt = v["token"].as_str().unwrap().to_owned();
    assert_eq!(pull_with_bearer(s, &jwt, "acme/app").await, StatusCode::OK);
    // Offline use of the refresh token rotates it: the old one stops, the new one works.
    let r = basic_client("iamrefresh", &refresh)
        .get(s.url("/token?service=berth&offline_token=true&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rotated: Value = r.json().await.unwrap();
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh, refresh2);
    assert_eq!(
        token_status(s, "iamrefresh", &refresh2, "127.0.0.1").await,
        StatusCode::OK
    );
    // A session from the refresh token cannot change the password without the current one, and
    // an API key it creates is tied to the API key it came from.
    let via_refresh = Api::basic(s, "iamrefresh", &refresh2);
    let (st, _) = via_refresh
        .put(
            "/users/alice/password",
            json!({"password": "taken-over-123"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = via_refresh
        .put(
            "/users/alice/password",
            json!({"password": "taken-over-123", "currentPassword": "guess-guess"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let child = via_refresh
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "child"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    // Deleting the API key ends the refresh token, its rotations, the key made through it,
    // and the bearer tokens, within the bound.
    let id = w.alice.ok("GET", "/apikeys", None, StatusCode::OK).await["apikeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "k")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.alice
        .ok(
            "DELETE",
            &format!("/apikeys/{id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    for (u, p) in [
        ("iamrefresh", &refresh2),
        ("iamrefresh", &refresh),
        ("iamapikey", &child),
    ] {
        assert_eq!(
            token_status(s, u, p, "127.0.0.1").await,
            StatusCode::UNAUTHORIZED,
            "{u}"
        );
    }
    let took = within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        pull_with_bearer(s, &jwt, "acme/app")
    })
    .await;
    eprintln!("bearer token from a deleted API key refused after {took:?}");
    // A password change ends the sessions opened with the old password, and needs the current
    // one; the user's own API keys stay.
    let pw_session = Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "alice", "password": "alice-password-1"})),
            StatusCode::OK,
        )
        .await;
    let key2 = w
        .alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "k2"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    w.alice
        .ok(
            "PUT",
            "/users/alice/password",
            Some(json!({"password": "alice-password-2", "currentPassword": "alice-password-1"})),
            StatusCode::NO_CONTENT,
        )
        .await;
    let old_refresh = pw_session["refresh_token"].as_str().unwrap();
    assert_eq!(
        token_status(s, "iamrefresh", old_refresh, "127.0.0.1").await,
        StatusCode::UNAUTHORIZED
    );
    let old_access = pw_session["access_token"].as_str().unwrap().to_owned();
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || async {
        Api::bearer(s, &old_access).get("/auth/whoami").await.0
    })
    .await;
    assert_eq!(
        token_status(s, "iamapikey", &key2, "127.0.0.1").await,
        StatusCode::OK
    );
    // Sessions are listed and can be ended.
    let fresh = Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "alice", "password": "alice-password-2"})),
            StatusCode::OK,
        )
        .await;
    let me = Api::bearer(s, fresh["access_token"].as_str().unwrap());
    let list = me.ok("GET", "/sessions", None, StatusCode::OK).await;
    let sessions = list["sessions"].as_array().unwrap();
    let current: Vec<_> = sessions.iter().filter(|x| x["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list}");
    assert_eq!(current[0]["source"]["kind"], "password");
    let id = current[0]["id"].as_str().unwrap();
    me.ok(
        "DELETE",
        &format!("/sessions/{id}"),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(
        token_status(
            s,
            "iamrefresh",
            fresh["refresh_token"].as_str().unwrap(),
            "127.0.0.1"
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || async {
        me.get("/auth/whoami").await.0
    })
    .await;
}

#[tokio::test]
async fn deleted_names_start_empty() {
    let s = Server::start();
    let a = Api::bearer(
        &s,
        user_session(&s, "anna", "anna-password-1").await["access_token"]
            .as_str()
            .unwrap(),
    );
    let b = Api::bearer(
        &s,
        user_session(&s, "boris", "boris-password-1").await["access_token"]
            .as_str()
            .unwrap(),
    );
    let anna = basic_client("anna", "anna-password-1");
    let boris = basic_client("boris", "boris-password-1");
    // An organization deleted and re-created by someone else.
    a.ok(
        "POST",
        "/orgs",
        Some(json!({"name": "fintech"})),
        StatusCode::CREATED,
    )
    .await;
    push_image(&anna, &s, "fintech/core", "v1", 7).await;
    push_image(&anna, &s, "fintech/deep/core", "v1", 8).await;
    a.ok("DELETE", "/orgs/fintech", None, StatusCode::NO_CONTENT)
        .await;
    b.ok(
        "POST",
        "/orgs",
        Some(json!({"name": "fintech"})),
        StatusCode::CREATED,
    )
    .await;
    for repo in ["fintech/core", "fintech/deep/core"] {
        let r = boris
            .get(s.url(&format!("/v2/{repo}/manifests/v1")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{repo}");
        let r = boris
            .get(s.url(&format!("/v2/{repo}/tags/list")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{repo} tags");
    }
    let cat: Value = boris
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cat["repositories"], json!([]), "{cat}");
    // Positive control: the new owner's own push is served.
    push_image(&boris, &s, "fintech/core", "v2", 9).await;
    // A bearer token issued before a deletion does not reach the namespace created after it.
    let jwt = bearer_for(&s, "boris", "boris-password-1", "fintech/core").await;
    assert_eq!(
        pull_with_bearer(&s, &jwt, "fintech/core").await,
        StatusCode::NOT_FOUND
    );
    b.ok("DELETE", "/orgs/fintech", None, StatusCode::NO_CONTENT)
        .await;
    a.ok(
        "POST",
        "/orgs",
        Some(json!({"name": "fintech"})),
        StatusCode::CREATED,
    )
    .await;
    push_image(&anna, &s, "fintech/core", "v1", 11).await;
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        pull_with_bearer(&s, &jwt, "fintech/core")
    })
    .await;
    // A namespace deleted and re-created as another user's organization.
    a.ok(
        "POST",
        "/orgs",
        Some(json!({"name": "anna-org"})),
        StatusCode::CREATED,
    )
    .await;
    a.ok(
        "POST",
        "/orgs/anna-org/namespaces",
        Some(json!({"name": "ledger"})),
        StatusCode::CREATED,
    )
    .await;
    push_image(&anna, &s, "ledger/books", "v1", 10).await;
    a.ok("DELETE", "/namespaces/ledger", None, StatusCode::NO_CONTENT)
        .await;
    b.ok(
        "POST",
        "/orgs",
        Some(json!({"name": "ledger"})),
        StatusCode::CREATED,
    )
    .await;
    let r = boris
        .get(s.url("/v2/ledger/books/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = boris
        .get(s.url("/v2/ledger/books/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn custom_roles_cannot_be_used_to_escalate() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    for (name, pw) in [
        ("mallory", "mallory-password-1"),
        ("mint", "mint-password-12"),
        ("roler", "roler-password-1"),
    ] {
        user_session(s, name, pw).await;
        join(s, alice, "acme", name, pw, "member").await;
    }
    let put_role = |name: &str, rules: Value| {
        let alice = &alice;
        let name = name.to_owned();
        async move {
            alice
                .ok(
                    "PUT",
                    &format!("/orgs/acme/roles/{name}"),
                    Some(json!({"rules": rules})),
                    StatusCode::CREATED,
                )
                .await;
        }
    };
    put_role(
        "binder",
        json!([{"resources": ["bindings"], "verbs": ["*"], "names": ["team-*"]}]),
    )
    .await;
    put_role(
        "minter",
        json!([{"resources": ["credentials"], "verbs": ["create"], "names": ["deployer"]}]),
    )
    .await;
    put_role(
        "role-editor",
        json!([{"resources": ["roles"], "verbs": ["*"]}]),
    )
    .await;
    for (who, role) in [
        ("mallory", "binder"),
        ("mint", "minter"),
        ("roler", "role-editor"),
    ] {
        alice
            .ok(
                "PUT",
                &format!("/orgs/acme/bindings/{who}"),
                Some(json!({"role": role, "subject": format!("user/{who}")})),
                StatusCode::CREATED,
            )
            .await;
    }
    alice
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "deployer"})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/deployer",
            Some(json!({"role": "Manager", "subject": "robot/deployer"})),
            StatusCode::CREATED,
        )
        .await;
    // Mallory may manage bindings named team-*, but not give anyone access she does not hold.
    let mallory = Api::basic(s, "mallory", "mallory-password-1");
    let (st, v) = mallory
        .put(
            "/orgs/acme/bindings/team-x",
            json!({"role": "Manager", "subject": "user/mallory"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, _) = mallory
        .put(
            "/orgs/acme/bindings/team-y",
            json!({"role": "Reader", "subject": "user/mallory", "namespace": "acme"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Nor replace or delete bindings that grant what she does not hold.
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/team-ops",
            Some(json!({"role": "Writer", "subject": "robot/deployer"})),
            StatusCode::CREATED,
        )
        .await;
    let (st, _) = mallory
        .put(
            "/orgs/acme/bindings/team-ops",
            json!({"role": "binder", "subject": "user/mallory"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = mallory.delete("/orgs/acme/bindings/team-ops").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = mallory.delete("/orgs/acme/bindings/deployer").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // She can hand out exactly what she holds (her own binder role).
    mallory
        .ok(
            "PUT",
            "/orgs/acme/bindings/team-z",
            Some(json!({"role": "binder", "subject": "user/mint"})),
            StatusCode::CREATED,
        )
        .await;
    // Still no push, no delete.
    let r = basic_client("mallory", "mallory-password-1")
        .delete(s.url("/v2/acme/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Mint may create credentials for robot deployer, but a token of a Manager robot is more
    // than mint holds.
    let mint = Api::basic(s, "mint", "mint-password-12");
    let (st, v) = mint
        .post(
            "/orgs/acme/robots/deployer/tokens",
            json!({"name": "stolen"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, _) = mint
        .post("/orgs/acme/robots/deployer/apikeys", json!({}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Nor trust a workload to act as it (no stored secret, the same power), nor rotate its
    // token to learn the new secret.
    let (st, v) = mint
        .post(
            "/orgs/acme/robots/deployer/trusts",
            json!({"name": "mine", "issuer": "https://issuer.example", "subject": "system:serviceaccount:x:y"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let tok = alice
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/tokens",
            Some(json!({"name": "ops"})),
            StatusCode::CREATED,
        )
        .await;
    let (st, v) = mint
        .post(
            "/orgs/acme/robots/deployer/tokens/ops/rotate",
            json!({"overlap": "0"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(v.get("token").is_none());
    // The refused rotation changed nothing: the token still works.
    let r = basic_client(
        tok["accessId"].as_str().unwrap(),
        tok["token"].as_str().unwrap(),
    )
    .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A role editor cannot write a role with rules it does not hold (roles apply where bound),
    // nor delete or replace one whose rules it does not hold.
    let roler = Api::basic(s, "roler", "roler-password-1");
    let (st, _) = roler.delete("/orgs/acme/roles/binder").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = roler
        .put(
            "/orgs/acme/roles/binder",
            json!({"rules": [{"resources": ["roles"], "verbs": ["get"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = roler
        .put(
            "/orgs/acme/roles/binder",
            json!({"rules": [{"resources": ["*"], "verbs": ["*"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = roler
        .put(
            "/orgs/acme/roles/role-editor",
            json!({"rules": [{"resources": ["roles", "bindings"], "verbs": ["*"]}]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A robot keeper (robots and credentials, nothing else) cannot delete the Manager robot or
    // its tokens, but may delete a robot that holds nothing.
    new_member(s, alice, "acme", "keeper", "keeper-password-1", "member").await;
    put_role(
        "keeper",
        json!([{"resources": ["robots", "credentials"], "verbs": ["*"]}]),
    )
    .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/keeper",
            Some(json!({"role": "keeper", "subject": "user/keeper"})),
            StatusCode::CREATED,
        )
        .await;
    let keeper = Api::basic(s, "keeper", "keeper-password-1");
    let (st, _) = keeper.delete("/orgs/acme/robots/deployer").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let tokens = alice
        .ok(
            "GET",
            "/orgs/acme/robots/reader/tokens",
            None,
            StatusCode::OK,
        )
        .await;
    let tid = tokens["tokens"][0]["id"].as_str().unwrap();
    let (st, _) = keeper
        .delete(&format!("/orgs/acme/robots/reader/tokens/{tid}"))
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "the Reader robot pulls, the keeper does not"
    );
    keeper
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "empty"})),
            StatusCode::CREATED,
        )
        .await;
    keeper
        .ok(
            "DELETE",
            "/orgs/acme/robots/empty",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    // Positive control: the owner does all of it.
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/tokens",
            Some(json!({"name": "ok"})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/team-x",
            Some(json!({"role": "Manager", "subject": "user/mallory"})),
            StatusCode::CREATED,
        )
        .await;
}

#[tokio::test]
async fn globs_are_bounded_and_linear() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let too_many = format!("acme/{}", "*a".repeat(17));
    let (st, v) = alice
        .put("/orgs/acme/roles/slow", json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"], "names": [too_many]}]}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = alice
        .put(
            "/orgs/acme/bindings/slow",
            json!({"role": "Reader", "subject": "robot/reader", "repository": too_many}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // The most a pattern may hold, against a long name that almost matches: answered at once,
    // through /token and through /v2.
    let worst = format!("acme/{}", "*a".repeat(16));
    alice
        .ok("PUT", "/orgs/acme/roles/slow", Some(json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"], "names": [worst]}]})), StatusCode::CREATED)
        .await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/slow",
            Some(json!({"role": "slow", "subject": "robot/reader", "repository": worst})),
            StatusCode::CREATED,
        )
        .await;
    let repo = format!("acme/{}b", "a".repeat(120));
    let (id, token) = &w.robot_token;
    let start = Instant::now();
    for _ in 0..5 {
        let r = basic_client(id, token)
            .get(s.url(&format!(
                "/token?service=berth&scope=repository:{repo}:pull,push"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = basic_client(id, token)
            .get(s.url(&format!("/v2/{repo}/tags/list")))
            .send()
            .await
            .unwrap();
        // The Reader robot may pull in acme: the repository simply does not exist.
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// Reads from a raw socket until EOF or `limit`; `true` if the server closed it.
fn closed_within(sock: &mut TcpStream, limit: Duration) -> bool {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A raw request head and the start of a body that never ends: a connection busy in a request
/// (a form that `/token` reads whole before answering).
const UNFINISHED_BODY: &[u8] = b"POST /token HTTP/1.1\r\nHost: x\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type=";

#[tokio::test]
async fn connections_are_bounded_and_idle_ones_closed() {
    let s = Server::start_args(&[
        "--max-connections",
        "16",
        "--max-connections-per-address",
        "16",
        "--idle-timeout",
        "2s",
        "--header-read-timeout",
        "2s",
    ]);
    let addr = s.host.clone();
    // Every slot busy in a request, one per address: a new connection is closed at once, as
    // no waiting one can give way and no address holds more than the newcomer's would; the
    // requests under way go on.
    let mut busy: Vec<TcpStream> = Vec::new();
    for i in 0..16 {
        let mut c = raw_from(&s, &format!("127.0.2.{i}"))
            .await
            .into_std()
            .unwrap();
        c.set_nonblocking(false).unwrap();
        c.write_all(UNFINISHED_BODY).unwrap();
        busy.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    // From another address, so that its own cap is not what refuses them.
    let mut extra: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        let c = raw_from(&s, "127.0.0.2").await.into_std().unwrap();
        c.set_nonblocking(false).unwrap();
        extra.push(c);
    }
    let start = Instant::now();
    for sock in &mut extra {
        assert!(
            closed_within(sock, Duration::from_secs(1)),
            "an over-limit connection stayed open"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    for sock in &mut busy {
        assert!(
            !closed_within(sock, Duration::from_millis(10)),
            "a busy connection was closed for a newcomer"
        );
    }
    // Busy sockets that go quiet, and one that sends half a request head (slowloris), are
    // closed after the timeouts; then new clients get in again.
    let mut slow = busy.pop().unwrap();
    drop(slow);
    std::thread::sleep(Duration::from_millis(100));
    slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    for sock in busy.iter_mut().chain(std::iter::once(&mut slow)) {
        assert!(
            closed_within(sock, Duration::from_secs(6)),
            "an idle connection was kept"
        );
    }
    let r = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refused = metric(&s, "berth_connections_refused_total ").await;
    assert!(refused >= 20, "{refused}");
    // Every slot taken by a silent connection, one per address: a newcomer takes the place of
    // the one that has waited longest.
    let mut silent = Vec::new();
    for i in 0..16 {
        silent.push(raw_from(&s, &format!("127.0.4.{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut open = 0;
    for c in &mut silent {
        if !closed_in(c, Duration::from_millis(10)).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 16,
        "silent connections refused before the newcomer came"
    );
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = fresh.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let mut gave_way = 0;
    for c in &mut silent {
        if closed_in(c, Duration::from_millis(50)).await {
            gave_way += 1;
        }
    }
    assert!(gave_way >= 1, "no silent connection gave way");
}

/// A counter of `/metrics`, by its line's prefix. A node whose slots were all held a moment ago
/// may refuse the request until it has seen its holders close: it is asked again for 2 s.
async fn metric(s: &Server, prefix: &str) -> u64 {
    let mut tries = 0;
    let answer = loop {
        match client().get(s.url("/metrics")).send().await {
            Ok(r) => break r,
            Err(e) if tries < 20 && (e.is_connect() || e.is_request()) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("/metrics: {e}"),
        }
    };
    let metrics = answer.text().await.unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap()
        .parse()
        .unwrap()
}

/// A raw connection to the server from `source`, a loopback address of the test's choosing.
async fn raw_from(s: &Server, source: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    sock.connect(s.host.parse().unwrap()).await.unwrap()
}

/// Whether the server has closed `sock` within `limit` (what it sent is read and dropped).
async fn closed_in(sock: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Slowloris from one address and from many: one address holds at most its share of the
/// connections, whether it leaves request heads unfinished or bodies; many addresses together
/// fill every slot with unfinished heads (kept alive a byte at a time, so no timeout ends
/// them), and still every newcomer gets in, each taking the place of the connection that has
/// waited longest for a request.
#[tokio::test]
async fn unfinished_heads_and_bodies_cannot_keep_clients_out() {
    use tokio::io::AsyncWriteExt as _;
    let s = Server::start_args(&["--max-connections", "64"]);
    // One address: a quarter of 64 by default, for unfinished heads and bodies alike.
    let mut kept_open = Vec::new();
    for (source, first) in [
        ("127.0.0.2", &b"GET /v2/ HTTP/1.1\r\nHost: x\r\n"[..]),
        ("127.0.0.3", UNFINISHED_BODY),
    ] {
        let mut held = Vec::new();
        for _ in 0..40 {
            let mut c = raw_from(&s, source).await;
            let _ = c.write_all(first).await;
            held.push(c);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut open = Vec::new();
        for mut c in held {
            if !closed_in(&mut c, Duration::from_millis(20)).await {
                open.push(c);
            }
        }
        assert_eq!(open.len(), 16, "{source} holds {} connections", open.len());
        kept_open.push(open);
    }
    // Many addresses: 8 × 16 unfinished heads, a byte every 300 ms. With the 32 connections
    // above, every slot is taken and the heads keep taking each other's places.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut drippers = Vec::new();
    for i in 1..=8 {
        let stop = stop.clone();
        let source = format!("127.0.1.{i}");
        let mut conns = Vec::new();
        for _ in 0..16 {
            let mut c = raw_from(&s, &source).await;
            let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\n").await;
            conns.push(c);
        }
        drippers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for c in &mut conns {
                    let _ = c.write_all(b"X").await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A client on a new connection for each request, and one that keeps its connection.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let kept = anonymous_client();
    for _ in 0..30 {
        let start = Instant::now();
        for c in [&fresh, &kept] {
            let r = c.get(s.url("/healthz")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for d in drippers {
        d.await.unwrap();
    }
    let evicted = metric(&s, "berth_connections_evicted_total ").await;
    assert!(evicted >= 30, "{evicted}");
}

#[tokio::test]
async fn a_reader_mints_nothing_long_lived_and_robot_made_tokens_die_with_it() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    // A Reader robot (org-wide) tries to mint a permanent registry token.
    let reader = Api::basic(s, "iamapikey", &w.robot_key);
    let (st, v) = reader
        .call(
            "POST",
            "/tokens?permanent=true",
            None,
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, _) = reader
        .post("/orgs/acme/robots/reader/tokens", json!({"name": "more"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A Manager robot may; its registry token ends with the robot.
    let boss = robot_with_token(alice, "acme", "boss", "Manager", json!({})).await;
    let (id, secret) = boss.split_once(':').unwrap();
    let (st, v) = Api::basic(s, id, secret)
        .call(
            "POST",
            "/tokens?permanent=true",
            None,
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let made = v["token"].as_str().unwrap().to_owned();
    assert_eq!(
        token_status(s, "token", &made, "127.0.0.1").await,
        StatusCode::OK
    );
    alice
        .ok(
            "DELETE",
            "/orgs/acme/robots/boss",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    // A login verified a moment ago is remembered until the node reads the revocation (a
    // second or two); never past the bound.
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        token_status(s, "token", &made, "127.0.0.1")
    })
    .await;
    assert_eq!(
        token_status(s, "token", &made, "127.0.0.2").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bearer_tokens_stop_within_the_bound_after_revocation() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let (id, token) = &w.robot_token;
    // A bearer token from the robot token: deleting the token ends it.
    let jwt = bearer_for(s, id, token, "acme/app").await;
    assert_eq!(pull_with_bearer(s, &jwt, "acme/app").await, StatusCode::OK);
    alice
        .ok(
            "DELETE",
            &format!("/orgs/acme/robots/reader/tokens/{id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let took = within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        pull_with_bearer(s, &jwt, "acme/app")
    })
    .await;
    eprintln!("robot token deleted: its bearer token refused after {took:?}");
    // A bearer token from the robot's API key: deleting the robot ends it, and a robot
    // re-created under the same name does not bring it back.
    let jwt = bearer_for(s, "iamapikey", &w.robot_key, "acme/app").await;
    assert_eq!(pull_with_bearer(s, &jwt, "acme/app").await, StatusCode::OK);
    alice
        .ok(
            "DELETE",
            "/orgs/acme/robots/reader",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    robot_with_token(alice, "acme", "reader", "Reader", json!({})).await;
    let took = within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        pull_with_bearer(s, &jwt, "acme/app")
    })
    .await;
    eprintln!("robot deleted: its bearer token refused after {took:?}");
    // A registry token's bearer tokens end with it.
    let jwt = bearer_for(s, "token", &w.registry_token, "acme/app").await;
    let list = alice
        .call("GET", "/tokens", None, &[("organization", "acme")])
        .await
        .1;
    let tid = list["tokens"][0]["id"].as_str().unwrap().to_owned();
    let (st, _) = alice
        .call(
            "DELETE",
            &format!("/tokens/{tid}"),
            None,
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        pull_with_bearer(s, &jwt, "acme/app")
    })
    .await;
    // A deleted user's access token ends, and a new user of the same name is not the old one.
    let carl = user_session(s, "carl", "carl-password-1").await;
    let old = carl["access_token"].as_str().unwrap().to_owned();
    Api::admin(s)
        .ok("DELETE", "/users/carl", None, StatusCode::NO_CONTENT)
        .await;
    user_session(s, "carl", "carl-password-2").await;
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || async {
        Api::bearer(s, &old).get("/auth/whoami").await.0
    })
    .await;
}

#[tokio::test]
async fn the_audit_trail_cannot_be_forged_or_flooded() {
    let s = Server::start();
    user_session(&s, "alice", "alice-password-1").await;
    // A failed login typed as somebody else's identity (the OAuth form and the login API take
    // any user name) is never recorded as that actor.
    let from = reqwest::Client::builder()
        .local_address("127.0.0.30".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = from
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "user:alice"),
            ("password", "x"),
            ("service", "berth"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for _ in 0..2 {
        let r = from
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"username": "user:alice", "password": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Hundreds of attempts from one address are one row per window with a count.
    let mut n = 3;
    for i in 0..300 {
        let st = token_status(&s, &format!("spray{i}"), "x", "127.0.0.30").await;
        assert!(st == StatusCode::UNAUTHORIZED || st == StatusCode::TOO_MANY_REQUESTS);
        n += 1;
    }
    let admin = Api::admin(&s);
    let rows = within_rows(&admin, n).await;
    assert!(
        rows.len() <= 4,
        "{} rows for {n} attempts: {rows:?}",
        rows.len()
    );
    for e in &rows {
        assert!(e["actor"].is_null(), "{e}");
    }
    assert!(
        rows.iter()
            .any(|e| e["attempted"].as_str().unwrap().contains("user:alice"))
    );
    // Alice's own events show nothing the attacker did.
    let (_, mine) = Api::basic(&s, "alice", "alice-password-1")
        .get("/audit")
        .await;
    assert!(!mine.to_string().contains("spray"), "{mine}");
}

/// The failed-login rows from 127.0.0.30 once their counts add up to `n` (write-behind).
async fn within_rows(admin: &Api, n: i64) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let (_, v) = admin
            .get("/audit?action=login&outcome=failure&limit=1000")
            .await;
        let rows: Vec<Value> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["clientAddress"] == "127.0.0.30")
            .cloned()
            .collect();
        let total: i64 = rows.iter().map(|e| e["count"].as_i64().unwrap()).sum();
        if total >= n {
            assert_eq!(total, n);
            return rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "counted {total} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn data_on_disk_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    // The most open umask, inherited by the server (nextest runs each test in a process of its
    // own, so no other test sees it); the control file proves it is in force.
    rustix::process::umask(rustix::fs::Mode::empty());
    let control = tempfile::tempdir().unwrap();
    std::fs::write(control.path().join("f"), b"x").unwrap();
    assert_eq!(
        std::fs::metadata(control.path().join("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o666,
        "the umask of the test is not 000"
    );
    // The embedded engine: its database and blobs are the files on disk.
    let w = world_on(Server::start_embedded()).await;
    let dir = &w.s.data_dir;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    let mut files = 0;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
                files += 1;
            }
        }
    }
    assert!(files > 3, "walked {files} files");
}

#[tokio::test]
async fn one_password_policy_everywhere() {
    let s = Server::start();
    let admin = Api::admin(&s);
    let (st, v) = admin
        .post("/users", json!({"name": "weak", "password": "x"}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 8"),
        "{v}"
    );
    admin
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "ok", "password": "long-enough"})),
            StatusCode::CREATED,
        )
        .await;
    let (st, _) = admin
        .put("/users/ok/password", json!({"password": "short"}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // The bootstrap admin's password obeys it too.
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("d"))
        .env("BERTH_ADMIN_PASSWORD", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("BERTH_ADMIN_PASSWORD") && err.contains("at least 8"),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_refreshes_one_wins_and_the_rest_are_unauthorized() {
    let s = Server::start();
    let session = user_session(&s, "rita", "rita-password-1").await;
    let token = session["refresh_token"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (url, token) = (s.url("/api/v1/auth/refresh"), token.clone());
            tokio::spawn(async move {
                let r = anonymous_client()
                    .post(url)
                    .json(&json!({"refresh_token": token}))
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (st, body) = t.await.unwrap();
        match st {
            StatusCode::OK => ok += 1,
            StatusCode::UNAUTHORIZED => assert!(!body.contains(&token[5..37]), "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn answers_do_not_reveal_what_exists() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    // Another organization with content.
    let g = Api::bearer(
        s,
        user_session(s, "gina", "gina-password-1").await["access_token"]
            .as_str()
            .unwrap(),
    );
    g.ok(
        "POST",
        "/orgs",
        Some(json!({"name": "globex"})),
        StatusCode::CREATED,
    )
    .await;
    push_image(
        &basic_client("gina", "gina-password-1"),
        s,
        "globex/app",
        "v1",
        3,
    )
    .await;
    let (id, token) = &w.robot_token;
    let robot = basic_client(id, token);
    let mut answers = Vec::new();
    for repo in ["globex/app", "nowhere/app"] {
        for (method, path) in [
            ("GET", format!("/v2/{repo}/manifests/v1")),
            ("GET", format!("/v2/{repo}/tags/list")),
            ("POST", format!("/v2/{repo}/blobs/uploads/")),
        ] {
            let r = robot
                .request(method.parse().unwrap(), s.url(&path))
                .send()
                .await
                .unwrap();
            // The answer may echo the name asked for, and nothing else that differs.
            let status = r.status();
            let body = r.text().await.unwrap().replace(repo, "X");
            answers.push((path.replace(repo, "X"), status, body));
        }
    }
    let (existing, missing) = answers.split_at(3);
    assert_eq!(
        existing, missing,
        "an existing foreign namespace answers differently from a missing one"
    );
    assert_eq!(existing[0].1, StatusCode::FORBIDDEN);
    // The refusal names what was missing, which the caller knows already.
    assert!(
        existing[2]
            .2
            .contains("push on X is not granted to robot:acme/reader"),
        "{}",
        existing[2].2
    );
    // The access review answers the same for an unknown subject as for one without access.
    let (st1, unknown) = alice
        .post(
            "/orgs/acme/access-review",
            json!({"subject": "robot/ghost", "verb": "push", "name": "acme/app"}),
        )
        .await;
    let (st2, known) = alice
        .post(
            "/orgs/acme/access-review",
            json!({"subject": "user/gina", "verb": "push", "name": "acme/app"}),
        )
        .await;
    assert_eq!((st1, &unknown), (st2, &known));
    assert_eq!(known["allowed"], false);
    let (_, yes) = alice
        .post(
            "/orgs/acme/access-review",
            json!({"subject": "robot/reader", "verb": "pull", "name": "acme/app"}),
        )
        .await;
    assert_eq!(yes["allowed"], true);
}

/// Signs `claims` with the server's own signing key (read from its data directory, as only the
/// server's operator could) or with `key_pem`, under `kid` and `alg`.
fn sign(
    claims: &Value,
    kid: &str,
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

#[tokio::test]
async fn forged_stale_and_misdirected_bearer_tokens_are_refused() {
    // The embedded engine: the test signs forgeries with the server's own key file.
    let w = world_on(Server::start_embedded()).await;
    let s = &w.s;
    let jwks: Value = anonymous_client()
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let keys = s.data_dir.join("keys");
    let key_file = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("signing-")
                && p.extension().is_some_and(|e| e == "key")
        })
        .unwrap();
    let server_key = jsonwebtoken::EncodingKey::from_ec_der(
        &rcgen::KeyPair::from_pem(&std::fs::read_to_string(key_file).unwrap())
            .unwrap()
            .serialize_der(),
    );
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let claims = |aud: &str, iss: &str, exp: i64| {
        json!({
            "iss": iss, "sub": "user:alice", "aud": aud, "exp": exp, "nbf": now - 5, "iat": now - 5,
            "jti": "forged", "access": [{"type": "repository", "name": "acme/app", "actions": ["pull"]}],
        })
    };
    let es256 = jsonwebtoken::Algorithm::ES256;
    // Control: a token signed with the server's key, for the right audience, in time, is
    // accepted, so each refusal below is for the one thing changed.
    let good = sign(
        &claims("berth", "berth", now + 300),
        &kid,
        es256,
        &server_key,
    );
    assert_eq!(pull_with_bearer(s, &good, "acme/app").await, StatusCode::OK);
    let other_key = jsonwebtoken::EncodingKey::from_ec_der(
        &rcgen::KeyPair::generate().unwrap().serialize_der(),
    );
    let hmac = jsonwebtoken::EncodingKey::from_secret(b"guessable");
    let none = {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
            b64(&claims("berth", "berth", now + 300))
        )
    };
    let cases = [
        (
            "expired",
            sign(
                &claims("berth", "berth", now - 120),
                &kid,
                es256,
                &server_key,
            ),
        ),
        (
            "wrong audience",
            sign(
                &claims("berth-api", "berth", now + 300),
                &kid,
                es256,
                &server_key,
            ),
        ),
        (
            "another service",
            sign(
                &claims("elsewhere", "berth", now + 300),
                &kid,
                es256,
                &server_key,
            ),
        ),
        (
            "wrong issuer",
            sign(
                &claims("berth", "mallory", now + 300),
                &kid,
                es256,
                &server_key,
            ),
        ),
        (
            "unknown kid",
            sign(
                &claims("berth", "berth", now + 300),
                "no-such-key",
                es256,
                &server_key,
            ),
        ),
        (
            "another key under the server's kid",
            sign(
                &claims("berth", "berth", now + 300),
                &kid,
                es256,
                &other_key,
            ),
        ),
        (
            "HS256",
            sign(
                &claims("berth", "berth", now + 300),
                &kid,
                jsonwebtoken::Algorithm::HS256,
                &hmac,
            ),
        ),
        ("alg none", none),
    ];
    for (what, jwt) in &cases {
        let r = anonymous_client()
            .get(s.url("/v2/acme/app/manifests/v1"))
            .header("authorization", format!("Bearer {jwt}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(error_code(r).await, "UNAUTHORIZED", "{what}");
    }
    // A registry token is not a management-API token, nor the other way round.
    let (st, _) = Api::bearer(s, &good).get("/auth/whoami").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        pull_with_bearer(s, &w.access_token, "acme/app").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn secrets_are_nowhere_at_rest() {
    let w = world().await;
    let s = &w.s;
    let refresh = Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "alice", "password": "alice-password-1"})),
            StatusCode::OK,
        )
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Let the write-behind flush, so the database holds everything it will.
    w.alice.ok("GET", "/audit", None, StatusCode::OK).await;
    let secrets = [
        w.apikey.as_str(),
        w.robot_token.1.as_str(),
        w.robot_key.as_str(),
        w.registry_token.as_str(),
        refresh.as_str(),
        "alice-password-1",
        ADMIN_PASSWORD,
    ];
    let mut files = 0;
    let mut stack = vec![s.data_dir.clone()];
    // On PostgreSQL, the whole database as `pg_dump` writes it is one more file to search.
    let dump = s.data_dir.with_file_name("database.sql");
    if let Some(url) = s.database_url() {
        let out = std::process::Command::new(crate::support::engines::pg_bin("pg_dump"))
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.len() > 1000);
        std::fs::write(&dump, &out.stdout).unwrap();
    }
    let mut paths = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            paths.push(p);
        }
    }
    if dump.exists() {
        paths.push(dump);
    }
    for p in paths {
        {
            let bytes = std::fs::read(&p).unwrap();
            files += 1;
            for secret in secrets {
                // The part after the prefix and id is what must never be stored.
                let needle = secret
                    .get(37..)
                    .filter(|_| secret.starts_with("bth"))
                    .unwrap_or(secret);
                assert!(
                    !bytes
                        .windows(needle.len())
                        .any(|win| win == needle.as_bytes()),
                    "a secret is stored in plain text in {}",
                    p.display()
                );
            }
        }
    }
    assert!(files >= 5 || s.database_url().is_some(), "{files}");
}

/// The console's forms: a POST needs the session's own CSRF token and a same-site origin, a
/// signed-out session is over, and an oversized form is refused before it is read. Nothing a
/// refused POST asked for happens.
#[tokio::test]
async fn console_forms_refuse_forgery_and_outlive_nothing() {
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
    admin
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "bob", "password": "bob-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "PUT",
            "/orgs/acme/members/bob",
            Some(json!({"role": "member"})),
            StatusCode::OK,
        )
        .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |user: &'static str, password: &'static str| {
        let http = http.clone();
        let url = s.url("/ui/login");
        async move {
            let r = http
                .post(url)
                .header("sec-fetch-site", "same-origin")
                .form(&[("username", user), ("password", password)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let c = r.headers()["set-cookie"].to_str().unwrap();
            c.split(';').next().unwrap().to_owned()
        }
    };
    let csrf_of = |cookie: String| {
        let http = http.clone();
        let url = s.url("/ui/orgs/acme");
        async move {
            let page = http
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let at = page
                .find("name=\"_csrf\" value=\"")
                .expect("a form with a CSRF token")
                + 20;
            page[at..at + 40].to_owned()
        }
    };
    let admin_cookie = sign_in("admin", ADMIN_PASSWORD).await;
    let bob_cookie = sign_in("bob", "bob-password-1").await;
    let csrf = csrf_of(admin_cookie.clone()).await;
    let bob_csrf = csrf_of(bob_cookie.clone()).await;
    assert_ne!(csrf, bob_csrf, "each session has its own token");
    let post =
        |cookie: &str, fields: Vec<(&str, String)>, headers: Vec<(&'static str, &'static str)>| {
            let mut r = http
                .post(s.url("/ui/orgs/acme/robots"))
                .header("cookie", cookie)
                .form(&fields);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.send()
        };
    let name = |n: &str| ("name", n.to_owned());
    for (what, fields, headers) in [
        ("no token", vec![name("forged-1")], vec![]),
        (
            "a wrong token",
            vec![name("forged-2"), ("_csrf", "0".repeat(40))],
            vec![],
        ),
        (
            "another session's token",
            vec![name("forged-3"), ("_csrf", bob_csrf.clone())],
            vec![],
        ),
        (
            "another site",
            vec![name("forged-4"), ("_csrf", csrf.clone())],
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "a sibling site",
            vec![name("forged-5"), ("_csrf", csrf.clone())],
            vec![("sec-fetch-site", "same-site")],
        ),
        (
            "a foreign origin",
            vec![name("forged-6"), ("_csrf", csrf.clone())],
            vec![("origin", "http://evil.example")],
        ),
        (
            "a null origin",
            vec![name("forged-7"), ("_csrf", csrf.clone())],
            vec![("origin", "null")],
        ),
    ] {
        let r = post(&admin_cookie, fields, headers).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "a POST with {what} is refused"
        );
    }
    let robots = admin
        .ok("GET", "/orgs/acme/robots", None, StatusCode::OK)
        .await;
    assert_eq!(
        robots["robots"],
        json!([]),
        "no refused POST created anything"
    );
    // Bob is a member without rights: his own valid form is refused by the API's rule.
    let r = post(
        &bob_cookie,
        vec![name("bobs"), ("_csrf", bob_csrf.clone())],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The admin's, same-origin, works.
    let r = post(
        &admin_cookie,
        vec![name("made"), ("_csrf", csrf.clone())],
        vec![("sec-fetch-site", "same-origin")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    admin
        .ok("GET", "/orgs/acme/robots/made", None, StatusCode::OK)
        .await;
    // A form too large to be a form is refused unread.
    let huge = "x".repeat(300 * 1024);
    let r = post(
        &admin_cookie,
        vec![name(&huge), ("_csrf", csrf.clone())],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Signing out ends the session: the cookie no longer opens a page nor posts a form.
    let r = http
        .post(s.url("/ui/logout"))
        .header("cookie", &admin_cookie)
        .form(&[("_csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http
        .get(s.url("/ui/orgs/acme"))
        .header("cookie", &admin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/login");
    let r = post(
        &admin_cookie,
        vec![name("after"), ("_csrf", csrf.clone())],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "back to the sign-in page"
    );
    let (status, _) = admin
        .call("GET", "/orgs/acme/robots/after", None, &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Every console answer forbids framing and inline script.
    let r = http.get(s.url("/ui/login")).send().await.unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
}

// ----- Round two: provenance, rotation, membership, bounded answers -----

/// The status of `GET /api/v1/auth/whoami` with Basic `user:secret`.
async fn api_status(s: &Server, user: &str, secret: &str) -> StatusCode {
    Api::basic(s, user, secret).get("/auth/whoami").await.0
}

/// The names of robot `robot`'s trusts in acme, as the owner sees them.
async fn trust_names(alice: &Api, robot: &str) -> Vec<String> {
    let v = alice
        .ok(
            "GET",
            &format!("/orgs/acme/robots/{robot}/trusts"),
            None,
            StatusCode::OK,
        )
        .await;
    v["trusts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

// Multi-threaded: the tests' issuer keeps serving while the test waits on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_workload_or_a_leaked_credential_made_ends_with_it() {
    use crate::workload::{Issuer, Key};
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let m1 = robot_with_token(alice, "acme", "m1", "Manager", json!({})).await;
    let (m1_id, m1_secret) = m1.split_once(':').unwrap();
    robot_with_token(alice, "acme", "m2", "Manager", json!({})).await;
    let key = Key::es256("w-1");
    let issuer = Issuer::start(&[&key]).await;
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/m2/trusts",
            Some(json!({"name": "ci", "issuer": issuer.url, "subject": "repo:acme/app:*"})),
            StatusCode::CREATED,
        )
        .await;
    let jwt = key.sign(&issuer.github_claims("acme/app", "refs/heads/main", "berth", 600));

    // A workload acting as a Manager robot reads the API but makes nothing there: whatever it
    // made would outlive its token and the trust.
    let workload = Api::basic(s, "acme/m2", &jwt);
    workload
        .ok("GET", "/orgs/acme/robots", None, StatusCode::OK)
        .await;
    for (method, path, body) in [
        (
            "POST",
            "/orgs/acme/robots/m2/tokens",
            json!({"name": "forever"}),
        ),
        ("POST", "/orgs/acme/robots", json!({"name": "sleeper"})),
        (
            "POST",
            "/orgs/acme/robots/m2/trusts",
            json!({"name": "mine", "issuer": "https://attacker.example", "subject": "x"}),
        ),
        (
            "PUT",
            "/orgs/acme/bindings/x",
            json!({"role": "Manager", "subject": "robot/m2"}),
        ),
        ("POST", "/orgs/acme/robots/m2/apikeys", json!({})),
    ] {
        let (st, v) = workload.call(method, path, Some(body), &[]).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}: {v}");
    }
    let (st, v) = workload
        .call(
            "POST",
            "/tokens?permanent=true",
            None,
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // Positive control: the workload still gets registry tokens.
    assert_eq!(
        token_status(s, "acme/m2", &jwt, "127.0.0.1").await,
        StatusCode::OK
    );

    // A leaked Manager robot token makes a trust on another robot, a robot with a token and a
    // binding, and a binding for another robot.
    let leaked = Api::basic(s, m1_id, m1_secret);
    leaked
        .ok(
            "POST",
            "/orgs/acme/robots/m2/trusts",
            Some(json!({"name": "evil", "issuer": issuer.url, "subject": "repo:evil/*"})),
            StatusCode::CREATED,
        )
        .await;
    leaked
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "sleeper"})),
            StatusCode::CREATED,
        )
        .await;
    leaked
        .ok(
            "PUT",
            "/orgs/acme/bindings/sleeper",
            Some(json!({"role": "Reader", "subject": "robot/sleeper"})),
            StatusCode::CREATED,
        )
        .await;
    leaked
        .ok(
            "PUT",
            "/orgs/acme/bindings/extra",
            Some(json!({"role": "Reader", "subject": "robot/m2"})),
            StatusCode::CREATED,
        )
        .await;
    let t = leaked
        .ok(
            "POST",
            "/orgs/acme/robots/sleeper/tokens",
            Some(json!({"name": "t"})),
            StatusCode::CREATED,
        )
        .await;
    let (sid, ssecret) = (
        t["accessId"].as_str().unwrap(),
        t["token"].as_str().unwrap(),
    );
    assert_eq!(
        token_status(s, sid, ssecret, "127.0.0.1").await,
        StatusCode::OK
    );
    assert_eq!(trust_names(alice, "m2").await, ["ci", "evil"]);

    // The owner deletes the leaked token: everything it made ends with it.
    alice
        .ok(
            "DELETE",
            &format!("/orgs/acme/robots/m1/tokens/{m1_id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        token_status(s, sid, ssecret, "127.0.0.1")
    })
    .await;
    for gone in [
        "/orgs/acme/robots/sleeper",
        "/orgs/acme/bindings/sleeper",
        "/orgs/acme/bindings/extra",
    ] {
        assert_eq!(alice.get(gone).await.0, StatusCode::NOT_FOUND, "{gone}");
    }
    assert_eq!(trust_names(alice, "m2").await, ["ci"]);
    // What the owner made stays (the robots, their bindings, the owner's trust).
    alice
        .ok("GET", "/orgs/acme/bindings/m1", None, StatusCode::OK)
        .await;

    // A trust that robot m1 makes on robot m2 (through another credential of m1's) ends with m1.
    let m1_key = alice
        .ok(
            "POST",
            "/orgs/acme/robots/m1/apikeys",
            Some(json!({})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    Api::basic(s, "iamapikey", &m1_key)
        .ok(
            "POST",
            "/orgs/acme/robots/m2/trusts",
            Some(json!({"name": "by-m1", "issuer": issuer.url, "subject": "repo:m1/*"})),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(trust_names(alice, "m2").await, ["by-m1", "ci"]);
    alice
        .ok(
            "DELETE",
            "/orgs/acme/robots/m1",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(trust_names(alice, "m2").await, ["ci"]);
    // The trust's own owner-made workload still works.
    assert_eq!(
        token_status(s, "acme/m2", &jwt, "127.0.0.1").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotation_ends_what_the_old_secret_made_and_cannot_lock_the_owner_out() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let key_id = alice.ok("GET", "/apikeys", None, StatusCode::OK).await["apikeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // With only the leaked key, the attacker opens an API session, mints a child key and signs
    // in to the console.
    let session = Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "alice", "password": w.apikey})),
            StatusCode::OK,
        )
        .await;
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    let child = Api::basic(s, "iamapikey", &w.apikey)
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "child"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = console_cookie(s, "alice", &w.apikey)
        .await
        .expect("console sign-in");
    assert_eq!(console_status(s, &cookie).await, StatusCode::OK);
    assert_eq!(api_status(s, "iamapikey", &child).await, StatusCode::OK);

    // The leaked key cannot rotate itself (nor can what it made) and take the key from its owner.
    for (who, secret) in [
        ("iamapikey", w.apikey.as_str()),
        ("iamapikey", child.as_str()),
    ] {
        let (st, v) = Api::basic(s, who, secret)
            .post(
                &format!("/apikeys/{key_id}/rotate"),
                json!({"overlap": "0"}),
            )
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    }
    let (st, v) = Api::bearer(s, session["access_token"].as_str().unwrap())
        .post(
            &format!("/apikeys/{key_id}/rotate"),
            json!({"overlap": "0"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // The owner rotates with an overlap: the old generation's offspring live while it lasts ...
    alice
        .ok(
            "POST",
            &format!("/apikeys/{key_id}/rotate"),
            Some(json!({"overlap": "3s"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(api_status(s, "iamapikey", &child).await, StatusCode::OK);
    // ... and end with it: the child key, the session (its refresh too) and the console session.
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        api_status(s, "iamapikey", &child)
    })
    .await;
    let (st, _) = Api::anonymous(s)
        .post("/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api_status(s, "iambearer", session["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(console_status(s, &cookie).await, StatusCode::SEE_OTHER);

    // Robot tokens too, with no overlap: what a Manager robot's token made ends at once.
    let mgr = robot_with_token(alice, "acme", "mgr", "Manager", json!({})).await;
    let (mgr_id, mgr_secret) = mgr.split_once(':').unwrap();
    let made = Api::basic(s, mgr_id, mgr_secret)
        .ok(
            "POST",
            "/orgs/acme/robots/reader/tokens",
            Some(json!({"name": "made"})),
            StatusCode::CREATED,
        )
        .await;
    let (made_id, made_secret) = (
        made["accessId"].as_str().unwrap(),
        made["token"].as_str().unwrap(),
    );
    assert_eq!(
        token_status(s, made_id, made_secret, "127.0.0.1").await,
        StatusCode::OK
    );
    let (st, _) = Api::basic(s, mgr_id, mgr_secret)
        .post(
            &format!("/orgs/acme/robots/mgr/tokens/{mgr_id}/rotate"),
            json!({"overlap": "0"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a robot token rotating itself");
    let new = alice
        .ok(
            "POST",
            &format!("/orgs/acme/robots/mgr/tokens/{mgr_id}/rotate"),
            Some(json!({"overlap": "0"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        token_status(s, made_id, made_secret, "127.0.0.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        token_status(s, mgr_id, mgr_secret, "127.0.0.1").await,
        StatusCode::UNAUTHORIZED
    );
    // Positive control: the new secret works, and the owner's other credentials are untouched.
    assert_eq!(
        token_status(s, mgr_id, new["token"].as_str().unwrap(), "127.0.0.1").await,
        StatusCode::OK
    );
    assert_eq!(
        token_status(s, &w.robot_token.0, &w.robot_token.1, "127.0.0.1").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn removing_a_member_ends_their_access_and_bindings_name_only_members() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    new_member(s, alice, "acme", "carol", "carol-password-1", "member").await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/bindings/carol",
            Some(json!({"role": "Writer", "subject": "user/carol"})),
            StatusCode::CREATED,
        )
        .await;
    let bearer = bearer_token(
        s,
        "carol",
        "carol-password-1",
        "repository:acme/app:pull,push",
    )
    .await;
    assert_eq!(
        pull_with_bearer(s, &bearer, "acme/app").await,
        StatusCode::OK
    );
    assert_eq!(
        token_status(s, "carol", "carol-password-1", "127.0.0.1").await,
        StatusCode::OK
    );
    alice
        .ok(
            "DELETE",
            "/orgs/acme/members/carol",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    // Her registry token stops within the bound, on every path.
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        pull_with_bearer(s, &bearer, "acme/app")
    })
    .await;
    let fresh = bearer_token(
        s,
        "carol",
        "carol-password-1",
        "repository:acme/app:pull,push",
    )
    .await;
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            fresh.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["access"],
        json!([]),
        "a fresh token grants nothing: {claims}"
    );
    let carol = Api::basic(s, "carol", "carol-password-1");
    assert_eq!(carol.get("/orgs/acme").await.0, StatusCode::NOT_FOUND);
    let r = basic_client("carol", "carol-password-1")
        .get(s.url("/v2/acme/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Her binding went with her membership: adding her back does not revive it.
    assert_eq!(
        alice.get("/orgs/acme/bindings/carol").await.0,
        StatusCode::NOT_FOUND
    );
    // A binding names only members: a user outside the org and an unknown user get one answer.
    let (st1, v1) = alice
        .put(
            "/orgs/acme/bindings/c2",
            json!({"role": "Reader", "subject": "user/carol"}),
        )
        .await;
    let (st2, v2) = alice
        .put(
            "/orgs/acme/bindings/c3",
            json!({"role": "Reader", "subject": "user/nobody-at-all"}),
        )
        .await;
    assert_eq!((st1, st2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(
        v1["error"]["message"]
            .as_str()
            .unwrap()
            .replace("carol", "X"),
        v2["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nobody-at-all", "X"),
    );
}

#[tokio::test]
async fn an_access_token_cannot_open_a_session_that_outlives_its_own() {
    let w = world().await;
    let s = &w.s;
    let login = Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "alice", "password": "alice-password-1"})),
            StatusCode::OK,
        )
        .await;
    let (access, refresh) = (
        login["access_token"].as_str().unwrap().to_owned(),
        login["refresh_token"].as_str().unwrap().to_owned(),
    );
    // Three ways to open a new family with the 5-minute access token.
    let via_api = Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "iambearer", "password": access})),
            StatusCode::OK,
        )
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = basic_client("iambearer", &access)
        .get(s.url("/token?service=berth&offline_token=true&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let via_token: Value = r.json().await.unwrap();
    let via_token = via_token["refresh_token"].as_str().unwrap().to_owned();
    let cookie = console_cookie(s, "iambearer", &access).await;
    if let Some(c) = &cookie {
        assert_eq!(console_status(s, c).await, StatusCode::OK);
    }
    // The session the token came from logs out: every family it opened ends.
    Api::anonymous(s)
        .ok(
            "POST",
            "/auth/logout",
            Some(json!({"refresh_token": refresh})),
            StatusCode::NO_CONTENT,
        )
        .await;
    for t in [&via_api, &via_token] {
        let (st, v) = Api::anonymous(s)
            .post("/auth/refresh", json!({"refresh_token": t}))
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    }
    if let Some(c) = &cookie {
        assert_eq!(console_status(s, c).await, StatusCode::SEE_OTHER);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_disturb_an_exchange_nor_learn_its_robots() {
    use crate::workload::{Issuer, Key};
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let key = Key::es256("gh");
    let github = Issuer::start(&[&key]).await;
    robot_with_token(alice, "acme", "deployer", "Reader", json!({})).await;
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "gh", "issuer": github.url, "subject": "repo:acme/app:*"})),
            StatusCode::CREATED,
        )
        .await;
    // Another organization trusts every repository of the same (shared) issuer.
    let admin = Api::admin(s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "beta"})),
            StatusCode::CREATED,
        )
        .await;
    robot_with_token(&admin, "beta", "grabber", "Reader", json!({})).await;
    admin
        .ok(
            "POST",
            "/orgs/beta/robots/grabber/trusts",
            Some(json!({"name": "all", "issuer": github.url, "subject": "repo:*"})),
            StatusCode::CREATED,
        )
        .await;
    let jwt = key.sign(&github.github_claims("acme/app", "refs/heads/main", "berth", 600));
    let form = |scope: &'static str| {
        let jwt = jwt.clone();
        async move {
            let mut f = vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
                ),
                ("subject_token", jwt),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:jwt".to_owned(),
                ),
            ];
            if !scope.is_empty() {
                f.push(("scope", scope.to_owned()));
            }
            let r = anonymous_client()
                .post(s.url("/token"))
                .form(&f)
                .send()
                .await
                .unwrap();
            let st = r.status();
            (st, r.text().await.unwrap())
        }
    };
    // acme's own exchange, naming acme's repository, is acme's alone.
    let (st, body) = form("repository:acme/app:pull").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Without a scope the exchange is ambiguous, and the answer names no robot of either org.
    let (st, body) = form("").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        !body.contains("grabber") && !body.contains("beta") && !body.contains("deployer"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_outside_cannot_drive_a_terminal_or_forge_an_audit_row() {
    use crate::workload::{Issuer, Key};
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    robot_with_token(alice, "acme", "deployer", "Reader", json!({})).await;
    let key = Key::es256("gh");
    let issuer = Issuer::start(&[&key]).await;
    // Control characters are refused where they would be stored.
    for (field, value) in [
        ("subject", "repo:x\u{1b}[2J*"),
        ("subject", "repo:x\n2026 login success admin"),
        ("audience", "berth\u{7}"),
    ] {
        let mut body = json!({"name": "bad", "issuer": issuer.url, "subject": "repo:*"});
        body[field] = json!(value);
        let (st, v) = alice.post("/orgs/acme/robots/deployer/trusts", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{field}: {v}");
    }
    let (st, _) = alice
        .post(
            "/orgs/acme/robots/deployer/trusts",
            json!({"name": "bad", "issuer": issuer.url, "subject": "repo:*", "claims": {"x": "a\u{1b}b"}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A workload's own `sub` (which the trust's glob accepts) carries escapes and a newline.
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "gh", "issuer": issuer.url, "subject": "repo:acme/*"})),
            StatusCode::CREATED,
        )
        .await;
    let mut claims = issuer.github_claims("acme/app", "refs/heads/main", "berth", 600);
    claims["sub"] = json!("repo:acme/\u{1b}[31mFORGED\nlogin success user:admin");
    let jwt = key.sign(&claims);
    assert_eq!(
        token_status(s, "acme/deployer", &jwt, "127.0.0.1").await,
        StatusCode::OK
    );
    // The audit trail holds it as data, and `berth audit list` prints no raw control character.
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let v = Api::admin(s)
            .ok(
                "GET",
                "/audit?action=workload.exchange",
                None,
                StatusCode::OK,
            )
            .await;
        if let Some(r) = v["events"].as_array().unwrap().first() {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no exchange audited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let detail = row["detail"].as_str().unwrap();
    assert!(detail.contains("FORGED"), "{row}");
    assert!(!detail.chars().any(char::is_control), "{row}");
    // Descriptions are refused with them too.
    let (st, v) = alice
        .post(
            "/orgs/acme/robots",
            json!({"name": "painter", "description": "x\u{1b}[2J\nFORGED-ROW  y"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

/// Text already stored (from before the rules, or written by hand) is still printed escaped: the
/// CLI escapes every table cell.
#[tokio::test]
async fn the_cli_prints_stored_text_escaped() {
    let mut w = world_on(Server::start_embedded()).await;
    Api::basic(&w.s, "alice", "alice-password-1")
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "painter"})),
            StatusCode::CREATED,
        )
        .await;
    w.s.terminate();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             c.execute(\"UPDATE robots SET description = ? WHERE name = 'painter'\", ('x\\x1b[2J\\nFORGED-ROW  \\u202ey',))\n\
             c.commit()\n",
        )
        .arg(w.s.data_dir.join("berth.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.s.restart();
    let s = &w.s;
    let tmp = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut c = std::process::Command::new(berth_bin());
        c.env("BERTH_CONFIG", tmp.path().join("config.yaml"))
            .env("HOME", tmp.path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    cli(
        &["login", &s.base, "-u", "alice", "--password-stdin"],
        Some("alice-password-1\n"),
    );
    let out = cli(&["robot", "list", "--org", "acme"], None);
    assert!(out.contains("FORGED-ROW"), "{out}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{202e}'),
        "{out:?}"
    );
    assert!(out.lines().all(|l| !l.starts_with("FORGED-ROW")), "{out}");
}

#[tokio::test]
async fn a_deleted_role_revives_nothing() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/puller",
            Some(json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"]}]})),
            StatusCode::CREATED,
        )
        .await;
    let t = robot_with_token(alice, "acme", "bot", "puller", json!({})).await;
    let (id, secret) = t.split_once(':').unwrap();
    let bearer = bearer_for(s, id, secret, "acme/app").await;
    assert_eq!(
        pull_with_bearer(s, &bearer, "acme/app").await,
        StatusCode::OK
    );
    alice
        .ok(
            "DELETE",
            "/orgs/acme/roles/puller",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(
        alice.get("/orgs/acme/bindings/bot").await.0,
        StatusCode::NOT_FOUND
    );
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        pull_with_bearer(s, &bearer, "acme/app")
    })
    .await;
    // The name comes back with more rules: the old binding does not grant them.
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/puller",
            Some(json!({"rules": [{"resources": ["repositories"], "verbs": ["pull", "push"]}]})),
            StatusCode::CREATED,
        )
        .await;
    let r = basic_client(id, secret)
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull,push"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v["token"].as_str().unwrap().split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["access"], json!([]), "{claims}");
}

/// A loopback server that answers every request with the JSON `body` makes of its own URL.
async fn fixed_server(body: impl FnOnce(&str) -> String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = body(&url);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_fetches_only_what_the_operator_allows_and_says_nothing_of_it() {
    use crate::workload::{Issuer, Key};
    // Without the operator's opt-in, no trust may name an internal issuer.
    let tmp = tempfile::tempdir().unwrap();
    let strict = Server::start_in(
        &tmp.path().join("d"),
        &[],
        &[("BERTH_ALLOW_PRIVATE_ISSUERS", "false")],
    );
    let admin = Api::admin(&strict);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "r"})),
            StatusCode::CREATED,
        )
        .await;
    let key = Key::es256("k");
    let real = Issuer::start(&[&key]).await;
    for issuer in [
        real.url.as_str(),
        "https://127.0.0.1:6443",
        "https://localhost",
        // A fully qualified name's trailing dot is the same host (found by the API fuzzing).
        "https://localhost./",
        "https://a.localhost./",
        "https://10.0.0.7",
        "https://169.254.169.254/latest",
        "https://[::1]",
        "https://[fd00::1]",
        "http://issuer.example.com",
    ] {
        let (st, v) = admin
            .post(
                "/orgs/acme/robots/r/trusts",
                json!({"name": "t", "issuer": issuer, "subject": "repo:x"}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{issuer}: {v}");
    }
    // Positive control: a public https issuer is accepted (never fetched here).
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/r/trusts",
            Some(json!({"name": "gh", "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:x"})),
            StatusCode::CREATED,
        )
        .await;

    // With it (the tests' issuers are on loopback): a discovery document whose jwks_uri leaves
    // the issuer's origin is refused, and no answer tells a closed port from a 404 or a bad
    // document.
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    robot_with_token(alice, "acme", "r", "Reader", json!({})).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let jwks = format!("{}/openid/v1/jwks", real.url);
    let moved_url = fixed_server(|url| json!({"issuer": url, "jwks_uri": jwks}).to_string()).await;
    let no_keys = fixed_server(|_| json!({"keys": "none"}).to_string()).await;
    let mut answers = Vec::new();
    for (name, issuer) in [
        ("closed", &closed),
        ("moved", &moved_url),
        ("nokeys", &no_keys),
    ] {
        alice
            .ok(
                "POST",
                "/orgs/acme/robots/r/trusts",
                Some(json!({"name": name, "issuer": issuer, "subject": "repo:*"})),
                StatusCode::CREATED,
            )
            .await;
        let mut claims = real.github_claims("acme/app", "refs/heads/main", "berth", 600);
        claims["iss"] = json!(issuer);
        let jwt = key.sign(&claims);
        let r = anonymous_client()
            .post(s.url("/token"))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", jwt.as_str()),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("client_id", "acme/r"),
            ])
            .send()
            .await
            .unwrap();
        let st = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{name}: {body}");
        for leak in [
            "refused",
            "404",
            "no keys",
            "keys array",
            "origin",
            "127.0.0.1",
            "jwks",
            "another issuer",
        ] {
            assert!(!body.contains(leak), "{name}: {body}");
        }
        answers.push(body);
    }
    assert!(answers.windows(2).all(|p| p[0] == p[1]), "{answers:?}");
    // The operator's log says why.
    let log = s.log_text();
    assert!(log.contains("not on the issuer's origin"), "{log}");
}

/// Current resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn one_request_cannot_take_the_servers_memory() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let c = basic_client("alice", "alice-password-1");
    let (subject, _) = push_image(&c, s, "acme/big", "base", 3).await;
    let config = r#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push_blob(&c, s, "acme/big", config.as_bytes()).await;
    // A manifest near the size limit, nearly all of it one annotation, under 48 tags; and 24
    // referrers of one subject, each as large.
    let big = |n: usize, subject: Option<&str>| {
        let mut m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [],
            "annotations": {"filler": "x".repeat(3_800_000 + n), "org.example.n": n.to_string()},
        });
        if let Some(sd) = subject {
            m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": sd, "size": 1});
            m["artifactType"] = json!("application/vnd.example.sbom");
        }
        m.to_string()
    };
    let body = big(0, None);
    for i in 0..48 {
        let r = put_manifest(&c, s, "acme/big", &format!("t{i:02}"), OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    for i in 0..24 {
        let r = put_manifest(
            &c,
            s,
            "acme/big",
            &format!("sbom-{i:02}"),
            OCI_MANIFEST,
            &big(i + 1, Some(&subject)),
        )
        .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(s.pid());

    // The repository view (what the console's repository page calls): a page of tags, sizes
    // from stored metadata, annotations cut, bounded whatever was pushed.
    let r = alice
        .http
        .get(format!(
            "{}/api/v1/orgs/acme/repositories/acme/big?sort=name",
            s.base
        ))
        .header("authorization", alice.auth.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.len() < 2 << 20, "the view is {} bytes", text.len());
    let v: Value = serde_json::from_str(&text).unwrap();
    let tags = v["tags"].as_array().unwrap();
    assert!(!tags.is_empty() && tags.len() <= 50, "{} tags", tags.len());
    let next = v["next"].as_u64().expect("a next page");
    let t0 = tags
        .iter()
        .find(|t| t["tag"] == "t00")
        .expect("t00 on the first page");
    assert_eq!(t0["annotationsTruncated"], json!(true), "{t0}");
    assert!(
        t0["size"].as_u64().unwrap() > 3_800_000,
        "the size still counts the manifest: {t0}"
    );
    // The pages together hold every tag once.
    let mut seen: Vec<String> = tags
        .iter()
        .map(|t| t["tag"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = Some(next);
    while let Some(number) = cursor {
        let page = alice
            .ok(
                "GET",
                &format!("/orgs/acme/repositories/acme/big?sort=name&page={number}"),
                None,
                StatusCode::OK,
            )
            .await;
        seen.extend(
            page["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["tag"].as_str().unwrap().to_owned()),
        );
        cursor = page["next"].as_u64();
    }
    assert_eq!(seen.len(), 48 + 24 + 1, "{seen:?}");
    let after_view = rss_kib(s.pid());
    assert!(
        after_view < before + 64 * 1024,
        "the view took RSS from {before} to {after_view} KiB"
    );

    // The referrers API pages with a Link header; one page stays small.
    let mut url = format!("/v2/acme/big/referrers/{subject}");
    let mut digests = Vec::new();
    let mut pages = 0;
    loop {
        let r = c.get(s.url(&url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let text = r.text().await.unwrap();
        assert!(
            text.len() < 9 << 20,
            "a referrers page of {} bytes",
            text.len()
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        for m in v["manifests"].as_array().unwrap() {
            assert_eq!(m["artifactType"], "application/vnd.example.sbom");
            assert!(
                m["annotations"]["filler"].as_str().unwrap().len() >= 3_800_000,
                "annotations are whole in the API"
            );
            digests.push(m["digest"].as_str().unwrap().to_owned());
        }
        pages += 1;
        match link {
            Some(l) => {
                url = l
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_owned();
            }
            None => break,
        }
    }
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), 24, "every referrer once");
    assert!(pages > 1, "24 large referrers need more than one page");
    let after = rss_kib(s.pid());
    assert!(
        after < before + 96 * 1024,
        "referrers took RSS from {before} to {after} KiB"
    );
}

#[tokio::test]
async fn answers_tell_a_caller_nothing_beyond_what_it_holds() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    // The access review about a server admin who is not in the org: what acme gives them.
    let (st, v) = alice
        .post(
            "/orgs/acme/access-review",
            json!({"subject": "user/admin", "resource": "repositories", "verb": "pull", "name": "acme/app"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["allowed"],
        json!(false),
        "the review told an owner who is a server admin"
    );
    let (_, v) = alice
        .post(
            "/orgs/acme/access-review",
            json!({"subject": "user/nobody", "resource": "repositories", "verb": "pull", "name": "acme/app"}),
        )
        .await;
    assert_eq!(v["allowed"], json!(false));
    // A server admin asking learns the truth (positive control).
    let (_, v) = Api::admin(s)
        .post(
            "/orgs/acme/access-review",
            json!({"subject": "user/admin", "resource": "repositories", "verb": "pull", "name": "acme/app"}),
        )
        .await;
    assert_eq!(v["allowed"], json!(true));

    // A robot bound to one namespace sees that namespace only, and not the org's people.
    alice
        .ok(
            "POST",
            "/orgs/acme/namespaces",
            Some(json!({"name": "acme-secret"})),
            StatusCode::CREATED,
        )
        .await;
    let t = robot_with_token(
        alice,
        "acme",
        "scoped",
        "Reader",
        json!({"namespace": "acme"}),
    )
    .await;
    let (id, secret) = t.split_once(':').unwrap();
    let scoped = Api::basic(s, id, secret);
    let names = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let v = scoped
        .ok("GET", "/orgs/acme/namespaces", None, StatusCode::OK)
        .await;
    assert_eq!(names(&v, "namespaces"), ["acme"]);
    let v = scoped
        .ok("GET", "/orgs/acme/storage", None, StatusCode::OK)
        .await;
    assert_eq!(names(&v, "namespaces"), ["acme"]);
    let v = scoped.ok("GET", "/orgs/acme", None, StatusCode::OK).await;
    assert_eq!(names(&v, "namespaces"), ["acme"]);
    assert_eq!(
        scoped.get("/orgs/acme/members").await.0,
        StatusCode::FORBIDDEN
    );
    // The owner sees both (positive control).
    let v = alice
        .ok("GET", "/orgs/acme/namespaces", None, StatusCode::OK)
        .await;
    assert_eq!(names(&v, "namespaces").len(), 2);
}

#[tokio::test]
async fn a_stolen_session_cannot_plant_a_permanent_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(&tmp.path().join("d"), &[], &[("BERTH_FRESH_SIGN_IN", "2s")]);
    let w = world_on(s).await;
    let (s, alice) = (&w.s, &w.alice);
    // Within the window of signing in, a session makes what it likes (positive control).
    alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "fresh"})),
            StatusCode::CREATED,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Later, the same session (or a console session, or an access token taken from it) needs
    // the password again for anything that never expires ...
    for (path, body) in [
        ("/apikeys", json!({"name": "planted"})),
        (
            "/orgs/acme/robots/reader/tokens",
            json!({"name": "planted"}),
        ),
        (
            "/orgs/acme/robots/reader/apikeys",
            json!({"name": "planted"}),
        ),
    ] {
        let (st, v) = alice.post(path, body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("password"),
            "{v}"
        );
    }
    let (st, _) = alice
        .call(
            "POST",
            "/tokens?permanent=true",
            None,
            &[("organization", "acme")],
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = alice
        .post(
            "/apikeys",
            json!({"name": "guess", "password": "not-her-password"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // ... while an expiring one, the password, or a password login need no more.
    alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "expiring", "expiresIn": "1d"})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "proven", "password": "alice-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    Api::basic(s, "alice", "alice-password-1")
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "direct"})),
            StatusCode::CREATED,
        )
        .await;
    // A session opened with the old session's access token is no fresher than it.
    let access = w.access_token.clone();
    let child = Api::anonymous(s)
        .ok(
            "POST",
            "/auth/login",
            Some(json!({"username": "iambearer", "password": access})),
            StatusCode::OK,
        )
        .await;
    let child = Api::bearer(s, child["access_token"].as_str().unwrap());
    let (st, v) = child.post("/apikeys", json!({"name": "laundered"})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    // Nor does a near-endless expiry, nor a rotation of a key that never expires, pass.
    let (st, _) = alice
        .post(
            "/apikeys",
            json!({"name": "endless", "expiresIn": "100000d"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = alice
        .post("/apikeys/direct/rotate", json!({"overlap": "0"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    alice
        .ok(
            "POST",
            "/apikeys/direct/rotate",
            Some(json!({"overlap": "0", "password": "alice-password-1"})),
            StatusCode::OK,
        )
        .await;
}

#[tokio::test]
async fn smaller_points_of_round_two() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    // Login CSRF: a sign-in with neither Origin nor Sec-Fetch-Site is refused.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(s.url("/ui/login"))
        .form(&[("username", "alice"), ("password", "alice-password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
    // With the browser's same-origin signal it works (positive control).
    assert!(
        console_cookie(s, "alice", "alice-password-1")
            .await
            .is_some()
    );
    // An organization's own namespace name stays its own.
    let (st, v) = alice.delete("/namespaces/acme").await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let admin = Api::admin(s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "beta"})),
            StatusCode::CREATED,
        )
        .await;
    let (st, _) = admin
        .post("/orgs/beta/namespaces", json!({"name": "acme"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    // Plain HTTP: no HSTS (a TLS server's answers carry it: `server::tls_*`).
    let r = anonymous_client().get(s.url("/v2/")).send().await.unwrap();
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn what_a_leaked_credential_changed_ends_with_it_too() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    new_member(s, alice, "acme", "mallory", "mallory-password-1", "member").await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/dev",
            Some(json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"]}]})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "POST",
            "/orgs/acme/namespaces",
            Some(json!({"name": "acme-internal"})),
            StatusCode::CREATED,
        )
        .await;
    let ci = alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "ci"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let leaked = Api::basic(s, "iamapikey", &w.apikey);
    // With the leaked key: a new secret for another key, an owner, a stronger role, a public
    // namespace, and a new secret for a robot's token.
    let ci2 = leaked
        .ok(
            "POST",
            "/apikeys/ci/rotate",
            Some(json!({"overlap": "0"})),
            StatusCode::OK,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    leaked
        .ok(
            "PUT",
            "/orgs/acme/members/mallory",
            Some(json!({"role": "owner"})),
            StatusCode::OK,
        )
        .await;
    leaked
        .ok(
            "PUT",
            "/orgs/acme/roles/dev",
            Some(json!({"rules": [{"resources": ["repositories"], "verbs": ["pull", "push"]}]})),
            StatusCode::OK,
        )
        .await;
    leaked
        .ok(
            "PATCH",
            "/namespaces/acme-internal",
            Some(json!({"public": true})),
            StatusCode::OK,
        )
        .await;
    let robot = leaked
        .ok(
            "POST",
            &format!("/orgs/acme/robots/reader/tokens/{}/rotate", w.robot_token.0),
            Some(json!({"overlap": "0"})),
            StatusCode::OK,
        )
        .await;
    let robot_secret = robot["token"].as_str().unwrap().to_owned();
    assert_eq!(api_status(s, "iamapikey", &ci2).await, StatusCode::OK);
    assert_eq!(
        api_status(s, "iamapikey", &ci).await,
        StatusCode::UNAUTHORIZED
    );
    // The secret the leaked key made cannot rotate the leaked key back: two leaked secrets do
    // not lock the owner out of both.
    let leaked_id = alice.ok("GET", "/apikeys", None, StatusCode::OK).await["apikeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "k")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, v) = Api::basic(s, "iamapikey", &ci2)
        .post(
            &format!("/apikeys/{leaked_id}/rotate"),
            json!({"overlap": "0"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");

    // The owner deletes the leaked key: every change made through it ends with it.
    alice
        .ok(
            "DELETE",
            &format!("/apikeys/{leaked_id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        api_status(s, "iamapikey", &ci2)
    })
    .await;
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        token_status(s, &w.robot_token.0, &robot_secret, "127.0.0.1")
    })
    .await;
    let members = alice
        .ok("GET", "/orgs/acme/members", None, StatusCode::OK)
        .await;
    assert!(
        !members["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "mallory"),
        "{members}"
    );
    assert_eq!(
        alice.get("/orgs/acme/roles/dev").await.0,
        StatusCode::NOT_FOUND
    );
    let ns = alice
        .ok("GET", "/namespaces/acme-internal", None, StatusCode::OK)
        .await;
    assert_eq!(ns["public"], json!(false), "{ns}");
    // What the owner made with her password is untouched.
    alice
        .ok("GET", "/orgs/acme/robots/reader", None, StatusCode::OK)
        .await;
}

#[tokio::test]
async fn nothing_outlives_its_source_expiring() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let short = alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "short", "expiresIn": "3s"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let through = Api::basic(s, "iamapikey", &short);
    let child = through
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "child"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = through
        .ok(
            "POST",
            "/orgs/acme/robots/reader/tokens",
            Some(json!({"name": "made"})),
            StatusCode::CREATED,
        )
        .await;
    let (made_id, made_secret) = (
        made["accessId"].as_str().unwrap(),
        made["token"].as_str().unwrap(),
    );
    assert_eq!(api_status(s, "iamapikey", &child).await, StatusCode::OK);
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        api_status(s, "iamapikey", &child)
    })
    .await;
    assert_eq!(
        token_status(s, made_id, made_secret, "127.0.0.1").await,
        StatusCode::UNAUTHORIZED
    );
    // The owner's other credentials are untouched (positive control).
    assert_eq!(api_status(s, "iamapikey", &w.apikey).await, StatusCode::OK);
}

#[tokio::test]
async fn lists_stay_small_whatever_is_pushed_or_described() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let c = basic_client("alice", "alice-password-1");
    let config = r#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push_blob(&c, s, "acme/app", config.as_bytes()).await;
    let m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": format!("application/{}", "x".repeat(300)),
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [],
    })
    .to_string();
    let r = put_manifest(&c, s, "acme/app", "huge-type", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    let (st, v) = alice
        .post(
            "/orgs/acme/robots",
            json!({"name": "wordy", "description": "d".repeat(1025)}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = alice
        .post(
            "/apikeys",
            json!({"name": "wordy", "description": "d".repeat(1025)}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // Invisible formatting characters are refused like control characters.
    alice
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "r"})),
            StatusCode::CREATED,
        )
        .await;
    for bad in ["repo:a\u{202e}b", "repo:a\u{2028}b", "repo:\u{200b}x"] {
        let (st, v) = alice
            .post(
                "/orgs/acme/robots/r/trusts",
                json!({"name": "t", "issuer": "https://token.actions.githubusercontent.com", "subject": bad}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
    }
}

#[tokio::test]
async fn a_binding_row_for_a_non_member_grants_nothing() {
    // Rows written before the membership rule (or by hand): the grants skip them anyway.
    let mut w = world_on(Server::start_embedded()).await;
    user_session(&w.s, "dave", "dave-password-1").await;
    w.s.terminate();
    let db = w.s.data_dir.join("berth.db");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1])\n\
             org = c.execute(\"SELECT id FROM orgs WHERE name = 'acme'\").fetchone()[0]\n\
             uid = c.execute(\"SELECT id FROM users WHERE name = 'dave'\").fetchone()[0]\n\
             c.execute(\"INSERT INTO bindings (org_id, name, role, subject_kind, subject_id, scope_kind, scope, created_at, updated_at) VALUES (?, 'old', 'Writer', 'user', ?, 'org', NULL, ?, ?)\", (org, uid, int(time.time()), int(time.time())))\n\
             c.commit()\n",
        )
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.s.restart();
    let s = &w.s;
    let r = basic_client("dave", "dave-password-1")
        .get(s.url("/v2/acme/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Positive control: once a member, the same row grants.
    join(
        s,
        &Api::basic(s, "alice", "alice-password-1"),
        "acme",
        "dave",
        "dave-password-1",
        "member",
    )
    .await;
    let r = basic_client("dave", "dave-password-1")
        .get(s.url("/v2/acme/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_console_form_refuses_a_post_without_its_csrf_token() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    new_member(s, alice, "acme", "bob", "bob-password-1", "member").await;
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/r1",
            Some(json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"]}]})),
            StatusCode::CREATED,
        )
        .await;
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/reader/trusts",
            Some(json!({"name": "t1", "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:acme/app:*"})),
            StatusCode::CREATED,
        )
        .await;
    let key_id = alice.ok("GET", "/apikeys", None, StatusCode::OK).await["apikeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let robot_key_id = alice
        .ok(
            "GET",
            "/orgs/acme/robots/reader/apikeys",
            None,
            StatusCode::OK,
        )
        .await["apikeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, tokens) = alice
        .call("GET", "/tokens", None, &[("organization", "acme")])
        .await;
    let reg_id = tokens["tokens"][0]["id"].as_str().unwrap().to_owned();
    let rt = &w.robot_token.0;
    let forms: Vec<(String, Vec<(&str, String)>)> = vec![
        ("/ui/logout".into(), vec![]),
        ("/ui/orgs".into(), vec![("name", "evil-org".into())]),
        (
            "/ui/users".into(),
            vec![
                ("name", "evil".into()),
                ("password", "evil-password-1".into()),
            ],
        ),
        (
            "/ui/orgs/acme/tags/delete".into(),
            vec![("repository", "acme/app".into()), ("tag", "v1".into())],
        ),
        ("/ui/orgs/acme/robots".into(), vec![("name", "evil".into())]),
        ("/ui/orgs/acme/robots/reader/delete".into(), vec![]),
        (
            "/ui/orgs/acme/robots/reader/tokens".into(),
            vec![("name", "evil".into())],
        ),
        (
            format!("/ui/orgs/acme/robots/reader/tokens/{rt}/rotate"),
            vec![("overlap", "0".into())],
        ),
        (
            format!("/ui/orgs/acme/robots/reader/tokens/{rt}/revoke"),
            vec![],
        ),
        (
            "/ui/orgs/acme/robots/reader/apikeys".into(),
            vec![("name", "evil".into())],
        ),
        (
            format!("/ui/orgs/acme/robots/reader/apikeys/{robot_key_id}/rotate"),
            vec![("overlap", "0".into())],
        ),
        (
            format!("/ui/orgs/acme/robots/reader/apikeys/{robot_key_id}/revoke"),
            vec![],
        ),
        (
            "/ui/orgs/acme/robots/reader/trusts".into(),
            vec![
                ("name", "evil".into()),
                ("issuer", "https://evil.example".into()),
                ("subject", "x".into()),
            ],
        ),
        (
            "/ui/orgs/acme/robots/reader/trusts/t1/delete".into(),
            vec![],
        ),
        (
            "/ui/orgs/acme/apikeys".into(),
            vec![("name", "evil".into())],
        ),
        (
            format!("/ui/orgs/acme/apikeys/{key_id}/rotate"),
            vec![("overlap", "0".into())],
        ),
        (format!("/ui/orgs/acme/apikeys/{key_id}/revoke"), vec![]),
        (
            "/ui/orgs/acme/registry-tokens".into(),
            vec![("name", "evil".into())],
        ),
        (
            format!("/ui/orgs/acme/registry-tokens/{reg_id}/rotate"),
            vec![("overlap", "0".into())],
        ),
        (
            format!("/ui/orgs/acme/registry-tokens/{reg_id}/revoke"),
            vec![],
        ),
        (
            "/ui/orgs/acme/bindings".into(),
            vec![
                ("name", "evil".into()),
                ("role", "Manager".into()),
                ("subject", "user/bob".into()),
            ],
        ),
        ("/ui/orgs/acme/bindings/reader/delete".into(), vec![]),
        (
            "/ui/orgs/acme/roles".into(),
            vec![
                ("name", "evil".into()),
                ("rules", "- resources: ['*']\n  verbs: ['*']".into()),
            ],
        ),
        ("/ui/orgs/acme/roles/r1/delete".into(), vec![]),
        (
            "/ui/orgs/acme/access-check".into(),
            vec![
                ("subject", "user/admin".into()),
                ("verb", "pull".into()),
                ("resource", "repositories".into()),
                ("name", "acme/app".into()),
            ],
        ),
        (
            "/ui/orgs/acme/members".into(),
            vec![("user", "bob".into()), ("role", "owner".into())],
        ),
        ("/ui/orgs/acme/members/bob/remove".into(), vec![]),
    ];
    // Every POST route of the console but the two sign-ins, which have no session yet (the
    // password form, and a command line's single sign-on confirmation: refused from another
    // site and useless without the sign-in's own Lax cookie, as
    // `sso::without_a_device_grant_the_cli_signs_in_through_a_loopback_redirect` shows), is
    // listed here.
    let router = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/console/mod.rs"),
    )
    .unwrap();
    assert_eq!(
        router.matches("post(").count(),
        forms.len() + 2,
        "a console form without its row in this test"
    );
    let cookie = console_cookie(s, "alice", "alice-password-1")
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, fields) in &forms {
        for csrf in [None, Some("0".repeat(64))] {
            let mut f = fields.clone();
            if let Some(c) = &csrf {
                f.push(("_csrf", c.clone()));
            }
            let r = http
                .post(s.url(path))
                .header("cookie", &cookie)
                .header("sec-fetch-site", "same-origin")
                .form(&f)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{path} with csrf {csrf:?}"
            );
        }
    }
    // Nothing changed, and the session is alive (positive control).
    assert_eq!(console_status(s, &cookie).await, StatusCode::OK);
    assert_eq!(
        token_status(s, &w.robot_token.0, &w.robot_token.1, "127.0.0.1").await,
        StatusCode::OK
    );
    assert_eq!(trust_names(alice, "reader").await, ["t1"]);
    alice
        .ok("GET", "/orgs/acme/roles/r1", None, StatusCode::OK)
        .await;
    alice
        .ok("GET", "/orgs/acme/bindings/reader", None, StatusCode::OK)
        .await;
    assert_eq!(
        alice.get("/orgs/acme/robots/evil").await.0,
        StatusCode::NOT_FOUND
    );
    let members = alice
        .ok("GET", "/orgs/acme/members", None, StatusCode::OK)
        .await;
    assert!(
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "bob" && m["role"] == "member"),
        "{members}"
    );
    // Every form again, now as bob (a member with no binding) with his own valid CSRF token:
    // the console has no authorization of its own, so each answer is the API's, and only what
    // any signed-in user may do (make an org, make his own API key) goes through.
    let bob = console_cookie(s, "bob", "bob-password-1").await.unwrap();
    let page = http
        .get(s.url("/ui/orgs/acme/credentials"))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = page.find("name=\"_csrf\" value=\"").unwrap() + 20;
    let bob_csrf = page[at..at + 40].to_owned();
    let allowed_to_anyone = ["/ui/orgs", "/ui/orgs/acme/apikeys"];
    for (path, fields) in forms.iter().filter(|(p, _)| p != "/ui/logout") {
        let mut f = fields.clone();
        f.push(("_csrf", bob_csrf.clone()));
        let r = http
            .post(s.url(path))
            .header("cookie", &bob)
            .header("sec-fetch-site", "same-origin")
            .form(&f)
            .send()
            .await
            .unwrap();
        let status = r.status();
        if allowed_to_anyone.contains(&path.as_str()) {
            assert!(
                status == StatusCode::SEE_OTHER || status == StatusCode::OK,
                "{path} as a plain member: {status}"
            );
        } else if path.contains(&format!("/apikeys/{key_id}/")) {
            // Alice's own key is not bob's to touch: not found, as for any key not his.
            assert_eq!(status, StatusCode::NOT_FOUND, "{path} as a plain member");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} as a plain member");
        }
    }
    // Nothing of acme changed.
    assert_eq!(trust_names(alice, "reader").await, ["t1"]);
    alice
        .ok("GET", "/orgs/acme/roles/r1", None, StatusCode::OK)
        .await;
    alice
        .ok("GET", "/orgs/acme/bindings/reader", None, StatusCode::OK)
        .await;
    assert_eq!(
        token_status(s, &w.robot_token.0, &w.robot_token.1, "127.0.0.1").await,
        StatusCode::OK
    );
    assert_eq!(
        alice.get("/orgs/acme/robots/evil").await.0,
        StatusCode::NOT_FOUND
    );
    let r = client()
        .get(s.url("/v2/acme/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the tag is still there");
}

#[tokio::test]
async fn rules_the_second_review_broke_unnoticed() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    // Namespace deletion needs an owner: a Manager robot aims at one that exists.
    alice
        .ok(
            "POST",
            "/orgs/acme/namespaces",
            Some(json!({"name": "acme-keep"})),
            StatusCode::CREATED,
        )
        .await;
    let mgr = robot_with_token(alice, "acme", "mgr", "Manager", json!({})).await;
    let (mid, msecret) = mgr.split_once(':').unwrap();
    let (st, v) = Api::basic(s, mid, msecret)
        .delete("/namespaces/acme-keep")
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    alice
        .ok("GET", "/namespaces/acme-keep", None, StatusCode::OK)
        .await;
    // Trust deletion needs what minting for the robot needs: a Reader robot aims at a trust that
    // exists on another robot.
    alice
        .ok(
            "POST",
            "/orgs/acme/robots/mgr/trusts",
            Some(json!({"name": "gh", "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:acme/app:*"})),
            StatusCode::CREATED,
        )
        .await;
    let (st, v) = Api::basic(s, &w.robot_token.0, &w.robot_token.1)
        .delete("/orgs/acme/robots/mgr/trusts/gh")
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(trust_names(alice, "mgr").await, ["gh"]);
    // A console session ends with a password change.
    let cookie = console_cookie(s, "alice", "alice-password-1")
        .await
        .unwrap();
    assert_eq!(console_status(s, &cookie).await, StatusCode::OK);
    Api::basic(s, "alice", "alice-password-1")
        .ok(
            "PUT",
            "/users/alice/password",
            Some(json!({"currentPassword": "alice-password-1", "password": "alice-password-2"})),
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(console_status(s, &cookie).await, StatusCode::SEE_OTHER);
    // An API key used moments ago (so this node remembers its login) stops at once when it is
    // rotated with no overlap.
    let key = Api::basic(s, "alice", "alice-password-2")
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "used", "expiresIn": "1d"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api_status(s, "iamapikey", &key).await, StatusCode::OK);
    Api::basic(s, "alice", "alice-password-2")
        .ok(
            "POST",
            "/apikeys/used/rotate",
            Some(json!({"overlap": "0"})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        api_status(s, "iamapikey", &key).await,
        StatusCode::UNAUTHORIZED
    );
}

/// An expired credential is not rotated: a new secret under an expiry already past would be
/// dead on arrival (and the expiry is not the rotation's to move). The refusal says why, and the
/// old secret stays refused.
#[tokio::test]
async fn an_expired_credential_is_not_rotated_into_a_dead_secret() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let key = alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "brief", "expiresIn": "1s"})),
            StatusCode::CREATED,
        )
        .await;
    let token = alice
        .ok(
            "POST",
            "/orgs/acme/robots/reader/tokens",
            Some(json!({"name": "brief", "expiresIn": "1s"})),
            StatusCode::CREATED,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for path in [
        format!("/apikeys/{}/rotate", key["id"].as_str().unwrap()),
        format!(
            "/orgs/acme/robots/reader/tokens/{}/rotate",
            token["id"].as_str().unwrap()
        ),
    ] {
        let (status, v) = alice.post(&path, json!({"overlap": "0"})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {v}");
        assert!(v.to_string().contains("expired"), "{v}");
    }
    let old = Api::basic(s, "iamapikey", key["apikey"].as_str().unwrap());
    assert_eq!(old.get("/orgs").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_audit_says_why_a_login_failed_while_the_client_learns_nothing() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let short = alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "short", "expiresIn": "1s"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    // A robot token of acme, expired: its failure belongs to acme's audit.
    let gone = alice
        .ok(
            "POST",
            "/orgs/acme/robots/reader/tokens",
            Some(json!({"name": "gone", "expiresIn": "1s"})),
            StatusCode::CREATED,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let attempts = [
        (
            gone["accessId"].as_str().unwrap().to_owned(),
            gone["token"].as_str().unwrap().to_owned(),
            "expired",
            "127.0.0.25",
        ),
        (
            "iamapikey".to_owned(),
            short.clone(),
            "expired",
            "127.0.0.21",
        ),
        (
            "iamapikey".to_owned(),
            w.robot_token.1.clone(),
            "wrong kind of secret",
            "127.0.0.22",
        ),
        (
            "alice".to_owned(),
            "not-her-password".to_owned(),
            "wrong password",
            "127.0.0.23",
        ),
        (
            "iamapikey".to_owned(),
            tampered(&w.apikey),
            "unknown or wrong secret",
            "127.0.0.24",
        ),
    ];
    let mut bodies = Vec::new();
    for (user, secret, _, from) in &attempts {
        let r = basic_client_from(user, secret, from)
            .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        bodies.push(r.text().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|p| p[0] == p[1]),
        "the client's answers differ: {bodies:?}"
    );
    let admin = Api::admin(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (_, _, why, from) in &attempts {
        loop {
            let v = admin
                .ok(
                    "GET",
                    "/audit?action=login&outcome=failure&limit=100",
                    None,
                    StatusCode::OK,
                )
                .await;
            let found = v["events"].as_array().unwrap().iter().any(|e| {
                e["clientAddress"].as_str() == Some(*from)
                    && e["detail"].as_str().is_some_and(|d| d.contains(why))
            });
            if found {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no failure row saying {why:?} from {from}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The owner's audit of acme counts the failure of acme's robot token, not a stranger's
    // wrong password nor her own key's (a user's keys are not the organization's).
    let v = alice
        .ok(
            "GET",
            "/orgs/acme/audit?action=login&outcome=failure&limit=100",
            None,
            StatusCode::OK,
        )
        .await;
    let from: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["clientAddress"].as_str())
        .collect();
    assert_eq!(from, ["127.0.0.25"], "{v}");
    assert!(
        v["events"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{v}"
    );
}

#[tokio::test]
async fn nothing_is_made_through_a_credential_that_has_just_ended() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let k2 = alice
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "k2", "expiresIn": "1d"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let leaked = Api::basic(s, "iamapikey", &w.apikey);
    // The node remembers the leaked key's login (it was just used) ...
    assert_eq!(leaked.get("/auth/whoami").await.0, StatusCode::OK);
    let id = alice.ok("GET", "/apikeys", None, StatusCode::OK).await["apikeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "k")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // ... it deletes itself, and in the same breath tries to leave something behind.
    leaked
        .ok(
            "DELETE",
            &format!("/apikeys/{id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let (st1, _) = leaked.post("/apikeys", json!({"name": "heir"})).await;
    let (st2, _) = leaked
        .post("/apikeys/k2/rotate", json!({"overlap": "0"}))
        .await;
    let (st3, _) = leaked
        .post("/orgs/acme/robots/reader/tokens", json!({"name": "heir"}))
        .await;
    for st in [st1, st2, st3] {
        assert_ne!(
            st.as_u16() / 100,
            2,
            "something was made through a deleted key"
        );
    }
    assert_eq!(
        api_status(s, "iamapikey", &k2).await,
        StatusCode::OK,
        "the owner's key is intact"
    );
    let keys = alice.ok("GET", "/apikeys", None, StatusCode::OK).await;
    assert!(!keys.to_string().contains("heir"), "{keys}");
}

#[tokio::test]
async fn a_member_a_leaked_key_promoted_cannot_launder_it() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    for (u, p) in [("mallory", "mallory-password-1"), ("bob", "bob-password-1")] {
        user_session(s, u, p).await;
    }
    let leaked = Api::basic(s, "iamapikey", &w.apikey);
    // The leaked key invites mallory as an owner; she accepts.
    join(s, &leaked, "acme", "mallory", "mallory-password-1", "owner").await;
    // Mallory, with her own password, sets it again, promotes bob, binds herself and makes a
    // namespace public; the key also creates a public namespace.
    let mallory = Api::basic(s, "mallory", "mallory-password-1");
    mallory
        .ok(
            "PUT",
            "/orgs/acme/members/mallory",
            Some(json!({"role": "owner"})),
            StatusCode::OK,
        )
        .await;
    join(s, &mallory, "acme", "bob", "bob-password-1", "owner").await;
    mallory
        .ok(
            "PUT",
            "/orgs/acme/bindings/mm",
            Some(json!({"role": "Manager", "subject": "user/mallory"})),
            StatusCode::CREATED,
        )
        .await;
    leaked
        .ok(
            "POST",
            "/orgs/acme/namespaces",
            Some(json!({"name": "acme-pub", "public": true})),
            StatusCode::CREATED,
        )
        .await;
    let id = alice.ok("GET", "/apikeys", None, StatusCode::OK).await["apikeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .ok(
            "DELETE",
            &format!("/apikeys/{id}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let members = alice
        .ok("GET", "/orgs/acme/members", None, StatusCode::OK)
        .await;
    let names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice"], "{members}");
    assert_eq!(
        alice.get("/orgs/acme/bindings/mm").await.0,
        StatusCode::NOT_FOUND
    );
    let ns = alice
        .ok("GET", "/namespaces/acme-pub", None, StatusCode::OK)
        .await;
    assert_eq!(ns["public"], json!(false));
}

#[tokio::test]
async fn an_admins_leaked_key_leaves_no_account_behind() {
    let s = Server::start();
    let admin = Api::admin(&s);
    user_session(&s, "carl", "carl-password-1").await;
    let key = admin
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "ops", "expiresIn": "1d"})),
            StatusCode::CREATED,
        )
        .await;
    let (kid, secret) = (
        key["id"].as_str().unwrap().to_owned(),
        key["apikey"].as_str().unwrap().to_owned(),
    );
    let leaked = Api::basic(&s, "iamapikey", &secret);
    leaked
        .ok(
            "POST",
            "/users",
            Some(json!({"name": "backdoor", "password": "backdoor-password-1"})),
            StatusCode::CREATED,
        )
        .await;
    leaked
        .ok(
            "PUT",
            "/users/carl/password",
            Some(json!({"password": "taken-over-password-1"})),
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(
        api_status(&s, "backdoor", "backdoor-password-1").await,
        StatusCode::OK
    );
    assert_eq!(
        api_status(&s, "carl", "taken-over-password-1").await,
        StatusCode::OK
    );
    admin
        .ok(
            "DELETE",
            &format!("/apikeys/{kid}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(admin.get("/users/backdoor").await.0, StatusCode::NOT_FOUND);
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
        api_status(&s, "carl", "taken-over-password-1")
    })
    .await;
    // An admin gives carl a password again (positive control: the account is there).
    admin
        .ok(
            "PUT",
            "/users/carl/password",
            Some(json!({"password": "carl-password-2"})),
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(
        api_status(&s, "carl", "carl-password-2").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn more_lists_that_stay_small() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    // An index whose platform strings are huge is refused at the push.
    let c = basic_client("alice", "alice-password-1");
    let (d, m) = push_image(&c, s, "acme/idx", "one", 5).await;
    let index = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": m.len(),
                       "platform": {"os": "x".repeat(5000), "architecture": "amd64"}}],
    })
    .to_string();
    let r = put_manifest(
        &c,
        s,
        "acme/idx",
        "big",
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // A robot has at most 32 trusts.
    for i in 0..32 {
        alice
            .ok(
                "POST",
                "/orgs/acme/robots/reader/trusts",
                Some(json!({"name": format!("t{i}"), "issuer": "https://token.actions.githubusercontent.com", "subject": format!("repo:a/{i}:*")})),
                StatusCode::CREATED,
            )
            .await;
    }
    let (st, v) = alice
        .post(
            "/orgs/acme/robots/reader/trusts",
            json!({"name": "t32", "issuer": "https://token.actions.githubusercontent.com", "subject": "repo:x"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    // Names of credentials refuse invisible characters; typed user names are kept escaped.
    let (st, _) = alice.post("/apikeys", json!({"name": "k\u{202e}x"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let r = basic_client_from("ad\u{202e}min", "nope-nope-nope", "127.0.0.31")
        .get(s.url("/token?service=berth"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let admin = Api::admin(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin
            .ok(
                "GET",
                "/audit?action=login&outcome=failure",
                None,
                StatusCode::OK,
            )
            .await;
        let row = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["clientAddress"] == "127.0.0.31")
            .cloned();
        if let Some(row) = row {
            let text = row.to_string();
            assert!(!text.contains('\u{202e}'), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure row");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn nobody_joins_without_consent_and_members_calls_reveal_no_user() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    user_session(s, "zoe", "zoe-password-1").await;
    // An owner who is not a server admin: the same answer for a user who exists and one who
    // does not.
    let (st1, v1) = alice
        .put("/orgs/acme/members/zoe", json!({"role": "owner"}))
        .await;
    let (st2, v2) = alice
        .put("/orgs/acme/members/nobody-here", json!({"role": "owner"}))
        .await;
    assert_eq!((st1, st2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(v1["status"], v2["status"]);
    // Zoe is not a member until she accepts: nothing of acme is hers yet.
    let zoe = Api::basic(s, "zoe", "zoe-password-1");
    assert_eq!(zoe.get("/orgs/acme").await.0, StatusCode::NOT_FOUND);
    let inv = zoe.ok("GET", "/invitations", None, StatusCode::OK).await;
    assert_eq!(
        inv["invitations"],
        json!([{"org": "acme", "role": "owner"}])
    );
    zoe.ok(
        "POST",
        "/orgs/acme/invitations/accept",
        None,
        StatusCode::OK,
    )
    .await;
    zoe.ok("GET", "/orgs/acme", None, StatusCode::OK).await;
    // Accepting twice, or without an invitation, is a 404.
    let (st, _) = zoe.post("/orgs/acme/invitations/accept", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Removing: an unknown user and a user who is not a member get the same answer.
    user_session(s, "yan", "yan-password-1").await;
    let (st1, v1) = alice.delete("/orgs/acme/members/yan").await;
    let (st2, v2) = alice.delete("/orgs/acme/members/nobody-here").await;
    assert_eq!((st1, st2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(
        v1["error"]["message"].as_str().unwrap().replace("yan", "X"),
        v2["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nobody-here", "X"),
    );
    // A server admin adds at once (positive control: admins may list users anyway).
    Api::admin(s)
        .ok(
            "PUT",
            "/orgs/acme/members/yan",
            Some(json!({"role": "member"})),
            StatusCode::OK,
        )
        .await;
}

/// A bearer token refused for any reason (revoked at its source, signed by another server's key,
/// its signature tampered, not a token at all) gets one answer: the client cannot tell which.
#[tokio::test]
async fn a_refused_bearer_token_tells_the_client_nothing_more() {
    let w = world().await;
    let s = &w.s;
    let bearer = |s: &Server, user: String, secret: String| {
        let url = s.url("/token?service=berth&scope=repository:acme/app:pull");
        async move {
            let v: Value = basic_client(&user, &secret)
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let pull = |token: String| {
        let url = s.url("/v2/acme/app/manifests/v1");
        async move {
            let r = anonymous_client()
                .get(url)
                .header("accept", OCI_MANIFEST)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status(), challenge, r.text().await.unwrap())
        }
    };
    // A token whose source is then deleted.
    let t = w
        .alice
        .ok(
            "POST",
            "/orgs/acme/robots/reader/tokens",
            Some(json!({"name": "short-lived"})),
            StatusCode::CREATED,
        )
        .await;
    let revoked = bearer(
        s,
        t["accessId"].as_str().unwrap().to_owned(),
        t["token"].as_str().unwrap().to_owned(),
    )
    .await;
    // Positive control: before its source goes, it pulls.
    assert_eq!(pull(revoked.clone()).await.0, StatusCode::OK);
    w.alice
        .ok(
            "DELETE",
            &format!(
                "/orgs/acme/robots/reader/tokens/{}",
                t["id"].as_str().unwrap()
            ),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pull(revoked.clone()).await.0 == StatusCode::OK {
        assert!(Instant::now() < deadline, "the revoked token still pulls");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A token of another server (another signing key), for the same names.
    let other = Server::start();
    let foreign = bearer(&other, "admin".into(), ADMIN_PASSWORD.into()).await;
    // This server's valid token with its signature changed.
    let good = bearer(s, w.robot_token.0.clone(), w.robot_token.1.clone()).await;
    assert_eq!(pull(good.clone()).await.0, StatusCode::OK);
    let mut forged = good.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let mut answers = Vec::new();
    for token in [revoked, foreign, forged, "not-a-token".to_owned()] {
        let (status, challenge, body) = pull(token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        answers.push((challenge, body));
    }
    assert!(
        answers.windows(2).all(|p| p[0] == p[1]),
        "the answers to refused bearer tokens differ: {answers:#?}"
    );
}

/// An organization's audit is its owners' (and a role's that grants `list` on `audit`): it holds
/// what anyone did in the org (its robots, the admins), and nothing of another org; a Manager
/// robot without that grant is refused.
#[tokio::test]
async fn an_orgs_owners_read_everything_that_happened_in_it_and_nothing_else() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let admin = Api::admin(s);
    // Things done in acme by others: a Manager robot creates a robot; the admin a binding.
    let mgr = robot_with_token(alice, "acme", "mgr", "Manager", json!({})).await;
    let (mid, msecret) = mgr.split_once(':').unwrap();
    let as_mgr = Api::basic(s, mid, msecret);
    as_mgr
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "made-by-mgr"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "PUT",
            "/orgs/acme/bindings/by-admin",
            Some(json!({"role": "Reader", "subject": "robot/made-by-mgr"})),
            StatusCode::CREATED,
        )
        .await;
    // And in another org, which acme's owner must not see.
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "elsewhere"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "POST",
            "/orgs/elsewhere/robots",
            Some(json!({"name": "secret-project"})),
            StatusCode::CREATED,
        )
        .await;
    let v = alice
        .ok("GET", "/orgs/acme/audit?limit=1000", None, StatusCode::OK)
        .await;
    let events = v["events"].as_array().unwrap();
    let has = |action: &str, target: &str| {
        events
            .iter()
            .any(|e| e["action"] == action && e["target"] == target && e["org"] == "acme")
    };
    assert!(has("robot.create", "robot/acme/made-by-mgr"), "{v}");
    assert!(has("binding.put", "org/acme/bindings/by-admin"), "{v}");
    assert!(
        events.iter().all(|e| e["org"] == "acme"),
        "another org's events in acme's audit: {v}"
    );
    assert!(!v.to_string().contains("secret-project"), "{v}");
    // The same filters as /audit.
    let robots_only = alice
        .ok(
            "GET",
            "/orgs/acme/audit?action=robot.create",
            None,
            StatusCode::OK,
        )
        .await;
    assert!(
        robots_only["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "robot.create")
    );
    // A Manager robot is not given the audit; a role that grants list on audit is.
    let (status, _) = as_mgr.call("GET", "/orgs/acme/audit", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    alice
        .ok(
            "PUT",
            "/orgs/acme/roles/auditor",
            Some(json!({"rules": [{"resources": ["audit"], "verbs": ["list"]}]})),
            StatusCode::CREATED,
        )
        .await;
    let aud = robot_with_token(alice, "acme", "auditor-bot", "auditor", json!({})).await;
    let (aid, asecret) = aud.split_once(':').unwrap();
    let v = Api::basic(s, aid, asecret)
        .ok("GET", "/orgs/acme/audit", None, StatusCode::OK)
        .await;
    assert!(!v["events"].as_array().unwrap().is_empty());
    // ... in acme only.
    let (status, _) = Api::basic(s, aid, asecret)
        .call("GET", "/orgs/elsewhere/audit", None, &[])
        .await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "{status}"
    );
    // A server admin asking about one org gets that org's events only.
    let v = admin
        .ok("GET", "/orgs/elsewhere/audit", None, StatusCode::OK)
        .await;
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["org"] == "elsewhere")
            && v.to_string().contains("secret-project"),
        "{v}"
    );
}

/// A console page and its CSRF token, as `cookie`'s user.
async fn console_page(s: &Server, cookie: &str, path: &str) -> (StatusCode, String, String) {
    let r = anonymous_client()
        .get(s.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    let csrf = body
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or_default()
        .to_owned();
    (status, body, csrf)
}

async fn console_post(
    s: &Server,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(s.url(path))
        .header("cookie", cookie)
        .header("sec-fetch-site", "same-origin")
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_refused_console_form_shows_only_what_its_user_may_see_and_never_a_password() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let admin = Api::admin(s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "other"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "PUT",
            "/orgs/other/bindings/secret-binding-name",
            Some(json!({"role": "Reader", "subject": "user/admin"})),
            StatusCode::CREATED,
        )
        .await;
    // A refused user form: its page again, the name kept, the password typed nowhere in it.
    let admin_cookie = console_cookie(s, "admin", ADMIN_PASSWORD).await.unwrap();
    let (_, _, csrf) = console_page(s, &admin_cookie, "/ui/users").await;
    let (status, page) = console_post(
        s,
        &admin_cookie,
        "/ui/users",
        &[
            ("_csrf", &csrf),
            ("name", "alice"),
            ("password", "typed-secret-password-7"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(
        page.contains("already exists") && page.contains(r#"<header class="top">"#),
        "{page}"
    );
    assert!(
        page.contains(r#"value="alice""#),
        "the name is kept: {page}"
    );
    assert!(
        !page.contains("typed-secret-password-7"),
        "a password shown back"
    );

    // Alice's refused binding form names another org's page to show it on: she sees nothing of
    // it (the page is refused as it would be to her), only the refusal.
    let cookie = console_cookie(s, "alice", "alice-password-1")
        .await
        .unwrap();
    let (_, _, csrf) = console_page(s, &cookie, "/ui/orgs/acme/access").await;
    let (status, page) = console_post(
        s,
        &cookie,
        "/ui/orgs/acme/bindings",
        &[
            ("_csrf", &csrf),
            ("subject", "robot/reader"),
            ("back", "/ui/orgs/other/access"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("Give a role and a subject."), "{page}");
    assert!(
        !page.contains("secret-binding-name"),
        "another org's page leaked: {page}"
    );
    // What was typed comes back as text, never as markup.
    let (_, _, csrf) = console_page(s, &cookie, "/ui/orgs/acme/robots").await;
    let (status, page) = console_post(
        s,
        &cookie,
        "/ui/orgs/acme/robots",
        &[("_csrf", &csrf), ("name", "x\"><script>alert(1)</script>")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)"),
        "kept, escaped: {page}"
    );
    let _ = alice;
}

/// Single sign-on's callback against a real provider (`oidc-provider`): a replayed code, a
/// missing or wrong `state`, a code made for another sign-in (its PKCE verifier is not this
/// one's) or for another client, an answer naming another issuer (mix-up), a callback on another
/// host, a provider's error: each refused with a clear page and no session. (The ID token's own
/// checks — `aud`, `iss`, expiry, `nonce`, `alg: none`, HS256 with the public key — are unit
/// tests of `auth::oidc::verify_with_keys`, the verifier both flows use: a real provider signs
/// none of those.)
#[tokio::test]
async fn sso_callbacks_refuse_replays_forged_state_injected_codes_mixups_and_other_hosts() {
    use crate::support::oidc::{
        CLIENT_SECRET, Idp, PROVIDER, callback, set_cookie, sso_server_with, start_sign_in,
    };
    let other_client = json!({
        "client_id": "other",
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [format!("{{BASE}}/ui/login/sso/{PROVIDER}/callback")],
        "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "client_secret_basic",
    });
    let (s, idp) = sso_server_with(&[], vec![other_client]);
    let sign_in = |auth: String, user: &'static str, pw: &'static str| {
        tokio::task::spawn_blocking(move || Idp::sign_in(&auth, user, pw))
    };
    let no_session = |r: &reqwest::Response| set_cookie(r, "berth_session").is_none();

    // The state cookie: sealed, HttpOnly, SameSite=Lax (the provider's redirect is a top-level
    // GET from another site), only for the sign-in's paths.
    let r = anonymous_client()
        .get(s.url(&format!("/ui/login/sso/{PROVIDER}")))
        .send()
        .await
        .unwrap();
    let attrs = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for a in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/ui/login/sso",
        "Max-Age=600",
    ] {
        assert!(attrs.contains(a), "{attrs}");
    }
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "nonce=",
        "state=",
    ] {
        assert!(location.contains(p), "{location}");
    }

    // A callback without the browser's state cookie, with a wrong state, without one.
    let (auth, cookie) = start_sign_in(&s).await;
    let back = sign_in(auth, "alice", "pw-alice").await.unwrap();
    let r = anonymous_client().get(&back).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(no_session(&r));
    let state = back
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let r = callback(&back.replace(&state, "forged-state"), &cookie).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(no_session(&r));
    assert!(r.text().await.unwrap().contains("state does not match"));
    let r = callback(&back.replace(&format!("state={state}"), "state="), &cookie).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A forged cookie (not sealed by this server) is no state either.
    let r = callback(&back, "bm90LXNlYWxlZA").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Mix-up: the answer names another issuer than the provider this sign-in went to.
    let mixed = format!(
        "{}&iss=https%3A%2F%2Fevil.example",
        back.split("&iss=").next().unwrap()
    );
    let r = callback(&mixed, &cookie).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("another identity provider")
    );
    // A callback arriving at another host than --public-url.
    let r = anonymous_client()
        .get(&back)
        .header(
            "host",
            format!("localhost:{}", s.host.rsplit(':').next().unwrap()),
        )
        .header("cookie", format!("berth_sso={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(no_session(&r));
    // Positive control: the same answer, untouched, signs alice in.
    let r = callback(&back, &cookie).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!no_session(&r));
    let alice = set_cookie(&r, "berth_session").unwrap();
    // ... and it is cleared, so the same URL again finds no state.
    let cleared = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("berth_sso=;"));
    assert!(cleared, "the callback clears the state cookie");
    // Replayed with the old cookie too (an attacker who saw both): each answer works once, and
    // the replay never reaches the provider — which, seeing a code again, would revoke alice's
    // grant and with it her session (readings every 2 s here).
    let r = callback(&back, &cookie).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(no_session(&r));
    assert!(r.text().await.unwrap().contains("used already"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (st, _) = Api::basic(&s, "iamrefresh", &alice)
        .get("/auth/whoami")
        .await;
    assert_eq!(st, StatusCode::OK, "the replay cost alice nothing");

    // Code injection: a code from the attacker's own sign-in, put into the victim's callback
    // (the victim's state and cookie): its PKCE verifier is not the one the code was made for.
    let state_of = |url: &str| {
        url.split("state=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    let (attacker_auth, _) = start_sign_in(&s).await;
    let attacker_back = sign_in(attacker_auth, "bob", "pw-bob").await.unwrap();
    // The victim's sign-in: the state its authorization URL carries, its cookie.
    let (victim_auth, victim_cookie) = start_sign_in(&s).await;
    let victim_state = (state_of(&victim_auth), victim_cookie);
    let attacker_state = state_of(&attacker_back);
    let injected = attacker_back.replace(&attacker_state, &victim_state.0);
    let r = callback(&injected, &victim_state.1).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "PKCE stops the injected code"
    );
    assert!(no_session(&r));

    // A code made for another client of the provider, injected the same way.
    let (victim_auth, victim_cookie) = start_sign_in(&s).await;
    let victim_state = state_of(&victim_auth);
    let for_other = victim_auth.replace("client_id=berth", "client_id=other");
    let other_back = sign_in(for_other, "bob", "pw-bob").await.unwrap();
    let r = callback(&other_back, &victim_cookie).await;
    assert!(other_back.contains(&victim_state));
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a code for another client"
    );
    assert!(no_session(&r));

    // The provider's own refusal is shown, and signs nobody in.
    let (_, cookie) = start_sign_in(&s).await;
    let r = callback(
        &s.url(&format!(
            "/ui/login/sso/{PROVIDER}/callback?error=access_denied&error_description=no+way&state=x"
        )),
        &cookie,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("no way"));

    // The CLI's device handle is sealed: a forged one, or one for another provider, is refused.
    let api = Api::anonymous(&s);
    let (st, _) = api
        .post(
            &format!("/auth/sso/{PROVIDER}/token"),
            json!({"handle": "Zm9yZ2Vk"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = api.post("/auth/sso/nobody/device", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, started) = api
        .post(&format!("/auth/sso/{PROVIDER}/device"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{started}");
    assert!(
        started.get("device_code").is_none(),
        "the provider's device code stays sealed"
    );
    let (st, v) = api
        .post(
            &format!("/auth/sso/{PROVIDER}/token"),
            json!({"handle": started["handle"]}),
        )
        .await;
    assert_eq!(
        (st, v["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("authorization_pending"))
    );
    drop(idp);
}

/// Access through single sign-on ends with the person, not with an error of the operator nor
/// of a bystander: a person disabled at the provider after signing out loses the API keys and
/// the admin flag their sign-in gave (the provider is still asked, with the token of their last
/// session); a wrong client secret (an operator's mistake) ends nobody's access; one address
/// cannot spend the device sign-in's budget for everyone; a look-alike group name is refused.
#[tokio::test]
async fn sso_access_ends_with_the_person_and_not_with_an_operators_error() {
    use crate::support::oidc::{CLIENT_SECRET, PROVIDER, console_sign_in, sso_server};
    let (mut s, idp) = sso_server(&[]);
    // carol (an admin through the provider's admin group) makes a key, signs out, and is
    // disabled at the provider.
    let carol = console_sign_in(&s, "carol", "pw-carol").await;
    let c = Api::basic(&s, "iamrefresh", &carol.session);
    let key = c
        .ok(
            "POST",
            "/apikeys",
            Some(json!({"name": "ci", "expiresIn": "30d"})),
            StatusCode::CREATED,
        )
        .await["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let k = Api::basic(&s, "carol", &key);
    assert_eq!(
        k.ok("GET", "/auth/whoami", None, StatusCode::OK).await["admin"],
        true
    );
    Api::anonymous(&s)
        .ok(
            "POST",
            "/auth/logout",
            Some(json!({"refresh_token": carol.session})),
            StatusCode::NO_CONTENT,
        )
        .await;
    // A moment for the sign-out to reach the provider readings, then the provider says no.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        k.get("/auth/whoami").await.0,
        StatusCode::OK,
        "the key outlives the session"
    );
    idp.set_user("carol", json!({"disabled": true})).await;
    within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || async {
        k.get("/auth/whoami").await.0
    })
    .await;

    // alice signs in; then the operator's client secret goes wrong: the provider answers
    // invalid_client to every reading, which is nobody's refusal.
    let alice = console_sign_in(&s, "alice", "pw-alice").await;
    let dir = s.data_dir.parent().unwrap().to_owned();
    std::fs::write(dir.join("client-secret"), "a-wrong-secret-0123456789").unwrap();
    s.terminate();
    s.restart();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let a = Api::basic(&s, "iamrefresh", &alice.session);
    assert_eq!(
        a.get("/auth/whoami").await.0,
        StatusCode::OK,
        "a wrong client secret ends nobody's session"
    );
    assert!(
        s.log_text().contains("invalid_client"),
        "the operator is told why"
    );
    std::fs::write(dir.join("client-secret"), CLIENT_SECRET).unwrap();

    // One address spends its own budget of device sign-ins, not everyone's.
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let flood = from("127.0.0.7");
    let mut limited = None;
    for _ in 0..40 {
        let r = flood
            .post(s.url(&format!("/api/v1/auth/sso/{PROVIDER}/device")))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert!(r.status().is_success() || r.status() == StatusCode::SERVICE_UNAVAILABLE);
    }
    let limited = limited.expect("one address is limited");
    assert_eq!(limited.headers()["retry-after"], "60");
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("single sign-on requests")
    );
    let other = from("127.0.0.8")
        .post(s.url(&format!("/api/v1/auth/sso/{PROVIDER}/device")))
        .send()
        .await
        .unwrap();
    assert_ne!(
        other.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "another address is served"
    );
    // Nor can the console's callback be used to reach the provider past the budget: an
    // address that spent it gets 429 before any code goes to the provider.
    let r = flood
        .get(s.url(&format!("/ui/login/sso/{PROVIDER}")))
        .send()
        .await
        .unwrap();
    let state = r.headers()["location"]
        .to_str()
        .unwrap()
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let cookie = crate::support::oidc::set_cookie(&r, "berth_sso").unwrap();
    let r = flood
        .get(s.url(&format!(
            "/ui/login/sso/{PROVIDER}/callback?state={state}&code=junk"
        )))
        .header("cookie", format!("berth_sso={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // A group name that looks like another is refused.
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    for lookalike in ["group/dev\u{a0}", "group/dev ", "group/ dev"] {
        let (st, v) = admin
            .put(
                "/orgs/acme/bindings/x",
                json!({"role": "Reader", "subject": lookalike}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{lookalike:?}: {v}");
    }
}

/// A built-in role has no row: deleting it once deleted every binding to it (the Manager's own
/// too) and answered 404 (found by the API fuzzing). Now 409, and nothing is deleted.
#[tokio::test]
async fn a_built_in_role_cannot_be_deleted_and_its_bindings_stay() {
    let s = Server::start();
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "rolebug"})),
            StatusCode::CREATED,
        )
        .await;
    for who in ["mona", "rita"] {
        user_session(&s, who, &format!("{who}-password-0123")).await;
        admin
            .ok(
                "PUT",
                &format!("/orgs/rolebug/members/{who}"),
                Some(json!({"role": "member"})),
                StatusCode::OK,
            )
            .await;
    }
    for (b, role, who) in [("m", "Manager", "mona"), ("r", "Reader", "rita")] {
        admin
            .ok(
                "PUT",
                &format!("/orgs/rolebug/bindings/{b}"),
                Some(json!({"role": role, "subject": format!("user/{who}")})),
                StatusCode::CREATED,
            )
            .await;
    }
    let manager = Api::basic(&s, "mona", "mona-password-0123");
    for role in ["Reader", "Writer", "Manager"] {
        for caller in [&manager, &admin] {
            let (st, v) = caller.delete(&format!("/orgs/rolebug/roles/{role}")).await;
            assert_eq!(st, StatusCode::CONFLICT, "{role}: {v}");
        }
    }
    // A role that does not exist: 404, and nothing else changes either.
    let (st, _) = admin.delete("/orgs/rolebug/roles/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let v = admin
        .ok("GET", "/orgs/rolebug/bindings", None, StatusCode::OK)
        .await;
    let names: Vec<&str> = v["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert!(names.contains(&"m") && names.contains(&"r"), "{v}");
    // The Manager still manages.
    manager
        .ok("GET", "/orgs/rolebug/robots", None, StatusCode::OK)
        .await;
}

/// Bodies that are not JSON objects are refused (an array filled fields by position), and the
/// API's own refusals of a query, a path or a body size are its JSON error body (found by the
/// API fuzzing).
#[tokio::test]
async fn the_api_refuses_arrays_and_answers_every_refusal_in_its_error_body() {
    let s = Server::start();
    let admin = Api::admin(&s);
    let (st, v) = admin
        .call("POST", "/orgs", Some(json!(["arrayorg"])), &[])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid");
    let (st, _) = admin.get("/orgs/arrayorg").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "an array made an organization");
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    for (path, status) in [
        ("/orgs/acme/repositories?n=abc", StatusCode::BAD_REQUEST),
        (
            "/orgs/acme/repositories?sort=name&sort=name",
            StatusCode::BAD_REQUEST,
        ),
        ("/orgs/%FF/robots", StatusCode::BAD_REQUEST),
    ] {
        let (st, v) = admin.get(path).await;
        assert_eq!(st, status, "{path}");
        assert!(v["error"]["message"].is_string(), "{path}: {v}");
    }
    let big = json!({"name": "x".repeat(3 << 20)});
    let (st, v) = admin.call("POST", "/orgs", Some(big), &[]).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "too_large", "{v}");
    let big = json!({"username": "x".repeat(100_000), "password": "p"});
    let (st, v) = Api::anonymous(&s)
        .call("POST", "/auth/login", Some(big), &[])
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Expiries a calendar cannot print, and ones over before they start, are refused.
    for e in ["99999999999y", "1000001d", "999ms", "0s"] {
        let (st, v) = admin
            .post("/apikeys", json!({"name": "far", "expiresIn": e}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}: {v}");
    }
}

/// An anonymous `GET /token`; the registry token it gives.
async fn anonymous_bearer(s: &Server, scope: &str) -> String {
    token_from(&anonymous_client(), s, scope).await
}

/// Pull that came only from a namespace's publicness ends when the namespace turns private:
/// the tokens of anonymous callers and of other organizations' users stop within the
/// revocation bound, while a member's token, whose pull does not depend on publicness, goes on.
/// A later public period gives new tokens; the old ones stay dead.
#[tokio::test]
async fn tokens_pulled_through_publicness_end_when_the_namespace_turns_private() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    user_session(s, "bob", "bob-password-1").await;
    let public = |p: bool| {
        alice.ok(
            "PATCH",
            "/namespaces/acme",
            Some(json!({"public": p})),
            StatusCode::OK,
        )
    };
    // Private: an anonymous caller gets a token that grants nothing.
    let nothing = anonymous_bearer(s, "repository:acme/app:pull").await;
    assert_eq!(
        pull_with_bearer(s, &nothing, "acme/app").await,
        StatusCode::FORBIDDEN
    );
    public(true).await;
    let anon = anonymous_bearer(s, "repository:acme/app:pull").await;
    let bob = bearer_for(s, "bob", "bob-password-1", "acme/app").await;
    let (id, secret) = &w.robot_token;
    let member = bearer_for(s, id, secret, "acme/app").await;
    for jwt in [&anon, &bob, &member] {
        assert_eq!(pull_with_bearer(s, jwt, "acme/app").await, StatusCode::OK);
    }
    public(false).await;
    // Content pushed after the switch is not reachable through the old tokens either.
    push_image(
        &basic_client("alice", "alice-password-1"),
        s,
        "acme/app",
        "v1",
        2,
    )
    .await;
    for jwt in [&anon, &bob] {
        within(REVOCATION_BOUND, StatusCode::UNAUTHORIZED, || {
            pull_with_bearer(s, jwt, "acme/app")
        })
        .await;
    }
    assert_eq!(
        pull_with_bearer(s, &member, "acme/app").await,
        StatusCode::OK
    );
    // Public again: new tokens pull, the old ones do not come back.
    public(true).await;
    let fresh = anonymous_bearer(s, "repository:acme/app:pull").await;
    assert_eq!(
        pull_with_bearer(s, &fresh, "acme/app").await,
        StatusCode::OK
    );
    for jwt in [&anon, &bob] {
        assert_eq!(
            pull_with_bearer(s, jwt, "acme/app").await,
            StatusCode::UNAUTHORIZED
        );
    }
}

/// Requests kept in flight for free (a body sent a byte at a time) from a few addresses, each
/// at its cap, fill every slot, and they reconnect as fast as they can: a client from another
/// address still gets in, each newcomer taking a slow connection of the address holding the
/// most, so the few share what they hold with everyone else.
#[tokio::test]
async fn a_few_addresses_keeping_requests_in_flight_cannot_keep_clients_out() {
    use tokio::io::AsyncWriteExt as _;
    let s = Server::start_args(&["--max-connections", "64"]);
    let mut held = Vec::new();
    for i in 4..8 {
        for _ in 0..16 {
            let mut c = raw_from(&s, &format!("127.0.0.{i}")).await;
            c.write_all(UNFINISHED_BODY).await.unwrap();
            held.push((i, c));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, c) in &mut held {
        assert!(
            !closed_in(c, Duration::from_millis(10)).await,
            "refused at its cap"
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (_, c) in &mut held {
                    let _ = c.write_all(b"x").await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            held
        })
    };
    // Past the time a busy connection is judged by what it moves (2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // And they reconnect as fast as they can, to take any place that frees.
    let storm = {
        let (stop, host) = (stop.clone(), s.host.clone());
        tokio::spawn(async move {
            let mut more = Vec::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(format!("127.0.0.{}:0", 4 + n % 4).parse().unwrap())
                    .unwrap();
                if let Ok(mut c) = sock.connect(host.parse().unwrap()).await {
                    let _ = c.write_all(UNFINISHED_BODY).await;
                    more.push(c);
                }
                n += 1;
                if more.len() > 2000 {
                    more.drain(..1000);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let kept = anonymous_client();
    for _ in 0..20 {
        let start = Instant::now();
        for c in [&fresh, &kept] {
            // A kept connection the server closed as it was reused is retried once, as HTTP
            // clients do for an idempotent request.
            let r = match c.get(s.url("/healthz")).send().await {
                Ok(r) => r,
                Err(_) => c.get(s.url("/healthz")).send().await.unwrap(),
            };
            assert_eq!(r.status(), StatusCode::OK);
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    storm.await.unwrap();
    let mut held = dripper.await.unwrap();
    let mut lost = [0; 8];
    for (i, c) in &mut held {
        if closed_in(c, Duration::from_millis(10)).await {
            lost[*i] += 1;
        }
    }
    // The places the clients took came from the attackers' slow connections (which of
    // them is the admission unit tests' matter: the storm refills each address meanwhile).
    assert!(lost.iter().sum::<i32>() >= 1, "{lost:?}");
}

/// Bodies of every route, not only uploads', are held to the minimum rate: a token request, an
/// API call and a manifest sent a byte at a time are answered with an error within their first
/// window (5 s), not kept in flight for as long as a byte comes each minute.
#[tokio::test]
async fn small_bodies_sent_a_byte_at_a_time_are_cut_within_seconds() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = server_with_acme(&[]).await;
    let auth = admin_basic();
    let heads = [
        "POST /token HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
            .to_owned(),
        format!(
            "POST /api/v1/orgs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ),
        format!(
            "PUT /v2/acme/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
             Content-Length: 1000\r\n\r\n"
        ),
    ];
    let start = Instant::now();
    let mut clients = Vec::new();
    for head in heads {
        let c = raw_from(&s, "127.0.0.2").await;
        let (mut r, mut w) = c.into_split();
        w.write_all(head.as_bytes()).await.unwrap();
        let dripping = tokio::spawn(async move {
            for _ in 0..40 {
                if w.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        clients.push(tokio::spawn(async move {
            let mut head = vec![0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(9), r.read(&mut head))
                .await
                .map_or(0, |r| r.unwrap_or(0));
            dripping.abort();
            (
                String::from_utf8_lossy(&head[..n]).into_owned(),
                start.elapsed(),
            )
        }));
    }
    for c in clients {
        let (head, after) = c.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 4"), "{head:?}");
        assert!(after < Duration::from_secs(8), "{after:?}");
    }
    // A body that comes at once is served as ever.
    Api::admin(&s)
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "other"})),
            StatusCode::CREATED,
        )
        .await;
}

/// A server started with `args` and an organization `acme` made by the admin.
async fn server_with_acme(args: &[&str]) -> Server {
    let s = Server::start_args(args);
    Api::admin(&s)
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    s
}

/// The admin's Basic credentials, encoded for a raw request's `Authorization` header.
fn admin_basic() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"))
}

/// A new upload session in `acme/app`: its `Location`.
async fn upload_session(c: &reqwest::Client, s: &Server) -> String {
    let r = c
        .post(s.url("/v2/acme/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// Upload memory is one bounded budget (`--upload-memory`), one address at most a quarter of
/// it, taken as bodies' bytes arrive: uploads announced large that send nothing hold nothing
/// and are cut within 5 s; a writer that sends bytes over many uploads from one address holds at
/// most its share, the rest waiting unread; pushes from another address go on at once; when the
/// writer goes away, every reservation comes back.
#[tokio::test]
async fn upload_memory_is_bounded_and_one_address_cannot_take_it() {
    use tokio::io::AsyncWriteExt as _;
    let s = server_with_acme(&["--upload-memory", "40MiB"]).await;
    let alice = basic_client("admin", ADMIN_PASSWORD);
    let free = |s: &Server| {
        let s = s.url("/metrics");
        async move {
            let text = client().get(s).send().await.unwrap().text().await.unwrap();
            let read = |p: &str| -> i64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(p))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (
                read("berth_upload_memory_free_bytes "),
                read("berth_uploads_in_progress "),
            )
        }
    };
    assert_eq!(free(&s).await, (40 << 20, 0));
    // Sixteen upload sessions, each PATCHed from 127.0.0.2 with 64 MiB announced: eight send
    // 64 KiB, eight nothing.
    let auth = admin_basic();
    let mut writers = Vec::new();
    let mut silent = Vec::new();
    let silent_since = Instant::now();
    let patch = |location: String| {
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            64 << 20
        )
    };
    for i in 0..16 {
        let location = upload_session(&alice, &s).await;
        let mut c = raw_from(&s, "127.0.0.2").await;
        c.write_all(patch(location).as_bytes()).await.unwrap();
        if i < 8 {
            let _ = c.write_all(&random_bytes(64 << 10, 7)).await;
            writers.push(c);
        } else {
            silent.push(c);
        }
    }
    // And one trickles a byte every 250 ms.
    let trickling = {
        let location = upload_session(&alice, &s).await;
        let mut c = raw_from(&s, "127.0.0.2").await;
        c.write_all(patch(location).as_bytes()).await.unwrap();
        let (r, mut w) = c.into_split();
        tokio::spawn(async move {
            for _ in 0..200 {
                if w.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        r
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What they hold is what they sent (at most twice), not what they announced.
    let (left, streaming) = free(&s).await;
    assert_eq!(streaming, 17);
    let held = (40 << 20) - left;
    assert!((8 * (64 << 10)..=8 * (128 << 10)).contains(&held), "{held}");
    // The writers send 3 MiB more each: the address holds at most its quarter (10 MiB of
    // what their pipelines can hold, 2.25 MiB each on files, 17.25 on S3), the rest waits.
    let (mut readers, mut sending) = (Vec::new(), Vec::new());
    for c in writers {
        let (r, mut w) = c.into_split();
        readers.push(r);
        sending.push(tokio::spawn(async move {
            let _ = w.write_all(&random_bytes(3 << 20, 8)).await;
            w
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = (40 << 20) - free(&s).await.0;
    assert!(((6 << 20)..=(10 << 20)).contains(&held), "{held}");
    // Another address pushes at once, monolithic and in chunks.
    let start = Instant::now();
    let d = push_blob(&alice, &s, "acme/app", &random_bytes(4096, 8)).await;
    assert!(d.starts_with("sha256:"));
    let bytes = random_bytes(3 << 20, 9);
    let mut location = upload_session(&alice, &s).await;
    for (i, chunk) in bytes.chunks(1 << 20).enumerate() {
        let from = i << 20;
        let r = alice
            .patch(s.url(&location))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{from}-{}", from + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        location = r.headers()["location"].to_str().unwrap().to_owned();
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = alice
        .put(s.url(&format!("{location}{sep}digest={}", sha256(&bytes))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The silent ones and the trickling one were cut within their first window (5 s).
    use tokio::io::AsyncReadExt as _;
    let answer = |mut r: Box<dyn tokio::io::AsyncRead + Send + Unpin>| {
        tokio::spawn(async move {
            let mut head = vec![0u8; 1024];
            let start = Instant::now();
            let n = tokio::time::timeout(Duration::from_secs(80), r.read(&mut head))
                .await
                .map_or(0, |r| r.unwrap_or(0));
            (
                String::from_utf8_lossy(&head[..n]).into_owned(),
                start.elapsed(),
            )
        })
    };
    let silent = silent
        .into_iter()
        .map(|c| -> Box<dyn tokio::io::AsyncRead + Send + Unpin> { Box::new(c) })
        .chain([Box::new(trickling) as Box<dyn tokio::io::AsyncRead + Send + Unpin>]);
    for c in silent {
        let (head, _) = answer(c).await.unwrap();
        assert!(
            head.starts_with("HTTP/1.1 400") && head.contains("slower than"),
            "{head}"
        );
    }
    assert!(
        silent_since.elapsed() < Duration::from_secs(10),
        "{:?}",
        silent_since.elapsed()
    );
    // Those waiting for room are told to retry within seconds (not left to the idle timeout),
    // and those streaming that go quiet are ended by the minimum rate.
    let answers: Vec<_> = readers.into_iter().map(|r| answer(Box::new(r))).collect();
    let mut told = (0, 0);
    for a in answers {
        let (head, after) = a.await.unwrap();
        if head.starts_with("HTTP/1.1 429") {
            assert!(
                head.to_ascii_lowercase().contains("retry-after: "),
                "{head}"
            );
            // Each step of a reservation waits at most 10 s (under the idle timeout's 60 s,
            // with room for a loaded machine).
            assert!(after < Duration::from_secs(50), "{after:?}");
            told.0 += 1;
        } else {
            // A stream's window (30 s after the first 5 s) is held open while the server waits
            // for room for what it sent, so on a loaded machine its end comes later; what ends
            // it is the rate (the answer says so), not the idle timeout (which would answer
            // nothing).
            assert!(
                head.starts_with("HTTP/1.1 400"),
                "after {after:?}: {head:?}"
            );
            assert!(head.contains("slower than"), "{head}");
            assert!(after < Duration::from_secs(75), "{after:?}");
            told.1 += 1;
        }
    }
    assert!(told.0 >= 1 && told.1 >= 1, "{told:?}");
    drop(sending);
    // A chunked body past the length its Content-Range announced is refused at once.
    let location = upload_session(&alice, &s).await;
    let mut c = raw_from(&s, "127.0.0.2").await;
    c.write_all(
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
             Content-Range: 0-0\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let _ = c.write_all(&random_bytes(0x10000, 11)).await;
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut head))
        .await
        .expect("no answer to a body longer than announced")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.starts_with("HTTP/1.1 400") && head.contains("longer than announced"),
        "{head}"
    );
    drop(c);
    // Every reservation comes back.
    let t = Instant::now();
    while free(&s).await != (40 << 20, 0) {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", free(&s).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And so does the address's share: it pushes a blob as large as a whole reservation.
    let again = basic_client_from("admin", ADMIN_PASSWORD, "127.0.0.2");
    tokio::time::timeout(
        Duration::from_secs(10),
        push_blob(&again, &s, "acme/app", &random_bytes(3 << 20, 10)),
    )
    .await
    .expect("the address's share did not come back");
}

/// Upload bodies that burst and then drip give back what the burst made them take: on files
/// a body holds about twice what came in the last seconds, so a few addresses dripping just
/// above the minimum rate cannot keep every push waiting (and told to retry).
#[tokio::test]
async fn dripping_uploads_give_back_what_a_burst_took() {
    use tokio::io::AsyncWriteExt as _;
    if std::env::var("BERTH_TEST_S3_ENDPOINT").is_ok_and(|v| !v.is_empty()) {
        // On S3 what came stays in memory until a part is whole: it is rightly held.
        return;
    }
    let s = server_with_acme(&["--upload-memory", "8MiB"]).await;
    let free = || async { metric(&s, "berth_upload_memory_free_bytes ").await };
    let auth = admin_basic();
    let mut drips = Vec::new();
    // One body from each of four addresses, each burst as large as its share (a quarter):
    // nobody waits, and all of it is taken.
    for i in 0..4 {
        let mut c = raw_from(&s, &format!("127.0.0.{}", 3 + i)).await;
        let head = format!(
            "POST /v2/acme/app/blobs/uploads/?digest={} HTTP/1.1\r\nHost: x\r\n\
             Authorization: Basic {auth}\r\nContent-Length: {}\r\n\r\n",
            sha256(b"never whole"),
            64 << 20
        );
        c.write_all(head.as_bytes()).await.unwrap();
        drips.push(tokio::spawn(async move {
            let _ = c.write_all(&random_bytes(2 << 20, 41)).await;
            for _ in 0..30 {
                if c.write_all(&[7u8; 20 << 10]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            c
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_burst = free().await;
    assert!(after_burst <= 3 << 19, "{after_burst}");
    // Ten seconds of dripping at 20 KiB/s: each holds about 400 KiB.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let dripping = free().await;
    assert!(
        dripping >= 4 << 20,
        "{after_burst} free after the burst, {dripping} now"
    );
    let start = Instant::now();
    let other = basic_client_from("admin", ADMIN_PASSWORD, "127.0.0.200");
    push_blob(&other, &s, "acme/app", &random_bytes(1 << 20, 42)).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    for d in drips {
        d.abort();
    }
}

/// A namespace deleted and created again at once is not born with the revoked key of the one
/// before: its members' and anonymous tokens work, and the old one's tokens stay dead.
#[tokio::test]
async fn a_namespace_created_again_at_once_is_not_born_revoked() {
    let w = world().await;
    let (s, alice) = (&w.s, &w.alice);
    let create = || {
        alice.ok(
            "POST",
            "/orgs/acme/namespaces",
            Some(json!({"name": "again", "public": true})),
            StatusCode::CREATED,
        )
    };
    create().await;
    let writer = basic_client("alice", "alice-password-1");
    push_image(&writer, s, "again/app", "v1", 3).await;
    let old = bearer_for(s, "alice", "alice-password-1", "again/app").await;
    assert_eq!(pull_with_bearer(s, &old, "again/app").await, StatusCode::OK);
    for _ in 0..3 {
        alice
            .ok("DELETE", "/namespaces/again", None, StatusCode::NO_CONTENT)
            .await;
        create().await;
    }
    push_image(&writer, s, "again/app", "v1", 4).await;
    let member = bearer_for(s, "alice", "alice-password-1", "again/app").await;
    let anon = anonymous_bearer(s, "repository:again/app:pull").await;
    // Past a read of the revocation log by the node.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for jwt in [&member, &anon] {
        assert_eq!(pull_with_bearer(s, jwt, "again/app").await, StatusCode::OK);
    }
    assert_eq!(
        pull_with_bearer(s, &old, "again/app").await,
        StatusCode::UNAUTHORIZED
    );
}

/// Uploads that stall hold no thread: 600 PATCHes from three addresses, each with a small honest
/// `Content-Length` and a few bytes sent, leave the node answering tokens, logins and the API
/// at once (each upload used to park two threads of the blocking pool, whose 512 everything
/// else needs).
#[tokio::test]
async fn stalled_uploads_hold_no_thread_and_the_node_keeps_answering() {
    use tokio::io::AsyncWriteExt as _;
    let s = server_with_acme(&[]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let auth = admin_basic();
    let mut stalled = Vec::new();
    for i in 0..600 {
        let location = upload_session(&admin, &s).await;
        let mut c = raw_from(&s, &format!("127.0.0.{}", 2 + i % 3)).await;
        c.write_all(
            format!(
                "PATCH {location} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("berth_uploads_in_progress 600"),
        "not all stalled uploads stream"
    );
    let start = Instant::now();
    let r = basic_client("admin", ADMIN_PASSWORD)
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a token while uploads stall");
    assert_eq!(r.status(), StatusCode::OK);
    Api::admin(&s)
        .ok("GET", "/orgs/acme", None, StatusCode::OK)
        .await;
    user_session(&s, "walt", "walt-password-1").await;
    push_blob(&admin, &s, "acme/app", &random_bytes(100_000, 12)).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // A short body that does not come is cut within its short first window (5 s and its time
    // at 16 KiB/s), not held 30 s.
    let t = Instant::now();
    loop {
        let text = client()
            .get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("berth_uploads_in_progress 0") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "stalled short bodies still held"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(stalled);
}

/// Pulls whose clients stop reading hold at most the download memory (`--download-memory`),
/// one address at most a quarter of it: the chunks read for them wait for room, and a pull from
/// another address goes on at once; when they go away, all of it comes back.
#[tokio::test]
async fn pulls_that_stop_reading_hold_at_most_their_addresses_share_of_download_memory() {
    use tokio::io::AsyncWriteExt as _;
    let s = server_with_acme(&["--download-memory", "8MiB"]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let big = random_bytes(64 << 20, 21);
    let d = push_blob(&admin, &s, "acme/app", &big).await;
    let free = || async { metric(&s, "berth_download_memory_free_bytes ").await };
    assert_eq!(free().await, 8 << 20);
    let auth = admin_basic();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut c = sock.connect(s.host.parse().unwrap()).await.unwrap();
        c.write_all(
            format!(
                "GET /v2/acme/app/blobs/{d} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(c);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The address holds its quarter (2 MiB), give or take the chunk being handed on.
    let held = (8u64 << 20) - free().await;
    assert!(
        (1 << 20..=(2 << 20) + (256 << 10)).contains(&held),
        "{held}"
    );
    // Another address pulls a blob whole, at once.
    let small = random_bytes(3 << 20, 22);
    let sd = push_blob(&admin, &s, "acme/app", &small).await;
    pulled_whole(&admin, &s, &sd, &small, Duration::from_secs(5)).await;
    drop(stalled);
    metric_becomes(&s, "berth_download_memory_free_bytes ", 8 << 20).await;
}

/// A server with 8 MiB of download memory, and in `acme/app` a blob of `pinned` bytes for
/// attackers to pin (seed `a`: its digest) and one of `pulled` bytes for a newcomer to pull
/// (seed `b`: its bytes and digest).
async fn pinned_and_pulled(
    pinned: usize,
    a: u64,
    pulled: usize,
    b: u64,
) -> (Arc<Server>, String, Vec<u8>, String) {
    let s = Arc::new(server_with_acme(&["--download-memory", "8MiB"]).await);
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(pinned, a)).await;
    let small = random_bytes(pulled, b);
    let sd = push_blob(&admin, &s, "acme/app", &small).await;
    (s, d, small, sd)
}

/// Whether this run's stalled answers hold too little to fill a download budget: from a bucket
/// an answer holds only the small frames its GET has brought
/// (`scale::stalled_pulls_from_a_bucket_hold_a_few_chunks_each`), so the tests that need the
/// files' chunks to fill the budget end early there.
fn stalled_answers_hold_little() -> bool {
    std::env::var("BERTH_TEST_S3_ENDPOINT").is_ok_and(|v| !v.is_empty())
}

/// Once the download memory is all taken, a newcomer (from 127.0.0.6) pulls blob `d` of
/// `acme/app` whole within `limit`.
async fn newcomer_pulls_once_memory_is_full(s: &Server, d: &str, want: &[u8], limit: Duration) {
    metric_becomes(s, "berth_download_memory_free_bytes ", 0).await;
    let newcomer = basic_client_from("admin", ADMIN_PASSWORD, "127.0.0.6");
    pulled_whole(&newcomer, s, d, want, limit).await;
}

/// An HTTP/2 connection from `source` with `n` pulls of blob `d` whose answers are never read
/// (each stream's window stays shut after its first 64 KiB, the connection's is wide, so each
/// answer holds the 64 KiB chunk its window stopped); the task driving it ends when the server
/// closes it.
async fn stalled_h2_pulls(
    s: &Server,
    source: &str,
    d: &str,
    n: usize,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<bool>,
    Vec<h2::client::ResponseFuture>,
) {
    let (mut h2c, conn) = h2_windows(s, source, 64 << 10, Some(16 << 20)).await;
    let driver = tokio::spawn(conn);
    let mut answers = Vec::new();
    for _ in 0..n {
        h2c = h2c.ready().await.unwrap();
        answers.push(h2c.send_request(blob_get(s, d), true).unwrap().0);
    }
    (h2c, driver, answers)
}

/// Pulls blob `d` of `acme/app` with `c` and checks it is `want`, within `limit`.
async fn pulled_whole(c: &reqwest::Client, s: &Server, d: &str, want: &[u8], limit: Duration) {
    let start = Instant::now();
    let r = c
        .get(s.url(&format!("/v2/acme/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), want);
    assert!(start.elapsed() < limit, "{:?}", start.elapsed());
}

/// Waits (at most 5 s) until the metric `prefix` reads `want`.
async fn metric_becomes(s: &Server, prefix: &str, want: u64) {
    metric_until(s, prefix, |v| v == want, Duration::from_secs(5)).await;
}

/// Waits (at most `within`) until the metric `prefix` reads a value `ok` takes.
async fn metric_until(s: &Server, prefix: &str, ok: impl Fn(u64) -> bool, within: Duration) {
    let t = Instant::now();
    loop {
        let v = metric(s, prefix).await;
        if ok(v) {
            return;
        }
        assert!(t.elapsed() < within, "{prefix}{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP/2 connection from `source` ready for a request: `kept` if it still takes them (the
/// server sends one that has had too many streams reset away), else a new one.
async fn h2_ready(
    s: &Server,
    source: &str,
    kept: Option<h2::client::SendRequest<bytes::Bytes>>,
) -> h2::client::SendRequest<bytes::Bytes> {
    if let Some(c) = kept
        && let Ok(c) = c.ready().await
    {
        return c;
    }
    let tcp = raw_from(s, source).await;
    let (c, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    c.ready().await.unwrap()
}

/// An HTTP/2 connection from `source` whose streams open with `window` bytes and the
/// connection with `conn_window` (HTTP/2's 64 KiB where `None`), and the future that drives
/// it, which ends (true if with an error) when the server closes it.
async fn h2_windows(
    s: &Server,
    source: &str,
    window: u32,
    conn_window: Option<u32>,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    impl std::future::Future<Output = bool> + Send + 'static,
) {
    let tcp = raw_from(s, source).await;
    let mut b = h2::client::Builder::new();
    b.initial_window_size(window);
    if let Some(w) = conn_window {
        b.initial_connection_window_size(w);
    }
    let (h2c, conn) = b.handshake::<_, bytes::Bytes>(tcp).await.unwrap();
    (h2c, async move { conn.await.is_err() })
}

/// An HTTP/2 `GET /v2/` with no credential (a 401).
fn v2_get(s: &Server) -> http::Request<()> {
    http::Request::get(format!("http://{}/v2/", s.host))
        .body(())
        .unwrap()
}

/// An HTTP/2 request for blob `d` of `acme/app`, as the admin.
fn blob_get(s: &Server, d: &str) -> http::Request<()> {
    http::Request::get(format!("http://{}/v2/acme/app/blobs/{d}", s.host))
        .header("authorization", format!("Basic {}", admin_basic()))
        .body(())
        .unwrap()
}

/// An answer whose client never reads past HTTP/2's first window holds one small chunk, not
/// two large ones (eight such streams hold well under 1 MiB), and one that drains ramps up to
/// whole chunks and gets its blob at once.
#[tokio::test]
async fn pulls_that_never_drain_hold_one_small_chunk_each() {
    let s = server_with_acme(&["--download-memory", "8MiB"]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let blob = random_bytes(4 << 20, 26);
    let d = push_blob(&admin, &s, "acme/app", &blob).await;
    let _stalled = stalled_h2_pulls(&s, "127.0.0.2", &d, 8).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // (From a bucket the chunks are what its answer's frames bring, smaller still.)
    let held = (8u64 << 20) - metric(&s, "berth_download_memory_free_bytes ").await;
    assert!(held > 0 && held <= 1 << 20, "{held}");
    pulled_whole(&admin, &s, &d, &blob, Duration::from_secs(5)).await;
}

/// Pulls abandoned while they wait for download memory (HTTP/2 streams reset at once, their
/// address's share held) leave nothing behind: their reads ahead stop with them, so no blob
/// file stays open and nothing waits on for memory.
#[tokio::test]
async fn pulls_reset_while_waiting_for_memory_leave_no_file_open() {
    let s = server_with_acme(&["--download-memory", "8MiB"]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(4 << 20, 25)).await;
    let _pinned = stalled_h2_pulls(&s, "127.0.0.2", &d, 16).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = open_fds(&s);
    let mut c = None;
    for _ in 0..300 {
        let mut h = h2_ready(&s, "127.0.0.2", c.take()).await;
        if let Ok((answer, _)) = h.send_request(blob_get(&s, &d), true) {
            // Reset once the server has begun it (its reads ahead wait for the share).
            tokio::time::sleep(Duration::from_millis(2)).await;
            drop(answer);
        }
        c = Some(h);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = open_fds(&s);
    assert!(
        after < before + 40,
        "{before} file descriptors before, {after} after"
    );
}

/// Pulls over HTTP/2 whose windows never open, from four addresses each holding its share (32
/// streams each), take all of the download memory; a pull from a fifth address does not wait for them to give up
/// (30 s, then its answer broken off): when it has waited, the connection holding memory
/// longest unread, of the address holding the most, is closed, and it is answered whole within
/// seconds.
#[tokio::test]
async fn http2_pulls_that_never_read_give_their_memory_back_when_others_need_it() {
    if stalled_answers_hold_little() {
        return;
    }
    let (s, d, small, sd) = pinned_and_pulled(4 << 20, 23, 3 << 20, 24).await;
    // Each holds a 64 KiB chunk: two connections of 16 streams take an address's share.
    let mut attackers = Vec::new();
    for i in 2..6 {
        for _ in 0..2 {
            attackers.push(stalled_h2_pulls(&s, &format!("127.0.0.{i}"), &d, 16).await);
        }
    }
    newcomer_pulls_once_memory_is_full(&s, &sd, &small, Duration::from_secs(12)).await;
    assert!(metric(&s, "berth_download_memory_reclaimed_total ").await >= 1);
    // Some of the attackers' connections were closed.
    let mut closed = 0;
    for (_, driver, _) in &mut attackers {
        if tokio::time::timeout(Duration::from_millis(10), driver)
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no connection was closed");
    drop(attackers);
    metric_becomes(&s, "berth_download_memory_free_bytes ", 8 << 20).await;
}

/// Streams that never read, opened again and again from four addresses (each connection
/// dropped and opened anew every 1.5 s, so none of them is ever old), keep the download memory
/// full; a pull from a fifth address takes room as it comes back, and once begun it goes on
/// with the memory of each chunk it wrote: it never queues behind them again, and 32 MiB come
/// whole within seconds.
#[tokio::test]
async fn a_pull_that_has_begun_goes_on_while_streams_opened_again_and_again_take_the_memory() {
    if stalled_answers_hold_little() {
        return;
    }
    let (s, d, big, bd) = pinned_and_pulled(4 << 20, 27, 32 << 20, 28).await;
    let mut attackers = Vec::new();
    for i in 2..6 {
        let (s, d) = (Arc::clone(&s), d.clone());
        attackers.push(tokio::spawn(async move {
            let source = format!("127.0.0.{i}");
            loop {
                let a = stalled_h2_pulls(&s, &source, &d, 16).await;
                let b = stalled_h2_pulls(&s, &source, &d, 16).await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                drop((a, b));
            }
        }));
    }
    newcomer_pulls_once_memory_is_full(&s, &bd, &big, Duration::from_secs(5)).await;
    for a in attackers {
        a.abort();
    }
}

/// Streams that never read, spread thin over many addresses (one each, opened again and
/// again), hold the download memory while a client reads a large blob slowly (8 KiB/s) and a
/// newcomer pulls again and again: the newcomer's pulls are answered whole, and the slow
/// reader is never closed, though its address holds as much as any and a chunk takes it
/// longer than 5 s: it writes a piece every two seconds.
#[tokio::test]
async fn a_slow_reader_is_not_closed_for_streams_that_never_read_spread_over_many_addresses() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if stalled_answers_hold_little() {
        return;
    }
    let (s, d, small, sd) = pinned_and_pulled(4 << 20, 29, 3 << 20, 30).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind("127.0.0.40:0".parse().unwrap()).unwrap();
    let mut slow = sock.connect(s.host.parse().unwrap()).await.unwrap();
    let head = format!(
        "GET /v2/acme/app/blobs/{d} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\r\n",
        admin_basic()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        let mut buf = vec![0u8; 2 << 10];
        for _ in 0..48 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            got += slow.read_exact(&mut buf).await.map_err(|e| (got, e))?;
        }
        Ok::<_, (usize, std::io::Error)>(got)
    });
    let attackers = streams_never_read_spread_thin(&s, &d);
    metric_becomes(&s, "berth_download_memory_free_bytes ", 0).await;
    newcomer_pulls_while(&s, &sd, &small, &reader).await;
    for a in attackers {
        a.abort();
    }
    let read = reader.await.unwrap();
    assert!(matches!(read, Ok(n) if n == 96 << 10), "{read:?}");
}

/// Streams that never read, one from each of 130 addresses, each dropped and opened anew
/// every 1.5 s: no stream of theirs is ever old enough to be closed, and one of theirs always
/// waits for what is given back.
fn streams_never_read_spread_thin(s: &Arc<Server>, d: &str) -> Vec<tokio::task::JoinHandle<()>> {
    (100..230)
        .map(|i| {
            let (s, d) = (Arc::clone(s), d.to_owned());
            tokio::spawn(async move {
                let source = format!("127.0.0.{i}");
                loop {
                    let a = stalled_h2_pulls(&s, &source, &d, 1).await;
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    drop(a);
                }
            })
        })
        .collect()
}

/// A newcomer (from 127.0.0.6) pulls blob `d` again and again while `reader` reads, each
/// answered whole within 10 s.
async fn newcomer_pulls_while<T>(
    s: &Server,
    d: &str,
    want: &[u8],
    reader: &tokio::task::JoinHandle<T>,
) {
    let newcomer = basic_client_from("admin", ADMIN_PASSWORD, "127.0.0.6");
    let mut pulls = 0;
    while !reader.is_finished() {
        pulled_whole(&newcomer, s, d, want, Duration::from_secs(10)).await;
        pulls += 1;
    }
    assert!(pulls >= 1);
}

/// An HTTP/2 stream read at 10 KiB/s from its start (240 KiB) is never closed when, after
/// 12 s, streams that never read take the download memory and a newcomer pulls again and
/// again: its chunks are sized to what it drains (20 KiB), so none is held near 10 s, where
/// doubling chunks grown while the memory was free (16, 32, 64, then 128 KiB: 12.8 s) would be.
#[tokio::test]
async fn a_slow_steady_http2_reader_gets_chunks_it_drains_in_seconds() {
    if stalled_answers_hold_little() {
        return;
    }
    let (s, d, small, sd) = pinned_and_pulled(4 << 20, 41, 3 << 20, 42).await;
    let (mut h2c, conn) = h2_windows(&s, "127.0.0.40", 8 << 10, None).await;
    let driver = tokio::spawn(conn);
    h2c = h2c.ready().await.unwrap();
    let answer = h2c.send_request(blob_get(&s, &d), true).unwrap().0;
    let reader = tokio::spawn(async move {
        let mut body = answer.await.unwrap().into_body();
        let mut got = 0usize;
        while got < 240 << 10 {
            match tokio::time::timeout(Duration::from_secs(10), body.data()).await {
                Ok(Some(Ok(piece))) => {
                    got += piece.len();
                    tokio::time::sleep(Duration::from_millis(1000 * piece.len() as u64 / 10240))
                        .await;
                    let _ = body.flow_control().release_capacity(piece.len());
                }
                other => return Err(format!("after {got} bytes: {other:?}")),
            }
        }
        Ok(got)
    });
    // The memory is free while its chunks would grow (doubling, they reach 128 KiB at 11 s);
    // then streams that never read take it and a newcomer waits.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let attackers = streams_never_read_spread_thin(&s, &d);
    // (Full but for less than a piece: the reader's chunks need not be whole KiB multiples
    // of what waiters ask.)
    let free = "berth_download_memory_free_bytes ";
    metric_until(&s, free, |v| v < 16 << 10, Duration::from_secs(5)).await;
    newcomer_pulls_while(&s, &sd, &small, &reader).await;
    for a in attackers {
        a.abort();
    }
    let read = reader.await.unwrap();
    assert!(read.is_ok(), "{read:?}");
    assert!(!driver.is_finished(), "the reader's connection was closed");
}

/// HTTP/2 streams that read a piece at a time (a 16 KiB window opened every second, so none
/// is ever stale and each finishes its chunk, 32 KiB at that rate, every two seconds), from
/// eight addresses, keep the download memory full; a pull from another address is not kept
/// out for it: each chunk such a stream writes goes back to the waiter, whose address holds
/// less, instead of to the stream's next read, and the pull is answered whole within seconds.
#[tokio::test]
async fn streams_read_a_piece_at_a_time_cannot_keep_a_newcomer_out() {
    if stalled_answers_hold_little() {
        return;
    }
    let (s, d, small, sd) = pinned_and_pulled(16 << 20, 32, 3 << 20, 33).await;
    let mut trickles = Vec::new();
    for i in 10..18 {
        for _ in 0..2 {
            let (mut h2c, conn) =
                h2_windows(&s, &format!("127.0.0.{i}"), 16 << 10, Some(4 << 20)).await;
            trickles.push(tokio::spawn(async move {
                let _ = conn.await;
            }));
            for _ in 0..16 {
                h2c = h2c.ready().await.unwrap();
                let answer = h2c.send_request(blob_get(&s, &d), true).unwrap().0;
                trickles.push(tokio::spawn(async move {
                    let Ok(answer) = answer.await else { return };
                    let mut body = answer.into_body();
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match body.data().await {
                            Some(Ok(piece)) => {
                                let _ = body.flow_control().release_capacity(piece.len());
                            }
                            _ => return,
                        }
                    }
                }));
            }
        }
    }
    newcomer_pulls_once_memory_is_full(&s, &sd, &small, Duration::from_secs(10)).await;
    for t in trickles {
        t.abort();
    }
}

/// Thirty-two HTTP/2 streams that take their first 496 KiB at once (so their answers ramp up
/// to whole 256 KiB chunks) and then all read 16 KiB together every 4.5 s (never stale, each
/// chunk taking 72 s to drain and all finishing together), from four addresses, keep the
/// download memory full; a pull from another address is not kept out until the chunks drain: a chunk
/// held past 10 s counts as stale, so the waiter closes the connections holding them, and the
/// trickling streams' next chunks are sized to what they drain (16 KiB), not 256 KiB.
#[tokio::test]
async fn streams_that_trickle_together_cannot_hold_whole_chunks_for_long() {
    if stalled_answers_hold_little() {
        return;
    }
    let (s, d, small, sd) = pinned_and_pulled(16 << 20, 37, 3 << 20, 38).await;
    let start = tokio::time::Instant::now();
    let mut trickles = Vec::new();
    for i in 10..14 {
        let (mut h2c, conn) =
            h2_windows(&s, &format!("127.0.0.{i}"), 496 << 10, Some(64 << 20)).await;
        trickles.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        for _ in 0..8 {
            h2c = h2c.ready().await.unwrap();
            let answer = h2c.send_request(blob_get(&s, &d), true).unwrap().0;
            trickles.push(tokio::spawn(async move {
                let Ok(answer) = answer.await else { return };
                let mut body = answer.into_body();
                // What came and is not yet let in again; 16 KiB of it let in at each tick.
                let (mut unreleased, mut tick) = (0, start + Duration::from_secs(3));
                loop {
                    match tokio::time::timeout_at(tick, body.data()).await {
                        Ok(Some(Ok(piece))) => unreleased += piece.len(),
                        Ok(_) => return,
                        Err(_) => {
                            let n = unreleased.min(16 << 10);
                            let _ = body.flow_control().release_capacity(n);
                            unreleased -= n;
                            tick += Duration::from_millis(4500);
                        }
                    }
                }
            }));
        }
    }
    // Once the streams hold what they ramped up to (less than a chunk free) and trickle, a
    // newcomer pulls.
    tokio::time::sleep_until(start + Duration::from_secs(6)).await;
    let free = metric(&s, "berth_download_memory_free_bytes ").await;
    assert!(free < 64 << 10, "{free} bytes of download memory free");
    let newcomer = basic_client_from("admin", ADMIN_PASSWORD, "127.0.0.6");
    pulled_whole(&newcomer, &s, &sd, &small, Duration::from_secs(20)).await;
    for t in trickles {
        t.abort();
    }
}

/// helper-25's flood: one HTTP/2 stream whose window never opens from each of 200 addresses,
/// asked again as soon as it ends. Each such address holds nothing while it waits, as a
/// newcomer does, so when their first chunks (64 KiB each) filled the download memory a
/// newcomer waited 29 s behind them. A first chunk is one 16 KiB piece, and the node takes
/// no more connections than twice that fits in the memory (8 MiB: 256): the flood cannot
/// fill it, and a newcomer pulls at once.
#[tokio::test]
async fn stalled_streams_from_many_addresses_cannot_fill_the_memory_with_first_chunks() {
    if stalled_answers_hold_little() {
        return;
    }
    let s = Arc::new(server_with_acme(&["--download-memory", "8MiB"]).await);
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(4 << 20, 43)).await;
    let small = random_bytes(3 << 20, 44);
    let sd = push_blob(&admin, &s, "acme/app", &small).await;
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let (s, d) = (Arc::clone(&s), d.clone());
            tokio::spawn(async move {
                let source = format!("127.0.{}.{}", 1 + i / 200, 10 + i % 200);
                loop {
                    let (h2c, conn) = h2_windows(&s, &source, 0, None).await;
                    let _driver = tokio::spawn(conn);
                    let Ok(mut h2c) = h2c.ready().await else {
                        continue;
                    };
                    let Ok((answer, _)) = h2c.send_request(blob_get(&s, &d), true) else {
                        continue;
                    };
                    if let Ok(answer) = answer.await {
                        let _ = answer.into_body().data().await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let free = metric(&s, "berth_download_memory_free_bytes ").await;
    assert!(free >= (8 << 20) - 200 * (16 << 10), "{free}");
    let newcomer = basic_client_from("admin", ADMIN_PASSWORD, "127.0.0.6");
    for _ in 0..3 {
        pulled_whole(&newcomer, &s, &sd, &small, Duration::from_secs(5)).await;
    }
    for f in flood {
        f.abort();
    }
}

/// The node takes no more connections than twice each one's first chunk fits in the download
/// memory (helper-26: with 8 MiB and 1,024 connections, 600 addresses of one stalled stream
/// each still filled it): at 4 MiB it takes 128, 32 from one address, says so at start, and the
/// 140th waiting connection from another address takes the place of an earlier one.
#[tokio::test]
async fn connections_are_capped_to_what_the_download_memory_starts() {
    let s = server_with_acme(&["--download-memory", "4MiB"]).await;
    let log = s.log_text();
    assert!(
        log.contains("max connections lowered to fit the download memory")
            && log.contains("cap=128"),
        "{log}"
    );
    // One address's share is a quarter of the lowered cap (32), not of the configured 1,024
    // (helper-27: one address took every slot).
    let mut one = Vec::new();
    for _ in 0..40 {
        one.push(raw_from(&s, "127.0.8.10").await);
    }
    let refused = "berth_connections_refused_total ";
    metric_until(&s, refused, |v| v >= 8, Duration::from_secs(10)).await;
    drop(one);
    let mut held = Vec::new();
    for i in 0..140 {
        held.push(raw_from(&s, &format!("127.0.{}.{}", 1 + i / 200, 10 + i % 200)).await);
    }
    // (The server admits them as it accepts them: on a loaded machine, a little later.)
    let evicted = "berth_connections_evicted_total ";
    metric_until(&s, evicted, |v| v >= 10, Duration::from_secs(10)).await;
}

/// How many of `n` newcomers, one from each of `net`.10, `net`.11, …, get `want` from `path`
/// (as the admin) within 5 s each.
async fn newcomers_served(s: &Server, net: &str, n: usize, path: &str, want: &[u8]) -> usize {
    let mut served = 0;
    for i in 0..n {
        let newcomer = basic_client_from("admin", ADMIN_PASSWORD, &format!("{net}.{}", 10 + i));
        let r = newcomer
            .get(s.url(path))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = r
            && r.status() == StatusCode::OK
            && r.bytes().await.is_ok_and(|b| b.as_ref() == want)
        {
            served += 1;
        }
    }
    served
}

/// More addresses than slots (80 for 64), each holding one connection with a pull it never
/// reads and connecting again as soon as it is pushed out (helper-26: such clients pushed each
/// other out faster than any connection aged to the 10 s after which it gives way to anyone,
/// and 18 of 39 newcomers were refused): an address whose connection gave way takes no other's
/// place for 30 s, so the churn stops, the stalled connections age, and newcomers from other
/// addresses are served.
#[tokio::test]
async fn clients_pushed_out_cannot_push_others_out_at_once() {
    let s = Arc::new(server_with_acme(&["--max-connections", "64"]).await);
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(1 << 20, 45)).await;
    let small = random_bytes(64 << 10, 46);
    let sd = push_blob(&admin, &s, "acme/app", &small).await;
    drop(admin);
    let churn: Vec<_> = (0..80)
        .map(|i| {
            let (s, d) = (Arc::clone(&s), d.clone());
            tokio::spawn(async move {
                let source = format!("127.0.3.{}", 10 + i);
                loop {
                    let (h2c, conn) = h2_windows(&s, &source, 0, None).await;
                    let driver = tokio::spawn(conn);
                    if let Ok(mut h2c) = h2c.ready().await
                        && let Ok((answer, _)) = h2c.send_request(blob_get(&s, &d), true)
                    {
                        let _answer = answer;
                        let _ = driver.await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(14)).await;
    let path = format!("/v2/acme/app/blobs/{sd}");
    let served = newcomers_served(&s, "127.0.4", 10, &path, &small).await;
    assert!(served >= 9, "{served} of 10 newcomers served");
    for c in churn {
        c.abort();
    }
}

/// One HTTP/2 connection from each of as many addresses as there are slots, each with a request
/// whose answer it never lets through (a window of 0, no credential needed: a 401's body) and a
/// ping every 10 ms, 3.4 KB/s of socket (helper-27: the pings moved the socket, so no connection
/// ever looked gone, and every newcomer was refused). A request's progress is its bodies' bytes, not the
/// socket's: after 10 s the stalled connections give way, and newcomers are served.
#[tokio::test]
async fn stalled_requests_kept_alive_by_pings_give_way_to_newcomers() {
    let s = Arc::new(server_with_acme(&["--max-connections", "16"]).await);
    let pinging: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let tcp = raw_from(&s, &format!("127.0.5.{}", 10 + i)).await;
                let mut b = h2::client::Builder::new();
                b.initial_window_size(0);
                let (h2c, mut conn) = b.handshake::<_, bytes::Bytes>(tcp).await.unwrap();
                let mut pings = conn.ping_pong().unwrap();
                let driver = tokio::spawn(conn);
                let mut h2c = h2c.ready().await.unwrap();
                let req = v2_get(&s);
                let (_answer, _) = h2c.send_request(req, true).unwrap();
                while !driver.is_finished() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if pings.ping(h2::Ping::opaque()).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    // All 16 slots held, pinged, for longer than a connection may move no body.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let served = newcomers_served(&s, "127.0.6", 5, "/v2/", b"{}").await;
    assert_eq!(served, 5, "{served} of 5 newcomers served");
    for p in pinging {
        p.abort();
    }
}

/// An upload streaming steadily is progress though its socket only reads: one address holding
/// every slot with 16 uploads at 640 KiB/s each keeps all of them while newcomers knock for
/// 4 s past the 10 s after which a connection that moves no body gives way (a request body's
/// bytes count as its connection's progress, as a response's do).
#[tokio::test]
async fn uploads_streaming_steadily_are_never_pushed_out() {
    let s = Arc::new(
        // (Upload memory for all 16 at once: on S3 each upload reserves a part, 17 MiB.)
        server_with_acme(&[
            "--max-connections",
            "16",
            "--max-connections-per-address",
            "16",
            "--upload-memory",
            "2GiB",
        ])
        .await,
    );
    let uploads: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let c = basic_client_from("admin", ADMIN_PASSWORD, "127.0.9.10");
                let loc = upload_session(&c, &s).await;
                let data = random_bytes(9 << 20, 300 + i);
                let d = sha256(&data);
                let pieces: Vec<bytes::Bytes> = data
                    .chunks(64 << 10)
                    .map(bytes::Bytes::copy_from_slice)
                    .collect();
                let body = futures_util::StreamExt::then(
                    futures_util::stream::iter(pieces),
                    |p| async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>(p)
                    },
                );
                let sep = if loc.contains('?') { '&' } else { '?' };
                c.put(s.url(&format!("{loc}{sep}digest={d}")))
                    .body(reqwest::Body::wrap_stream(body))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for i in 0..40 {
        let newcomer = basic_client_from("admin", ADMIN_PASSWORD, &format!("127.0.10.{}", 10 + i));
        let _ = newcomer
            .get(s.url("/v2/"))
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for u in uploads {
        let status = u.await.unwrap();
        assert!(
            status.as_ref().is_ok_and(|s| *s == StatusCode::CREATED),
            "{status:?}"
        );
    }
    assert_eq!(metric(&s, "berth_connections_evicted_total ").await, 0);
}

/// One HTTP/2 connection from each of as many addresses as there are slots, all in step: a
/// request whose answer it never lets through (window 0, no credential), reset after 8.9 s, then
/// a pause of 1.05 s, again and again (helper-29: a pause of a second started a fresh busy spell,
/// so no connection was ever gone, and newcomers waited up to 9 s for the pauses). A spell
/// starts afresh only after a pause of 10 s: these connections are gone, and newcomers are
/// served at once.
#[tokio::test]
async fn stalls_with_short_pauses_between_them_give_way_to_newcomers() {
    let s = Arc::new(server_with_acme(&["--max-connections", "16"]).await);
    let pausing: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let (h2c, conn) = h2_windows(&s, &format!("127.0.13.{}", 10 + i), 0, None).await;
                let driver = tokio::spawn(conn);
                let mut h2c = h2c;
                while !driver.is_finished() {
                    let Ok(mut ready) = h2c.clone().ready().await else {
                        break;
                    };
                    let req = v2_get(&s);
                    let Ok((answer, _)) = ready.send_request(req, true) else {
                        break;
                    };
                    tokio::time::sleep(Duration::from_millis(8900)).await;
                    drop(answer);
                    h2c = ready;
                    tokio::time::sleep(Duration::from_millis(1050)).await;
                }
            })
        })
        .collect();
    // Into the second stall, as the pauses of the first are over.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let served = newcomers_served(&s, "127.0.14", 5, "/v2/", b"{}").await;
    assert_eq!(served, 5, "{served} of 5 newcomers served");
    for p in pausing {
        p.abort();
    }
}

/// One HTTP/2 connection from each of as many addresses as there are slots, all in step: a
/// request whose answer it never lets through (window 0, no credential), the connection closed
/// after 9.5 s and opened again at once (helper-30: each new connection began a fresh busy spell
/// and took the slot its own close freed, so none was ever gone, and newcomers waited up to
/// 19 s). A connection closed in a spell hands it to its address's next one: the new
/// connections are gone at 10 s of the first spell, and newcomers are served.
#[tokio::test]
async fn stalls_closed_and_opened_again_at_once_give_way_to_newcomers() {
    let s = Arc::new(server_with_acme(&["--max-connections", "16"]).await);
    let reconnecting: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let source = format!("127.0.15.{}", 10 + i);
                loop {
                    let tcp = raw_from(&s, &source).await;
                    let mut b = h2::client::Builder::new();
                    b.initial_window_size(0);
                    let Ok((h2c, conn)) = b.handshake::<_, bytes::Bytes>(tcp).await else {
                        continue;
                    };
                    let mut driver = tokio::spawn(conn);
                    if let Ok(mut h2c) = h2c.ready().await
                        && let Ok((_answer, _)) = h2c.send_request(v2_get(&s), true)
                    {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(9500), &mut driver).await;
                    }
                    driver.abort();
                }
            })
        })
        .collect();
    // Into the second connection of each, past 10 s of the spell its first began.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let served = newcomers_served(&s, "127.0.16", 5, "/v2/", b"{}").await;
    assert_eq!(served, 5, "{served} of 5 newcomers served");
    for r in reconnecting {
        r.abort();
    }
}

/// One HTTP/2 connection from each of as many addresses as there are slots, whose streams open
/// with a window of one byte: each pulls a blob it never takes more of, and every 2 s asks three
/// times for the console's stylesheet (6 KB, public) and drops each once its byte came
/// (helper-28: the server handed each stylesheet whole to its stream, so bodies moved 17 KB per
/// 9 s for 35 B/s of traffic, and every newcomer was refused). An answer's progress is what it
/// wrote of its body, a byte here: these connections give way after 10 s.
#[tokio::test]
async fn answers_handed_whole_to_streams_that_take_a_byte_are_no_progress() {
    let s = Arc::new(server_with_acme(&["--max-connections", "16"]).await);
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(1 << 20, 48)).await;
    drop(admin);
    let holding: Vec<_> = (0..16)
        .map(|i| {
            let (s, d) = (Arc::clone(&s), d.clone());
            tokio::spawn(async move {
                let (h2c, conn) = h2_windows(&s, &format!("127.0.11.{}", 10 + i), 1, None).await;
                let driver = tokio::spawn(conn);
                let get = |path: &str| {
                    http::Request::get(format!("http://{}{path}", s.host))
                        .body(())
                        .unwrap()
                };
                let mut h2c = h2c.ready().await.unwrap();
                let (_stalled, _) = h2c.send_request(blob_get(&s, &d), true).unwrap();
                'asking: while !driver.is_finished() {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let mut answers = Vec::new();
                    for _ in 0..3 {
                        let Ok(mut ready) = h2c.clone().ready().await else {
                            break 'asking;
                        };
                        let Ok((answer, _)) =
                            ready.send_request(get("/ui/assets/console.css"), true)
                        else {
                            break 'asking;
                        };
                        answers.push(answer);
                    }
                    for answer in answers {
                        if let Ok(Ok(answer)) =
                            tokio::time::timeout(Duration::from_secs(1), answer).await
                        {
                            let mut body = answer.into_body();
                            let _ = tokio::time::timeout(Duration::from_secs(1), body.data()).await;
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(13)).await;
    let served = newcomers_served(&s, "127.0.12", 5, "/v2/", b"{}").await;
    assert_eq!(served, 5, "{served} of 5 newcomers served");
    for h in holding {
        h.abort();
    }
}

/// One HTTP/2 connection from each of as many addresses as there are slots, no credential: a
/// stalled `GET /v2/`, then 40 requests for the console's stylesheet (6 KB each, handed whole)
/// whose streams let one byte through and are dropped, then nothing but pings, about 200 a
/// second, 3.4 KB/s of answers to them (helper-34: counted in the socket's bytes, the pings paid
/// off the 240 KB of bodies handed, a step at a time, and every slot was held for minutes on 90
/// bytes of body). Only DATA frames written count as an answer's progress: the connections give
/// way after 10 s, and newcomers are served.
#[tokio::test]
async fn pings_do_not_pay_off_bodies_handed_to_streams_that_take_a_byte() {
    let s = Arc::new(server_with_acme(&["--max-connections", "8"]).await);
    let holding: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&s);
            // (Connecting again when closed: a connection waiting for its first request may
            // give way to another's, and then every slot would not be held.)
            tokio::spawn(async move {
                loop {
                    css_then_pings(&s, &format!("127.0.24.{}", 10 + i)).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(13)).await;
    let served = newcomers_served(&s, "127.0.25", 5, "/v2/", b"{}").await;
    assert_eq!(served, 5, "{served} of 5 newcomers served");
    for h in holding {
        h.abort();
    }
}

/// An HTTP/2 connection from `source` whose streams take one byte: a stalled `GET /v2/`, 40
/// stylesheets each dropped once its byte came, then pings until the connection is closed.
async fn css_then_pings(s: &Server, source: &str) {
    let Ok(tcp) = tokio::net::TcpSocket::new_v4().and_then(|sock| {
        sock.bind(format!("{source}:0").parse().unwrap())?;
        Ok(sock)
    }) else {
        return;
    };
    let Ok(tcp) = tcp.connect(s.host.parse().unwrap()).await else {
        return;
    };
    let mut b = h2::client::Builder::new();
    b.initial_window_size(1);
    let Ok((h2c, mut conn)) = b.handshake::<_, bytes::Bytes>(tcp).await else {
        return;
    };
    let mut pings = conn.ping_pong().unwrap();
    let driver = tokio::spawn(conn);
    let Ok(mut h2c) = h2c.ready().await else {
        return;
    };
    let Ok((_stalled, _)) = h2c.send_request(v2_get(s), true) else {
        return;
    };
    for _ in 0..40 {
        let css = http::Request::get(format!("http://{}/ui/assets/console.css", s.host))
            .body(())
            .unwrap();
        let Ok(mut ready) = h2c.clone().ready().await else {
            return;
        };
        let Ok((answer, _)) = ready.send_request(css, true) else {
            return;
        };
        if let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(2), answer).await {
            let mut body = answer.into_body();
            let _ = tokio::time::timeout(Duration::from_secs(2), body.data()).await;
        }
    }
    while !driver.is_finished() {
        tokio::time::sleep(Duration::from_millis(4)).await;
        if pings.ping(h2::Ping::opaque()).await.is_err() {
            break;
        }
    }
}

/// One HTTP/1.1 pull of a large blob from each of as many addresses as there are slots, never
/// read (a receive buffer as small as the kernel allows), each closed with a reset every 9 s
/// and opened again at once (helper-35: each new connection's first writes, taken by its
/// kernel's unsent buffer, made a step of the spell it went on with, so no connection was ever
/// gone, and newcomers were refused). What a connection that goes on with a handed spell writes
/// into buffers does not count: the spell goes, and newcomers are served.
#[tokio::test]
async fn reconnecting_before_gone_cannot_make_a_step_of_the_kernels_buffers() {
    use tokio::io::AsyncWriteExt as _;
    let s = Arc::new(server_with_acme(&["--max-connections", "8"]).await);
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(4 << 20, 54)).await;
    drop(admin);
    let holding: Vec<_> = (0..8)
        .map(|i| {
            let (s, d) = (Arc::clone(&s), d.clone());
            tokio::spawn(async move {
                let head = format!(
                    "GET /v2/acme/app/blobs/{d} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\r\n",
                    s.host,
                    admin_basic()
                );
                loop {
                    let sock = tokio::net::TcpSocket::new_v4().unwrap();
                    sock.set_recv_buffer_size(1).unwrap();
                    sock.bind(format!("127.0.26.{}:0", 10 + i).parse().unwrap())
                        .unwrap();
                    let Ok(mut conn) = sock.connect(s.host.parse().unwrap()).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_secs(9)).await;
                    let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(13)).await;
    let served = newcomers_served(&s, "127.0.27", 5, "/v2/", b"{}").await;
    assert_eq!(served, 5, "{served} of 5 newcomers served");
    for h in holding {
        h.abort();
    }
}

/// A client doing requests back to back on one keep-alive, at a node whose other slots are held
/// by stalled HTTP/2 requests (window 0, no credential), one per address, while newcomers knock
/// (helper-31: the keep-alive, waiting for a moment between its requests, was taken before the
/// stalled connections, and cut 655 times in 66 s). Once those are gone they give way first:
/// the keep-alive is never cut, and the newcomers are served.
#[tokio::test]
async fn keep_alives_between_requests_are_not_taken_while_gone_connections_are_there() {
    let s = Arc::new(server_with_acme(&["--max-connections", "8"]).await);
    let stalled: Vec<_> = (0..7)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let (h2c, conn) = h2_windows(&s, &format!("127.0.19.{}", 10 + i), 0, None).await;
                let driver = tokio::spawn(conn);
                let mut h2c = h2c.ready().await.unwrap();
                let req = v2_get(&s);
                let (_answer, _) = h2c.send_request(req, true).unwrap();
                let _ = driver.await;
            })
        })
        .collect();
    let keep_alive = basic_client_from("admin", ADMIN_PASSWORD, "127.0.20.10");
    tokio::time::sleep(Duration::from_secs(11)).await;
    let looping = {
        let (s, c) = (Arc::clone(&s), keep_alive.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < until {
                match c.head(s.url("/v2/")).send().await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    let served = newcomers_served(&s, "127.0.21", 7, "/v2/", b"{}").await;
    let (ok, failed) = looping.await.unwrap();
    assert!(
        failed.is_empty() && ok > 100,
        "{ok} served, failed: {failed:?}"
    );
    assert_eq!(served, 7, "{served} of 7 newcomers served");
    for c in stalled {
        c.abort();
    }
}

/// Four pulls from one address (a NAT) at a full node, each read at 50 kB/s from the kernel's
/// receive buffer, which lets the server's socket move only in bursts seconds apart, while
/// newcomers from other addresses knock every 100 ms (helper-31: each pull was cut after its
/// first burst, at 4 s of silence, for being slow). A connection is slow only once what it moved
/// has fallen behind 16 KiB/s, counting bursts up to 512 KiB: none of them is cut.
#[tokio::test]
async fn steady_readers_whose_sockets_move_in_bursts_are_not_cut() {
    let (s, d) = four_slots_and_a_blob(49).await;
    // 12 s at 50 kB/s: 5,000 bytes every 100 ms.
    let pulls = paced_pulls(&s, &d, &[("127.0.17.10", None); 4], 5000, 120).await;
    for i in 0..100 {
        let newcomer = basic_client_from("admin", ADMIN_PASSWORD, &format!("127.0.18.{}", 10 + i));
        let _ = newcomer
            .get(s.url("/v2/"))
            .timeout(Duration::from_millis(100))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in pulls {
        assert_eq!(p.await.unwrap(), Ok(600_000));
    }
    assert!(metric(&s, "berth_connections_refused_total ").await >= 50);
}

/// Four pulls, each from its own address, read steadily at 20 kB/s (a little above the 16 KiB/s
/// under which a connection is slow), two of them through a 4 KiB receive buffer, at a full
/// node while newcomers from fresh addresses knock every 250 ms (helper-33: the bodies' lead
/// over the socket, handed in chunks and drained in bursts, was dropped at each step of
/// progress, so a third to a half of what they moved counted, and each was cut every 10-20 s).
/// None is cut in 30 s.
#[tokio::test]
async fn readers_a_little_above_the_slow_rate_are_not_cut_by_newcomers() {
    let (s, d) = four_slots_and_a_blob(53).await;
    // 30 s at 20 kB/s: 2,000 bytes every 100 ms.
    let readers = [
        ("127.0.22.10", None),
        ("127.0.22.11", Some(4096)),
        ("127.0.22.12", None),
        ("127.0.22.13", Some(4096)),
    ];
    let pulls = paced_pulls(&s, &d, &readers, 2000, 300).await;
    let knocking = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            for i in 0u32.. {
                let source = format!("127.0.{}.{}", 23 + i / 200, 10 + i % 200);
                let newcomer = basic_client_from("admin", ADMIN_PASSWORD, &source);
                let _ = newcomer
                    .get(s.url("/v2/"))
                    .timeout(Duration::from_millis(250))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    for p in pulls {
        assert_eq!(p.await.unwrap(), Ok(600_000));
    }
    knocking.abort();
    // (The readers hold every slot, so a newcomer let in would have cut one; the eviction
    // counter is no proof, as a reader may have taken the place of the keep-alive that pushed
    // the blob, and the full node answers no request for it meanwhile.)
    assert!(metric(&s, "berth_connections_refused_total ").await >= 50);
}

/// A node of four slots, which one address may fill, and a 4 MiB blob of `acme/app`.
async fn four_slots_and_a_blob(seed: u64) -> (Arc<Server>, String) {
    let s = Arc::new(
        server_with_acme(&[
            "--max-connections",
            "4",
            "--max-connections-per-address",
            "4",
        ])
        .await,
    );
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(4 << 20, seed)).await;
    drop(admin);
    (s, d)
}

/// HTTP/1.1 pulls of blob `d` of `acme/app`, one from each of `readers` (a source address and
/// a receive buffer size, if set), each reading `piece` bytes every 100 ms, `pieces` times: each
/// resolves to what it read, or how it was cut. Returns once every answer has begun: before its
/// head is read a connection is waiting, and an address holding more than a newcomer's gives
/// way, so newcomers should knock only then. (Each connects again until its answer begins: the
/// admin's keep-alive that pushed the blob may hold a slot a moment longer on a loaded machine.)
async fn paced_pulls(
    s: &Arc<Server>,
    d: &str,
    readers: &[(&str, Option<u32>)],
    piece: usize,
    pieces: usize,
) -> Vec<tokio::task::JoinHandle<Result<usize, String>>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (started, mut under_way) = tokio::sync::mpsc::channel(readers.len());
    let pulls: Vec<_> = readers
        .iter()
        .map(|&(source, buffer)| {
            let (s, source, started) = (Arc::clone(s), source.to_owned(), started.clone());
            let head = format!(
                "GET /v2/acme/app/blobs/{d} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\r\n",
                s.host,
                admin_basic()
            );
            tokio::spawn(async move {
                let mut sock = loop {
                    let sock = tokio::net::TcpSocket::new_v4().unwrap();
                    if let Some(size) = buffer {
                        sock.set_recv_buffer_size(size).unwrap();
                    }
                    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
                    let mut sock = sock.connect(s.host.parse().unwrap()).await.unwrap();
                    let mut first = [0u8; 1];
                    if sock.write_all(head.as_bytes()).await.is_ok()
                        && matches!(sock.peek(&mut first).await, Ok(1))
                    {
                        break sock;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let mut buf = vec![0; piece];
                let mut got = 0;
                for i in 0..pieces {
                    match sock.read_exact(&mut buf).await {
                        Ok(_) => got += buf.len(),
                        Err(e) => return Err(format!("cut after {got} bytes: {e}")),
                    }
                    if i == 0 {
                        let _ = started.send(()).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(got)
            })
        })
        .collect();
    for _ in readers {
        tokio::time::timeout(Duration::from_secs(10), under_way.recv())
            .await
            .unwrap();
    }
    pulls
}

/// The kernel keeps little of an answer its client does not read (`TCP_NOTSENT_LOWAT`): four
/// HTTP/1.1 pulls of a 16 MiB blob that never read leave at most 256 KiB unsent on each of
/// the server's sockets (helper-27: loopback grew each to about 4 MiB, held by the host, and
/// counted as written by berth).
#[tokio::test]
async fn answers_not_read_leave_little_in_the_kernel() {
    use tokio::io::AsyncWriteExt as _;
    let s = server_with_acme(&[]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(16 << 20, 47)).await;
    let mut held = Vec::new();
    for i in 0..4 {
        let mut sock = raw_from(&s, &format!("127.0.7.{}", 10 + i)).await;
        let head = format!(
            "GET /v2/acme/app/blobs/{d} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {}\r\n\r\n",
            s.host,
            admin_basic()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        held.push(sock);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let port = s.host.rsplit(':').next().unwrap().to_owned();
    let out = std::process::Command::new("ss")
        .args([
            "-tinH",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let queued: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("127.0.7."))
        .map(|l| {
            let send_q = l.split_whitespace().nth(1).unwrap();
            send_q.parse().unwrap()
        })
        .collect();
    assert_eq!(queued.len(), 4, "{text}");
    // (The send queue is what is unsent plus what is in flight; loopback's window is 64 KiB.)
    let unsent: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("notsent:"))
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        unsent.iter().all(|&n| n <= 256 << 10),
        "unsent bytes per socket {unsent:?}, send queues {queued:?}"
    );
    drop(held);
}

/// Streams that never read hold no open file: a blob's file is opened by an answer's read
/// once it has memory and kept only by answers that drain, and from a bucket an answer whose
/// reader takes nothing for 2 s lets its GET go (the rest comes by a new ranged GET), so 192
/// stalled streams (on files 128 holding memory, 64 waiting for it) soon add no more
/// descriptors than their 12 connections.
#[tokio::test]
async fn streams_that_never_read_hold_no_open_file() {
    let s = server_with_acme(&["--download-memory", "8MiB"]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(4 << 20, 34)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = blob_handles(&s);
    let mut stalled = Vec::new();
    for i in 2..8 {
        for _ in 0..2 {
            stalled.push(stalled_h2_pulls(&s, &format!("127.0.0.{i}"), &d, 16).await);
        }
    }
    let after = blob_handles_settle_below(&s, before + 8, Duration::from_secs(20)).await;
    assert!(
        after < before + 8,
        "{before} blob files and bucket connections open before, {after} with the stalled streams"
    );
    // And a pull that drains still gets its blob whole.
    pulled_whole(
        &admin,
        &s,
        &d,
        &random_bytes(4 << 20, 34),
        Duration::from_secs(10),
    )
    .await;
}

/// Answers that drained two mebibytes and then stop keep at most 256 blob files open between
/// them, node-wide (past that an answer opens its file for each read): 400 such HTTP/2
/// streams on 25 connections cannot exhaust the server's descriptors.
#[tokio::test]
async fn answers_that_drained_and_stopped_keep_few_files_open() {
    let s = server_with_acme(&[]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let d = push_blob(&admin, &s, "acme/app", &random_bytes(4 << 20, 36)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = blob_handles(&s);
    let mut kept = Vec::new();
    for i in 0..25 {
        let source = format!("127.0.0.{}", 2 + i % 8);
        let (mut h2c, conn) = h2_windows(&s, &source, 2 << 20, Some(64 << 20)).await;
        kept.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        for _ in 0..16 {
            h2c = h2c.ready().await.unwrap();
            let answer = h2c.send_request(blob_get(&s, &d), true).unwrap().0;
            // Read (so the window is used up) and hold, never releasing capacity.
            kept.push(tokio::spawn(async move {
                let Ok(answer) = answer.await else { return };
                let mut body = answer.into_body();
                let mut held = Vec::new();
                while let Some(Ok(piece)) = body.data().await {
                    held.push(piece);
                }
            }));
        }
    }
    let after = blob_handles_settle_below(&s, before + 256 + 8, Duration::from_secs(20)).await;
    assert!(
        after < before + 256 + 8,
        "{before} blob files and bucket connections open before, {after} with 400 answers stopped"
    );
    for k in kept {
        k.abort();
    }
}

/// How many descriptors the server has open.
fn open_fds(s: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .unwrap()
        .count()
}

/// What the server holds open for blobs' bytes: descriptors of blob files, and sockets to the
/// bucket (from `/proc/net/tcp*`, by the bucket's port). Not the database's pool, which grows
/// with requests at once and owns a few descriptors per connection.
fn blob_handles(s: &Server) -> usize {
    let bucket_port = std::env::var("BERTH_TEST_S3_ENDPOINT").ok().and_then(|e| {
        e.rsplit(':')
            .next()?
            .trim_end_matches('/')
            .parse::<u16>()
            .ok()
    });
    let mut to_bucket = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f
                .get(2)
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some()
                && port == bucket_port
                && let Some(inode) = f.get(9)
            {
                to_bucket.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| {
            let t = t.to_string_lossy();
            t.contains("/blobs/") || to_bucket.contains(t.as_ref())
        })
        .count()
}

/// `blob_handles` once below `bound`, waiting up to `within` for them to settle (answers from
/// a bucket let their GETs go after 2 s); the last count if they do not.
async fn blob_handles_settle_below(s: &Server, bound: usize, within: Duration) -> usize {
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    loop {
        let n = blob_handles(s);
        if n < bound || t.elapsed() > within {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A pull whose reader stops for longer than a bucket's GET is kept for it (2 s) gets its
/// bytes whole when it reads again, from where it stopped: the rest comes by a new ranged GET
/// (on files the file is read on). A range from an offset, paused twice.
#[tokio::test]
async fn a_pull_that_pauses_gets_the_rest_of_its_range_whole() {
    let s = server_with_acme(&[]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let blob = random_bytes(24 << 20, 35);
    let d = push_blob(&admin, &s, "acme/app", &blob).await;
    let mut r = admin
        .get(s.url(&format!("/v2/acme/app/blobs/{d}")))
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let mut got = Vec::new();
    let mut pauses = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
        if (pauses == 0 && got.len() > 1 << 20) || (pauses == 1 && got.len() > 12 << 20) {
            tokio::time::sleep(Duration::from_secs(3)).await;
            pauses += 1;
        }
    }
    assert_eq!(pauses, 2);
    assert_eq!(got.len(), blob.len() - 1000);
    assert!(got == blob[1000..], "the bytes after the pauses differ");
}

/// Uploads cancelled while their bodies stream in (an HTTP/2 stream reset, as a client's
/// timeout sends) leave nothing behind: no file of a monolithic push, and the session of a
/// chunk is not left "being written" for the next request.
#[tokio::test]
async fn uploads_cancelled_mid_body_leave_no_file_and_no_stuck_session() {
    let s = server_with_acme(&[]).await;
    let admin = basic_client("admin", ADMIN_PASSWORD);
    let h2 = {
        use base64::Engine as _;
        let mut headers = reqwest::header::HeaderMap::new();
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    // A body that sends 64 KiB and then nothing.
    let stalling = || {
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from(random_bytes(64 << 10, 31)))
        });
        reqwest::Body::wrap_stream(futures_util::StreamExt::chain(
            first,
            futures_util::stream::pending(),
        ))
    };
    let cancel = |req: reqwest::RequestBuilder| async move {
        let sent = tokio::spawn(req.send());
        tokio::time::sleep(Duration::from_millis(500)).await;
        sent.abort();
        let _ = sent.await;
    };
    let uploads = s.data_dir.join("uploads");
    let files = || std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    let before = files();
    for _ in 0..5 {
        let d = sha256(b"never sent whole");
        cancel(
            h2.post(s.url(&format!("/v2/acme/app/blobs/uploads/?digest={d}")))
                .header("content-length", (1 << 20).to_string())
                .body(stalling()),
        )
        .await;
    }
    // And hundreds reset at once, some while their upload file is being created (a connection
    // is told to go away after a few dozen resets: another one is opened). A bearer token, so
    // that the requests reach the file within the first milliseconds.
    let push = token_from(&admin, &s, "repository:acme/app:pull,push").await;
    let mut raw = None;
    for i in 0..2000u64 {
        let mut c = h2_ready(&s, "127.0.0.2", raw.take()).await;
        let req = http::Request::post(format!(
            "http://{}/v2/acme/app/blobs/uploads/?digest={}",
            s.host,
            sha256(b"never sent")
        ))
        .header("authorization", format!("Bearer {push}"))
        .header("content-length", "1024")
        .body(())
        .unwrap();
        let Ok((_, mut body)) = c.send_request(req, false) else {
            continue;
        };
        // Resets spread over the first milliseconds of the requests' lives.
        if i % 5 > 0 {
            tokio::time::sleep(Duration::from_millis(i % 5)).await;
        }
        for _ in 0..(i / 5) % 64 {
            tokio::task::yield_now().await;
        }
        body.send_reset(h2::Reason::CANCEL);
        raw = Some(c);
    }
    let t = Instant::now();
    while files() > before {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{} upload files left",
            files()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A chunk cancelled midway: the session takes the same chunk again, then completes.
    let location = upload_session(&admin, &s).await;
    cancel(
        h2.patch(s.url(&location))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("0-{}", (1 << 20) - 1))
            .header("content-length", (1 << 20).to_string())
            .body(stalling()),
    )
    .await;
    let bytes = random_bytes(1 << 20, 32);
    let r = admin
        .patch(s.url(&location))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", bytes.len() - 1))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "{}",
        r.text().await.unwrap()
    );
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = admin
        .put(s.url(&format!("{location}{sep}digest={}", sha256(&bytes))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
