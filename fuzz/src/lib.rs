//! The bodies of berth's fuzz targets, one function per target. `fuzz_targets/NAME.rs` hands
//! libFuzzer's input to `NAME`; the suite (`tests/it/fuzz_corpus.rs`) replays every committed
//! corpus file and every past finding through the same functions on stable Rust, so CI keeps
//! proving them without the nightly toolchain. Each asserts an oracle beyond "no panic" where the
//! format has one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::Engine as _;
use berth::auth::token::TokenService;
use berth::auth::workload::Workloads;
use berth::fuzzing;
use berth::iam::Trust;
use berth::policy::scope::Scope;
use berth::types::{Digest, Reference, RepositoryName, ResumableSha256, Tag};
use serde_json::{Value, json};

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Splits `data` at its first NUL: the structure of two-part inputs.
fn two(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|&b| b == 0)?;
    Some((&data[..at], &data[at + 1..]))
}

/// A target's body: what it asserts of one input.
pub type Body = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: [(&str, Body); 18] = [
    ("names", names),
    ("scope", scope),
    ("glob", glob),
    ("manifest", manifest),
    ("resumable", resumable),
    ("jwks", jwks),
    ("route", route),
    ("range", range),
    ("token_form", token_form),
    ("basic", basic),
    ("jwt", jwt),
    ("discovery", discovery),
    ("sealed", sealed),
    ("apply", apply),
    ("forms", forms),
    ("client_config", client_config),
    ("credential_provider", credential_provider),
    ("manifest_structured", manifest_structured),
];

/// Repository names, tags, references and digests: what parses prints back to text that
/// parses to the same value.
pub fn names(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Ok(n) = s.parse::<RepositoryName>() {
        let again: RepositoryName = n.to_string().parse().expect("a printed name parses");
        assert_eq!(again.to_string(), n.to_string());
        assert_eq!(n.to_string(), s, "a name prints as it was written");
    }
    if let Ok(t) = s.parse::<Tag>() {
        assert_eq!(t.to_string(), s);
    }
    if let Ok(d) = s.parse::<Digest>() {
        let again: Digest = d.to_string().parse().expect("a printed digest parses");
        assert_eq!(again, d);
    }
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r.to_string().parse().expect("a printed reference parses");
        assert_eq!(again.to_string(), r.to_string());
    }
}

/// Docker token scopes: a repository scope's name is a repository name on its own, and the
/// same name asked again parses to the same scope's name.
pub fn scope(data: &[u8]) {
    let Some(s) = text(data) else { return };
    for one in s.split(' ') {
        if let Some(Scope::Repository { name, .. }) = Scope::parse(one) {
            let again: RepositoryName = name.to_string().parse().expect("a scope's name parses");
            assert_eq!(again, name);
            let asked = format!("repository:{name}:pull");
            match Scope::parse(&asked) {
                Some(Scope::Repository { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{asked:?} parsed as {other:?}"),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Lit(u8),
    Star,
    DStar,
}

fn glob_tokens(glob: &[u8]) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < glob.len() {
        if glob[i] == b'*' {
            let mut j = i;
            while j < glob.len() && glob[j] == b'*' {
                j += 1;
            }
            let t = if j - i >= 2 { Tok::DStar } else { Tok::Star };
            match out.last().copied() {
                Some(Tok::Star) if t == Tok::DStar => *out.last_mut().unwrap() = Tok::DStar,
                Some(Tok::Star | Tok::DStar) => {}
                _ => out.push(t),
            }
            i = j;
        } else {
            out.push(Tok::Lit(glob[i]));
            i += 1;
        }
    }
    out
}

/// The reference matcher: backtracking, `*` within a path segment, `**` across segments.
fn glob_reference(p: &[Tok], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(Tok::Lit(c)) => s.first() == Some(c) && glob_reference(&p[1..], &s[1..]),
        Some(Tok::Star) => (0..=s.len())
            .take_while(|&k| k == 0 || s[k - 1] != b'/')
            .any(|k| glob_reference(&p[1..], &s[k..])),
        Some(Tok::DStar) => (0..=s.len()).any(|k| glob_reference(&p[1..], &s[k..])),
    }
}

/// Repository globs (`GLOB\0NAME`): `check_glob` bounds every pattern, and `glob_match` agrees
/// with the reference matcher on small inputs.
pub fn glob(data: &[u8]) {
    let Some((glob, name)) = two(data) else {
        return;
    };
    let (Some(glob), Some(name)) = (text(glob), text(name)) else {
        return;
    };
    let bounded = berth::policy::check_glob(glob).is_ok();
    let got = berth::policy::glob_match(glob, name);
    if bounded && glob.len() <= 12 && name.len() <= 24 {
        assert_eq!(
            got,
            glob_reference(&glob_tokens(glob.as_bytes()), name.as_bytes()),
            "{glob:?} against {name:?}"
        );
    }
}

const MANIFEST_TYPES: [&str; 5] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
];

/// Manifests and indexes (with `subject`) as a client pushes them, any content type: no panic,
/// and a manifest that parses parses again the same way.
pub fn manifest(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = MANIFEST_TYPES
        .get(usize::from(pick) % (MANIFEST_TYPES.len() + 1))
        .copied();
    let first = berth::content::manifest::parse(ct, body);
    let again = berth::content::manifest::parse(ct, body);
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
}

/// Structure-aware manifests: the bytes choose a well-formed document's parts (media types,
/// descriptors, sizes, a subject, annotations) and damage one of them, so the fuzzer spends its
/// time in the manifest rules rather than in the JSON grammar. A manifest whose every descriptor
/// is well-formed is accepted; the references it reports are exactly those written.
pub fn manifest_structured(data: &[u8]) {
    let mut b = data.iter().copied();
    let mut next = || b.next().unwrap_or(0);
    let digest = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
    let index = next() % 2 == 1;
    let n = usize::from(next() % 4);
    let damage = next() % 8;
    let mut refs: Vec<Value> = (0..n)
        .map(|_| {
            let size = i64::from(next()) * 1000 - 50;
            json!({
                "mediaType": if index { MANIFEST_TYPES[0] } else { "application/vnd.oci.image.layer.v1.tar+gzip" },
                "digest": digest(next()),
                "size": size,
            })
        })
        .collect();
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": if index { MANIFEST_TYPES[1] } else { MANIFEST_TYPES[0] },
    });
    if !index {
        doc["config"] = json!({
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(next()),
            "size": i64::from(next()),
        });
    }
    if next() % 2 == 1 {
        doc["subject"] =
            json!({ "mediaType": MANIFEST_TYPES[0], "digest": digest(next()), "size": 7 });
    }
    if next() % 2 == 1 {
        doc["annotations"] = json!({ "org.opencontainers.image.created": "2026-12-04T00:00:00Z" });
    }
    let tail: Vec<u8> = b.collect();
    let junk = String::from_utf8_lossy(&tail).into_owned();
    match damage {
        1 => doc["schemaVersion"] = json!(junk),
        2 if !refs.is_empty() => refs[0]["digest"] = json!(junk),
        3 if !refs.is_empty() => refs[0]["size"] = json!(junk),
        4 => doc["mediaType"] = json!(junk),
        5 if !index => doc["config"]["digest"] = json!(junk),
        6 => doc["subject"] = json!({ "digest": junk }),
        _ => {}
    }
    doc[if index { "manifests" } else { "layers" }] = Value::Array(refs.clone());
    let body = serde_json::to_vec(&doc).unwrap();
    let ct = doc["mediaType"].as_str().map(str::to_owned);
    let parsed = berth::content::manifest::parse(ct.as_deref(), &body);
    let well_formed = damage == 0 && refs.iter().all(|r| r["size"].as_i64() >= Some(0));
    if well_formed {
        assert!(parsed.is_ok(), "{doc} refused: {parsed:?}");
    }
}

/// The resumable SHA-256 whose state is stored as text between chunks: hashing in two parts
/// through the text state gives the digest of hashing at once; text from outside is refused or
/// taken up without panic.
pub fn resumable(data: &[u8]) {
    if let Some(t) = text(data)
        && let Some(mut h) = ResumableSha256::from_text(t)
    {
        h.update(b"more");
        let _ = h.finish();
    }
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let k = usize::from(cut) * bytes.len() / 256;
    let mut first = ResumableSha256::default();
    first.update(&bytes[..k]);
    let mut resumed =
        ResumableSha256::from_text(&first.to_text()).expect("its own state text is taken up");
    resumed.update(&bytes[k..]);
    assert_eq!(resumed.finish(), Digest::sha256(bytes));
}

/// JSON Web Key Sets (a trust's, an issuer's) and a token's unverified claims: no panic.
pub fn jwks(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let _ = berth::auth::workload::parse_jwks(s);
    if berth::auth::workload::looks_like_jwt(s) {
        let _ = berth::auth::workload::unverified_claims(s);
    }
}

const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];

/// The `/v2` route parser (first byte: the method; the rest: the path after `/v2`): a route's
/// repository is a repository name that prints as it parses, and appears in the path.
pub fn route(data: &[u8]) {
    let Some((&m, path)) = data.split_first() else {
        return;
    };
    let Some(path) = text(path) else { return };
    let method: axum::http::Method = METHODS[usize::from(m) % METHODS.len()].parse().unwrap();
    if let Ok((name, repo)) = fuzzing::oci_route(&method, path) {
        assert!(!name.is_empty());
        if let Some(repo) = repo {
            let again: RepositoryName = repo.parse().expect("a route's repository parses");
            assert_eq!(again.to_string(), repo);
        }
    }
}

/// `Range` (GET of a blob) and `Content-Range` (upload PATCH): a resolved range lies inside
/// the blob; a Content-Range has a length.
pub fn range(data: &[u8]) {
    let Some((size, v)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Some(v) = text(v) else { return };
    if let Ok(Some((start, end))) = fuzzing::range(v, size) {
        assert!(
            start <= end && end < size,
            "{v:?} on {size} gave {start}-{end}"
        );
    }
    if let Ok((start, end)) = fuzzing::content_range(v) {
        assert!(start <= end);
        assert!(
            (end - start).checked_add(1).is_some(),
            "{v:?} has no length"
        );
    }
}

/// The `/token` GET query and POST form (RFC 8693's too): every scope asked names a
/// repository that prints as it parses.
pub fn token_form(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let (pairs, scopes) = fuzzing::token_form(s);
    assert!(
        scopes.len()
            <= pairs
                .iter()
                .map(|(_, v)| v.split(' ').count())
                .sum::<usize>()
    );
    for sc in scopes {
        if let Scope::Repository { name, .. } = sc {
            assert_eq!(name.to_string().parse::<RepositoryName>().unwrap(), name);
        }
    }
}

/// Basic credentials and typed user names: what a header presents is what was encoded, and
/// a user name is checked without panic.
pub fn basic(data: &[u8]) {
    if let Some((user, secret)) = fuzzing::basic(data) {
        assert!(!user.contains(':'));
        let _ = berth::iam::check_name("user", &user);
        let again = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
        );
        assert_eq!(
            fuzzing::basic(again.as_bytes()),
            Some((user, secret)),
            "a re-encoded Basic header presents the same login"
        );
    }
    if let Some(s) = text(data) {
        let _ = berth::iam::check_name("user", s);
    }
}

struct JwtSetup {
    tokens: TokenService,
    workloads: Workloads,
    trust: Trust,
    /// A token both verifiers accept: berth's own (audience `berth`) from `issuer`.
    good: String,
    provider: berth::auth::oidc::ProviderConfig,
    jwks: Vec<jsonwebtoken::jwk::Jwk>,
}

const JWT_ISSUER: &str = "https://issuer.example";

fn jwt_setup() -> &'static JwtSetup {
    static SETUP: OnceLock<JwtSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-fuzz-jwt-{}", std::process::id()));
        let keys = berth::auth::keys::Keys::open(&dir).expect("keys");
        let jwks_text = keys.jwks().to_string();
        let jwks = berth::auth::workload::parse_jwks(&jwks_text).expect("own JWKS parses");
        let tokens = TokenService::new(
            keys,
            JWT_ISSUER.into(),
            std::time::Duration::from_secs(3000),
        );
        let (good, _) = tokens
            .issue(
                "system:serviceaccount:ci:builder",
                "berth",
                Vec::new(),
                Vec::new(),
            )
            .expect("issue");
        let trust = Trust {
            id: 1,
            robot_id: 1,
            org: "acme".into(),
            robot: "ci".into(),
            name: "fuzz".into(),
            issuer: JWT_ISSUER.into(),
            subject: "system:serviceaccount:ci:*".into(),
            audience: Some("berth".into()),
            claims: BTreeMap::new(),
            jwks: Some(jwks_text),
            created_at: 0,
            last_used_at: None,
        };
        let provider = berth::auth::oidc::ProviderConfig {
            name: "idp".into(),
            display_name: "IdP".into(),
            issuer: JWT_ISSUER.into(),
            client_id: "berth".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            username_claim: "sub".into(),
            groups_claim: "groups".into(),
            admin_group: None,
            groups_prefix: String::new(),
        };
        let setup = JwtSetup {
            tokens,
            workloads: Workloads::new(std::time::Duration::from_secs(86_400), false),
            trust,
            good,
            provider,
            jwks,
        };
        assert!(setup.tokens.verify(&setup.good, "berth").is_ok());
        assert!(
            setup
                .workloads
                .verify(&setup.good, std::slice::from_ref(&setup.trust), "berth")
                .is_ok()
        );
        setup
    })
}

/// JWTs as berth reads them — its own registry tokens, workload tokens against a trust, and
/// ID tokens against a provider's keys — with an oracle: a token is accepted only with the
/// signature of what it says. The first byte picks the form: 0, the input is a whole token;
/// 1–3, a valid token whose header, claims or signature part is replaced by the rest of the
/// input (base64url-encoded), which must then be refused unless it is the same part.
pub fn jwt(data: &[u8]) {
    let s = jwt_setup();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (token, same) = if pick % 4 == 0 {
        let Some(t) = text(rest) else { return };
        (t.to_owned(), t == s.good)
    } else {
        let part = usize::from(pick % 4) - 1;
        let mut parts: Vec<String> = s.good.split('.').map(str::to_owned).collect();
        let new = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rest);
        let same = parts[part] == new;
        parts[part] = new;
        (parts.join("."), same)
    };
    let own = s.tokens.verify(&token, "berth");
    let workload = s
        .workloads
        .verify(&token, std::slice::from_ref(&s.trust), "berth");
    let header = jsonwebtoken::decode_header(&token);
    let id = header
        .as_ref()
        .ok()
        .map(|h| berth::auth::oidc::verify_with_keys(&s.provider, &s.jwks, h, &token, None));
    if !same {
        assert!(own.is_err(), "a changed token verified as berth's: {token}");
        assert!(
            workload.is_err(),
            "a changed token verified as a workload's: {token}"
        );
        assert!(
            !matches!(id, Some(Ok(_))),
            "a changed token verified as an ID token: {token}"
        );
    }
}

/// OpenID discovery documents (`ISSUER\0DOCUMENT`): a document berth takes names the
/// configured issuer exactly and the three endpoints.
pub fn discovery(data: &[u8]) {
    let Some((issuer, doc)) = two(data) else {
        return;
    };
    let (Some(issuer), Ok(doc)) = (text(issuer), serde_json::from_slice::<Value>(doc)) else {
        return;
    };
    let url = format!("{issuer}/.well-known/openid-configuration");
    if let Ok(d) = berth::auth::oidc::discovery_document("idp", issuer, &url, &doc) {
        assert_eq!(doc["issuer"].as_str(), Some(issuer));
        assert_eq!(doc["jwks_uri"].as_str(), Some(d.jwks_uri.as_str()));
        assert_eq!(
            doc["token_endpoint"].as_str(),
            Some(d.token_endpoint.as_str())
        );
    }
}

/// Sealed values from outside: the sign-in callback's `state` cookie, a device handle, a
/// provider's refresh token row. Nothing but what was sealed under the same label opens, and
/// what was sealed opens to itself.
pub fn sealed(data: &[u8]) {
    static SEALER: OnceLock<berth::auth::keys::Sealer> = OnceLock::new();
    let sealer = SEALER.get_or_init(|| {
        berth::auth::keys::Sealer::new("a fuzzing secret of at least thirty-two characters")
            .unwrap()
    });
    assert!(
        sealer.open("sso-state", data).is_err(),
        "bytes from outside opened"
    );
    if let Some(t) = text(data) {
        let mine = sealer.seal("sso-state", t).unwrap();
        assert_eq!(sealer.open("sso-state", &mine).unwrap(), t);
        assert!(
            sealer.open("sso-device", &mine).is_err(),
            "opened under another label"
        );
    }
}

/// `apply -f` files (berth's and Kubernetes' RBAC shapes): every planned object lives in the
/// organization asked or its own, in one of the two collections, under a name.
pub fn apply(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Ok(plans) = fuzzing::apply(s, "acme") {
        for (kind, org, objects) in plans {
            assert!(kind == "role" || kind == "binding", "{kind}");
            // The organization asked, unless the document names its own (metadata.org).
            assert!(
                org == "acme" || s.contains(org.as_str()),
                "{org:?} from nowhere"
            );
            for name in objects {
                assert!(!name.is_empty());
            }
        }
    }
}

/// Console form bodies, the role rules they carry (YAML in the console, JSON in the API) and
/// the durations forms give (`expiresIn`, `overlap`): no panic; rules that pass print and read
/// back the same; a duration that parses is what it says.
pub fn forms(data: &[u8]) {
    if let Some(form) = fuzzing::console_form(data) {
        if let Some(rules) = form.get("rules")
            && let Ok(v) = serde_norway::from_str::<Value>(rules)
            && let Ok(r) = fuzzing::role_rules(&v)
        {
            let printed = serde_json::to_value(&r).unwrap();
            assert_eq!(fuzzing::role_rules(&printed).unwrap(), r);
        }
        for k in ["expiresIn", "overlap"] {
            if let Some(d) = form.get(k)
                && let Ok(dur) = berth::config::parse_duration(d)
            {
                let digits: String = d.trim().chars().take_while(char::is_ascii_digit).collect();
                let n: u128 = digits.parse().unwrap_or(0);
                assert!(dur.as_millis() >= n, "{d:?} gave {dur:?}");
            }
        }
    }
}

/// The CLI's configuration file: what reads prints back to a file that reads the same.
pub fn client_config(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Some(round) = fuzzing::client_config(s) {
        let (printed, again) = round.unwrap();
        assert_eq!(again, printed);
    }
}

/// The kubelet's `CredentialProviderRequest` on stdin: an answer is given only for an image
/// on the provider's registry, and names that registry.
pub fn credential_provider(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Ok(resp) = fuzzing::credential_provider(s, 1_800_000_000) {
        let auth = resp["auth"].as_object().expect("an answer has auth");
        assert_eq!(auth.len(), 1);
        let host = auth.keys().next().unwrap();
        assert_eq!(host, "registry.example.com", "{resp}");
    }
}
