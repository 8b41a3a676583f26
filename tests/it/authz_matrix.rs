//! The authorization matrix: every `/v2` route and the management routes, for every kind of
//! caller, from one table. Each cell is the status the caller must get.
//!
//! Callers, in column order: anonymous; robots of org `acme` bound as Reader, Writer and Manager
//! of namespace `acme`; a robot bound as Manager of another namespace (`acme-b`) of the same org;
//! the org owner (`alice`); the server admin; a revoked robot token; an expired robot token.
//! Credentials go as Basic auth on every request (the token flow is covered by the skopeo tests).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const CALLERS: [&str; 9] = [
    "anonymous",
    "reader",
    "writer",
    "manager",
    "manager-other",
    "owner",
    "admin",
    "revoked",
    "expired",
];

/// Expected statuses per caller, in `CALLERS` order.
type Row = [u16; 9];

/// (name, method, path, body with its content type, expected row, extra headers).
type Case<'a> = (
    &'a str,
    &'a str,
    String,
    Option<(&'a str, Vec<u8>)>,
    Row,
    &'a [(&'a str, &'a str)],
);

const PULL: Row = [401, 200, 200, 200, 403, 200, 200, 401, 401];
const HEAD_PULL: Row = PULL;
const LOGGED_IN: Row = [401, 200, 200, 200, 200, 200, 200, 401, 401];
const ORG_ADMIN_ONLY: Row = [401, 403, 403, 403, 403, 200, 200, 401, 401];
const SERVER_ADMIN_ONLY: Row = [401, 403, 403, 403, 403, 403, 200, 401, 401];

fn push(ok: u16) -> Row {
    [401, 403, ok, ok, 403, ok, ok, 401, 401]
}

fn delete(ok: u16) -> Row {
    [401, 403, 403, ok, 403, ok, ok, 401, 401]
}

fn server_admin(ok: u16) -> Row {
    [401, 403, 403, 403, 403, 403, ok, 401, 401]
}

/// Users (not robots) may: the org owner and the admin here.
fn users(ok: u16) -> Row {
    [401, 403, 403, 403, 403, ok, ok, 401, 401]
}

fn org_admin(ok: u16) -> Row {
    [401, 403, 403, 403, 403, ok, ok, 401, 401]
}

struct World {
    s: Server,
    creds: Vec<Option<(String, String)>>,
    blob: String,
    layer: Vec<u8>,
    manifest: String,
    upload_ids: Vec<String>,
    /// A second session per caller, for the PUT that commits it.
    commit_ids: Vec<String>,
    /// Per caller, credentials that exist to be rotated: a token and an API key of robot
    /// `reader`, and a registry token of `acme`.
    rotate_ids: Vec<[String; 3]>,
}

async fn world() -> World {
    let s = Server::start();
    let admin = Api::admin(&s);
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
    alice
        .ok(
            "POST",
            "/orgs/acme/namespaces",
            Some(json!({"name": "acme-b"})),
            StatusCode::CREATED,
        )
        .await;
    let c = client();
    let (_, manifest) = push_image(&c, &s, "acme/app", "v1", 90).await;
    let layer = random_bytes(2048, 91);
    let blob = push_blob(&c, &s, "acme/app", &layer).await;
    // A repository for each caller to try to delete.
    for who in 0..CALLERS.len() {
        push_image(&c, &s, &format!("acme/gone-{who}"), "v1", 200 + who as u64).await;
    }
    let robot = |name: &'static str, role: &'static str, ns: &'static str| {
        let alice = &alice;
        async move {
            alice
                .ok(
                    "POST",
                    "/orgs/acme/robots",
                    Some(json!({"name": name})),
                    StatusCode::CREATED,
                )
                .await;
            alice
                .ok(
                    "PUT",
                    &format!("/orgs/acme/bindings/{name}"),
                    Some(
                        json!({"role": role, "subject": format!("robot/{name}"), "namespace": ns}),
                    ),
                    StatusCode::CREATED,
                )
                .await;
        }
    };
    // One namespace per caller for the deletion row: every caller aims at one that exists.
    for who in 0..CALLERS.len() {
        alice
            .ok(
                "POST",
                "/orgs/acme/namespaces",
                Some(json!({"name": format!("victim-{who}")})),
                StatusCode::CREATED,
            )
            .await;
    }
    robot("reader", "Reader", "acme").await;
    robot("writer", "Writer", "acme").await;
    robot("manager", "Manager", "acme").await;
    robot("manager-other", "Manager", "acme-b").await;
    let token = |robot: &'static str, body: Value| {
        let alice = &alice;
        async move {
            let t = alice
                .ok(
                    "POST",
                    &format!("/orgs/acme/robots/{robot}/tokens"),
                    Some(body),
                    StatusCode::CREATED,
                )
                .await;
            (
                t["accessId"].as_str().unwrap().to_owned(),
                t["token"].as_str().unwrap().to_owned(),
                t["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let reader = token("reader", json!({"name": "t"})).await;
    let writer = token("writer", json!({"name": "t"})).await;
    let manager = token("manager", json!({"name": "t"})).await;
    let other = token("manager-other", json!({"name": "t"})).await;
    let revoked = token("writer", json!({"name": "revoked"})).await;
    let expired = token("writer", json!({"name": "expired", "expiresIn": "1s"})).await;
    // Never used before revoking or expiring, so no cache can hide the check.
    alice
        .ok(
            "DELETE",
            &format!("/orgs/acme/robots/writer/tokens/{}", revoked.2),
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let pair = |t: &(String, String, String)| Some((t.0.clone(), t.1.clone()));
    let creds = vec![
        None,
        pair(&reader),
        pair(&writer),
        pair(&manager),
        pair(&other),
        Some(("alice".to_owned(), "alice-password-1".to_owned())),
        Some(("admin".to_owned(), ADMIN_PASSWORD.to_owned())),
        pair(&revoked),
        pair(&expired),
    ];
    // Two upload sessions per caller, started by the admin: one for the session routes (patch,
    // status, cancel), one for the PUT that commits it.
    let mut sessions = Vec::new();
    for _ in 0..2 * CALLERS.len() {
        let r = c
            .post(s.url("/v2/acme/app/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        sessions.push(r.headers()["location"].to_str().unwrap().to_owned());
    }
    let commit_ids = sessions.split_off(CALLERS.len());
    let upload_ids = sessions;
    // Per caller: credentials to rotate and a trust to delete, all of which exist.
    let mut rotate_ids = Vec::new();
    for who in 0..CALLERS.len() {
        let body = json!({"name": format!("rot-{who}"), "expiresIn": "30d"});
        let id = |v: Value| v["id"].as_str().unwrap().to_owned();
        let token = alice
            .ok(
                "POST",
                "/orgs/acme/robots/reader/tokens",
                Some(body.clone()),
                StatusCode::CREATED,
            )
            .await;
        let key = alice
            .ok(
                "POST",
                "/orgs/acme/robots/reader/apikeys",
                Some(body.clone()),
                StatusCode::CREATED,
            )
            .await;
        let (status, registry) = alice
            .call(
                "POST",
                "/tokens",
                Some(json!({"name": format!("rot-{who}")})),
                &[("organization", "acme")],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{registry}");
        rotate_ids.push([id(token), id(key), id(registry)]);
        alice
            .ok(
                "POST",
                "/orgs/acme/robots/reader/trusts",
                Some(json!({"name": format!("victim-{who}"), "issuer": "https://issuer.example", "subject": "repo:*"})),
                StatusCode::CREATED,
            )
            .await;
    }
    let _ = admin;
    World {
        s,
        creds,
        blob,
        layer,
        manifest,
        upload_ids,
        commit_ids,
        rotate_ids,
    }
}

impl World {
    async fn call(
        &self,
        who: usize,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
        source: &str,
    ) -> u16 {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(source.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        let mut req = http.request(method.parse().unwrap(), self.s.url(path));
        if let Some((u, p)) = &self.creds[who] {
            req = req.basic_auth(u, Some(p));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// Puts back what a destructive call may have removed.
    async fn restore(&self) {
        let c = client();
        let r = put_manifest(
            &c,
            &self.s,
            "acme/app",
            "doomed",
            OCI_MANIFEST,
            &self.manifest,
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        push_blob(&c, &self.s, "acme/app", &self.layer).await;
    }
}

#[tokio::test]
async fn every_route_for_every_caller() {
    let w = world().await;
    let d = sha256(b"never pushed anywhere");
    let mut failures = Vec::new();
    // (name, method, path, body, expected); `{who}` in a path becomes the caller's index.
    let manifest = w.manifest.clone().into_bytes();
    let json_body = |v: Value| Some(("application/json", v.to_string().into_bytes()));
    let cases: Vec<Case> = vec![
        ("base", "GET", "/v2/".into(), None, LOGGED_IN, &[]),
        (
            "catalog",
            "GET",
            "/v2/_catalog".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "tags",
            "GET",
            "/v2/acme/app/tags/list".into(),
            None,
            PULL,
            &[],
        ),
        (
            "manifest get",
            "GET",
            "/v2/acme/app/manifests/v1".into(),
            None,
            PULL,
            &[],
        ),
        (
            "manifest head",
            "HEAD",
            "/v2/acme/app/manifests/v1".into(),
            None,
            HEAD_PULL,
            &[],
        ),
        (
            "blob get",
            "GET",
            format!("/v2/acme/app/blobs/{}", w.blob),
            None,
            PULL,
            &[],
        ),
        (
            "blob head",
            "HEAD",
            format!("/v2/acme/app/blobs/{}", w.blob),
            None,
            HEAD_PULL,
            &[],
        ),
        (
            "referrers",
            "GET",
            format!("/v2/acme/app/referrers/{d}"),
            None,
            PULL,
            &[],
        ),
        (
            "upload start",
            "POST",
            "/v2/acme/app/blobs/uploads/".into(),
            None,
            push(202),
            &[],
        ),
        (
            "upload patch",
            "PATCH",
            "{upload}".into(),
            Some(("application/octet-stream", b"x".to_vec())),
            push(202),
            &[],
        ),
        (
            "upload put",
            "PUT",
            format!("{{commit}}?digest={}", sha256(b"berth-commit")),
            Some(("application/octet-stream", b"berth-commit".to_vec())),
            push(201),
            &[],
        ),
        (
            "upload status",
            "GET",
            "{upload}".into(),
            None,
            push(204),
            &[],
        ),
        (
            "upload cancel",
            "DELETE",
            "{upload}".into(),
            None,
            push(204),
            &[],
        ),
        (
            "manifest put",
            "PUT",
            "/v2/acme/app/manifests/by-{who}".into(),
            Some((OCI_MANIFEST, manifest)),
            push(201),
            &[],
        ),
        (
            "manifest delete",
            "DELETE",
            "/v2/acme/app/manifests/doomed".into(),
            None,
            delete(202),
            &[],
        ),
        (
            "blob delete",
            "DELETE",
            format!("/v2/acme/app/blobs/{}", w.blob),
            None,
            delete(202),
            &[],
        ),
        (
            "api whoami",
            "GET",
            "/api/v1/auth/whoami".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        // Single sign-on's routes need no caller and give nothing a caller holds: every caller
        // gets the same answer (this server has no provider; with one, what they give is what
        // the provider vouches for: `attacks::sso_*`).
        (
            "sso providers",
            "GET",
            "/api/v1/auth/sso".into(),
            None,
            [200; 9],
            &[],
        ),
        (
            "sso device",
            "POST",
            "/api/v1/auth/sso/corp/device".into(),
            None,
            [404; 9],
            &[],
        ),
        (
            "sso device token",
            "POST",
            "/api/v1/auth/sso/corp/token".into(),
            json_body(json!({"handle": "x"})),
            [404; 9],
            &[],
        ),
        (
            "sso cli code",
            "POST",
            "/api/v1/auth/sso/corp/code".into(),
            json_body(json!({"code": "x", "code_verifier": "y"})),
            [404; 9],
            &[],
        ),
        (
            "api users",
            "GET",
            "/api/v1/users".into(),
            None,
            SERVER_ADMIN_ONLY,
            &[],
        ),
        (
            "api robots",
            "GET",
            "/api/v1/orgs/acme/robots".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api robot create",
            "POST",
            "/api/v1/orgs/acme/robots".into(),
            json_body(json!({"name": "made-by-{who}"})),
            org_admin(201),
            &[],
        ),
        (
            "api robot tokens",
            "GET",
            "/api/v1/orgs/acme/robots/reader/tokens".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api bindings",
            "GET",
            "/api/v1/orgs/acme/bindings".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api role put",
            "PUT",
            "/api/v1/orgs/acme/roles/role-{who}".into(),
            json_body(json!({"rules": [{"resources": ["repositories"], "verbs": ["pull"]}]})),
            org_admin(201),
            &[],
        ),
        (
            "api namespace patch",
            "PATCH",
            "/api/v1/namespaces/acme-b".into(),
            json_body(json!({"public": false})),
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api registry token",
            "POST",
            "/api/v1/tokens".into(),
            None,
            org_admin(201),
            &[("organization", "acme")],
        ),
        (
            "api audit",
            "GET",
            "/api/v1/audit".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "api org audit",
            "GET",
            "/api/v1/orgs/acme/audit".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        // The rest of the management API. Destructive routes name things that do not exist:
        // a caller who may do it gets 404, one who may not gets 403 first.
        (
            "api user get",
            "GET",
            "/api/v1/users/admin".into(),
            None,
            SERVER_ADMIN_ONLY,
            &[],
        ),
        (
            "api user create",
            "POST",
            "/api/v1/users".into(),
            json_body(json!({"name": "user-{who}", "password": "password-{who}"})),
            server_admin(201),
            &[],
        ),
        (
            "api user delete",
            "DELETE",
            "/api/v1/users/nobody".into(),
            None,
            server_admin(404),
            &[],
        ),
        (
            "api user password",
            "PUT",
            "/api/v1/users/nobody/password".into(),
            json_body(json!({"password": "long enough"})),
            server_admin(404),
            &[],
        ),
        (
            "api orgs",
            "GET",
            "/api/v1/orgs".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "api org create",
            "POST",
            "/api/v1/orgs".into(),
            json_body(json!({"name": "org-{who}"})),
            users(201),
            &[],
        ),
        (
            "api org get",
            "GET",
            "/api/v1/orgs/acme".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "api org delete",
            "DELETE",
            "/api/v1/orgs/no-such-org".into(),
            None,
            [401, 403, 403, 403, 403, 403, 404, 401, 401],
            &[],
        ),
        (
            "api members",
            "GET",
            "/api/v1/orgs/acme/members".into(),
            None,
            // Robots bound to one namespace do not see the org's people.
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api member set",
            "PUT",
            "/api/v1/orgs/acme/members/alice".into(),
            json_body(json!({"role": "owner"})),
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api member remove",
            "DELETE",
            "/api/v1/orgs/acme/members/nobody".into(),
            None,
            org_admin(404),
            &[],
        ),
        (
            "api namespaces",
            "GET",
            "/api/v1/orgs/acme/namespaces".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "api repositories",
            "GET",
            "/api/v1/orgs/acme/repositories".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "api repository",
            "GET",
            "/api/v1/orgs/acme/repositories/acme/app".into(),
            None,
            // Who may not pull it gets the answer of a repository that does not exist.
            [401, 200, 200, 200, 404, 200, 200, 401, 401],
            &[],
        ),
        (
            "api repository delete",
            "DELETE",
            "/api/v1/orgs/acme/repositories/acme/gone-{who}".into(),
            None,
            // Who may not pull it gets the answer of a repository that does not exist.
            [401, 403, 403, 204, 404, 204, 204, 401, 401],
            &[],
        ),
        (
            "api storage",
            "GET",
            "/api/v1/orgs/acme/storage".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "api namespace create",
            "POST",
            "/api/v1/orgs/acme/namespaces".into(),
            json_body(json!({"name": "ns-{who}"})),
            org_admin(201),
            &[],
        ),
        (
            "api namespace get",
            "GET",
            "/api/v1/namespaces/acme".into(),
            None,
            LOGGED_IN,
            &[],
        ),
        (
            "api robot get",
            "GET",
            "/api/v1/orgs/acme/robots/reader".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api robot delete",
            "DELETE",
            "/api/v1/orgs/acme/robots/nobody".into(),
            None,
            org_admin(404),
            &[],
        ),
        (
            "api robot token create",
            "POST",
            "/api/v1/orgs/acme/robots/reader/tokens".into(),
            json_body(json!({"name": "by-{who}"})),
            org_admin(201),
            &[],
        ),
        (
            "api robot token delete",
            "DELETE",
            "/api/v1/orgs/acme/robots/reader/tokens/nothing".into(),
            None,
            org_admin(404),
            &[],
        ),
        (
            "api robot keys",
            "GET",
            "/api/v1/orgs/acme/robots/reader/apikeys".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api robot key create",
            "POST",
            "/api/v1/orgs/acme/robots/reader/apikeys".into(),
            json_body(json!({"name": "by-{who}"})),
            org_admin(201),
            &[],
        ),
        (
            "api robot key delete",
            "DELETE",
            "/api/v1/orgs/acme/robots/reader/apikeys/nothing".into(),
            None,
            org_admin(404),
            &[],
        ),
        (
            "api sessions",
            "GET",
            "/api/v1/sessions".into(),
            None,
            users(200),
            &[],
        ),
        (
            "api session revoke",
            "DELETE",
            "/api/v1/sessions/no-such-session".into(),
            None,
            users(404),
            &[],
        ),
        (
            "api sessions revoke all",
            "DELETE",
            "/api/v1/sessions".into(),
            None,
            users(204),
            &[],
        ),
        (
            "api own keys",
            "GET",
            "/api/v1/apikeys".into(),
            None,
            users(200),
            &[],
        ),
        (
            "api own key create",
            "POST",
            "/api/v1/apikeys".into(),
            json_body(json!({"name": "mine"})),
            users(201),
            &[],
        ),
        (
            "api own key delete",
            "DELETE",
            "/api/v1/apikeys/nothing".into(),
            None,
            users(404),
            &[],
        ),
        (
            "api registry tokens",
            "GET",
            "/api/v1/tokens".into(),
            None,
            ORG_ADMIN_ONLY,
            &[("organization", "acme")],
        ),
        (
            "api registry token delete",
            "DELETE",
            "/api/v1/tokens/nothing".into(),
            None,
            org_admin(404),
            &[("organization", "acme")],
        ),
        (
            "api roles",
            "GET",
            "/api/v1/orgs/acme/roles".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api role get",
            "GET",
            "/api/v1/orgs/acme/roles/Reader".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api role delete",
            "DELETE",
            "/api/v1/orgs/acme/roles/nothing".into(),
            None,
            org_admin(404),
            &[],
        ),
        (
            "api binding get",
            "GET",
            "/api/v1/orgs/acme/bindings/reader".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api binding put",
            "PUT",
            "/api/v1/orgs/acme/bindings/b-{who}".into(),
            json_body(json!({"role": "Reader", "subject": "robot/reader", "namespace": "acme"})),
            org_admin(201),
            &[],
        ),
        (
            "api binding delete",
            "DELETE",
            "/api/v1/orgs/acme/bindings/nothing".into(),
            None,
            org_admin(404),
            &[],
        ),
        (
            "api access review (self)",
            "POST",
            "/api/v1/orgs/acme/access-review".into(),
            json_body(json!({"verb": "pull", "name": "acme/app"})),
            LOGGED_IN,
            &[],
        ),
        (
            "api access review (other)",
            "POST",
            "/api/v1/orgs/acme/access-review".into(),
            json_body(json!({"subject": "robot/reader", "verb": "pull", "name": "acme/app"})),
            ORG_ADMIN_ONLY,
            &[],
        ),
        // Each caller aims at a namespace of its own that exists (made in `world`), so a refusal
        // is the rule's, not a 404 of nothing there; the control after the table checks that
        // the refused ones are still there.
        (
            "api namespace delete",
            "DELETE",
            "/api/v1/namespaces/victim-{who}".into(),
            None,
            org_admin(204),
            &[],
        ),
        (
            "api access token",
            "POST",
            "/api/v1/auth/access-token".into(),
            None,
            users(200),
            &[],
        ),
        // Rotations, each aimed at a credential of its own that exists.
        (
            "api robot token rotate",
            "POST",
            "/api/v1/orgs/acme/robots/reader/tokens/{rot-token}/rotate".into(),
            json_body(json!({"overlap": "0"})),
            org_admin(200),
            &[],
        ),
        (
            "api robot key rotate",
            "POST",
            "/api/v1/orgs/acme/robots/reader/apikeys/{rot-key}/rotate".into(),
            json_body(json!({"overlap": "0"})),
            org_admin(200),
            &[],
        ),
        (
            "api registry token rotate",
            "POST",
            "/api/v1/tokens/{rot-registry}/rotate".into(),
            json_body(json!({"overlap": "0"})),
            org_admin(200),
            &[("organization", "acme")],
        ),
        (
            "api own key rotate",
            "POST",
            "/api/v1/apikeys/nothing/rotate".into(),
            json_body(json!({"overlap": "0"})),
            users(404),
            &[],
        ),
        (
            "api credentials",
            "GET",
            "/api/v1/orgs/acme/credentials".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api trusts",
            "GET",
            "/api/v1/orgs/acme/robots/reader/trusts".into(),
            None,
            ORG_ADMIN_ONLY,
            &[],
        ),
        (
            "api trust create",
            "POST",
            "/api/v1/orgs/acme/robots/reader/trusts".into(),
            json_body(
                json!({"name": "by-{who}", "issuer": "https://issuer.example", "subject": "repo:*"}),
            ),
            org_admin(201),
            &[],
        ),
        (
            "api trust delete",
            "DELETE",
            "/api/v1/orgs/acme/robots/reader/trusts/victim-{who}".into(),
            None,
            org_admin(204),
            &[],
        ),
        (
            "api invitations",
            "GET",
            "/api/v1/invitations".into(),
            None,
            users(200),
            &[],
        ),
        (
            "api invitation accept",
            "POST",
            "/api/v1/orgs/acme/invitations/accept".into(),
            None,
            users(404),
            &[],
        ),
    ];
    for (row, (name, method, path, body, expected, headers)) in cases.iter().enumerate() {
        // Each row's callers come from an address of their own, so the failures of the revoked
        // and expired callers (two per row) never reach a failure limit: every refusal must be
        // the exact 401.
        let source = format!("127.0.2.{}", row + 1);
        for (who, caller) in CALLERS.iter().enumerate() {
            if *method == "DELETE" && path.contains("acme/app/") {
                w.restore().await;
            }
            let path = path
                .replace("{who}", &who.to_string())
                .replace("{upload}", &w.upload_ids[who])
                .replace("{commit}", &w.commit_ids[who])
                .replace("{rot-token}", &w.rotate_ids[who][0])
                .replace("{rot-key}", &w.rotate_ids[who][1])
                .replace("{rot-registry}", &w.rotate_ids[who][2]);
            let body = body.as_ref().map(|(ct, b)| {
                (
                    *ct,
                    String::from_utf8_lossy(b)
                        .replace("{who}", &who.to_string())
                        .into_bytes(),
                )
            });
            let got = w.call(who, method, &path, body, headers, &source).await;
            if got != expected[who] {
                failures.push(format!(
                    "{name} ({method} {path}) as {caller}: got {got}, want {}",
                    expected[who]
                ));
            }
        }
    }
    // Positive control of the deletion row: what was refused is still there, the rest is gone.
    let admin = Api::admin(&w.s);
    for (who, caller) in CALLERS.iter().enumerate() {
        let (status, _) = admin
            .call("GET", &format!("/namespaces/victim-{who}"), None, &[])
            .await;
        let deleted = ["owner", "admin"].contains(caller);
        assert_eq!(
            status,
            if deleted {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            "namespace victim-{who} after {caller}'s DELETE"
        );
    }
    // And of the repository deletion row.
    for (who, caller) in CALLERS.iter().enumerate() {
        let r = client()
            .get(w.s.url(&format!("/v2/acme/gone-{who}/manifests/v1")))
            .send()
            .await
            .unwrap();
        let deleted = ["manager", "owner", "admin"].contains(caller);
        assert_eq!(
            r.status(),
            if deleted {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            "repository acme/gone-{who} after {caller}'s DELETE"
        );
    }
    // Every documented operation has a row: the OpenAPI document is the route table. Exempt:
    // the four that need no caller (sign-in, refresh, sign-out, the document itself).
    let doc: Value = client()
        .get(w.s.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let exempt = [
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/openapi.json",
    ];
    let covers = |template: &str, path: &str| {
        let t: Vec<&str> = template.split('/').collect();
        let p: Vec<&str> = path.split('?').next().unwrap().split('/').collect();
        // A parameter in the last place may hold slashes (a repository name).
        let last_param = t.last().is_some_and(|l| l.starts_with('{'));
        (t.len() == p.len() || (last_param && p.len() > t.len()))
            && t.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
    };
    let mut operations = 0;
    let mut uncovered = Vec::new();
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            operations += 1;
            if exempt.contains(&template.as_str()) {
                continue;
            }
            let covered = cases
                .iter()
                .any(|(_, m, p, ..)| m.eq_ignore_ascii_case(method) && covers(template, p));
            if !covered {
                uncovered.push(format!("{} {template}", method.to_uppercase()));
            }
        }
    }
    assert!(operations > 50, "only {operations} operations documented");
    assert!(
        uncovered.is_empty(),
        "documented operations without a row in the matrix:\n{}",
        uncovered.join("\n")
    );
    // 16 /v2 routes, the 63 management routes that need a caller (all but login, refresh,
    // logout and openapi.json; the access review twice) and single sign-on's 4, times nine
    // callers.
    assert_eq!(
        cases.len(),
        84,
        "the table lost or gained rows (also update the count above)"
    );
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
