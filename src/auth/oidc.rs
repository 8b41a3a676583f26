//! Single sign-on with OpenID Connect providers the operator configures: the authorization code
//! flow with PKCE (S256), `state` and `nonce` for the console; the device authorization grant
//! (RFC 8628) for the CLI; refresh of the provider's session to read a person's groups again.
//!
//! The fetch rules are the workload trusts': every call goes over https (plain http only to a
//! loopback address literal, with `--allow-private-issuers`) to a host on an address the
//! operator allows (`--allow-private-issuers` for non-public ones), connected to the address
//! that was checked, with a deadline and a size cap; discovery and keys are cached for an hour,
//! keys fetched again for an unknown `kid` at most once a minute. Only `invalid_grant`,
//! `access_denied` and `expired_token` count as the provider refusing a person; other errors are
//! the provider's or the operator's (`Unavailable`).
//!
//! ID tokens (OpenID Connect Core §3.1.3.7): RS256, ES256 or EdDSA only (never `none` or an HMAC
//! "signed" with a public key); `iss` exactly the provider's issuer; `aud` holds the client id and,
//! with several audiences, `azp` is the client id; `exp`, `iat` (60 s leeway); the `nonce` berth
//! sent. The user's groups come from the verified ID token's groups claim or, when it has none,
//! from the provider's userinfo with the access token the same exchange returned — never from
//! anything the browser carries.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::workload::{
    LEEWAY_SECS, check_issuer, fits, http_builder, parse_jwks, read_bounded, resolve_checked,
};
use crate::iam::{ProviderUser, fit_user_name};

/// How long discovery documents and keys are used before they are fetched again.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Least time between two key fetches prompted by an unknown `kid`.
const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// Deadline of one call to a provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the groups of a session go unconfirmed: the bound of the README.
pub const GROUPS_BOUND: Duration = Duration::from_secs(15 * 60);

/// Who may sign in with a local password (`--local-login`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalLogin {
    #[default]
    All,
    /// Server admins only (a way in when the provider is down).
    Admins,
    Off,
}

impl std::str::FromStr for LocalLogin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(LocalLogin::All),
            "admins" => Ok(LocalLogin::Admins),
            "off" => Ok(LocalLogin::Off),
            _ => Err(format!("{s:?} is not one of all, admins, off")),
        }
    }
}

/// One provider as the operator configured it.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Short name in URLs and commands (`/ui/login/sso/NAME`, `berth login --sso NAME`).
    pub name: String,
    /// What the sign-in page's button says ("Sign in with …").
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// The claim whose value names the user (default `preferred_username`).
    pub username_claim: String,
    /// The claim that lists the user's groups (default `groups`).
    pub groups_claim: String,
    /// Members of this group are server admins (and others are not).
    pub admin_group: Option<String>,
    /// Put before each of the provider's group names (`group/PREFIXNAME` in bindings), so two
    /// providers' groups of one name stay apart (as Kubernetes' `--oidc-groups-prefix`).
    pub groups_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The provider refused (a used or expired code, a disabled user, a revoked grant).
    #[error("the provider refused: {0}")]
    Refused(String),
    /// What the provider sent does not pass the checks (signature, issuer, audience, nonce…).
    #[error("{0}")]
    Invalid(String),
    /// The provider could not be reached or answered with an error of its own.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// Device flow: the person has not approved yet (or berth must poll slower).
    #[error("authorization pending")]
    Pending { slow_down: bool },
}

/// The endpoints discovery gives.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    pub device_authorization_endpoint: Option<String>,
}

/// A token endpoint's answer.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// The start of a device authorization (RFC 8628 §3.2).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceStart {
    #[serde(skip)]
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    pub expires_in: i64,
    pub interval: i64,
}

struct Cached {
    discovery: Option<(Discovery, Instant)>,
    keys: Option<(Arc<Vec<Jwk>>, Instant)>,
    last_refetch: Option<Instant>,
}

struct Provider {
    cfg: ProviderConfig,
    cache: Mutex<Cached>,
}

/// The configured providers and what was fetched from them.
pub struct Sso {
    providers: Vec<Provider>,
    allow_private: bool,
    /// berth's own address (`--public-url`): callbacks are `{public_url}/ui/login/sso/NAME/callback`.
    public_url: String,
    /// How often a session's groups are read again (at most `GROUPS_BOUND`).
    pub refresh_every: Duration,
}

fn unavailable(e: impl std::fmt::Display) -> SsoError {
    SsoError::Unavailable(e.to_string())
}

fn invalid(m: impl Into<String>) -> SsoError {
    SsoError::Invalid(m.into())
}

impl Sso {
    pub fn new(
        providers: Vec<ProviderConfig>,
        public_url: &str,
        allow_private: bool,
        refresh_every: Duration,
    ) -> Result<Sso, String> {
        for p in &providers {
            check_issuer(&p.issuer, allow_private)
                .map_err(|e| format!("provider {:?}: {e}", p.name))?;
        }
        Ok(Sso {
            providers: providers
                .into_iter()
                .map(|cfg| Provider {
                    cfg,
                    cache: Mutex::new(Cached {
                        discovery: None,
                        keys: None,
                        last_refetch: None,
                    }),
                })
                .collect(),
            allow_private,
            public_url: public_url.trim_end_matches('/').to_owned(),
            refresh_every: refresh_every.min(GROUPS_BOUND),
        })
    }

    pub fn providers(&self) -> impl Iterator<Item = &ProviderConfig> {
        self.providers.iter().map(|p| &p.cfg)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.find(name).map(|p| &p.cfg)
    }

    fn find(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Where the provider sends the browser back: fixed by the configuration, never taken from
    /// a request's `Host`.
    pub fn redirect_uri(&self, provider: &str) -> String {
        format!("{}/ui/login/sso/{provider}/callback", self.public_url)
    }

    fn get(&self, name: &str) -> Result<&Provider, SsoError> {
        self.find(name)
            .ok_or_else(|| invalid(format!("no provider {name:?}")))
    }

    /// A client that connects only to the checked addresses of `url`'s host.
    async fn client(&self, url: &str) -> Result<reqwest::Client, SsoError> {
        let u = reqwest::Url::parse(url).map_err(unavailable)?;
        // https, or plain http only to an address literal on loopback with
        // `--allow-private-issuers` (a test's provider): keys and tokens never cross a network
        // in the clear.
        let loopback = u
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
        match u.scheme() {
            "https" => {}
            "http" if self.allow_private && loopback => {}
            _ => return Err(unavailable(format!("{url} must be https"))),
        }
        let host = u.host_str().unwrap_or_default().to_owned();
        let addrs = resolve_checked(&u, self.allow_private)
            .await
            .map_err(unavailable)?;
        http_builder()
            .resolve_to_addrs(&host, &addrs)
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(unavailable)
    }

    async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, SsoError> {
        let c = self.client(url).await?;
        let mut req = c.get(url).header("accept", "application/json");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(unavailable)?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("{url}: HTTP {}", resp.status())));
        }
        let body = read_bounded(resp, url).await.map_err(unavailable)?;
        serde_json::from_slice(&body).map_err(|e| unavailable(format!("{url}: not JSON: {e}")))
    }

    /// Posts a form with the client's credentials (`client_secret_basic`); the JSON answer, or
    /// the provider's OAuth error.
    async fn post_form(
        &self,
        p: &ProviderConfig,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<Value, SsoError> {
        let c = self.client(url).await?;
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let body = serde_urlencoded::to_string(form).map_err(unavailable)?;
        let resp = c
            .post(url)
            .basic_auth(enc(&p.client_id), Some(enc(&p.client_secret)))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        let body = read_bounded(resp, url).await.map_err(unavailable)?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v.get("error").and_then(Value::as_str).unwrap_or_default();
        match code {
            "authorization_pending" => Err(SsoError::Pending { slow_down: false }),
            "slow_down" => Err(SsoError::Pending { slow_down: true }),
            // Only these speak of the person's grant; any other error (a wrong client secret,
            // a misconfigured client, a provider fault) is the operator's or the provider's,
            // and must not end anyone's access.
            "invalid_grant" | "access_denied" | "expired_token" => {
                Err(SsoError::Refused(code.to_owned()))
            }
            _ => Err(unavailable(format!("{url}: HTTP {status} {code}"))),
        }
    }

    /// The provider's discovery document (cached for an hour).
    pub async fn discovery(&self, name: &str) -> Result<Discovery, SsoError> {
        let p = self.get(name)?;
        if let Some((d, at)) = &p
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .discovery
            && at.elapsed() < CACHE_TTL
        {
            return Ok(d.clone());
        }
        let issuer = &p.cfg.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url, None).await?;
        let d = discovery_document(name, issuer, &url, &doc)?;
        p.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .discovery = Some((d.clone(), Instant::now()));
        Ok(d)
    }

    async fn keys(&self, name: &str, kid: Option<&str>) -> Result<Arc<Vec<Jwk>>, SsoError> {
        let p = self.get(name)?;
        let known = |keys: &Arc<Vec<Jwk>>| {
            kid.is_none_or(|kid| keys.iter().any(|k| k.common.key_id.as_deref() == Some(kid)))
        };
        {
            let mut c = p.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((keys, at)) = &c.keys
                && at.elapsed() < CACHE_TTL
            {
                if known(keys) {
                    return Ok(keys.clone());
                }
                // An unknown kid: fetched again at most once a minute.
                if c.last_refetch.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
                    return Ok(keys.clone());
                }
                c.last_refetch = Some(Instant::now());
            }
        }
        let d = self.discovery(name).await?;
        let jwks = self.get_json(&d.jwks_uri, None).await?;
        let keys = Arc::new(parse_jwks(&jwks.to_string()).map_err(unavailable)?);
        p.cache.lock().unwrap_or_else(PoisonError::into_inner).keys =
            Some((keys.clone(), Instant::now()));
        Ok(keys)
    }

    /// The URL that starts a sign-in at the provider.
    pub async fn authorization_url(
        &self,
        name: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
        prompt: Option<&str>,
    ) -> Result<String, SsoError> {
        let p = &self.get(name)?.cfg;
        let d = self.discovery(name).await?;
        let mut url = reqwest::Url::parse(&d.authorization_endpoint)
            .map_err(|e| unavailable(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &p.client_id)
            .append_pair("redirect_uri", &self.redirect_uri(name))
            .append_pair("scope", &p.scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &challenge(verifier))
            .append_pair("code_challenge_method", "S256");
        if let Some(p) = prompt {
            url.query_pairs_mut().append_pair("prompt", p);
            if p == "login" {
                // Providers that keep a session may ignore `prompt`; `max_age=0` asks too.
                url.query_pairs_mut().append_pair("max_age", "0");
            }
        }
        Ok(url.into())
    }

    /// Trades an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        name: &str,
        code: &str,
        verifier: &str,
    ) -> Result<Tokens, SsoError> {
        let p = &self.get(name)?.cfg;
        let d = self.discovery(name).await?;
        let redirect = self.redirect_uri(name);
        let v = self
            .post_form(
                p,
                &d.token_endpoint,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", &redirect),
                    ("code_verifier", verifier),
                ],
            )
            .await?;
        Ok(tokens(&v))
    }

    /// Uses a provider's refresh token: new tokens, or `Refused` when the provider no longer
    /// knows the person (disabled, deleted, grant revoked).
    pub async fn refresh(&self, name: &str, refresh_token: &str) -> Result<Tokens, SsoError> {
        let p = &self.get(name)?.cfg;
        let d = self.discovery(name).await?;
        let v = self
            .post_form(
                p,
                &d.token_endpoint,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ],
            )
            .await?;
        Ok(tokens(&v))
    }

    /// Starts a device authorization (RFC 8628), when the provider offers it.
    pub async fn device_start(&self, name: &str) -> Result<Option<DeviceStart>, SsoError> {
        let p = &self.get(name)?.cfg;
        let d = self.discovery(name).await?;
        let Some(endpoint) = d.device_authorization_endpoint else {
            return Ok(None);
        };
        let scope = p.scopes.join(" ");
        let v = self
            .post_form(
                p,
                &endpoint,
                &[("client_id", &p.client_id), ("scope", &scope)],
            )
            .await?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(device_code), Some(user_code), Some(verification_uri)) =
            (s("device_code"), s("user_code"), s("verification_uri"))
        else {
            return Err(unavailable("the device authorization answer lacks a field"));
        };
        Ok(Some(DeviceStart {
            device_code,
            user_code,
            verification_uri,
            verification_uri_complete: s("verification_uri_complete"),
            expires_in: v.get("expires_in").and_then(Value::as_i64).unwrap_or(600),
            interval: v
                .get("interval")
                .and_then(Value::as_i64)
                .unwrap_or(5)
                .max(1),
        }))
    }

    /// Polls a device authorization once.
    pub async fn device_poll(&self, name: &str, device_code: &str) -> Result<Tokens, SsoError> {
        let p = &self.get(name)?.cfg;
        let d = self.discovery(name).await?;
        let v = self
            .post_form(
                p,
                &d.token_endpoint,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", device_code),
                    ("client_id", &p.client_id),
                ],
            )
            .await?;
        Ok(tokens(&v))
    }

    /// Verifies an ID token of provider `name` (see the module's rules) and gives its claims.
    /// `nonce`: the one berth sent (`None` for grants that carry none: device, refresh).
    pub async fn verify_id_token(
        &self,
        name: &str,
        jwt: &str,
        nonce: Option<&str>,
    ) -> Result<Value, SsoError> {
        let p = &self.get(name)?.cfg;
        let header =
            jsonwebtoken::decode_header(jwt).map_err(|e| invalid(format!("not a JWT: {e}")))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(invalid(format!(
                "ID token algorithm {:?} is not accepted (RS256, ES256 or EdDSA)",
                header.alg
            )));
        }
        let keys = self.keys(name, header.kid.as_deref()).await?;
        verify_with_keys(p, &keys, &header, jwt, nonce)
    }

    /// The person an exchange's tokens name: the verified ID token's claims, and the groups from
    /// its groups claim or else the provider's userinfo (checked to be about the same subject).
    pub async fn person(
        &self,
        name: &str,
        t: &Tokens,
        nonce: Option<&str>,
    ) -> Result<ProviderUser, SsoError> {
        let p = &self.get(name)?.cfg;
        let id_token = t.id_token.as_deref().ok_or_else(|| {
            invalid("the provider returned no ID token (is `openid` among the scopes?)")
        })?;
        let claims = self.verify_id_token(name, id_token, nonce).await?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("the ID token has no subject"))?
            .to_owned();
        let groups = match claims.get(&p.groups_claim) {
            Some(g) => groups_of(g),
            None => self.userinfo_groups(name, p, t, &sub).await?,
        };
        let username = claims
            .get(&p.username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&sub)
            .to_owned();
        Ok(ProviderUser {
            provider: p.name.clone(),
            issuer: p.issuer.clone(),
            subject: sub,
            name: fit_user_name(&username),
            admin: p
                .admin_group
                .as_ref()
                .map(|a| groups.iter().any(|g| g == a)),
            groups: prefixed(p, groups),
        })
    }

    /// What a refresh of `subject`'s session says now: from the new ID token when the provider
    /// sends one (it must name the same subject), else from userinfo.
    pub async fn reread(
        &self,
        name: &str,
        t: &Tokens,
        subject: &str,
    ) -> Result<ProviderUser, SsoError> {
        let p = &self.get(name)?.cfg;
        if t.id_token.is_some() {
            let who = self.person(name, t, None).await?;
            if who.subject != subject {
                return Err(invalid("the refreshed ID token names another subject"));
            }
            return Ok(who);
        }
        let groups = self.userinfo_groups(name, p, t, subject).await?;
        Ok(ProviderUser {
            provider: p.name.clone(),
            issuer: p.issuer.clone(),
            subject: subject.to_owned(),
            name: String::new(),
            admin: p
                .admin_group
                .as_ref()
                .map(|a| groups.iter().any(|g| g == a)),
            groups: prefixed(p, groups),
        })
    }

    async fn userinfo_groups(
        &self,
        name: &str,
        p: &ProviderConfig,
        t: &Tokens,
        sub: &str,
    ) -> Result<Vec<String>, SsoError> {
        let (Some(access), Some(endpoint)) = (
            t.access_token.as_deref(),
            self.discovery(name).await?.userinfo_endpoint,
        ) else {
            return Ok(Vec::new());
        };
        let info = self.get_json(&endpoint, Some(access)).await?;
        // OpenID Connect Core §5.3.2: the userinfo's `sub` must be the ID token's.
        if info.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(invalid("the userinfo answer is about another subject"));
        }
        Ok(info.get(&p.groups_claim).map(groups_of).unwrap_or_default())
    }
}

/// The checks of an ID token against keys already at hand (see the module's rules).
pub fn verify_with_keys(
    p: &ProviderConfig,
    keys: &[Jwk],
    header: &jsonwebtoken::Header,
    jwt: &str,
    nonce: Option<&str>,
) -> Result<Value, SsoError> {
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
    ) {
        return Err(invalid(format!(
            "ID token algorithm {:?} is not accepted (RS256, ES256 or EdDSA)",
            header.alg
        )));
    }
    let mut v = Validation::new(header.alg);
    v.leeway = LEEWAY_SECS as u64;
    v.set_issuer(&[&p.issuer]);
    v.set_audience(&[&p.client_id]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    let mut claims = None;
    for k in keys
        .iter()
        .filter(|k| match &header.kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid.as_str()),
            None => true,
        })
        .filter(|k| fits(k, header.alg))
        .take(8)
    {
        let Ok(key) = DecodingKey::from_jwk(k) else {
            continue;
        };
        match jsonwebtoken::decode::<Value>(jwt, &key, &v) {
            Ok(d) => {
                claims = Some(d.claims);
                break;
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "the ID token has expired",
                    ErrorKind::InvalidIssuer => "the ID token is from another issuer",
                    ErrorKind::InvalidAudience => "the ID token is for another client",
                    ErrorKind::ImmatureSignature => "the ID token is not valid yet",
                    ErrorKind::MissingRequiredClaim(_) => "the ID token lacks a required claim",
                    _ => continue,
                };
                return Err(invalid(why));
            }
        }
    }
    let claims = claims.ok_or_else(|| invalid("the ID token's signature is not valid"))?;
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
    if iat > crate::store::now() + LEEWAY_SECS {
        return Err(invalid("the ID token was issued in the future"));
    }
    // Several audiences: the authorized party must be this client (Core §3.1.3.7 items 4–5).
    if let Some(Value::Array(auds)) = claims.get("aud")
        && auds.len() > 1
        && claims.get("azp").and_then(Value::as_str) != Some(p.client_id.as_str())
    {
        return Err(invalid(
            "the ID token is for several clients and not authorized for this one",
        ));
    }
    if let Some(want) = nonce {
        let got = claims
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            got.as_bytes(),
            want.as_bytes(),
        )) {
            return Err(invalid(
                "the ID token's nonce is not the one this sign-in sent",
            ));
        }
    }
    Ok(claims)
}

/// What berth takes from provider `name`'s discovery document `doc` (fetched from `url`): the
/// issuer must be the configured one exactly, PKCE with S256 possible, and the three endpoints
/// present.
pub fn discovery_document(
    name: &str,
    issuer: &str,
    url: &str,
    doc: &Value,
) -> Result<Discovery, SsoError> {
    let named = doc
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if named != issuer {
        return Err(unavailable(format!(
            "provider {name:?}: {url} names the issuer {named:?}, not the configured {issuer:?} (they must be the same, trailing slash included)"
        )));
    }
    let field = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    let need = |k: &str| field(k).ok_or_else(|| unavailable(format!("{url} has no {k}")));
    // PKCE with S256 must be possible (RFC 7636); a provider that says nothing is trusted to
    // accept it (many do not advertise it), one that lists only `plain` is refused.
    if let Some(methods) = doc
        .get("code_challenge_methods_supported")
        .and_then(Value::as_array)
        && !methods.iter().any(|m| m.as_str() == Some("S256"))
    {
        return Err(unavailable(format!(
            "{url}: the provider does not offer PKCE with S256"
        )));
    }
    let d = Discovery {
        authorization_endpoint: need("authorization_endpoint")?,
        token_endpoint: need("token_endpoint")?,
        jwks_uri: need("jwks_uri")?,
        userinfo_endpoint: field("userinfo_endpoint"),
        device_authorization_endpoint: field("device_authorization_endpoint"),
    };
    Ok(d)
}

fn tokens(v: &Value) -> Tokens {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Tokens {
        id_token: s("id_token"),
        access_token: s("access_token"),
        refresh_token: s("refresh_token"),
    }
}

/// The provider's group names as berth knows them: with the provider's prefix.
fn prefixed(p: &ProviderConfig, groups: Vec<String>) -> Vec<String> {
    groups
        .into_iter()
        .map(|g| format!("{}{g}", p.groups_prefix))
        .collect()
}

/// A groups claim as a list of names: an array of strings, or one string.
fn groups_of(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The PKCE challenge of a verifier (RFC 7636 §4.2, S256).
pub fn challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// 32 random bytes from the OS, base64url: states, nonces and PKCE verifiers (`None` when the
/// OS has no randomness to give).
pub fn random_token() -> Option<String> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn provider() -> ProviderConfig {
        ProviderConfig {
            name: "corp".into(),
            display_name: "Corp".into(),
            issuer: "https://idp.example".into(),
            client_id: "berth".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            admin_group: None,
            groups_prefix: String::new(),
        }
    }

    /// An RSA key pair made by rcgen for signing test tokens, and its public JWK.
    fn keys() -> (jsonwebtoken::EncodingKey, Jwk, Vec<u8>) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = jsonwebtoken::EncodingKey::from_ec_der(&kp.serialize_der());
        let raw = kp.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }))
        .unwrap();
        (enc, jwk, raw.to_vec())
    }

    fn sign(enc: &jsonwebtoken::EncodingKey, claims: Value) -> String {
        let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &claims, enc).unwrap()
    }

    fn check(jwt: &str, jwk: &Jwk, nonce: Option<&str>) -> Result<Value, SsoError> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| invalid(e.to_string()))?;
        verify_with_keys(&provider(), std::slice::from_ref(jwk), &header, jwt, nonce)
    }

    #[test]
    fn id_tokens_are_checked_for_issuer_audience_times_nonce_and_algorithm() {
        let (enc, jwk, raw) = keys();
        let now = crate::store::now();
        let good = serde_json::json!({
            "iss": "https://idp.example", "aud": "berth", "sub": "u1",
            "iat": now, "exp": now + 300, "nonce": "n1",
        });
        assert!(check(&sign(&enc, good.clone()), &jwk, Some("n1")).is_ok());
        let with = |k: &str, v: Value| {
            let mut c = good.clone();
            c[k] = v;
            sign(&enc, c)
        };
        let refused = |jwt: String, why: &str| {
            let e = check(&jwt, &jwk, Some("n1")).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        };
        refused(with("nonce", "n2".into()), "nonce");
        refused(with("aud", "other".into()), "another client");
        refused(with("iss", "https://evil.example".into()), "another issuer");
        refused(with("exp", (now - 3600).into()), "expired");
        refused(with("iat", (now + 3600).into()), "future");
        refused(
            with("aud", serde_json::json!(["berth", "other"])),
            "several clients",
        );
        let mut azp = good.clone();
        azp["aud"] = serde_json::json!(["berth", "other"]);
        azp["azp"] = "berth".into();
        assert!(check(&sign(&enc, azp), &jwk, Some("n1")).is_ok());
        let mut no_nonce = good.clone();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        refused(sign(&enc, no_nonce), "nonce");
        // alg none: an unsigned token with a valid-looking payload.
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let payload = b64(good.to_string().as_bytes());
        let none = format!("{}.{payload}.", b64(br#"{"alg":"none","kid":"k1"}"#));
        assert!(check(&none, &jwk, Some("n1")).is_err());
        // HS256 "signed" with the public key's bytes.
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &good,
            &jsonwebtoken::EncodingKey::from_secret(&raw),
        )
        .unwrap();
        refused(hs, "not accepted");
        // A signature by another key.
        let (other, _, _) = keys();
        refused(sign(&other, good), "signature");
    }

    #[test]
    fn pkce_challenge_is_rfc_7636s() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().unwrap().len(), 43);
    }
}
