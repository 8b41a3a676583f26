//! Workload identity: a robot's trusts name the external workloads (a Kubernetes service
//! account, a CI job) that may act as it by presenting a JWT of their platform's OpenID issuer.
//! Nothing secret is stored: a trust says which issuer, which `sub` (exact or `*` globs), which
//! audience and which other claims; the issuer's keys come from OpenID Connect Discovery
//! (`{issuer}/.well-known/openid-configuration` → `jwks_uri`, RFC 7517) or from a JWKS given
//! when the trust was made (clusters nothing can reach).
//!
//! Rules (RFC 7519, RFC 8725): only RS256, ES256 and EdDSA, never `none` or HMAC (an HMAC token
//! "signed" with a public key is refused before any key is looked at); `iss` exact; `aud` holds
//! the trust's audience (default: the registry's service name); `exp`, `nbf`, `iat` with at most
//! 60 s leeway; a token may not live longer than `max_lifetime` (default 24 h). Keys are fetched
//! only for issuers some trust names, over https, with a deadline and a size cap, cached for an
//! hour per organization and issuer, and fetched again for an unknown `kid` at most once a
//! minute per issuer.
//!
//! The server fetches only what the operator allows: an issuer whose host is, or resolves to, a
//! loopback, private, link-local or otherwise non-public address is refused (and plain http
//! altogether) unless `--allow-private-issuers`; the connection goes to the address that was
//! checked (no second lookup to rebind); `jwks_uri` must share the issuer's origin; why a fetch
//! failed goes to the operator's log, never to the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::iam::Trust;
use crate::store::now;

/// How an unreachable issuer's error starts (answered 503, like an unreachable store).
pub const UNAVAILABLE: &str = "issuer keys: unavailable";
/// Clock leeway for `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 60;
/// Longest a token issued in exchange lives.
pub const MAX_ISSUED_SECS: i64 = 3600;
/// How long fetched keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// Least time between two fetches for one issuer prompted by an unknown `kid`.
const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// Least time between two fetches for one issuer after a failed one.
const FAILURE_BACKOFF: Duration = Duration::from_secs(5);
/// Issuers whose keys are cached at most, in all and per organization.
const MAX_ISSUERS: usize = 256;
const MAX_ISSUERS_PER_ORG: usize = 8;
/// Largest discovery document and key set read.
const MAX_DOCUMENT: usize = 256 * 1024;
/// Deadline of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The token is not acceptable; the message says why (never the token).
    #[error("{0}")]
    Refused(String),
    /// The issuer's keys could not be fetched (answered 503: the workload may retry).
    #[error("issuer keys: unavailable: {0}")]
    Unavailable(String),
}

fn refused(m: impl Into<String>) -> WorkloadError {
    WorkloadError::Refused(m.into())
}

/// The claims of a verified external token that matter here.
#[derive(Debug, Clone)]
pub struct External {
    pub issuer: String,
    pub subject: String,
    pub expires: i64,
}

/// Whether `s` looks like a JWT (three base64url parts), so that a password is not taken for one.
pub fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The payload of a JWT, unverified: only to learn its issuer (which picks the keys) and, for
/// the credential provider, its expiry.
pub fn unverified_claims(jwt: &str) -> Option<Value> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Checks an issuer URL: https with a host that is not a non-public address (`localhost`, an
/// address literal on loopback, private or link-local ranges), no user, query or fragment.
/// With `allow_private`, such hosts are accepted, and plain http to loopback too.
pub fn check_issuer(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("issuer {url:?}: {e}"))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("issuer {url:?} must not have a query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("issuer {url:?} must not carry credentials"));
    }
    let Some(host) = parsed.host_str() else {
        return Err(format!("issuer {url:?} has no host"));
    };
    // A fully qualified name's trailing dot (`localhost.`) names the same host.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    let literal = host.parse::<std::net::IpAddr>().ok();
    let private = host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || literal.is_some_and(|a| !is_public(a));
    if private && !allow_private {
        return Err(format!(
            "issuer {url:?} is on a loopback, private or link-local address; the server's operator must allow such issuers (--allow-private-issuers)"
        ));
    }
    let loopback =
        host.eq_ignore_ascii_case("localhost") || literal.is_some_and(|a| a.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback && allow_private => Ok(()),
        _ => Err(format!("issuer {url:?} must be https")),
    }
}

/// Whether `a` is an address of the public internet: not loopback, private (RFC 1918, unique
/// local), link-local, shared (CGNAT), unspecified, multicast, broadcast or documentation.
pub fn is_public(a: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_multicast()
                || v.is_broadcast()
                || v.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v.segments();
            // IPv4 inside IPv6: compatible (::a.b.c.d), translated (::ffff:0:a.b.c.d) and 6to4
            // (2002:aabb:ccdd::) carry an IPv4 address that routes may reach.
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if s[..6] == [0; 6] || (s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0) {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            !(v.is_loopback()
                || (s[0] == 0x2001 && s[1] == 0)
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// `sub` against a trust's pattern: exact, or `*` matching any run of characters.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A claim by path: `kubernetes.io.namespace` reaches `{"kubernetes.io": {"namespace": …}}`
/// (a dot may be part of a key: the longest key that matches is tried first).
pub fn claim_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    if let Some(x) = obj.get(path) {
        return Some(x);
    }
    let dots: Vec<usize> = path.match_indices('.').map(|(i, _)| i).collect();
    for &i in dots.iter().rev() {
        if let Some(inner) = obj.get(&path[..i])
            && let Some(x) = claim_at(inner, &path[i + 1..])
        {
            return Some(x);
        }
    }
    None
}

/// Parses a JWKS, keeping the keys this module can use (RSA, P-256, Ed25519) and dropping the
/// rest (symmetric keys, encryption keys, unknown types) instead of failing on them.
pub fn parse_jwks(text: &str) -> Result<Vec<Jwk>, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JSON Web Key Set: no \"keys\" array")?;
    let usable: Vec<Jwk> = keys
        .iter()
        .filter(|k| {
            k.get("use")
                .and_then(Value::as_str)
                .is_none_or(|u| u == "sig")
        })
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| {
            matches!(
                k.algorithm,
                AlgorithmParameters::RSA(_)
                    | AlgorithmParameters::EllipticCurve(_)
                    | AlgorithmParameters::OctetKeyPair(_)
            )
        })
        .collect();
    if usable.is_empty() {
        return Err("the key set holds no RSA, P-256 or Ed25519 signing key".into());
    }
    Ok(usable)
}

struct IssuerKeys {
    keys: Arc<Vec<Jwk>>,
    fetched: Instant,
}

/// Verifies external tokens against trusts; caches issuers' keys.
pub struct Workloads {
    cache: Mutex<HashMap<String, IssuerKeys>>,
    /// Issuer → when its keys were last fetched again for an unknown kid (once a minute).
    last_refetch: Mutex<HashMap<String, Instant>>,
    /// Issuer → when a fetch last failed (no new attempt for a few seconds).
    last_failure: Mutex<HashMap<String, Instant>>,
    pub max_lifetime: Duration,
    /// Issuers on non-public addresses allowed (`--allow-private-issuers`).
    pub allow_private: bool,
}

impl Default for Workloads {
    fn default() -> Self {
        Workloads {
            cache: Mutex::default(),
            last_refetch: Mutex::default(),
            last_failure: Mutex::default(),
            max_lifetime: Duration::from_secs(86_400),
            allow_private: false,
        }
    }
}

impl Workloads {
    pub fn new(max_lifetime: Duration, allow_private: bool) -> Workloads {
        Workloads {
            max_lifetime,
            allow_private,
            ..Workloads::default()
        }
    }

    /// The first of `trusts` that `jwt` satisfies, with the token's claims. `default_audience`
    /// is the audience of trusts that name none. Blocking (it may fetch keys).
    pub fn verify(
        &self,
        jwt: &str,
        trusts: &[Trust],
        default_audience: &str,
    ) -> Result<(Trust, External), WorkloadError> {
        let header =
            jsonwebtoken::decode_header(jwt).map_err(|e| refused(format!("not a JWT: {e}")))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(refused(format!(
                "algorithm {:?} is not accepted (RS256, ES256 or EdDSA)",
                header.alg
            )));
        }
        let claims =
            unverified_claims(jwt).ok_or_else(|| refused("the token's claims are not JSON"))?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| refused("the token has no issuer"))?;
        let mut candidates: Vec<&Trust> = trusts.iter().filter(|t| t.issuer == iss).collect();
        if candidates.is_empty() {
            return Err(refused(format!("no trust names issuer {iss:?}")));
        }
        // Trusts that hold their keys first: they need no fetch. One trust whose issuer cannot
        // be reached does not stop another that can check the token (two trusts of one issuer,
        // one by discovery and one with stored keys); only when none could check it is the
        // issuer unavailable.
        candidates.sort_by_key(|t| t.jwks.is_none());
        let mut last = refused("no trust matches the token");
        let mut unavailable = None;
        for t in candidates {
            match self.verify_one(jwt, &header, t, default_audience) {
                Ok(ext) => return Ok((t.clone(), ext)),
                Err(e @ WorkloadError::Unavailable(_)) => unavailable = Some(e),
                Err(e) => last = e,
            }
        }
        Err(unavailable.unwrap_or(last))
    }

    fn verify_one(
        &self,
        jwt: &str,
        header: &jsonwebtoken::Header,
        t: &Trust,
        default_audience: &str,
    ) -> Result<External, WorkloadError> {
        let keys = self.keys_for(t, header.kid.as_deref())?;
        let candidates: Vec<&Jwk> = keys
            .iter()
            .filter(|k| match &header.kid {
                Some(kid) => k.common.key_id.as_deref() == Some(kid.as_str()),
                None => true,
            })
            .filter(|k| fits(k, header.alg))
            .take(8)
            .collect();
        if candidates.is_empty() {
            return Err(refused(
                "no key of the issuer matches the token's kid and algorithm",
            ));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS as u64;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_issuer(&[&t.issuer]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        let mut claims = None;
        for k in candidates {
            let Ok(key) = DecodingKey::from_jwk(k) else {
                continue;
            };
            if let Ok(d) = jsonwebtoken::decode::<Value>(jwt, &key, &v) {
                claims = Some(d.claims);
                break;
            }
        }
        let claims = claims
            .ok_or_else(|| refused("the token's signature, issuer or times are not valid"))?;
        let now = now();
        let num = |k: &str| claims.get(k).and_then(Value::as_i64);
        let (Some(exp), Some(iat)) = (num("exp"), num("iat")) else {
            return Err(refused("exp and iat must be numbers"));
        };
        if iat > now + LEEWAY_SECS {
            return Err(refused("the token was issued in the future"));
        }
        let max = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX);
        if exp - iat > max {
            return Err(refused(format!(
                "the token lives {} s, longer than the {max} s allowed",
                exp - iat
            )));
        }
        let audience = t.audience.as_deref().unwrap_or(default_audience);
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(refused(format!(
                "the token's audience does not include {audience:?}"
            )));
        }
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !glob_match(&t.subject, sub) {
            return Err(refused("the token's subject does not match the trust"));
        }
        for (path, want) in &t.claims {
            if claim_at(&claims, path).and_then(Value::as_str) != Some(want.as_str()) {
                return Err(refused(format!("claim {path:?} does not match the trust")));
            }
        }
        Ok(External {
            issuer: t.issuer.clone(),
            subject: sub.to_owned(),
            expires: exp,
        })
    }

    /// The keys to check a token of trust `t` with: its own JWKS, or the issuer's (cached;
    /// fetched again for an unknown `kid` at most once a minute).
    fn keys_for(&self, t: &Trust, kid: Option<&str>) -> Result<Arc<Vec<Jwk>>, WorkloadError> {
        if let Some(text) = &t.jwks {
            return parse_jwks(text).map(Arc::new).map_err(refused);
        }
        // Cached per organization and issuer: one tenant's trusts cannot evict another's keys.
        let slot = format!("{}\n{}", t.org, t.issuer);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache
                .get(&slot)
                .filter(|c| c.fetched.elapsed() < KEYS_TTL)
                .map(|c| c.keys.clone())
        };
        let known = |keys: &Arc<Vec<Jwk>>| {
            kid.is_none_or(|kid| keys.iter().any(|k| k.common.key_id.as_deref() == Some(kid)))
        };
        match &cached {
            Some(keys) if known(keys) => return Ok(keys.clone()),
            // An unknown kid: the issuer may have rotated its keys. Fetched again at most once a
            // minute, so a stream of made-up kids costs the issuer nothing.
            Some(keys) if !stamp(&self.last_refetch, &slot, REFETCH_EVERY) => {
                return Ok(keys.clone());
            }
            Some(_) => {}
            None => {
                let failed = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&slot)
                    .is_some_and(|at| at.elapsed() < FAILURE_BACKOFF);
                if failed {
                    return Err(WorkloadError::Unavailable(
                        "the last fetch failed moments ago".into(),
                    ));
                }
            }
        }
        let keys = match fetch_keys(&t.issuer, self.allow_private) {
            Ok(k) => Arc::new(k),
            Err(e) => {
                let mut failures = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if failures.len() > MAX_ISSUERS * 4 {
                    failures.retain(|_, at| at.elapsed() < FAILURE_BACKOFF);
                }
                failures.insert(slot, Instant::now());
                return Err(WorkloadError::Unavailable(e));
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let org_prefix = format!("{}\n", t.org);
        let of_org = cache.keys().filter(|k| k.starts_with(&org_prefix)).count();
        let evict = |cache: &HashMap<String, IssuerKeys>, own: bool| {
            cache
                .iter()
                .filter(|(k, _)| !own || k.starts_with(&org_prefix))
                .min_by_key(|(_, c)| c.fetched)
                .map(|(k, _)| k.clone())
        };
        if !cache.contains_key(&slot) {
            let victim = if of_org >= MAX_ISSUERS_PER_ORG {
                evict(&cache, true)
            } else if cache.len() >= MAX_ISSUERS {
                evict(&cache, false)
            } else {
                None
            };
            if let Some(v) = victim {
                cache.remove(&v);
            }
        }
        cache.insert(
            slot,
            IssuerKeys {
                keys: keys.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(keys)
    }
}

/// If `key` was not stamped within `every`, stamps it now and says yes.
fn stamp(map: &Mutex<HashMap<String, Instant>>, key: &str, every: Duration) -> bool {
    let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
    if m.len() > MAX_ISSUERS * 4 {
        m.retain(|_, at| at.elapsed() < every);
    }
    if m.get(key).is_some_and(|at| at.elapsed() < every) {
        return false;
    }
    m.insert(key.to_owned(), Instant::now());
    true
}

/// Whether key `k` can check a signature of algorithm `alg`.
pub(crate) fn fits(k: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::{EllipticCurve, KeyAlgorithm};
    if let Some(a) = k.common.key_algorithm {
        let same = matches!(
            (a, alg),
            (KeyAlgorithm::RS256, Algorithm::RS256)
                | (KeyAlgorithm::ES256, Algorithm::ES256)
                | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
        );
        if !same {
            return false;
        }
    }
    match (&k.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

/// The addresses of `url`'s host, each checked to be public unless `allow_private`.
pub(crate) async fn resolve_checked(
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let addrs: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if !allow_private && let Some(a) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} resolves to the non-public address {}; refused (--allow-private-issuers)",
            a.ip()
        ));
    }
    Ok(addrs)
}

/// OpenID Connect Discovery: the issuer's configuration, then its `jwks_uri` (on the same
/// origin), each from the addresses checked before connecting.
fn fetch_keys(issuer: &str, allow_private: bool) -> Result<Vec<Jwk>, String> {
    check_issuer(issuer, allow_private)?;
    let issuer = issuer.to_owned();
    // On a thread of its own with a runtime of its own: callers are blocking code, on or off
    // a runtime.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let b = http_builder();
                let origin = reqwest::Url::parse(&issuer).map_err(|e| e.to_string())?;
                let host = origin.host_str().unwrap_or_default().to_owned();
                let addrs = resolve_checked(&origin, allow_private).await?;
                let client = b
                    .resolve_to_addrs(&host, &addrs)
                    .timeout(FETCH_TIMEOUT)
                    .connect_timeout(FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| e.to_string())?;
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc: Value = serde_json::from_slice(&get_bounded(&client, &discovery).await?)
                    .map_err(|e| format!("{discovery}: not JSON: {e}"))?;
                if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                    return Err(format!("{discovery} names another issuer"));
                }
                let jwks_uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{discovery} has no jwks_uri"))?;
                let jwks = reqwest::Url::parse(jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
                if jwks.origin() != origin.origin() {
                    return Err(format!(
                        "jwks_uri {jwks_uri:?} is not on the issuer's origin; give the trust a JWKS instead"
                    ));
                }
                let body = get_bounded(&client, jwks_uri).await?;
                parse_jwks(&String::from_utf8_lossy(&body))
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the key fetch failed".into()))
    })
}

/// A client builder for fetches from issuers: berth's user agent and the system's roots too
/// (and `SSL_CERT_FILE`): issuers inside a company often have a private CA.
pub(crate) fn http_builder() -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder().user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
    for c in rustls_native_certs::load_native_certs().certs {
        if let Ok(cert) = reqwest::Certificate::from_der(c.as_ref()) {
            b = b.add_root_certificate(cert);
        }
    }
    b
}

async fn get_bounded(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    read_bounded(resp, url).await
}

/// A response's body, at most `MAX_DOCUMENT` bytes.
pub(crate) async fn read_bounded(
    mut resp: reqwest::Response,
    url: &str,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if out.len() + chunk.len() > MAX_DOCUMENT {
            return Err(format!("{url}: larger than {MAX_DOCUMENT} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_claim_paths() {
        assert!(glob_match(
            "system:serviceaccount:ci:*",
            "system:serviceaccount:ci:builder"
        ));
        assert!(!glob_match(
            "system:serviceaccount:ci:*",
            "system:serviceaccount:cid:builder"
        ));
        assert!(glob_match(
            "repo:acme/*:ref:refs/heads/*",
            "repo:acme/app:ref:refs/heads/main"
        ));
        assert!(!glob_match(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/app:ref:refs/heads/dev"
        ));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
        assert!(!glob_match("a*a", "a"));
        let v: Value = serde_json::json!({
            "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "builder"}},
            "repository": "acme/app"
        });
        assert_eq!(
            claim_at(&v, "kubernetes.io.namespace"),
            Some(&Value::from("ci"))
        );
        assert_eq!(
            claim_at(&v, "kubernetes.io.serviceaccount.name"),
            Some(&Value::from("builder"))
        );
        assert_eq!(claim_at(&v, "repository"), Some(&Value::from("acme/app")));
        assert_eq!(claim_at(&v, "kubernetes.namespace"), None);
    }

    #[test]
    fn issuers_must_be_https_or_loopback() {
        assert!(check_issuer("https://token.actions.githubusercontent.com", false).is_ok());
        assert!(check_issuer("http://127.0.0.1:8080/oidc", true).is_ok());
        assert!(check_issuer("http://localhost:8080", true).is_ok());
        for internal in [
            "http://127.0.0.1:8080/oidc",
            "https://127.0.0.1:8443",
            "https://localhost",
            "https://10.1.2.3",
            "https://169.254.169.254",
            "https://[::1]:8443",
            "https://[fe80::1]",
            "https://[::ffff:192.168.1.1]",
            "https://100.64.0.1",
            "https://0.0.0.0",
            "https://[::127.0.0.1]",
            "https://[::ffff:0:127.0.0.1]",
            "https://[2002:7f00:1::]",
            "https://198.18.0.1",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
        ] {
            assert!(check_issuer(internal, false).is_err(), "{internal}");
        }
        assert!(check_issuer("http://issuer.example.com", true).is_err());
        assert!(check_issuer("https://a.example/?x=1", false).is_err());
        assert!(check_issuer("https://user:pw@a.example", false).is_err());
        assert!(check_issuer("ftp://a.example", true).is_err());
    }

    #[test]
    fn jwts_are_told_from_passwords() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("correct horse battery staple"));
        assert!(!looks_like_jwt("berth_rt_abc.def"));
    }
}
