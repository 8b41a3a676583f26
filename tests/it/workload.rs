//! Workload identity: robots trusted by OpenID issuers, tokens exchanged at `/token` (Basic
//! `ORG/ROBOT` + JWT, and RFC 8693), the kubelet credential provider. The issuer is the tests'
//! own: a small HTTP server on loopback with OpenID discovery and a JWKS whose keys the tests
//! rotate, and tokens shaped like Kubernetes service-account tokens and GitHub Actions tokens.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signing key of the test issuer: its JWK (public) and what signs with it.
#[derive(Clone)]
pub struct Key {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    pub jwk: Value,
    encoding: Arc<jsonwebtoken::EncodingKey>,
}

impl Key {
    pub fn es256(kid: &str) -> Key {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        Key {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::ES256,
            jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                        "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            encoding: Arc::new(jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref())),
        }
    }

    pub fn ed25519(kid: &str) -> Key {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::EdDSA,
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
                        "x": b64(pair.public_key().as_ref())}),
            encoding: Arc::new(jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref())),
        }
    }

    /// An RSA key made by openssl (Kubernetes signs service-account tokens with RS256).
    pub fn rs256(kid: &str) -> Key {
        let pem = Command::new("openssl")
            .args(["genrsa", "2048"])
            .output()
            .unwrap()
            .stdout;
        let openssl = |args: &[&str]| -> Vec<u8> {
            use std::io::Write as _;
            let mut c = Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(&pem).unwrap();
            c.wait_with_output().unwrap().stdout
        };
        // PKCS#1 DER, which the signer takes; the modulus for the JWK.
        let der = openssl(&["rsa", "-traditional", "-outform", "DER"]);
        let out = String::from_utf8(openssl(&["rsa", "-noout", "-modulus"])).unwrap();
        let n = hex::decode(out.trim().trim_start_matches("Modulus=")).unwrap();
        Key {
            kid: kid.into(),
            alg: jsonwebtoken::Algorithm::RS256,
            jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                        "n": b64(&n), "e": "AQAB"}),
            encoding: Arc::new(jsonwebtoken::EncodingKey::from_rsa_der(&der)),
        }
    }

    /// Signs `claims` with this key (header: alg and kid).
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }
}

/// The tests' OpenID issuer: discovery and a JWKS on a loopback port, keys replaceable.
pub struct Issuer {
    pub url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

impl Issuer {
    pub async fn start(keys: &[&Key]) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = Issuer {
            url: url.clone(),
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            jwks_fetches: Arc::default(),
            requests: Arc::default(),
        };
        let (jwks, fetches, requests) = (
            issuer.keys.clone(),
            issuer.jwks_fetches.clone(),
            issuer.requests.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (jwks, fetches, requests, url) =
                    (jwks.clone(), fetches.clone(), requests.clone(), url.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let mut buf = vec![0u8; 8192];
                    let mut got = 0;
                    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&buf[..got]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (status, body) = match path.as_str() {
                        "/.well-known/openid-configuration" => (
                            "200 OK",
                            json!({"issuer": url, "jwks_uri": format!("{url}/openid/v1/jwks"),
                                   "response_types_supported": ["id_token"],
                                   "subject_types_supported": ["public"],
                                   "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"]})
                            .to_string(),
                        ),
                        "/openid/v1/jwks" => {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            let keys = jwks.lock().unwrap().clone();
                            ("200 OK", json!({ "keys": keys }).to_string())
                        }
                        _ => ("404 Not Found", "{}".to_owned()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        issuer
    }

    /// Replaces the published keys (a key rotation).
    pub fn publish(&self, keys: &[&Key]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn jwks(&self) -> String {
        json!({ "keys": self.keys.lock().unwrap().clone() }).to_string()
    }

    /// Claims shaped like a Kubernetes service-account token (projected, bound to a pod).
    pub fn k8s_claims(&self, ns: &str, sa: &str, aud: &str, life: i64) -> Value {
        let now = now();
        json!({
            "aud": [aud],
            "exp": now + life,
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "jti": uuid_like(),
            "kubernetes.io": {
                "namespace": ns,
                "node": {"name": "node-1", "uid": uuid_like()},
                "pod": {"name": format!("{sa}-7d9f8"), "uid": uuid_like()},
                "serviceaccount": {"name": sa, "uid": uuid_like()}
            },
            "sub": format!("system:serviceaccount:{ns}:{sa}")
        })
    }

    /// Claims shaped like a GitHub Actions OIDC token.
    pub fn github_claims(&self, repo: &str, git_ref: &str, aud: &str, life: i64) -> Value {
        let now = now();
        json!({
            "jti": uuid_like(),
            "sub": format!("repo:{repo}:ref:{git_ref}"),
            "aud": aud,
            "ref": git_ref,
            "sha": "3c2f1e0d9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e",
            "repository": repo,
            "repository_owner": repo.split('/').next().unwrap(),
            "run_id": "4242",
            "event_name": "push",
            "workflow": "release",
            "job_workflow_ref": format!("{repo}/.github/workflows/release.yml@{git_ref}"),
            "runner_environment": "github-hosted",
            "iss": self.url,
            "nbf": now - 5,
            "exp": now + life,
            "iat": now - 5
        })
    }
}

fn uuid_like() -> String {
    hex::encode(random_bytes(16, now() as u64 ^ 0x5eed))
}

/// An org `acme` with `acme/app:v1` and a robot `deployer` bound Reader on the org.
async fn world(s: &Server) -> Api {
    let admin = Api::admin(s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    push_image(
        &basic_client("admin", ADMIN_PASSWORD),
        s,
        "acme/app",
        "v1",
        7,
    )
    .await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "deployer"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "PUT",
            "/orgs/acme/bindings/deployer",
            Some(json!({"role": "Reader", "subject": "robot/deployer"})),
            StatusCode::CREATED,
        )
        .await;
    admin
}

async fn basic_token(s: &Server, user: &str, jwt: &str, scope: &str) -> reqwest::Response {
    basic_client(user, jwt)
        .get(s.url(&format!("/token?service=berth&scope={scope}")))
        .send()
        .await
        .unwrap()
}

async fn exchange(s: &Server, form: &[(&str, &str)]) -> (StatusCode, Value) {
    exchange_from(s, form, "127.0.0.1").await
}

/// An RFC 8693 exchange from loopback address `source`.
async fn exchange_from(s: &Server, form: &[(&str, &str)], source: &str) -> (StatusCode, Value) {
    let addr: std::net::IpAddr = source.parse().unwrap();
    let r = reqwest::Client::builder()
        .local_address(addr)
        .build()
        .unwrap()
        .post(s.url("/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

fn skopeo_inspect(s: &Server, auth: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .args(auth)
        .arg(format!("docker://{}/acme/app:v1", s.host))
        .output()
        .unwrap()
}

// Multi-threaded: the issuer keeps serving while the test waits for skopeo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_tokens_pull_with_skopeo_through_both_exchange_paths() {
    let s = Server::start_verbose();
    let admin = world(&s).await;
    let (rsa, ec) = (Key::rs256("k8s-1"), Key::es256("gh-1"));
    let cluster = Issuer::start(&[&rsa]).await;
    let github = Issuer::start(&[&ec]).await;
    // A Kubernetes namespace's service accounts, and one repository's main branch.
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "ci", "issuer": cluster.url,
                        "subject": "system:serviceaccount:ci:*",
                        "claims": {"kubernetes.io.namespace": "ci"}})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "gh", "issuer": github.url,
                        "subject": "repo:acme/app:ref:refs/heads/main",
                        "audience": "berth-ci", "claims": {"repository": "acme/app"}})),
            StatusCode::CREATED,
        )
        .await;
    let robot = admin
        .ok("GET", "/orgs/acme/robots/deployer", None, StatusCode::OK)
        .await;
    assert_eq!(robot["trusts"].as_array().unwrap().len(), 2, "{robot}");

    // 1. Docker-compatible: skopeo with the robot's name and the service-account token.
    let sa = rsa.sign(&cluster.k8s_claims("ci", "builder", "berth", 600));
    let out = skopeo_inspect(&s, &["--creds", &format!("acme/deployer:{sa}")]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log_text()
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    // The registry token lasts no longer than the workload's token, nor than an hour.
    let short = rsa.sign(&cluster.k8s_claims("ci", "builder", "berth", 90));
    let r = basic_token(&s, "acme/deployer", &short, "repository:acme/app:pull").await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    assert!(t["expires_in"].as_i64().unwrap() <= 90, "{t}");
    // Another namespace's service account is not trusted.
    let other = rsa.sign(&cluster.k8s_claims("prod", "builder", "berth", 600));
    let r = basic_token(&s, "acme/deployer", &other, "repository:acme/app:pull").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // 2. RFC 8693: asking for push and pull gives pull only (the robot is a Reader).
    let gh = ec.sign(&github.github_claims("acme/app", "refs/heads/main", "berth-ci", 300));
    let (st, body) = exchange(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &gh),
            ("subject_token_type", JWT_TYPE),
            ("scope", "repository:acme/app:pull,push"),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["scope"], "repository:acme/app:pull");
    let expires = body["expires_in"].as_i64().unwrap();
    assert!(expires > 0 && expires <= 300, "{body}");
    let bearer = body["access_token"].as_str().unwrap().to_owned();
    let out = skopeo_inspect(&s, &["--registry-token", &bearer]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The token cannot push.
    let r = reqwest::Client::new()
        .post(s.url("/v2/acme/app/blobs/uploads/"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{}",
        r.status()
    );
    // Another branch of the repository is not trusted; the scope of a refused exchange is nothing.
    let dev = ec.sign(&github.github_claims("acme/app", "refs/heads/dev", "berth-ci", 300));
    let (st, body) = exchange(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &dev),
            ("subject_token_type", JWT_TYPE),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");

    // 3. Keys rotated at the issuer: a token of the new key is accepted (the unknown kid makes
    // berth fetch the keys again), and a second rotation within the minute is not fetched.
    let fetches = cluster.jwks_fetches.load(Ordering::SeqCst);
    let rsa2 = Key::rs256("k8s-2");
    cluster.publish(&[&rsa, &rsa2]);
    let rotated = rsa2.sign(&cluster.k8s_claims("ci", "builder", "berth", 600));
    let r = basic_token(&s, "acme/deployer", &rotated, "repository:acme/app:pull").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(cluster.jwks_fetches.load(Ordering::SeqCst), fetches + 1);
    let rsa3 = Key::rs256("k8s-3");
    cluster.publish(&[&rsa2, &rsa3]);
    let too_soon = rsa3.sign(&cluster.k8s_claims("ci", "builder", "berth", 600));
    let r = basic_token(&s, "acme/deployer", &too_soon, "repository:acme/app:pull").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        cluster.jwks_fetches.load(Ordering::SeqCst),
        fetches + 1,
        "keys fetched again within a minute"
    );

    // 4. Audited (issuer, subject, trust, scope; never the token), counted in /metrics.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let a = admin
            .ok(
                "GET",
                "/audit?action=workload.exchange&limit=100",
                None,
                StatusCode::OK,
            )
            .await;
        if a["events"].as_array().is_some_and(|e| e.len() >= 3) || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = events.to_string();
    assert!(text.contains("system:serviceaccount:ci:builder"), "{text}");
    assert!(text.contains("repo:acme/app:ref:refs/heads/main"), "{text}");
    assert!(text.contains("repository:acme/app:pull"), "{text}");
    for jwt in [&sa, &gh, &rotated] {
        assert!(!text.contains(jwt.as_str()));
        assert!(
            !s.log_text().contains(jwt.as_str()),
            "a workload token in the log"
        );
    }
    let metrics = anonymous_client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |outcome: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "berth_workload_exchanges_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("granted") >= 4, "{metrics}");
    assert!(count("refused") >= 3, "{metrics}");
    // The trust's last use is recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = admin
            .ok(
                "GET",
                "/orgs/acme/robots/deployer/trusts",
                None,
                StatusCode::OK,
            )
            .await;
        if t["trusts"][0]["lastUsed"].is_string() || Instant::now() > deadline {
            assert!(t["trusts"][0]["lastUsed"].is_string(), "{t}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    let s = Server::start();
    let admin = world(&s).await;
    let key = Key::es256("good");
    let issuer = Issuer::start(&[&key]).await;
    // Another issuer nobody trusts: berth must never contact it.
    let stranger_key = Key::es256("good");
    let stranger = Issuer::start(&[&stranger_key]).await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "ci", "issuer": issuer.url,
                        "subject": "system:serviceaccount:ci:builder"})),
            StatusCode::CREATED,
        )
        .await;
    let claims = || issuer.k8s_claims("ci", "builder", "berth", 600);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        key.sign(&c)
    };
    let header = |h: Value| b64(h.to_string().as_bytes());
    let body = |c: &Value| b64(c.to_string().as_bytes());
    // HS256 "signed" with the public key's JSON as the secret.
    let hs_secret = key.jwk.to_string();
    let hs = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some("good".into());
            h
        },
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(hs_secret.as_bytes()),
    )
    .unwrap();
    let good = key.sign(&claims());
    let (_, payload, _) = {
        let p: Vec<&str> = good.split('.').collect();
        (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
    };
    let now = now();
    let cases: Vec<(&str, String)> = vec![
        (
            "forged (another key, same kid)",
            Key::es256("good").sign(&claims()),
        ),
        ("signature of another payload", {
            let other = key.sign(&issuer.k8s_claims("ci", "other", "berth", 600));
            let sig = other.rsplit('.').next().unwrap().to_owned();
            format!("{}.{payload}.{sig}", good.split('.').next().unwrap())
        }),
        (
            "expired",
            with(&|c| {
                c["iat"] = json!(now - 700);
                c["nbf"] = json!(now - 700);
                c["exp"] = json!(now - 100);
            }),
        ),
        ("not yet valid", with(&|c| c["nbf"] = json!(now + 600))),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(now + 600)),
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!(["kubernetes"])),
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "wrong subject",
            with(&|c| c["sub"] = json!("system:serviceaccount:ci:other")),
        ),
        (
            "lives longer than a day",
            with(&|c| c["exp"] = json!(now + 2 * 86_400)),
        ),
        (
            "untrusted issuer",
            stranger_key.sign(&{
                let mut c = stranger.k8s_claims("ci", "builder", "berth", 600);
                c["iss"] = json!(stranger.url);
                c
            }),
        ),
        (
            "issuer claim of a trusted issuer, signed by a stranger",
            stranger_key.sign(&claims()),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                header(json!({"alg": "none", "kid": "good"})),
                body(&claims())
            ),
        ),
        ("HS256 with the public key", hs),
        ("unknown kid", Key::es256("unknown").sign(&claims())),
        (
            "not a JWT",
            "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln".to_owned(),
        ),
    ];
    let fetches_before = issuer.jwks_fetches.load(Ordering::SeqCst);
    for (i, (what, jwt)) in cases.iter().enumerate() {
        // Each case from an address of its own, so that the failure limit does not answer.
        let source = format!("127.0.2.{}", i + 1);
        let r = basic_client_from("acme/deployer", jwt, &source)
            .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{what}: Basic exchange"
        );
        let (st, b) = exchange_from(
            &s,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", jwt),
                ("subject_token_type", JWT_TYPE),
                ("client_id", "acme/deployer"),
                ("scope", "repository:acme/app:pull"),
            ],
            &source,
        )
        .await;
        assert!(
            st == StatusCode::BAD_REQUEST && b["error"] == "invalid_grant",
            "{what}: RFC 8693 exchange answered {st} {b}"
        );
        assert!(b.get("access_token").is_none(), "{what}");
    }
    assert_eq!(
        stranger.requests.load(Ordering::SeqCst),
        0,
        "an untrusted issuer was contacted"
    );
    // The keys were fetched once, and again once for the unknown kids (not again within the
    // minute, however many made-up kids arrive).
    let fetched = issuer.jwks_fetches.load(Ordering::SeqCst) - fetches_before;
    assert!(fetched <= 2, "the JWKS was fetched {fetched} times");
    // The right token works.
    let r = basic_client_from("acme/deployer", &good, "127.0.0.44")
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Malformed exchanges: clear OAuth errors.
    let (st, b) = exchange(
        &s,
        &[("grant_type", EXCHANGE), ("subject_token_type", JWT_TYPE)],
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{b}"
    );
    let (st, b) = exchange(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &good),
            ("subject_token_type", "urn:x"),
        ],
    )
    .await;
    assert_eq!(
        (st, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{b}"
    );
}

#[tokio::test]
async fn one_token_trusted_by_two_robots_needs_client_id_and_a_deleted_trust_ends_its_tokens() {
    let s = Server::start();
    let admin = world(&s).await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "scanner"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "PUT",
            "/orgs/acme/bindings/scanner",
            Some(json!({"role": "Reader", "subject": "robot/scanner"})),
            StatusCode::CREATED,
        )
        .await;
    let key = Key::ed25519("ed-1");
    let issuer = Issuer::start(&[&key]).await;
    // Air-gapped: the keys are given with the trust; discovery is never used.
    for robot in ["deployer", "scanner"] {
        admin
            .ok(
                "POST",
                &format!("/orgs/acme/robots/{robot}/trusts"),
                Some(json!({"name": "ci", "issuer": issuer.url, "subject": "system:serviceaccount:ci:*",
                            "jwks": issuer.jwks()})),
                StatusCode::CREATED,
            )
            .await;
    }
    let jwt = key.sign(&issuer.k8s_claims("ci", "builder", "berth", 600));
    let (st, b) = exchange(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &jwt),
            ("subject_token_type", JWT_TYPE),
            ("scope", "repository:acme/app:pull"),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let msg = b["error_description"].as_str().unwrap();
    assert!(
        msg.contains("client_id") && msg.contains("acme/scanner"),
        "{msg}"
    );
    let (st, b) = exchange(
        &s,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &jwt),
            ("subject_token_type", JWT_TYPE),
            ("client_id", "acme/scanner"),
            ("scope", "repository:acme/app:pull"),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let bearer = b["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        issuer.requests.load(Ordering::SeqCst),
        0,
        "discovery used despite a stored JWKS"
    );
    let get = || {
        reqwest::Client::new()
            .get(s.url("/v2/acme/app/manifests/v1"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .bearer_auth(&bearer)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    admin
        .ok(
            "DELETE",
            "/orgs/acme/robots/scanner/trusts/ci",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get().await.unwrap().status() {
            StatusCode::UNAUTHORIZED => break,
            StatusCode::OK if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("a token of a deleted trust answered {other}"),
        }
    }
    // The other robot's trust still works, and deleting the robot removes its trusts.
    let r = basic_token(&s, "acme/deployer", &jwt, "repository:acme/app:pull").await;
    assert_eq!(r.status(), StatusCode::OK);
    admin
        .ok(
            "DELETE",
            "/orgs/acme/robots/deployer",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let r = basic_token(&s, "acme/deployer", &jwt, "repository:acme/app:pull").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Who may trust workloads to act as a robot: as for minting its credentials, and never more
/// than the caller holds; bad trusts get clear errors.
#[tokio::test]
async fn trusting_a_workload_needs_what_minting_a_credential_needs() {
    let s = Server::start();
    let admin = world(&s).await;
    // The robot becomes a Manager; carol is a Writer-bound member.
    admin
        .ok(
            "PUT",
            "/orgs/acme/bindings/deployer",
            Some(json!({"role": "Manager", "subject": "robot/deployer"})),
            StatusCode::OK,
        )
        .await;
    user_session(&s, "carol", "carol-password-1").await;
    admin
        .ok(
            "PUT",
            "/orgs/acme/members/carol",
            Some(json!({"role": "member"})),
            StatusCode::OK,
        )
        .await;
    let carol = Api::basic(&s, "carol", "carol-password-1");
    let trust = json!({"name": "x", "issuer": "https://issuer.example", "subject": "system:serviceaccount:ci:x"});
    let (st, _) = carol
        .post("/orgs/acme/robots/deployer/trusts", trust.clone())
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a member without credentials:create"
    );
    admin
        .ok(
            "PUT",
            "/orgs/acme/bindings/carol",
            Some(json!({"role": "Writer", "subject": "user/carol"})),
            StatusCode::CREATED,
        )
        .await;
    let (st, _) = carol
        .post("/orgs/acme/robots/deployer/trusts", trust.clone())
        .await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a Writer trusting workloads as a Manager robot"
    );
    let (st, _) = carol.get("/orgs/acme/robots/deployer/trusts").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = Api::anonymous(&s)
        .post("/orgs/acme/robots/deployer/trusts", trust.clone())
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // Bad trusts: each a 400 that says why, and nothing is stored.
    let bad = [
        json!({"name": "a", "issuer": "http://issuer.example", "subject": "x"}),
        json!({"name": "a", "issuer": "https://issuer.example", "subject": "*"}),
        json!({"name": "a", "issuer": "https://issuer.example", "subject": "x", "claims": {"sub": "y"}}),
        json!({"name": "a", "issuer": "https://issuer.example", "subject": "x", "jwks": "{\"keys\": []}"}),
        json!({"name": "a", "issuer": "https://issuer.example", "subject": "x", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
        json!({"name": "a", "issuer": "https://issuer.example"}),
        json!({"name": "Bad Name!", "issuer": "https://issuer.example", "subject": "x"}),
    ];
    for b in bad {
        let (st, v) = admin
            .post("/orgs/acme/robots/deployer/trusts", b.clone())
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b} → {v}");
    }
    let (_, list) = admin.get("/orgs/acme/robots/deployer/trusts").await;
    assert_eq!(list["trusts"], json!([]));
    // Names are unique per robot.
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(trust.clone()),
            StatusCode::CREATED,
        )
        .await;
    let (st, _) = admin.post("/orgs/acme/robots/deployer/trusts", trust).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = admin.delete("/orgs/acme/robots/deployer/trusts/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// Runs `berth credential-provider ARGS` as the kubelet does: the request on stdin, the answer
/// on stdout, the exit status.
fn provider(args: &[&str], request: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(berth_bin())
        .arg("credential-provider")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A provider refusing its arguments may exit before reading: its answer is what counts.
    let _ = child.stdin.take().unwrap().write_all(request.as_bytes());
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_credential_provider_answers_what_skopeo_pulls_with() {
    let s = Server::start();
    let admin = world(&s).await;
    let key = Key::rs256("sa-1");
    let cluster = Issuer::start(&[&key]).await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "prod", "issuer": cluster.url,
                        "subject": "system:serviceaccount:prod:web",
                        "audience": "berth-pull"})),
            StatusCode::CREATED,
        )
        .await;
    // KEP-4412: the kubelet sends the pod's service-account token (audience from the config's
    // tokenAttributes) and the service account's annotations.
    let sa = key.sign(&cluster.k8s_claims("prod", "web", "berth-pull", 3600));
    let image = format!("{}/acme/app:v1", s.host);
    let request = json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": image,
        "serviceAccountToken": sa,
        "serviceAccountAnnotations": {"berth.dev/robot": "acme/deployer"}
    })
    .to_string();
    let out = provider(&["--registry", &s.host], &request);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resp["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(resp["kind"], "CredentialProviderResponse");
    assert!(["Image", "Registry", "Global"].contains(&resp["cacheKeyType"].as_str().unwrap()));
    let cache: i64 = resp["cacheDuration"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        cache > 0 && cache <= 3600,
        "cached longer than the token lives: {resp}"
    );
    let auth = &resp["auth"][s.host.as_str()];
    assert_eq!(auth["username"], "acme/deployer");
    // What the kubelet hands the runtime, handed to skopeo.
    let creds = format!(
        "{}:{}",
        auth["username"].as_str().unwrap(),
        auth["password"].as_str().unwrap()
    );
    let out = skopeo_inspect(&s, &["--creds", &creds]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without service-account tokens: a robot token file on the node.
    let rt = admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/tokens",
            Some(json!({"name": "node"})),
            StatusCode::CREATED,
        )
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("token.json");
    std::fs::write(
        &file,
        json!({"accessId": rt["accessId"], "token": rt["token"]}).to_string(),
    )
    .unwrap();
    let plain = json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                       "kind": "CredentialProviderRequest", "image": image})
    .to_string();
    let out = provider(&["--token-file", file.to_str().unwrap()], &plain);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let auth = &resp["auth"][s.host.as_str()];
    let creds = format!(
        "{}:{}",
        auth["username"].as_str().unwrap(),
        auth["password"].as_str().unwrap()
    );
    let out = skopeo_inspect(&s, &["--creds", &creds]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Malformed requests: a non-zero exit and one line on stderr, nothing on stdout.
    let wrong_api = request.replace(
        "credentialprovider.kubelet.k8s.io/v1",
        "credentialprovider.kubelet.k8s.io/v1alpha1",
    );
    let other_host = request.replace(&s.host, "elsewhere.example.com");
    let no_robot = json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                          "kind": "CredentialProviderRequest", "image": image,
                          "serviceAccountToken": sa, "serviceAccountAnnotations": {}})
    .to_string();
    for (what, req) in [
        ("bad JSON", "{not json".to_owned()),
        ("wrong apiVersion", wrong_api),
        ("an image of another host", other_host),
        ("no robot named", no_robot),
        ("nothing to answer with", plain.clone()),
    ] {
        let out = provider(&["--registry", &s.host], &req);
        assert!(!out.status.success(), "{what}: exit 0");
        assert!(out.stdout.is_empty(), "{what}: wrote to stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    }

    // The kubelet's config to install on nodes.
    let out = Command::new(berth_bin())
        .args([
            "credential-provider",
            "config",
            "--match-image",
            "registry.example.com/*",
            "--audience",
            "berth-pull",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_norway::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["apiVersion"], "kubelet.config.k8s.io/v1");
    assert_eq!(cfg["kind"], "CredentialProviderConfig");
    let p = &cfg["providers"][0];
    assert_eq!(p["name"], "berth");
    assert_eq!(p["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(p["matchImages"], json!(["registry.example.com"]));
    assert!(p["defaultCacheDuration"].is_string());
    assert_eq!(
        p["args"],
        json!(["credential-provider", "--registry", "registry.example.com"])
    );
    let ta = &p["tokenAttributes"];
    assert_eq!(ta["serviceAccountTokenAudience"], "berth-pull");
    assert_eq!(ta["requireServiceAccount"], true);
    assert_eq!(ta["cacheType"], "Token");
    assert_eq!(
        ta["requiredServiceAccountAnnotationKeys"],
        json!(["berth.dev/robot"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_logs_in_with_its_oidc_token_and_pulls_with_the_docker_config() {
    let s = Server::start();
    let admin = world(&s).await;
    let key = Key::es256("gh");
    let github = Issuer::start(&[&key]).await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "gh", "issuer": github.url,
                        "subject": "repo:acme/app:ref:refs/heads/main"})),
            StatusCode::CREATED,
        )
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, docker, oidc) = (
        tmp.path().join("berth.yaml"),
        tmp.path().join("docker"),
        tmp.path().join("oidc"),
    );
    std::fs::write(
        &oidc,
        key.sign(&github.github_claims("acme/app", "refs/heads/main", "berth", 600)),
    )
    .unwrap();
    let berth = |args: &[&str]| {
        Command::new(berth_bin())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("DOCKER_CONFIG", &docker)
            .env_remove("BERTH_FEDERATED_TOKEN")
            .output()
            .unwrap()
    };
    let out = berth(&[
        "login",
        "--federated-token-file",
        oidc.to_str().unwrap(),
        "--robot",
        "acme/deployer",
        "--server",
        &s.base,
        "--docker-config",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The client config acts as the robot.
    let out = berth(&["whoami", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["subject"], "robot:acme/deployer", "{who}");
    // The docker config pulls with skopeo.
    let authfile = docker.join("config.json");
    let out = skopeo_inspect(&s, &["--authfile", authfile.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The token in the environment works the same; another branch's token is refused with a
    // readable error and the authentication exit code.
    let dev = key.sign(&github.github_claims("acme/app", "refs/heads/dev", "berth", 600));
    let out = Command::new(berth_bin())
        .arg("--config")
        .arg(tmp.path().join("other.yaml"))
        .args(["login", "--robot", "acme/deployer", "--server", &s.base])
        .env("BERTH_FEDERATED_TOKEN", &dev)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no trust of robot \"acme/deployer\" accepts this token"),
        "{err}"
    );
    assert!(!err.contains(&dev), "the token was printed");
}

// Multi-threaded: the issuer keeps serving while the test waits on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusts_claims_are_checked_on_their_own() {
    let s = Server::start();
    let admin = world(&s).await;
    let key = Key::es256("gh-claims");
    let github = Issuer::start(&[&key]).await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(
                json!({"name": "gh", "issuer": github.url, "subject": "repo:*",
                        "claims": {"repository": "acme/app", "ref": "refs/heads/main"}}),
            ),
            StatusCode::CREATED,
        )
        .await;
    // The subject pattern, audience and times accept each of these; only a claim differs.
    let mut wrong_repo = github.github_claims("acme/app", "refs/heads/main", "berth", 600);
    wrong_repo["repository"] = json!("acme/other");
    let wrong_ref = github.github_claims("acme/app", "refs/heads/dev", "berth", 600);
    let mut missing = github.github_claims("acme/app", "refs/heads/main", "berth", 600);
    missing.as_object_mut().unwrap().remove("repository");
    for (what, claims) in [
        ("repository", &wrong_repo),
        ("ref", &wrong_ref),
        ("absent", &missing),
    ] {
        let r = basic_token(
            &s,
            "acme/deployer",
            &key.sign(claims),
            "repository:acme/app:pull",
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    }
    // Positive control: every claim as the trust names it.
    let right = github.github_claims("acme/app", "refs/heads/main", "berth", 600);
    let r = basic_token(
        &s,
        "acme/deployer",
        &key.sign(&right),
        "repository:acme/app:pull",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}

// Multi-threaded: the issuer keeps serving while the test waits on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workloads_registry_token_lives_at_most_an_hour_and_ends_with_its_robot() {
    // Registry tokens may live three hours here: a workload's still gets one at most.
    let s = Server::start_args(&["--token-ttl", "3h"]);
    let admin = world(&s).await;
    let key = Key::es256("long");
    let issuer = Issuer::start(&[&key]).await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/deployer/trusts",
            Some(json!({"name": "ci", "issuer": issuer.url, "subject": "system:serviceaccount:ci:*"})),
            StatusCode::CREATED,
        )
        .await;
    // A workload token good for 20 hours: the registry token still lives an hour at most.
    let jwt = key.sign(&issuer.k8s_claims("ci", "builder", "berth", 20 * 3600));
    let r = basic_token(&s, "acme/deployer", &jwt, "repository:acme/app:pull").await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        life > 0 && life <= 3600,
        "a workload's registry token lives {life} s"
    );
    // Deleting the robot ends the bearer token already issued.
    let pull = || {
        anonymous_client()
            .get(s.url("/v2/acme/app/manifests/v1"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", OCI_MANIFEST)
            .send()
    };
    assert_eq!(pull().await.unwrap().status(), StatusCode::OK);
    admin
        .ok(
            "DELETE",
            "/orgs/acme/robots/deployer",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let start = Instant::now();
    loop {
        match pull().await.unwrap().status() {
            StatusCode::OK if start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            StatusCode::UNAUTHORIZED => break,
            other => panic!("{other} after {:?}", start.elapsed()),
        }
    }
}

#[tokio::test]
async fn a_trust_with_its_own_keys_works_while_another_of_its_issuer_cannot_be_reached() {
    let s = Server::start();
    let admin = world(&s).await;
    // Nothing listens here: discovery of this issuer fails.
    let issuer = "http://127.0.0.1:9";
    let key = Key::es256("stored");
    for (name, jwks) in [
        ("by-discovery", None),
        ("stored", Some(json!({"keys": [key.jwk.clone()]}))),
    ] {
        let mut trust =
            json!({"name": name, "issuer": issuer, "subject": "system:serviceaccount:ci:*"});
        if let Some(j) = jwks {
            trust["jwks"] = j;
        }
        admin
            .ok(
                "POST",
                "/orgs/acme/robots/deployer/trusts",
                Some(trust),
                StatusCode::CREATED,
            )
            .await;
    }
    let claims = json!({
        "iss": issuer, "sub": "system:serviceaccount:ci:builder", "aud": "berth",
        "iat": now(), "nbf": now(), "exp": now() + 600,
    });
    let r = basic_token(
        &s,
        "acme/deployer",
        &key.sign(&claims),
        "repository:acme/app:pull",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // Signed by a key no trust holds: the unreachable issuer is the reason it cannot be checked.
    let other = Key::es256("stored");
    let r = basic_token(
        &s,
        "acme/deployer",
        &other.sign(&claims),
        "repository:acme/app:pull",
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}
